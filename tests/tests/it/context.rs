//! Finding the daemon as the Docker CLI does, end to end: contexts in a
//! temporary `DOCKER_CONFIG` (made by the real `docker context create`)
//! pointing at the daemon under test, at another daemon of the matrix and
//! at none, chosen by `--context`, `DOCKER_CONTEXT`, `currentContext` and
//! `DOCKER_HOST`; a mutual-TLS context on loopback (a TLS proxy in front of
//! the daemon's socket); and dlgrab run by the real `docker` CLI as its
//! `dlgrab` plugin.
//!
//! Each test builds a one-layer image with unique content on the daemon
//! under test only, so a successful export shows which daemon was reached.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Arc;

use testkit::{BuiltImage, Daemon, ImageBuilder, daemon_or_skip, dlgrab_bin, unique_name};

/// Variables that would choose a daemon behind the test's back.
const DAEMON_VARS: [&str; 6] = [
    "DOCKER_HOST",
    "DOCKER_CONTEXT",
    "DOCKER_TLS_VERIFY",
    "DOCKER_TLS",
    "DOCKER_CERT_PATH",
    "RUST_LOG",
];

/// An image only the daemon under test has, a Docker CLI config folder of
/// the test's own, and the removal of the image however the test ends.
struct Setup {
    daemon: Daemon,
    image: BuiltImage,
    config: tempfile::TempDir,
}

impl Drop for Setup {
    fn drop(&mut self) {
        self.image.remove(&self.daemon);
    }
}

impl Setup {
    fn new(test: &str) -> Option<Setup> {
        let daemon = daemon_or_skip(test)?;
        let tag = format!("{}:ctx", unique_name("dlgrab-test/context"));
        let image = ImageBuilder::new(&tag)
            .file("/which", format!("{tag} on {}\n", daemon.host))
            .build(&daemon);
        let config = tempfile::tempdir().expect("temp dir");
        Some(Setup {
            daemon,
            image,
            config,
        })
    }

    fn config_dir(&self) -> &Path {
        self.config.path()
    }

