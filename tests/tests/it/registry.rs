//! Real clients against `shim-registry`: `docker push` from the daemon under
//! test, and a `skopeo copy` round trip.
//!
//! The registry is spawned in this process on 127.0.0.1:0 with memory
//! storage; 127.0.0.0/8 is an insecure registry for every daemon, and the
//! registry speaks TLS (self-signed) and plain HTTP on the same port.

use std::path::Path;
use std::process::{Command, Output};
use std::sync::Arc;

use sha2::Digest as _;
use shim_registry::{ChannelSink, Registry, RegistryEvent, RegistryHandle};
use testkit::{Daemon, Engine, ImageBuilder, Store, daemon_or_skip, unique_name};
use tokio::sync::mpsc::UnboundedReceiver;

fn sha256(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(data)))
}

async fn spawn_registry() -> (RegistryHandle, UnboundedReceiver<RegistryEvent>) {
    let (sink, events) = ChannelSink::new();
    let registry = Registry::builder()
        .event_sink(Arc::new(sink))
        .build()
        .expect("registry builds");
    let handle = registry
        .spawn("127.0.0.1:0".parse().expect("address"))
        .await
        .expect("registry spawns");
    (handle, events)
}

/// Runs a blocking command without stalling the registry's runtime.
async fn blocking(f: impl FnOnce() -> Output + Send + 'static) -> Output {
    tokio::task::spawn_blocking(f).await.expect("command task")
}

