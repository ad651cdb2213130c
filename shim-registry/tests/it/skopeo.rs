//! skopeo (containers/image, the library of Podman, Buildah and CRI-O)
//! against the `shim-registry` program with credentials: `skopeo copy`
//! pushes an OCI layout in and pulls it back out with Basic auth (plain
//! HTTP) and with Bearer tokens (TLS with the self-signed certificate), and
//! is refused with a wrong password either way.
//!
//! Without skopeo the tests skip, saying so, unless `DLGRAB_REQUIRE_SKOPEO=1`
//! (as `cargo xtask test` sets, having installed Debian's skopeo): then they
//! fail.

use std::path::Path;
use std::process::{Command, Output};

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::binary::serve;
use crate::seed::image;
use crate::support::{client, header, sha256};

/// Environment variable that turns "no skopeo" into a failure when set to
/// `1`, instead of a skip.
const ENV_REQUIRE_SKOPEO: &str = "DLGRAB_REQUIRE_SKOPEO";

/// Whether skopeo runs here (`cargo xtask` installs Debian's), or why not.
fn probe_skopeo() -> Result<(), String> {
    match Command::new("skopeo").arg("--version").output() {
        Ok(out) if out.status.success() => Ok(()),
        Ok(out) => Err(format!(
            "`skopeo --version` failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )),
        Err(e) => Err(format!("skopeo is not installed ({e})")),
    }
}

/// What a test does when skopeo is missing for `reason`.
#[derive(Debug, PartialEq, Eq)]
enum Missing {
    /// Skip, printing this line.
    Skip(String),
    /// Fail with this message.
    Fail(String),
}

/// A missing skopeo fails the test when `require` (the value of
/// `DLGRAB_REQUIRE_SKOPEO`) is `1`, and skips it otherwise.
fn when_missing(test_name: &str, require: Option<&str>, reason: &str) -> Missing {
    if require == Some("1") {
        Missing::Fail(format!(
            "{test_name}: no skopeo ({ENV_REQUIRE_SKOPEO}=1): {reason}"
        ))
    } else {
        Missing::Skip(format!("SKIP {test_name}: {reason}"))
    }
}

/// True when skopeo runs; otherwise prints `SKIP <test_name>: <reason>` and
/// returns false, or panics when `DLGRAB_REQUIRE_SKOPEO=1`.
#[track_caller]
#[expect(clippy::print_stderr, reason = "a skipped test says why on stderr")]
fn skopeo_or_skip(test_name: &str) -> bool {
    let Err(reason) = probe_skopeo() else {
        return true;
    };
    let require = std::env::var(ENV_REQUIRE_SKOPEO).ok();
    match when_missing(test_name, require.as_deref(), &reason) {
        Missing::Fail(message) => panic!("{message}"),
        Missing::Skip(line) => {
            eprintln!("{line}");
            false
        }
    }
}

#[test]
fn a_missing_skopeo_fails_only_when_required() {
    let skip = |require| when_missing("t", require, "skopeo is not installed");
    assert_eq!(
        skip(Some("1")),
        Missing::Fail("t: no skopeo (DLGRAB_REQUIRE_SKOPEO=1): skopeo is not installed".into())
    );
    for require in [None, Some("0"), Some("")] {
        assert_eq!(
            skip(require),
            Missing::Skip("SKIP t: skopeo is not installed".into()),
            "{require:?}"
        );
    }
}

/// `skopeo copy ARGS…`, reading no auth file of the user's.
fn skopeo_copy(auth_file: &Path, args: &[&str]) -> Output {
    Command::new("skopeo")
        .env("REGISTRY_AUTH_FILE", auth_file)
        .arg("copy")
        .args(args)
        .output()
        .expect("skopeo runs")
}

#[track_caller]
fn assert_refused(what: &str, out: &Output) {
    let stderr = String::from_utf8_lossy(&out.stderr).to_lowercase();
    assert!(!out.status.success(), "{what} succeeded");
    assert!(
        stderr.contains("unauthorized") || stderr.contains("authentication required"),
        "{what} failed for another reason: {stderr}"
    );
}

#[track_caller]
fn assert_success(what: &str, out: &Output) {
    assert!(
        out.status.success(),
        "{what} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Writes `image` as an OCI layout tagged `v1`.
fn write_layout(dir: &Path, image: &crate::seed::Image) {
    let blobs = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).unwrap();
    for content in [&image.config, &image.manifest]
        .into_iter()
        .chain(&image.layers)
    {
        let hex = &sha256(content)["sha256:".len()..];
        std::fs::write(blobs.join(hex), content).unwrap();
    }
    std::fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    let index = json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": sha256(&image.manifest),
            "size": image.manifest.len(),
            "annotations": { "org.opencontainers.image.ref.name": "v1" },
        }],
    });
    std::fs::write(dir.join("index.json"), index.to_string()).unwrap();
}