    /// A command with this config folder and no daemon variables.
    fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = Command::new(program);
        for var in DAEMON_VARS {
            cmd.env_remove(var);
        }
        cmd.env("DOCKER_CONFIG", self.config_dir())
            .stdin(Stdio::null());
        cmd
    }

    /// `docker ARGS` with this config folder; panics unless it succeeds.
    #[track_caller]
    fn docker(&self, args: &[&str]) -> String {
        let out = self
            .command("docker")
            .args(args)
            .output()
            .expect("docker runs");
        assert!(
            out.status.success(),
            "docker {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `docker context create NAME --docker SPEC`.
    #[track_caller]
    fn context(&self, name: &str, spec: &str) {
        self.docker(&["context", "create", name, "--docker", spec]);
    }

    /// A context whose socket nobody listens on.
    #[track_caller]
    fn nowhere(&self, name: &str) {
        let socket = self.config_dir().join("nobody-listens.sock");
        self.context(name, &format!("host=unix://{}", socket.display()));
    }

    /// `dlgrab ARGS IMAGE -o <fresh dir> --json` with `env` set.
    fn export(&self, cmd: Command, args: &[&str], env: &[(&str, &str)]) -> Output {
        let mut cmd = cmd;
        let out = tempfile::tempdir().expect("temp dir");
        cmd.args(args)
            .args([self.image.tag.as_str(), "--json", "-o"])
            .arg(out.path());
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.output().expect("dlgrab runs")
    }

    fn dlgrab(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        self.export(self.command(dlgrab_bin()), args, env)
    }

    /// `docker GLOBAL… dlgrab IMAGE …` through the real CLI.
    fn plugin(&self, global: &[&str], env: &[(&str, &str)]) -> Output {
        let mut cmd = self.command("docker");
        cmd.args(global).arg("dlgrab");
        self.export(cmd, &[], env)
    }

    /// The run exported the image's layer (so it reached the daemon under test).
    #[track_caller]
    fn exported(&self, out: &Output, what: &str) {
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{what}: dlgrab failed ({}):\nstdout:\n{stdout}\nstderr:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        let items = testkit::items(&stdout);
        assert_eq!(
            items[0]["diff_id"],
            self.image.layer_diff_ids.last().expect("a layer").as_str(),
            "{what}: {stdout}"
        );
    }
}

/// The run failed with a message holding every one of `needles`.
#[track_caller]
fn failed(out: &Output, needles: &[&str], what: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{what}: should have failed");
    assert!(!stderr.contains("panicked"), "{what}: panicked:\n{stderr}");
    for needle in needles {
        assert!(
            stderr.contains(needle),
            "{what}: stderr should mention {needle:?}:\n{stderr}"
        );
    }
}

/// Another daemon of the matrix that answers, if any.
fn other_daemon(than: &Daemon) -> Option<String> {
    let sockets = [
        "/var/run/docker.sock",
        "/run/dlgrab-xtask/b.sock",
        "/run/dlgrab-xtask/c.sock",
    ];
    sockets
        .iter()
        .map(|s| format!("unix://{s}"))
        .filter(|host| *host != than.host && Path::new(&host["unix://".len()..]).exists())
        .find(|host| {
            Command::new("docker")
                .args(["version", "--format", "{{.Server.Version}}"])
                .env("DOCKER_HOST", host)
                .env_remove("DOCKER_CONTEXT")
                .stdin(Stdio::null())
                .output()
                .is_ok_and(|o| o.status.success())
        })
}

#[test]
#[expect(clippy::print_stderr, reason = "a skipped case says why on stderr")]
fn contexts_choose_the_daemon_as_the_docker_cli_does() {
    let Some(s) = Setup::new("contexts_choose_the_daemon_as_the_docker_cli_does") else {
        return;
    };
    let here = format!("host={}", s.daemon.host);
    s.context("here", &here);
    s.nowhere("nowhere");
    s.docker(&["context", "use", "nowhere"]);

    // currentContext is followed: nobody listens there.
    let out = s.dlgrab(&[], &[]);
    failed(
        &out,
        &["context \"nowhere\"", "nobody-listens.sock"],
        "currentContext",
    );
    // --context beats currentContext and DOCKER_CONTEXT; -c is the same.
    s.exported(&s.dlgrab(&["--context", "here"], &[]), "--context");
    let env = [("DOCKER_CONTEXT", "nowhere")];
    s.exported(&s.dlgrab(&["-c", "here"], &env), "-c over DOCKER_CONTEXT");
    // DOCKER_CONTEXT beats currentContext.
    let env = [("DOCKER_CONTEXT", "here")];
    s.exported(&s.dlgrab(&[], &env), "DOCKER_CONTEXT");
    // DOCKER_HOST beats DOCKER_CONTEXT and currentContext.
    let env = [
        ("DOCKER_HOST", s.daemon.host.as_str()),
        ("DOCKER_CONTEXT", "nowhere"),
    ];
    s.exported(&s.dlgrab(&[], &env), "DOCKER_HOST");
    // ...but not --context.
    let env = [("DOCKER_HOST", s.daemon.host.as_str())];
    let out = s.dlgrab(&["--context", "nowhere"], &env);
    failed(&out, &["context \"nowhere\""], "--context over DOCKER_HOST");

    // currentContext after `docker context use here`.
    s.docker(&["context", "use", "here"]);
    s.exported(&s.dlgrab(&[], &[]), "currentContext");
    let env = [("DOCKER_CONTEXT", "nowhere")];
    failed(
        &s.dlgrab(&[], &env),
        &["context \"nowhere\""],
        "DOCKER_CONTEXT",
    );

    // A context that does not exist: named, with the file looked for.
    let out = s.dlgrab(&["--context", "missing"], &[]);
    let meta = s.config_dir().join("contexts").join("meta");
    failed(
        &out,
        &["\"missing\"", &meta.display().to_string(), "meta.json"],
        "missing context",
    );

    // Another daemon of the matrix lacks the image: dlgrab asked that one.
    match other_daemon(&s.daemon) {
        Some(host) => {
            s.context("other", &format!("host={host}"));
            let out = s.dlgrab(&["--context", "other"], &[]);
            failed(&out, &["no such image"], "context of another daemon");
        }
        None => eprintln!("note: no other daemon of the matrix answers; that case is skipped"),
    }
}

#[test]
fn plugin_runs_through_the_docker_cli() {
    let Some(s) = Setup::new("plugin_runs_through_the_docker_cli") else {
        return;
    };
    let plugins = s.config_dir().join("cli-plugins");
    std::fs::create_dir_all(&plugins).expect("cli-plugins folder");
    let plugin = plugins.join("docker-dlgrab");
    std::os::unix::fs::symlink(dlgrab_bin(), &plugin).expect("plugin symlink");

    // The metadata the CLI asks for, and the CLI listing the plugin.
    let out = s
        .command(&plugin)
        .arg("docker-cli-plugin-metadata")
        .output()
        .expect("plugin runs");
    assert!(out.status.success());
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout).expect("metadata JSON");
    assert_eq!(meta["SchemaVersion"], "0.1.0");
    assert_eq!(meta["Vendor"], "dlgrab");
    assert!(meta["Version"].as_str().is_some_and(|v| !v.is_empty()));
    let help = s.docker(&["--help"]);
    assert!(
        help.lines()
            .any(|l| l.trim_start().starts_with("dlgrab*") && l.contains("Export")),
        "docker --help does not list the plugin:\n{help}"
    );
    let usage = s.docker(&["dlgrab", "--help"]);
    assert!(usage.contains("docker dlgrab"), "{usage}");

    let here = format!("host={}", s.daemon.host);
    s.context("here", &here);
    s.nowhere("nowhere");
    s.docker(&["context", "use", "nowhere"]);

    // `docker --context here dlgrab …`: the global option reaches the plugin.
    s.exported(&s.plugin(&["--context", "here"], &[]), "docker --context");
    s.exported(&s.plugin(&["-c", "here"], &[]), "docker -c");
    let host = s.daemon.host.clone();
    s.exported(&s.plugin(&["-H", &host], &[]), "docker -H");
    let out = s.plugin(&[], &[]);
    failed(
        &out,
        &["context \"nowhere\""],
        "docker dlgrab with currentContext",
    );
    // `docker context use here`, then plain `docker dlgrab …`.
    s.docker(&["context", "use", "here"]);
    s.exported(&s.plugin(&[], &[]), "docker dlgrab after context use");
    let out = s.plugin(&[], &[("DOCKER_CONTEXT", "nowhere")]);
    failed(
        &out,
        &["context \"nowhere\""],
        "docker dlgrab with DOCKER_CONTEXT",
    );
    // `docker --config DIR`: the plugin reads that folder's contexts.
    let moved = tempfile::tempdir().expect("temp dir");
    let copied = moved.path().join("cfg");
    copy_dir(s.config_dir(), &copied);
    let mut cmd = s.command("docker");
    cmd.env("DOCKER_CONFIG", "/nonexistent")
        .arg("--config")
        .arg(&copied)
        .arg("dlgrab");
    s.exported(&s.export(cmd, &[], &[]), "docker --config");
}

