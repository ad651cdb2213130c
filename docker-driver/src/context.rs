//! Which daemon to talk to, decided as the Docker CLI decides it.
//!
//! The CLI's order (docker/cli `resolveContextName`): `--context NAME`;
//! else `--host` or `DOCKER_HOST`, which mean the `default` context; else
//! `DOCKER_CONTEXT`; else `currentContext` of `config.json` in the CLI's
//! config folder (`--config`, `DOCKER_CONFIG`, or `~/.docker`); else
//! `default`. The `default` context is `--host`, `DOCKER_HOST` or the
//! default socket, with TLS from `DOCKER_TLS_VERIFY`, `DOCKER_TLS` and
//! `DOCKER_CERT_PATH`. Any other context is read from the context store:
//! `contexts/meta/<sha256 of the name>/meta.json` (its `Endpoints.docker`
//! gives `Host` and `SkipTLSVerify`) and the TLS material beside it in
//! `contexts/tls/<sha256 of the name>/docker/{ca,cert,key}.pem`.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::error::DriverError;
use crate::transport::Endpoint;

/// The name of the context that means "no context": the default socket or
/// `DOCKER_HOST`.
pub const DEFAULT_CONTEXT: &str = "default";
/// The socket used when nothing names another daemon.
pub const DEFAULT_HOST: &str = "unix:///var/run/docker.sock";

/// The Docker CLI's global options that choose the daemon; what is not set
/// here comes from the environment and the CLI's config folder.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DaemonSelection {
    /// `--context NAME` (`-c`).
    pub context: Option<String>,
    /// `--host ADDRESS` (`-H`).
    pub host: Option<String>,
    /// `--config DIR`: the CLI's config folder, instead of `DOCKER_CONFIG`
    /// or `~/.docker`.
    pub config_dir: Option<PathBuf>,
}

/// The daemon to connect to, and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DaemonEndpoint {
    /// The context it was found through (`default` when none).
    pub context: String,
    /// The daemon's address: `unix:///…`, `tcp://…`, `http://…` or `ssh://…`.
    pub host: String,
    /// TLS for a `tcp://` address; `None` speaks plain HTTP.
    pub tls: Option<TlsFiles>,
    /// What chose it, for messages.
    pub chosen_by: ChosenBy,
}

/// What chose the daemon, as a message about it says (after its address,
/// in parentheses) and what a user can change to pick another.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ChosenBy {
    /// `--context NAME`.
    ContextOption(String),
    /// `--host` (`docker -H`), or a host the caller gave.
    HostOption,
    /// The `DOCKER_HOST` variable.
    DockerHost,
    /// The `DOCKER_CONTEXT` variable, naming this context.
    DockerContext(String),
    /// The Docker CLI's current context (`docker context use`), read from
    /// this `config.json`.
    CurrentContext {
        /// The context's name.
        name: String,
        /// The `config.json` naming it.
        config: PathBuf,
    },
    /// Nothing named a daemon: the default socket.
    Default,
}

impl std::fmt::Display for ChosenBy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ChosenBy::ContextOption(name) => write!(f, "docker context {name:?}, from --context"),
            ChosenBy::HostOption => f.write_str("from --host"),
            ChosenBy::DockerHost => f.write_str("from DOCKER_HOST"),
            ChosenBy::DockerContext(name) => {
                write!(f, "docker context {name:?}, from DOCKER_CONTEXT")
            }
            ChosenBy::CurrentContext { name, config } => write!(
                f,
                "docker context {name:?}, the current one in {}",
                config.display()
            ),
            ChosenBy::Default => {
                f.write_str("the default socket: no DOCKER_HOST, and no docker context chosen")
            }
        }
    }
}

impl ChosenBy {
    /// What to change to reach another daemon, as a sentence.
    pub fn how_to_change(&self) -> String {
        const LIST: &str = "`docker context ls` lists the contexts";
        match self {
            ChosenBy::ContextOption(_) => {
                format!("Or name another context with --context ({LIST}).")
            }
            ChosenBy::HostOption => "Or give another address to --host.".to_owned(),
            ChosenBy::DockerHost => {
                format!("Or fix DOCKER_HOST, or unset it to use the docker context ({LIST}).")
            }
            ChosenBy::DockerContext(_) => {
                format!("Or set DOCKER_CONTEXT to another context, or unset it ({LIST}).")
            }
            ChosenBy::CurrentContext { .. } => {
                format!("Or pick another with --context or `docker context use` ({LIST}).")
            }
            ChosenBy::Default => {
                format!("Or set DOCKER_HOST, or pick a daemon with --context ({LIST}).")
            }
        }
    }
}

