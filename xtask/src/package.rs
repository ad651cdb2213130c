//! `cargo xtask package`: `shim-registry` as another project gets it.
//!
//! `cargo package -p shim-registry` packages the crate and builds the
//! packaged sources on their own (cargo's verification), leaving them
//! unpacked in `<target>/package/shim-registry-<version>/`. A consumer crate
//! is then written into a temporary folder outside the workspace: it depends
//! on that unpacked package by path, with default features, and its one test
//! starts the registry on 127.0.0.1, pushes an image (config, a layer blob,
//! a manifest) with the `oci-client` crate and pulls it back. `cargo tree`
//! must find no clap in the consumer's dependencies: the program's `cli`
//! feature is off by default.
//!
//! The consumer builds into the workspace's target folder, beside the
//! verification build of the same unpacked package, so each dependency is
//! compiled once; it starts from the workspace's `Cargo.lock` (the same
//! versions, already downloaded) and goes online only when a crate is
//! missing from cargo's cache.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, bail, ensure};

use crate::root;
use crate::sh::{self, stream};

/// The package under test.
const PACKAGE: &str = "shim-registry";

/// The consumer's one test.
const TEST_NAME: &str = "pushes_and_pulls_an_image";

/// Crates that only the `shim-registry` program (`cli`) may bring.
const CLI_ONLY: [&str; 2] = ["clap", "tracing-subscriber"];

/// The consumer's test: the registry embedded, a real client against it.
const CONSUMER_TEST: &str = r##"//! The packaged shim-registry, used as another project uses it.

use oci_client::client::{ClientConfig, ClientProtocol, Config, ImageLayer};
use oci_client::manifest::IMAGE_LAYER_MEDIA_TYPE;
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};
use shim_registry::{Registry, TlsConfig};

#[tokio::test]
async fn pushes_and_pulls_an_image() {
    // oci-client is built with `rustls-tls-no-provider`: reqwest then
    // needs a process-wide crypto provider.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let registry = Registry::builder()
        .tls(TlsConfig::Disabled)
        .build()
        .expect("the registry builds");
    let handle = registry
        .spawn("127.0.0.1:0".parse().unwrap())
        .await
        .expect("the registry starts");
    assert!(handle.addr().ip().is_loopback(), "{}", handle.addr());
    let reference: Reference = format!("{}/consumer/app:v1", handle.addr())
        .parse()
        .expect("the reference parses");
    let client = Client::new(ClientConfig {
        protocol: ClientProtocol::Http,
        ..Default::default()
    });

    let layer = ImageLayer::oci_v1(b"one layer of a consumer's image".to_vec(), None);
    let config = Config::oci_v1(
        br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#
            .to_vec(),
        None,
    );
    let pushed = client
        .push(
            &reference,
            std::slice::from_ref(&layer),
            config.clone(),
            &RegistryAuth::Anonymous,
            None,
        )
        .await
        .expect("oci-client pushes the image");
    let (_, pushed_digest) = pushed
        .manifest_url
        .rsplit_once("/manifests/")
        .expect("a manifest url");

    let pulled = client
        .pull(&reference, &RegistryAuth::Anonymous, vec![IMAGE_LAYER_MEDIA_TYPE])
        .await
        .expect("oci-client pulls the image back");
    assert_eq!(pulled.digest.as_deref(), Some(pushed_digest));
    assert_eq!(pulled.config.data, config.data);
    assert_eq!(pulled.layers.len(), 1);
    assert_eq!(pulled.layers[0].data, layer.data);
    handle.shutdown().await;
}
"##;

/// Packages `shim-registry` and runs the consumer's test against it.
pub(crate) fn run() -> Result<()> {
    let started = Instant::now();
    let (target, version) = metadata()?;

    // The working tree is what the other steps test, so it is what is
    // packaged here (a clean commit packages without `--allow-dirty`).
    let phase = Instant::now();
    sh::run(
        cargo(&root())
            .args(["package", "-p", PACKAGE, "--allow-dirty"])
            .env("CARGO_TARGET_DIR", &target),
    )?;
    println!("package: cargo package took {:.1} s", secs(phase));
    let unpacked = target.join("package").join(format!("{PACKAGE}-{version}"));
    ensure!(
        unpacked.join("Cargo.toml").is_file(),
        "cargo package left no unpacked crate in {}",
        unpacked.display()
    );

    let consumer = tempfile::Builder::new()
        .prefix("shim-registry-consumer-")
        .tempdir()
        .context("cannot make a temporary folder")?;
    write_consumer(consumer.path(), &unpacked)?;
    println!("package: consumer crate in {}", consumer.path().display());

    let phase = Instant::now();
    let offline = fetch(consumer.path(), &target)?;
    let net: &[&str] = if offline { &["--offline"] } else { &[] };
    let mut test = cargo(consumer.path());
    test.arg("test").args(net).env("CARGO_TARGET_DIR", &target);
    let (status, lines) = stream(&mut test)?;
    ensure!(
        status.success(),
        "the consumer's cargo test failed: {status}"
    );
    let ran = format!("test {TEST_NAME} ... ok");
    ensure!(
        lines.iter().any(|l| l.trim() == ran),
        "the consumer's cargo test did not run {TEST_NAME}"
    );
    println!("package: the consumer's test took {:.1} s", secs(phase));

    let tree = consumer_tree(consumer.path(), &target, net)?;
    let found: Vec<&str> = tree
        .iter()
        .filter(|p| CLI_ONLY.iter().any(|c| p.split(' ').next() == Some(c)))
        .map(String::as_str)
        .collect();
    if !found.is_empty() {
        bail!(
            "the consumer's dependencies include what only the `cli` feature should bring: {}",
            found.join(", ")
        );
    }
    ensure!(
        tree.iter()
            .any(|p| p.starts_with(&format!("{PACKAGE} v{version} ("))),
        "the consumer does not depend on the unpacked {PACKAGE} {version}"
    );
    println!(
        "package: {PACKAGE} {version} packages, and a crate outside the workspace pushes to and \
         pulls from it with no {} in its dependencies ({:.1} s in all)",
        CLI_ONLY.join(" or "),
        secs(started)
    );
    Ok(())
}