#[track_caller]
fn assert_success(what: &str, out: &Output) {
    assert!(
        out.status.success(),
        "{what} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The blobs (config first, then layers) a manifest names, with sizes.
fn manifest_blobs(manifest: &serde_json::Value) -> Vec<(String, u64)> {
    let mut blobs = vec![(
        manifest["config"]["digest"]
            .as_str()
            .expect("config digest")
            .to_owned(),
        manifest["config"]["size"].as_u64().expect("config size"),
    )];
    for layer in manifest["layers"].as_array().expect("layers") {
        blobs.push((
            layer["digest"].as_str().expect("layer digest").to_owned(),
            layer["size"].as_u64().expect("layer size"),
        ));
    }
    blobs
}

/// Fetches every blob of `manifest` from the registry and checks digest and size.
async fn assert_blobs_stored(base: &str, repository: &str, manifest: &serde_json::Value) {
    let client = reqwest::Client::new();
    for (digest, size) in manifest_blobs(manifest) {
        let r = client
            .get(format!("{base}/v2/{repository}/blobs/{digest}"))
            .send()
            .await
            .expect("blob GET");
        assert_eq!(r.status(), reqwest::StatusCode::OK, "blob {digest}");
        let data = r.bytes().await.expect("blob body");
        assert_eq!(data.len() as u64, size, "size of {digest}");
        assert_eq!(sha256(&data), digest, "content of {digest}");
    }
}

fn small_image(daemon: &Daemon, prefix: &str) -> testkit::BuiltImage {
    ImageBuilder::new(&format!("{}:1", unique_name(prefix)))
        .busybox()
        .random_file("/data/random", 300_000, 7)
        .file("/data/hello", "hello from dlgrab\n")
        .run("echo built > /data/run")
        .build(daemon)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_push_into_the_shim() {
    let Some(daemon) = daemon_or_skip("registry::docker_push_into_the_shim") else {
        return;
    };
    let image = small_image(&daemon, "dlgrab-test/shim-push");
    let (handle, mut events) = spawn_registry().await;
    let repository = unique_name("dlgrab-test/pushed");
    let target = format!("127.0.0.1:{}/{repository}:t", handle.addr().port());

    let d = daemon.clone();
    let (src, dst) = (image.tag.clone(), target.clone());
    let out = blocking(move || d.docker(["tag", src.as_str(), dst.as_str()])).await;
    assert_success("docker tag", &out);
    let d = daemon.clone();
    let dst = target.clone();
    let pushed = blocking(move || d.docker(["push", dst.as_str()])).await;
    let d = daemon.clone();
    let (dst, built) = (target.clone(), image.tag.clone());
    blocking(move || {
        d.remove_image(&dst);
        d.remove_image(&built);
        Command::new("true").output().expect("true")
    })
    .await;
    assert_success("docker push", &pushed);

    let mut manifest = None;
    while let Ok(event) = events.try_recv() {
        if let RegistryEvent::ManifestPut {
            repository: r,
            reference,
            digest,
            body,
            ..
        } = event
        {
            assert_eq!(r, repository);
            assert_eq!(sha256(&body), digest.to_string());
            if reference == "t" {
                manifest = Some((digest, body));
            }
        }
    }
    let (digest, body) = manifest.expect("a manifest was pushed for tag t");
    let stdout = String::from_utf8_lossy(&pushed.stdout);
    assert!(
        stdout.contains(&digest.to_string()),
        "push output names {digest}: {stdout}"
    );
    let manifest: serde_json::Value = serde_json::from_slice(&body).expect("manifest is json");
    let layers = manifest["layers"].as_array().expect("layers").len();
    assert_eq!(
        layers,
        image.layer_diff_ids.len(),
        "one pushed layer per diff id"
    );
    if daemon.store == Store::Classic {
        assert_eq!(
            manifest["config"]["digest"],
            image.id.as_str(),
            "config is the image id"
        );
    }
    assert_blobs_stored(&handle.url(), &repository, &manifest).await;
    handle.shutdown().await;
}

fn skopeo_available() -> bool {
    Command::new("skopeo")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[expect(clippy::print_stderr, reason = "a skipped test says why on stderr")]
async fn skopeo_round_trip_through_the_shim() {
    let Some(daemon) = daemon_or_skip("registry::skopeo_round_trip_through_the_shim") else {
        return;
    };
    if !skopeo_available() {
        eprintln!("SKIP registry::skopeo_round_trip_through_the_shim: skopeo is not installed");
        return;
    }
    let image = small_image(&daemon, "dlgrab-test/shim-skopeo");
    let work = tempfile::tempdir().expect("temp dir");
    let archive = work.path().join("image.tar");
    let d = daemon.clone();
    let (tag, path) = (image.tag.clone(), archive.clone());
    let saved = blocking(move || {
        let out = d.docker([
            "save",
            "-o",
            path.to_str().expect("utf-8 path"),
            tag.as_str(),
        ]);
        d.remove_image(&tag);
        out
    })
    .await;
    assert_success("docker save", &saved);

    let (handle, _events) = spawn_registry().await;
    let repository = unique_name("dlgrab-test/skopeo");
    let remote = format!("docker://127.0.0.1:{}/{repository}:t", handle.addr().port());
    let source = format!("docker-archive:{}", archive.display());
    let dest = work.path().join("out");
    let dest_ref = format!("dir:{}", dest.display());
    let (r1, r2) = (remote.clone(), remote.clone());
    let copied_in = blocking(move || {
        Command::new("skopeo")
            .args(["copy", "--dest-tls-verify=false", &source, &r1])
            .output()
            .expect("skopeo runs")
    })
    .await;
    assert_success("skopeo copy into the shim", &copied_in);
    let copied_out = blocking(move || {
        Command::new("skopeo")
            .args(["copy", "--src-tls-verify=false", &r2, &dest_ref])
            .output()
            .expect("skopeo runs")
    })
    .await;
    assert_success("skopeo copy out of the shim", &copied_out);

    // The manifest skopeo fetched is the one stored, and every blob file in
    // the dir: copy hashes to its name.
    let fetched = std::fs::read(dest.join("manifest.json")).expect("manifest.json");
    let r = reqwest::Client::new()
        .get(format!("{}/v2/{repository}/manifests/t", handle.url()))
        .send()
        .await
        .expect("manifest GET");
    let stored_digest = r
        .headers()
        .get("docker-content-digest")
        .expect("digest header")
        .to_str()
        .expect("ascii")
        .to_owned();
    let stored = r.bytes().await.expect("manifest body");
    assert_eq!(stored, fetched, "manifest bytes survive the round trip");
    assert_eq!(sha256(&fetched), stored_digest);
    let manifest: serde_json::Value = serde_json::from_slice(&fetched).expect("json");
    for (digest, size) in manifest_blobs(&manifest) {
        let hex = digest.strip_prefix("sha256:").expect("sha256 digest");
        let data = std::fs::read(dest.join(hex)).unwrap_or_else(|e| panic!("blob {digest}: {e}"));
        assert_eq!(data.len() as u64, size);
        assert_eq!(sha256(&data), digest);
    }
    assert_blobs_stored(&handle.url(), &repository, &manifest).await;
    assert!(Path::new(&dest).join("version").exists());
    handle.shutdown().await;
}

/// A registry with Bearer auth (token endpoint) and one user.
async fn spawn_bearer_registry(user: &str, password: &str) -> RegistryHandle {
    use shim_registry::auth::Auth;
    Registry::builder()
        .auth(Auth::bearer().user(user, password))
        .build()
        .expect("registry builds")
        .spawn("127.0.0.1:0".parse().expect("address"))
        .await
        .expect("registry spawns")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_login_push_and_pull_with_bearer_tokens() {
    let Some(daemon) = daemon_or_skip("registry::docker_login_push_and_pull_with_bearer_tokens")
    else {
        return;
    };
    let image = small_image(&daemon, "dlgrab-test/shim-login");
    let handle = spawn_bearer_registry("tester", "pw-123").await;
    // Podman's compat `POST /auth` verifies the registry's certificate
    // whatever registries.conf says, except for a server address starting
    // with `localhost:` ("support for local testing", its
    // pkg/api/handlers/compat/auth.go); registries.conf makes `localhost`
    // insecure for its push and pull.
    let host = match daemon.engine {
        Engine::Podman => "localhost",
        Engine::Docker => "127.0.0.1",
    };
    let registry = format!("{host}:{}", handle.addr().port());
    let target = format!("{registry}/{}:t", unique_name("dlgrab-test/login"));
    // `docker login` writes its credentials into DOCKER_CONFIG: a temporary
    // one, never the user's.
    let config = tempfile::tempdir().expect("temp dir");
    let config_dir = config.path().to_owned();
    let d = daemon.clone();
    let (src, dst, reg) = (image.tag.clone(), target.clone(), registry.clone());
    let (login_refused, login, pushed, pulled) = tokio::task::spawn_blocking(move || {
        use std::io::Write;
        let docker = |args: &[&str], stdin: &str| {
            let mut cmd = d.command();
            cmd.env("DOCKER_CONFIG", &config_dir)
                .args(args)
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped());
            let mut child = cmd.spawn().expect("docker runs");
            child
                .stdin
                .take()
                .expect("stdin")
                .write_all(stdin.as_bytes())
                .expect("stdin written");
            child.wait_with_output().expect("docker ends")
        };
        let refused = docker(
            &["login", "-u", "tester", "--password-stdin", &reg],
            "wrong",
        );
        let login = docker(
            &["login", "-u", "tester", "--password-stdin", &reg],
            "pw-123",
        );
        let tagged = docker(&["tag", &src, &dst], "");
        assert_success("docker tag", &tagged);
        let pushed = docker(&["push", &dst], "");
        let _ = docker(&["rmi", &dst], "");
        let pulled = docker(&["pull", &dst], "");
        d.remove_image(&dst);
        d.remove_image(&src);
        (refused, login, pushed, pulled)
    })
    .await
    .expect("docker commands");
    assert!(
        !login_refused.status.success(),
        "docker login with a wrong password succeeded"
    );
    assert_success("docker login", &login);
    // dockerd asks for offline access and hands the refresh token to the
    // CLI, which keeps it instead of the password: the push and pull below
    // trade it for access tokens (a refresh-token grant). Podman's compat
    // API returns no identity token, so the password is kept there.
    let stored: serde_json::Value = serde_json::from_slice(
        &std::fs::read(config.path().join("config.json")).expect("docker login's config.json"),
    )
    .expect("config.json is json");
    let identity_token = stored["auths"][&registry]["identitytoken"].as_str();
    match daemon.engine {
        Engine::Docker => assert!(
            identity_token.is_some_and(|t| !t.is_empty()),
            "no identity token stored: {stored}"
        ),
        Engine::Podman => assert_eq!(identity_token, None, "{stored}"),
    }
    assert_success("docker push with a token", &pushed);
    assert_success("docker pull with a token", &pulled);
    // Without the token, the registry answers nothing.
    let r = reqwest::Client::new()
        .get(format!("{}/v2/", handle.url()))
        .send()
        .await
        .expect("GET /v2/");
    assert_eq!(r.status(), reqwest::StatusCode::UNAUTHORIZED);
    handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[expect(
    clippy::print_stderr,
    reason = "the number of answers and the run's time, on stderr"
)]
async fn dlgrab_registry_answers_only_its_run() {
    let Some(daemon) = daemon_or_skip("registry::dlgrab_registry_answers_only_its_run") else {
        return;
    };
    let image = ImageBuilder::new(&format!("{}:1", unique_name("dlgrab-test/only-run")))
        .busybox()
        .random_file("/data/random", 8 << 20, 11)
        .build(&daemon);
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("free port");
        listener.local_addr().expect("address").port()
    };
    let out = tempfile::tempdir().expect("temp dir");
    let port_arg = port.to_string();
    let mut child = daemon
        .dlgrab_command(&[
            &image.tag,
            "--via",
            "push",
            "-q",
            "-p",
            &port_arg,
            "-o",
            out.path().to_str().expect("utf-8 path"),
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("dlgrab runs");
    // Knock while the run lasts (bounded: the run ends, or 5 minutes).
    let started = std::time::Instant::now();
    let client = reqwest::Client::builder()
        .danger_accept_invalid_certs(true)
        .timeout(std::time::Duration::from_secs(5))
        .build()
        .expect("client");
    let mut answers = Vec::new();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(300);
    while child.try_wait().expect("dlgrab state").is_none() && std::time::Instant::now() < deadline
    {
        for scheme in ["http", "https"] {
            for path in ["/v2/", "/v2/_catalog", "/v2/x/tags/list"] {
                if let Ok(r) = client
                    .get(format!("{scheme}://127.0.0.1:{port}{path}"))
                    .send()
                    .await
                {
                    let challenge = r
                        .headers()
                        .get("www-authenticate")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default()
                        .to_owned();
                    answers.push((scheme, path, r.status(), challenge));
                }
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let output = child.wait_with_output().expect("dlgrab ends");
    daemon.remove_image(&image.tag);
    eprintln!(
        "registry::dlgrab_registry_answers_only_its_run: {} answers in {:?}",
        answers.len(),
        started.elapsed()
    );
    testkit::succeeded(&output);
    assert!(
        !answers.is_empty(),
        "the registry never answered while the run lasted"
    );
    for (scheme, path, status, challenge) in &answers {
        assert_eq!(
            *status,
            reqwest::StatusCode::UNAUTHORIZED,
            "{scheme} {path} answered without credentials"
        );
        assert!(challenge.starts_with("Basic realm="), "{challenge}");
    }
}