/// Where a TLS connection's material lies.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TlsFiles {
    /// CA certificates the daemon's certificate must chain to.
    pub ca: Option<PathBuf>,
    /// The client certificate.
    pub cert: Option<PathBuf>,
    /// The client certificate's private key.
    pub key: Option<PathBuf>,
    /// Accept any daemon certificate (`SkipTLSVerify`, or `DOCKER_TLS`
    /// without `DOCKER_TLS_VERIFY`).
    pub skip_verify: bool,
}

impl DaemonEndpoint {
    /// A daemon at `host`, outside any context, without TLS.
    pub fn plain(host: &str) -> Self {
        DaemonEndpoint {
            context: DEFAULT_CONTEXT.to_owned(),
            host: host.to_owned(),
            tls: None,
            chosen_by: ChosenBy::HostOption,
        }
    }

    /// Whether the daemon runs on this machine: a unix socket, or TCP to a
    /// loopback address. A daemon elsewhere (`ssh://`, another host's
    /// `tcp://`) cannot reach a registry on this machine's 127.0.0.1, and
    /// its data root is not this machine's.
    pub fn is_local(&self) -> bool {
        if self.host.starts_with("unix://") {
            return true;
        }
        let Some(rest) = ["tcp://", "http://", "https://"]
            .iter()
            .find_map(|scheme| self.host.strip_prefix(scheme))
        else {
            return false;
        };
        let authority = rest.split('/').next().unwrap_or_default();
        let host = match authority.strip_prefix('[') {
            Some(v6) => v6.split(']').next().unwrap_or_default(),
            None => authority.split(':').next().unwrap_or_default(),
        };
        host.eq_ignore_ascii_case("localhost")
            || host
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback())
    }
}

impl DaemonSelection {
    /// The daemon these options and the process environment select.
    pub fn resolve(&self) -> Result<DaemonEndpoint, DriverError> {
        self.resolve_in(&|name| std::env::var(name).ok())
    }

    /// The daemon these options select, with `env` as the environment.
    pub(crate) fn resolve_in(
        &self,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<DaemonEndpoint, DriverError> {
        let env = |name: &str| env(name).filter(|v| !v.is_empty());
        let flag = |v: &Option<String>| v.clone().filter(|v| !v.is_empty());
        let (context, host) = (flag(&self.context), flag(&self.host));
        if context.is_some() && host.is_some() {
            return Err(DriverError::ConflictingDaemonOptions);
        }
        let config_dir = match &self.config_dir {
            Some(dir) => dir.clone(),
            None => match env("DOCKER_CONFIG") {
                Some(dir) => PathBuf::from(dir),
                None => PathBuf::from(env("HOME").unwrap_or_default()).join(".docker"),
            },
        };
        let (name, chosen_by) = match (context, &host, env("DOCKER_HOST")) {
            (Some(name), _, _) => (name.clone(), ChosenBy::ContextOption(name)),
            (None, Some(_), _) => (DEFAULT_CONTEXT.to_owned(), ChosenBy::HostOption),
            (None, None, Some(_)) => (DEFAULT_CONTEXT.to_owned(), ChosenBy::DockerHost),
            (None, None, None) => match env("DOCKER_CONTEXT") {
                Some(name) => (name.clone(), ChosenBy::DockerContext(name)),
                None => match current_context(&config_dir)? {
                    Some(name) => (
                        name.clone(),
                        ChosenBy::CurrentContext {
                            name,
                            config: config_dir.join("config.json"),
                        },
                    ),
                    None => (DEFAULT_CONTEXT.to_owned(), ChosenBy::Default),
                },
            },
        };
        if name == DEFAULT_CONTEXT {
            // `--context default`: DOCKER_HOST, else the default socket.
            let chosen_by = match (&chosen_by, &host, env("DOCKER_HOST")) {
                (ChosenBy::ContextOption(_) | ChosenBy::DockerContext(_), None, Some(_)) => {
                    ChosenBy::DockerHost
                }
                (ChosenBy::ContextOption(_) | ChosenBy::DockerContext(_), None, None)
                | (ChosenBy::CurrentContext { .. }, _, _) => ChosenBy::Default,
                _ => chosen_by,
            };
            let host = host
                .or_else(|| env("DOCKER_HOST"))
                .unwrap_or_else(|| DEFAULT_HOST.to_owned());
            let verify = env("DOCKER_TLS_VERIFY").is_some();
            let tls = (verify || env("DOCKER_TLS").is_some()).then(|| {
                let dir = env("DOCKER_CERT_PATH").map_or(config_dir, PathBuf::from);
                TlsFiles {
                    skip_verify: !verify,
                    ..tls_files(&dir)
                }
            });
            return Ok(DaemonEndpoint {
                context: name,
                host,
                tls,
                chosen_by,
            });
        }
        Ok(DaemonEndpoint {
            chosen_by,
            ..stored_context(&config_dir, &name)?
        })
    }
}

/// `currentContext` of `<config_dir>/config.json`; a missing file names none.
fn current_context(config_dir: &Path) -> Result<Option<String>, DriverError> {
    #[derive(serde::Deserialize)]
    struct Config {
        #[serde(rename = "currentContext", default)]
        current_context: Option<String>,
    }
    let file = config_dir.join("config.json");
    let text = match std::fs::read(&file) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(DriverError::DockerConfig {
                file,
                source: Box::new(e),
            });
        }
    };
    let config: Config = serde_json::from_slice(&text).map_err(|e| DriverError::DockerConfig {
        file: file.clone(),
        source: Box::new(e),
    })?;
    Ok(config.current_context.filter(|c| !c.is_empty()))
}