/// Copies a folder tree (files, folders and symbolic links).
fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read_dir") {
        let entry = entry.expect("entry");
        let (src, dst) = (entry.path(), to.join(entry.file_name()));
        let kind = entry.file_type().expect("file type");
        if kind.is_dir() {
            copy_dir(&src, &dst);
        } else if kind.is_symlink() {
            let target = std::fs::read_link(&src).expect("readlink");
            std::os::unix::fs::symlink(target, &dst).expect("symlink");
        } else {
            std::fs::copy(&src, &dst).expect("copy");
        }
    }
}

#[test]
#[expect(clippy::print_stderr, reason = "a skipped case says why on stderr")]
fn tls_context_on_loopback() {
    let Some(s) = Setup::new("tls_context_on_loopback") else {
        return;
    };
    let Some(socket) = s.daemon.host.strip_prefix("unix://") else {
        eprintln!("SKIP tls_context_on_loopback: the daemon is not on a unix socket");
        return;
    };
    let pki = Pki::new(s.config_dir());
    let proxy = TlsProxy::start(&pki, PathBuf::from(socket));
    let host = format!("tcp://127.0.0.1:{}", proxy.port);
    let files = |ca: &Path| {
        format!(
            "host={host},ca={},cert={},key={}",
            ca.display(),
            pki.client_cert.display(),
            pki.client_key.display()
        )
    };
    // Verified both ways: the daemon's certificate against the context's
    // CA, the client's certificate by the proxy.
    s.context("mtls", &files(&pki.ca));
    s.exported(&s.dlgrab(&["--context", "mtls"], &[]), "mutual TLS context");
    // SkipTLSVerify: any server certificate, the client one still sent.
    s.context(
        "skip",
        &format!(
            "host={host},cert={},key={},skip-tls-verify=true",
            pki.client_cert.display(),
            pki.client_key.display()
        ),
    );
    s.exported(&s.dlgrab(&["--context", "skip"], &[]), "skip-tls-verify");
    // The default context with DOCKER_TLS_VERIFY and DOCKER_CERT_PATH.
    let env = [
        ("DOCKER_HOST", host.as_str()),
        ("DOCKER_TLS_VERIFY", "1"),
        ("DOCKER_CERT_PATH", pki.dir.to_str().expect("utf-8")),
    ];
    s.exported(&s.dlgrab(&[], &env), "DOCKER_TLS_VERIFY");
    // A CA that did not sign the daemon's certificate: refused.
    s.context("wrong-ca", &files(&pki.other_ca));
    let out = s.dlgrab(&["--context", "wrong-ca"], &[]);
    failed(&out, &["context \"wrong-ca\""], "wrong CA");
    // No client certificate: the proxy refuses.
    s.context(
        "no-client-cert",
        &format!("host={host},ca={}", pki.ca.display()),
    );
    let out = s.dlgrab(&["--context", "no-client-cert"], &[]);
    failed(
        &out,
        &["context \"no-client-cert\""],
        "no client certificate",
    );
    // Plain HTTP to a TLS port is no way in either.
    s.context("plain", &format!("host={host}"));
    assert!(!s.dlgrab(&["--context", "plain"], &[]).status.success());
    drop(proxy);
}