/// The workspace's target folder and `shim-registry`'s version.
fn metadata() -> Result<(PathBuf, String)> {
    let out = cargo(&root())
        .args(["metadata", "--format-version", "1", "--no-deps"])
        .output()
        .context("cannot run cargo metadata")?;
    ensure!(
        out.status.success(),
        "cargo metadata failed: {}",
        out.status
    );
    let meta: serde_json::Value =
        serde_json::from_slice(&out.stdout).context("cargo metadata printed no JSON")?;
    let target = meta["target_directory"]
        .as_str()
        .context("cargo metadata names no target folder")?;
    let version = meta["packages"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|p| p["name"] == PACKAGE)
        .and_then(|p| p["version"].as_str())
        .with_context(|| format!("cargo metadata lists no {PACKAGE}"))?;
    Ok((PathBuf::from(target), version.to_owned()))
}

/// Writes the consumer crate into `dir`, depending on `unpacked` by path.
fn write_consumer(dir: &Path, unpacked: &Path) -> Result<()> {
    let path = unpacked
        .to_str()
        .context("the unpacked crate's path is not UTF-8")?;
    // A JSON string is a TOML basic string.
    let path = serde_json::to_string(path)?;
    let manifest = format!(
        r#"[package]
name = "shim-registry-consumer"
version = "0.0.0"
edition = "2024"
publish = false

[dependencies]
shim-registry = {{ path = {path} }}

[dev-dependencies]
oci-client = {{ version = "0.18", default-features = false, features = ["rustls-tls-no-provider"] }}
rustls = {{ version = "0.23", default-features = false, features = ["ring"] }}
tokio = {{ version = "1", features = ["macros", "rt-multi-thread"] }}

# A workspace of its own: nothing above the temporary folder is looked at.
[workspace]
"#
    );
    fs::write(dir.join("Cargo.toml"), manifest)?;
    fs::create_dir_all(dir.join("src"))?;
    fs::write(
        dir.join("src/lib.rs"),
        "//! Depends on shim-registry; see tests/.\n",
    )?;
    fs::create_dir_all(dir.join("tests"))?;
    fs::write(dir.join("tests/push_pull.rs"), CONSUMER_TEST)?;
    // The workspace's versions: downloaded and partly built already.
    fs::copy(root().join("Cargo.lock"), dir.join("Cargo.lock"))
        .context("cannot copy the workspace's Cargo.lock")?;
    Ok(())
}

/// Downloads the consumer's dependencies for this machine's target: from
/// cargo's cache alone when it has them all (true), else from the registry.
fn fetch(dir: &Path, target: &Path) -> Result<bool> {
    let host = host_triple()?;
    let fetch = |offline: bool| {
        let mut cmd = cargo(dir);
        cmd.args(["fetch", "--target", &host])
            .env("CARGO_TARGET_DIR", target);
        if offline {
            cmd.arg("--offline");
        }
        cmd
    };
    let offline = fetch(true).output().context("cannot run cargo fetch")?;
    if offline.status.success() {
        return Ok(true);
    }
    println!("package: some crates are not in cargo's cache; fetching them");
    sh::run(&mut fetch(false))?;
    Ok(false)
}

/// The target triple rustc builds for by default (`host:` of `rustc -vV`).
fn host_triple() -> Result<String> {
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".to_owned());
    let out = Command::new(rustc)
        .arg("-vV")
        .output()
        .context("cannot run rustc -vV")?;
    ensure!(out.status.success(), "rustc -vV failed: {}", out.status);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("host: "))
        .map(str::to_owned)
        .context("rustc -vV names no host")
}

/// Every package in the consumer's dependency tree (normal, build and dev
/// edges), as `name vVERSION[ (source)]`.
fn consumer_tree(dir: &Path, target: &Path, net: &[&str]) -> Result<Vec<String>> {
    let out = cargo(dir)
        .args([
            "tree",
            "--edges",
            "normal,build,dev",
            "--prefix",
            "none",
            "--format",
            "{p}",
        ])
        .args(net)
        .env("CARGO_TARGET_DIR", target)
        .output()
        .context("cannot run cargo tree")?;
    ensure!(
        out.status.success(),
        "cargo tree failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.trim_end_matches(" (*)").to_owned())
        .collect())
}

/// `cargo` (the one running xtask) in `dir`.
fn cargo(dir: &Path) -> Command {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(dir);
    cmd
}

fn secs(since: Instant) -> f64 {
    since.elapsed().as_secs_f64()
}