/// The folder name of a context in the store: the sha256 of its name.
fn store_id(name: &str) -> String {
    hex::encode(Sha256::digest(name.as_bytes()))
}

/// The files of a TLS folder, those that exist.
fn tls_files(dir: &Path) -> TlsFiles {
    let file = |name: &str| Some(dir.join(name)).filter(|p| p.is_file());
    TlsFiles {
        ca: file("ca.pem"),
        cert: file("cert.pem"),
        key: file("key.pem"),
        skip_verify: false,
    }
}

/// A context of the store.
fn stored_context(config_dir: &Path, name: &str) -> Result<DaemonEndpoint, DriverError> {
    #[derive(serde::Deserialize)]
    struct Meta {
        #[serde(rename = "Endpoints", default)]
        endpoints: Endpoints,
    }
    #[derive(serde::Deserialize, Default)]
    struct Endpoints {
        docker: Option<Docker>,
    }
    #[derive(serde::Deserialize)]
    struct Docker {
        #[serde(rename = "Host", default)]
        host: String,
        #[serde(rename = "SkipTLSVerify", default)]
        skip_tls_verify: bool,
    }
    let id = store_id(name);
    let file = config_dir
        .join("contexts")
        .join("meta")
        .join(&id)
        .join("meta.json");
    let text = std::fs::read(&file).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            DriverError::ContextNotFound {
                context: name.to_owned(),
                file: file.clone(),
            }
        } else {
            DriverError::ContextUnreadable {
                context: name.to_owned(),
                file: file.clone(),
                source: Box::new(e),
            }
        }
    })?;
    let meta: Meta = serde_json::from_slice(&text).map_err(|e| DriverError::ContextUnreadable {
        context: name.to_owned(),
        file: file.clone(),
        source: Box::new(e),
    })?;
    let docker = meta
        .endpoints
        .docker
        .filter(|d| !d.host.is_empty())
        .ok_or_else(|| DriverError::ContextHost {
            context: name.to_owned(),
            file: file.clone(),
            host: String::new(),
        })?;
    if Endpoint::parse(&docker.host).is_err() {
        return Err(DriverError::ContextHost {
            context: name.to_owned(),
            file,
            host: docker.host,
        });
    }
    let files = tls_files(
        &config_dir
            .join("contexts")
            .join("tls")
            .join(&id)
            .join("docker"),
    );
    let has_files = files.ca.is_some() || files.cert.is_some() || files.key.is_some();
    let tls = (has_files || docker.skip_tls_verify).then_some(TlsFiles {
        skip_verify: docker.skip_tls_verify,
        ..files
    });
    Ok(DaemonEndpoint {
        context: name.to_owned(),
        host: docker.host,
        tls,
        chosen_by: ChosenBy::ContextOption(name.to_owned()),
    })
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    /// A config folder with contexts, and an environment.
    struct Setup {
        dir: tempfile::TempDir,
        env: HashMap<&'static str, String>,
    }

    impl Setup {
        fn new() -> Self {
            let dir = tempfile::tempdir().unwrap();
            let mut env = HashMap::new();
            env.insert("DOCKER_CONFIG", dir.path().display().to_string());
            Setup { dir, env }
        }

        fn path(&self) -> &Path {
            self.dir.path()
        }

        /// Writes a context as `docker context create` does.
        fn context(&self, name: &str, host: &str, skip: bool, tls: &[&str]) -> &Self {
            let meta = self.path().join("contexts/meta").join(store_id(name));
            std::fs::create_dir_all(&meta).unwrap();
            let json = serde_json::json!({
                "Name": name,
                "Metadata": {},
                "Endpoints": {"docker": {"Host": host, "SkipTLSVerify": skip}},
            });
            std::fs::write(meta.join("meta.json"), json.to_string()).unwrap();
            let tls_dir = self.tls_dir(name);
            for file in tls {
                std::fs::create_dir_all(&tls_dir).unwrap();
                std::fs::write(tls_dir.join(file), "pem").unwrap();
            }
            self
        }

        fn tls_dir(&self, name: &str) -> PathBuf {
            self.path()
                .join("contexts/tls")
                .join(store_id(name))
                .join("docker")
        }

        fn current(&self, name: &str) -> &Self {
            let json = serde_json::json!({"auths": {}, "currentContext": name});
            std::fs::write(self.path().join("config.json"), json.to_string()).unwrap();
            self
        }

        fn env(mut self, name: &'static str, value: &str) -> Self {
            self.env.insert(name, value.to_owned());
            self
        }

        fn resolve(&self, selection: &DaemonSelection) -> Result<DaemonEndpoint, DriverError> {
            selection.resolve_in(&|name| self.env.get(name).cloned())
        }
    }

    fn select(context: Option<&str>, host: Option<&str>) -> DaemonSelection {
        DaemonSelection {
            context: context.map(str::to_owned),
            host: host.map(str::to_owned),
            config_dir: None,
        }
    }

    /// Which context and host `selection` ends up with.
    #[track_caller]
    fn check(setup: &Setup, selection: DaemonSelection, context: &str, host: &str) {
        let endpoint = setup.resolve(&selection).unwrap();
        assert_eq!(
            (endpoint.context.as_str(), endpoint.host.as_str()),
            (context, host)
        );
    }

    const A: &str = "unix:///run/a.sock";
    const B: &str = "unix:///run/b.sock";
    const C: &str = "unix:///run/c.sock";
    const ENV: &str = "unix:///run/env.sock";

    fn contexts() -> Setup {
        let setup = Setup::new();
        setup
            .context("a", A, false, &[])
            .context("b", B, false, &[])
            .context("c", C, false, &[])
            .current("c");
        setup
    }

    #[test]
    fn precedence_is_the_docker_clis() {
        let none = || select(None, None);
        // currentContext, else nothing: the default socket.
        check(&Setup::new(), none(), "default", DEFAULT_HOST);
        let setup = contexts();
        check(&setup, none(), "c", C);
        // DOCKER_CONTEXT beats currentContext.
        let setup = setup.env("DOCKER_CONTEXT", "b");
        check(&setup, none(), "b", B);
        // DOCKER_HOST beats DOCKER_CONTEXT: it means the default context.
        let setup = setup.env("DOCKER_HOST", ENV);
        check(&setup, none(), "default", ENV);
        // --context beats DOCKER_HOST and DOCKER_CONTEXT.
        check(&setup, select(Some("a"), None), "a", A);
        // --host beats all the environment.
        check(&setup, select(None, Some(A)), "default", A);
        // --context default is DOCKER_HOST, or the default socket.
        check(&setup, select(Some("default"), None), "default", ENV);
        check(
            &contexts(),
            select(Some("default"), None),
            "default",
            DEFAULT_HOST,
        );
        // An empty variable counts as unset, as in the CLI.
        let setup = contexts().env("DOCKER_HOST", "").env("DOCKER_CONTEXT", "");
        check(&setup, none(), "c", C);
        // --config replaces DOCKER_CONFIG.
        let other = contexts();
        let selection = DaemonSelection {
            config_dir: Some(other.path().to_owned()),
            ..none()
        };
        check(&Setup::new(), selection, "c", C);
        // Without DOCKER_CONFIG: ~/.docker.
        let home = tempfile::tempdir().unwrap();
        let setup = Setup {
            dir: tempfile::tempdir().unwrap(),
            env: HashMap::from([("HOME", home.path().display().to_string())]),
        };
        let docker = home.path().join(".docker");
        std::fs::create_dir_all(&docker).unwrap();
        std::fs::write(docker.join("config.json"), r#"{"currentContext":"x"}"#).unwrap();
        let err = setup.resolve(&none()).unwrap_err().to_string();
        assert!(err.contains(&docker.display().to_string()), "{err}");
    }

    /// What `selection` says chose the daemon.
    #[track_caller]
    fn check_chosen(setup: &Setup, selection: DaemonSelection, chosen: ChosenBy) {
        assert_eq!(setup.resolve(&selection).unwrap().chosen_by, chosen);
    }

    #[test]
    fn the_endpoint_says_what_chose_it() {
        let none = || select(None, None);
        check_chosen(&Setup::new(), none(), ChosenBy::Default);
        let setup = contexts();
        let config = setup.path().join("config.json");
        check_chosen(
            &setup,
            none(),
            ChosenBy::CurrentContext {
                name: "c".into(),
                config,
            },
        );
        check_chosen(
            &setup,
            select(Some("a"), None),
            ChosenBy::ContextOption("a".into()),
        );
        check_chosen(&setup, select(Some("default"), None), ChosenBy::Default);
        let setup = setup.env("DOCKER_CONTEXT", "b");
        check_chosen(&setup, none(), ChosenBy::DockerContext("b".into()));
        let setup = setup.env("DOCKER_HOST", ENV);
        check_chosen(&setup, none(), ChosenBy::DockerHost);
        check_chosen(&setup, select(Some("default"), None), ChosenBy::DockerHost);
        check_chosen(&setup, select(None, Some(A)), ChosenBy::HostOption);
        assert_eq!(ChosenBy::DockerHost.to_string(), "from DOCKER_HOST",);
        assert!(
            ChosenBy::Default
                .how_to_change()
                .contains("docker context ls")
        );
    }

    #[test]
    fn context_and_host_together_are_refused() {
        let err = contexts().resolve(&select(Some("a"), Some(A))).unwrap_err();
        assert!(
            matches!(err, DriverError::ConflictingDaemonOptions),
            "{err}"
        );
    }

    #[test]
    fn a_missing_context_names_itself_and_the_file() {
        let setup = contexts().env("DOCKER_CONTEXT", "nope");
        let err = setup.resolve(&select(None, None)).unwrap_err();
        let file = setup
            .path()
            .join("contexts/meta")
            .join(store_id("nope"))
            .join("meta.json");
        let message = err.to_string();
        assert!(message.contains("\"nope\""), "{message}");
        assert!(message.contains(&file.display().to_string()), "{message}");
        assert!(matches!(err, DriverError::ContextNotFound { .. }));
        // The same for a currentContext that is gone.
        let setup = Setup::new();
        setup.current("gone");
        let message = setup.resolve(&select(None, None)).unwrap_err().to_string();
        assert!(message.contains("\"gone\""), "{message}");
    }

    #[test]
    fn broken_files_are_named() {
        let setup = Setup::new();
        std::fs::write(setup.path().join("config.json"), "{").unwrap();
        let err = setup.resolve(&select(None, None)).unwrap_err();
        let config = setup.path().join("config.json");
        assert!(
            err.to_string().contains(&config.display().to_string()),
            "{err}"
        );
        assert!(std::error::Error::source(&err).is_some());

        let setup = contexts();
        let meta = setup
            .path()
            .join("contexts/meta")
            .join(store_id("a"))
            .join("meta.json");
        std::fs::write(&meta, "not json").unwrap();
        let err = setup.resolve(&select(Some("a"), None)).unwrap_err();
        let message = err.to_string();
        assert!(matches!(err, DriverError::ContextUnreadable { .. }));
        assert!(message.contains("\"a\""), "{message}");
        assert!(message.contains(&meta.display().to_string()), "{message}");
    }

    #[test]
    fn unsupported_hosts_name_the_context() {
        let setup = Setup::new();
        setup.context("remote", "npipe:////./pipe/far", false, &[]);
        let err = setup.resolve(&select(Some("remote"), None)).unwrap_err();
        let message = err.to_string();
        assert!(message.contains("\"remote\""), "{message}");
        assert!(message.contains("npipe:////./pipe/far"), "{message}");
    }

    #[test]
    fn an_unsupported_context_host_lists_every_scheme_accepted() {
        let setup = Setup::new();
        setup.context("remote", "npipe:////./pipe/far", false, &[]);
        let err = setup.resolve(&select(Some("remote"), None)).unwrap_err();
        assert!(matches!(err, DriverError::ContextHost { .. }), "{err:?}");
        let message = err.to_string();
        for scheme in ["unix://", "tcp://", "http://", "ssh://"] {
            assert!(message.contains(scheme), "{scheme} missing: {message}");
        }
        // An ssh:// context is accepted, as the message says.
        setup.context("far", "ssh://me@far.example", false, &[]);
        check(
            &setup,
            select(Some("far"), None),
            "far",
            "ssh://me@far.example",
        );
    }

    #[test]
    fn tls_material_comes_from_the_store() {
        let setup = Setup::new();
        setup
            .context(
                "mtls",
                "tcp://127.0.0.1:2376",
                false,
                &["ca.pem", "cert.pem", "key.pem"],
            )
            .context("ca-only", "tcp://127.0.0.1:2376", false, &["ca.pem"])
            .context("skip", "tcp://127.0.0.1:2376", true, &[])
            .context("plain", "tcp://127.0.0.1:2375", false, &[]);
        let tls = |name: &str| setup.resolve(&select(Some(name), None)).unwrap().tls;
        let dir = setup.tls_dir("mtls");
        assert_eq!(
            tls("mtls"),
            Some(TlsFiles {
                ca: Some(dir.join("ca.pem")),
                cert: Some(dir.join("cert.pem")),
                key: Some(dir.join("key.pem")),
                skip_verify: false,
            })
        );
        assert_eq!(
            tls("ca-only"),
            Some(TlsFiles {
                ca: Some(setup.tls_dir("ca-only").join("ca.pem")),
                ..TlsFiles::default()
            })
        );
        assert_eq!(
            tls("skip"),
            Some(TlsFiles {
                skip_verify: true,
                ..TlsFiles::default()
            })
        );
        assert_eq!(tls("plain"), None);
    }

    #[test]
    fn tls_of_the_default_context_comes_from_the_environment() {
        let certs = tempfile::tempdir().unwrap();
        std::fs::write(certs.path().join("ca.pem"), "pem").unwrap();
        let setup = Setup::new()
            .env("DOCKER_HOST", "tcp://127.0.0.1:2376")
            .env("DOCKER_TLS_VERIFY", "1")
            .env("DOCKER_CERT_PATH", &certs.path().display().to_string());
        let endpoint = setup.resolve(&select(None, None)).unwrap();
        assert_eq!(
            endpoint.tls,
            Some(TlsFiles {
                ca: Some(certs.path().join("ca.pem")),
                ..TlsFiles::default()
            })
        );
        // DOCKER_TLS alone: TLS without verification; the certificates
        // default to the config folder.
        let setup = Setup::new()
            .env("DOCKER_HOST", "tcp://127.0.0.1:2376")
            .env("DOCKER_TLS", "1");
        std::fs::write(setup.path().join("key.pem"), "pem").unwrap();
        let tls = setup.resolve(&select(None, None)).unwrap().tls.unwrap();
        assert!(tls.skip_verify);
        assert_eq!(tls.key, Some(setup.path().join("key.pem")));
        assert_eq!(tls.ca, None);
        // Neither: plain.
        let setup = Setup::new().env("DOCKER_HOST", "tcp://127.0.0.1:2375");
        assert_eq!(setup.resolve(&select(None, None)).unwrap().tls, None);
    }

    #[test]
    fn store_ids_are_sha256_of_the_name() {
        // As `docker context create ctxa` names its folder.
        assert_eq!(
            store_id("ctxa"),
            "f38a1edba91098e590dbe6b66a07c374fdc6ff074aaa890828f1c7926e8a9ebd"
        );
    }

    #[test]
    fn local_daemons() {
        let local = |h: &str| DaemonEndpoint::plain(h).is_local();
        assert!(local("unix:///var/run/docker.sock"));
        assert!(local("tcp://127.0.0.1:2376"));
        assert!(local("tcp://localhost"));
        assert!(local("tcp://[::1]:2375"));
        assert!(local("http://127.0.0.2:2375"));
        assert!(!local("tcp://10.0.0.5:2376"));
        assert!(!local("tcp://build.example.com:2376"));
        assert!(!local("ssh://me@127.0.0.1"));
        assert!(!local("npipe:////./pipe/docker_engine"));
    }
}