/// A CA, the daemon's certificate for 127.0.0.1 and a client certificate,
/// as PEM files in `dir` (named as `DOCKER_CERT_PATH` wants them), plus an
/// unrelated CA.
struct Pki {
    dir: PathBuf,
    ca: PathBuf,
    other_ca: PathBuf,
    client_cert: PathBuf,
    client_key: PathBuf,
    server_cert: String,
    server_key: String,
    ca_pem: String,
}

impl Pki {
    fn new(parent: &Path) -> Pki {
        use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
        let dir = parent.join("pki");
        std::fs::create_dir_all(&dir).expect("pki dir");
        let ca_params = || {
            let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
            params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            params
        };
        let ca_key = KeyPair::generate().expect("key");
        let ca_cert = ca_params().self_signed(&ca_key).expect("CA");
        let issuer = rcgen::Issuer::new(ca_params(), ca_key);
        let other_key = KeyPair::generate().expect("key");
        let other_ca = ca_params().self_signed(&other_key).expect("other CA");
        let server_key = KeyPair::generate().expect("key");
        let server_cert = CertificateParams::new(vec!["127.0.0.1".to_owned()])
            .expect("params")
            .signed_by(&server_key, &issuer)
            .expect("server cert");
        let client_key = KeyPair::generate().expect("key");
        let client_cert = CertificateParams::new(vec!["client".to_owned()])
            .expect("params")
            .signed_by(&client_key, &issuer)
            .expect("client cert");
        let write = |name: &str, pem: String| {
            let path = dir.join(name);
            std::fs::write(&path, pem).expect("write pem");
            path
        };
        Pki {
            ca: write("ca.pem", ca_cert.pem()),
            other_ca: write("other-ca.pem", other_ca.pem()),
            client_cert: write("cert.pem", client_cert.pem()),
            client_key: write("key.pem", client_key.serialize_pem()),
            server_cert: server_cert.pem(),
            server_key: server_key.serialize_pem(),
            ca_pem: ca_cert.pem(),
            dir,
        }
    }
}

/// A TLS endpoint on 127.0.0.1 that demands a client certificate of the
/// test CA and forwards each connection to the daemon's unix socket. It
/// stops when dropped.
struct TlsProxy {
    port: u16,
    runtime: Option<tokio::runtime::Runtime>,
}

impl TlsProxy {
    fn start(pki: &Pki, socket: PathBuf) -> TlsProxy {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(CertificateDer::from_pem_slice(pki.ca_pem.as_bytes()).expect("CA pem"))
            .expect("CA");
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            roots.into(),
            provider.clone(),
        )
        .build()
        .expect("client verifier");
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_client_cert_verifier(verifier)
            .with_single_cert(
                vec![CertificateDer::from_pem_slice(pki.server_cert.as_bytes()).expect("cert")],
                PrivateKeyDer::from_pem_slice(pki.server_key.as_bytes()).expect("key"),
            )
            .expect("server config");
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .expect("bind 127.0.0.1");
        let port = listener.local_addr().expect("address").port();
        runtime.spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let (acceptor, socket) = (acceptor.clone(), socket.clone());
                tokio::spawn(async move {
                    // A refused handshake just ends the connection.
                    let Ok(mut tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let Ok(mut unix) = tokio::net::UnixStream::connect(&socket).await else {
                        return;
                    };
                    let _ = tokio::io::copy_bidirectional(&mut tls, &mut unix).await;
                });
            }
        });
        TlsProxy {
            port,
            runtime: Some(runtime),
        }
    }
}

impl Drop for TlsProxy {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}