/// Push, pull and refusals against `shim-registry serve EXTRA…` with user
/// `alice:secret`.
async fn round_trip(extra: &[&str], seed: u64) {
    let mut args = vec!["--user", "alice:secret"];
    args.extend(extra);
    let served = serve(&args);
    let host = served
        .url
        .split_once("://")
        .map(|(_, h)| h.to_owned())
        .expect("scheme://host");
    let work = tempfile::tempdir().unwrap();
    let auth_file = work.path().join("auth.json");
    let source = work.path().join("source");
    let image = image(seed);
    write_layout(&source, &image);
    let src = format!("oci:{}:v1", source.display());
    let remote = format!("docker://{host}/skopeo/app:v1");

    let refused = skopeo_copy(
        &auth_file,
        &[
            "--dest-tls-verify=false",
            "--dest-creds",
            "alice:wrong",
            &src,
            &remote,
        ],
    );
    assert_refused("push with a wrong password", &refused);
    let pushed = skopeo_copy(
        &auth_file,
        &[
            "--dest-tls-verify=false",
            "--dest-creds",
            "alice:secret",
            &src,
            &remote,
        ],
    );
    assert_success("push", &pushed);

    // What skopeo pushed (it may compress the layers on the way) is stored
    // whole: the manifest and every blob it names.
    let c = client();
    let authorization = if extra.contains(&"--token") {
        let r = c
            .get(format!(
                "{}/token?service=shim-registry&scope=repository:skopeo/app:pull",
                served.url
            ))
            .basic_auth("alice", Some("secret"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        let v: Value = serde_json::from_slice(&r.bytes().await.unwrap()).unwrap();
        format!("Bearer {}", v["token"].as_str().expect("a token"))
    } else {
        "Basic YWxpY2U6c2VjcmV0".to_owned() // alice:secret
    };
    let get = |path: String| {
        c.get(format!("{}/v2/skopeo/app/{path}", served.url))
            .header("authorization", &authorization)
            .header("accept", "application/vnd.oci.image.manifest.v1+json")
    };
    let r = get("manifests/v1".into()).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let stored_digest = header(&r, "docker-content-digest");
    let stored = r.bytes().await.unwrap();
    assert_eq!(sha256(&stored), stored_digest);
    let manifest: Value = serde_json::from_slice(&stored).unwrap();
    assert_eq!(manifest["config"]["digest"], sha256(&image.config));
    let layers = manifest["layers"].as_array().expect("layers");
    assert_eq!(layers.len(), image.layers.len());
    for blob in layers.iter().chain([&manifest["config"]]) {
        let digest = blob["digest"].as_str().unwrap();
        let r = get(format!("blobs/{digest}")).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{digest}");
        assert_eq!(sha256(&r.bytes().await.unwrap()), digest);
    }

    let out = work.path().join("out");
    let dest = format!("oci:{}:v1", out.display());
    let refused = skopeo_copy(
        &auth_file,
        &[
            "--src-tls-verify=false",
            "--src-creds",
            "alice:wrong",
            &remote,
            &dest,
        ],
    );
    assert_refused("pull with a wrong password", &refused);
    let pulled = skopeo_copy(
        &auth_file,
        &[
            "--src-tls-verify=false",
            "--src-creds",
            "alice:secret",
            &remote,
            &dest,
        ],
    );
    assert_success("pull", &pulled);
    // The layout pulled holds the stored manifest, byte for byte, and its blobs.
    let index: Value =
        serde_json::from_slice(&std::fs::read(out.join("index.json")).unwrap()).unwrap();
    assert_eq!(index["manifests"][0]["digest"], stored_digest.as_str());
    let blob = |digest: &str| {
        std::fs::read(out.join("blobs/sha256").join(&digest["sha256:".len()..])).unwrap()
    };
    assert_eq!(blob(&stored_digest), stored);
    for layer in layers {
        let digest = layer["digest"].as_str().unwrap();
        assert_eq!(sha256(&blob(digest)), digest);
    }
    assert_eq!(blob(&sha256(&image.config)), image.config);
}

#[tokio::test]
async fn skopeo_copies_in_and_out_with_basic_auth() {
    if !skopeo_or_skip("skopeo::skopeo_copies_in_and_out_with_basic_auth") {
        return;
    }
    round_trip(&[], 41).await;
}

#[tokio::test]
async fn skopeo_copies_in_and_out_with_bearer_tokens() {
    if !skopeo_or_skip("skopeo::skopeo_copies_in_and_out_with_bearer_tokens") {
        return;
    }
    // Over TLS (self-signed), where the token realm is still plain HTTP.
    round_trip(&["--token", "--tls", "self-signed"], 43).await;
}
