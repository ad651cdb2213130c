//! The `shim-registry` program end to end: started as a process, its first
//! line read, blobs pushed and pulled, seeds served, Basic auth, `export`.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::seed::{File, image, write_tar};
use crate::support::{client, header, sha256};

const EXE: &str = env!("CARGO_BIN_EXE_shim-registry");

/// A running `shim-registry serve`, killed when dropped.
pub(crate) struct Served {
    child: Child,
    /// `http://HOST:PORT` (`https://` with TLS), as its first line says.
    pub(crate) url: String,
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `shim-registry serve ARGS…` and reads its first line (10 s at most).
pub(crate) fn serve(args: &[&str]) -> Served {
    let mut child = Command::new(EXE)
        .arg("serve")
        .args(args)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("shim-registry starts");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    let mut served = Served {
        child,
        url: String::new(),
    };
    let line = rx
        .recv_timeout(Duration::from_secs(10))
        .expect("a first line within 10 s");
    served.url = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("first line {line:?}"))
        .to_owned();
    served
}

async fn push_and_pull(c: &reqwest::Client, url: &str, auth: Option<(&str, &str)>) {
    let with = |r: reqwest::RequestBuilder| match auth {
        Some((u, p)) => r.basic_auth(u, Some(p)),
        None => r,
    };
    let data = b"a blob through the binary".to_vec();
    let d = sha256(&data);
    let r = with(c.post(format!("{url}/v2/bin/test/blobs/uploads/")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let location = header(&r, "location");
    let r = with(c.put(format!("{url}{location}?digest={d}")))
        .body(data.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let r = with(c.get(format!("{url}/v2/bin/test/blobs/{d}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.bytes().await.unwrap(), data);
}

#[tokio::test]
async fn serves_blobs_over_http_and_https() {
    let c = client();
    let plain = serve(&[]);
    assert!(plain.url.starts_with("http://127.0.0.1:"), "{}", plain.url);
    push_and_pull(&c, &plain.url, None).await;
    let tls = serve(&["--tls", "self-signed", "--addr", "127.0.0.1:0"]);
    assert!(tls.url.starts_with("https://127.0.0.1:"), "{}", tls.url);
    push_and_pull(&c, &tls.url, None).await;
}

#[tokio::test]
async fn basic_auth_users() {
    let c = client();
    let s = serve(&["--user", "alice:secret", "--user", "bob:pw:with:colons"]);
    let r = c.get(format!("{}/v2/", s.url)).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert!(header(&r, "www-authenticate").starts_with("Basic "));
    let r = c
        .get(format!("{}/v2/", s.url))
        .basic_auth("alice", Some("wrong"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    push_and_pull(&c, &s.url, Some(("bob", "pw:with:colons"))).await;
}

#[tokio::test]
async fn token_auth_challenges_with_a_bearer_realm() {
    let c = client();
    let s = serve(&["--user", "alice:secret", "--token"]);
    let r = c.get(format!("{}/v2/", s.url)).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert!(header(&r, "www-authenticate").starts_with("Bearer realm="));
    let r = c
        .get(format!(
            "{}/token?service=shim-registry&scope=repository:bin/test:pull,push",
            s.url
        ))
        .basic_auth("alice", Some("secret"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let v: serde_json::Value = serde_json::from_slice(&r.bytes().await.unwrap()).unwrap();
    let token = v["token"].as_str().expect("a token").to_owned();
    let r = c
        .request(Method::GET, format!("{}/v2/", s.url))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
}

#[tokio::test]
async fn seeds_served_and_exported() {
    let dir = tempfile::tempdir().unwrap();
    let img = image(40);
    let config_hex = sha256(&img.config)["sha256:".len()..].to_owned();
    let tar = dir.path().join("save.tar");
    write_tar(
        &tar,
        &[
            File::Data(
                "manifest.json".into(),
                serde_json::to_vec(&json!([{
                    "Config": format!("{config_hex}.json"),
                    "RepoTags": ["app:1"],
                    "Layers": ["a/layer.tar", "b/layer.tar"],
                }]))
                .unwrap(),
            ),
            File::Data(format!("{config_hex}.json"), img.config.clone()),
            File::Data("a/layer.tar".into(), img.layers[0].clone()),
            File::Data("b/layer.tar".into(), img.layers[1].clone()),
        ],
    );
    let storage = dir.path().join("storage");
    let seed_arg = format!("{}=seeded/app", tar.display());
    let s = serve(&["--storage", storage.to_str().unwrap(), "--seed", &seed_arg]);
    let c = client();
    let r = c
        .get(format!("{}/v2/seeded/app/tags/list", s.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let v: serde_json::Value = serde_json::from_slice(&r.bytes().await.unwrap()).unwrap();
    assert_eq!(v["tags"], json!(["1"]));
    let r = c
        .get(format!(
            "{}/v2/seeded/app/blobs/{}",
            s.url,
            sha256(&img.layers[1])
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.bytes().await.unwrap(), img.layers[1]);
    drop(s);

    let out = dir.path().join("layout");
    let status = Command::new(EXE)
        .args(["export", "--storage"])
        .env("RUST_LOG", "warn")
        .arg(&storage)
        .args(["--repository", "seeded/app", "--output"])
        .arg(&out)
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("index.json")).unwrap()).unwrap();
    assert_eq!(
        index["manifests"][0]["annotations"]["org.opencontainers.image.ref.name"],
        "1"
    );
    assert!(blob_file(&out, &img.layers[0]));

    // A bad seed: a clear error and exit code 1, no listening line.
    let out = Command::new(EXE)
        .args(["serve", "--seed"])
        .arg(dir.path().join("absent.tar"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("absent.tar"), "{stderr}");
}

fn blob_file(layout: &Path, content: &[u8]) -> bool {
    let hex = &sha256(content)["sha256:".len()..];
    std::fs::read(layout.join("blobs/sha256").join(hex)).is_ok_and(|b| b == content)
}

#[test]
fn help_has_examples() {
    let out = Command::new(EXE)
        .args(["serve", "--help"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for needle in [
        "--addr",
        "--storage",
        "--user",
        "--token",
        "--tls",
        "--seed",
        "Examples:",
    ] {
        assert!(help.contains(needle), "{needle} missing from:\n{help}");
    }
    let out = Command::new(EXE)
        .args(["serve", "--token"])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(2),
        "--token without --user is refused"
    );
}
