//! dlgrab as a Docker CLI plugin (`~/.docker/cli-plugins/docker-dlgrab`).
//!
//! The Docker CLI finds plugins by their name `docker-<name>`, asks each
//! for its metadata (`docker-dlgrab docker-cli-plugin-metadata`), and runs
//! `docker [GLOBAL OPTIONS] dlgrab ARGS` as `docker-dlgrab [GLOBAL OPTIONS]
//! dlgrab ARGS`: its global options (`--context`, `--host`, `--config`, …)
//! come through in argv, not in the environment (checked with the CLI
//! 28.2; `DOCKER_CONTEXT`, `DOCKER_HOST` and `DOCKER_CONFIG` are only
//! passed on when the user set them). The plugin then finds the daemon from
//! those options, the environment and the CLI's config, as the CLI did.

use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};

use anyhow::bail;
use docker_driver::DaemonSelection;

/// The argument the Docker CLI asks a plugin's metadata with.
pub(crate) const METADATA_COMMAND: &str = "docker-cli-plugin-metadata";
/// The plugin's name: `docker dlgrab`, file `docker-dlgrab`.
const NAME: &str = "dlgrab";

/// How dlgrab was started.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Invocation {
    /// By the Docker CLI, asking for the plugin's metadata.
    Metadata,
    /// To export (or list); `args` are dlgrab's own, after the program name.
    Run {
        /// Whether it runs as `docker dlgrab` (usage then says so).
        plugin: bool,
        /// dlgrab's arguments.
        args: Vec<OsString>,
        /// The Docker CLI's global options given before `dlgrab`.
        docker: DaemonSelection,
    },
}

/// The plugin metadata the Docker CLI reads.
pub(crate) fn metadata() -> String {
    serde_json::json!({
        "SchemaVersion": "0.1.0",
        "Vendor": "dlgrab",
        "Version": env!("CARGO_PKG_VERSION"),
        "ShortDescription": "Export single layers of a local image",
        "URL": env!("CARGO_PKG_REPOSITORY"),
    })
    .to_string()
}

/// Reads argv (program name first).
pub(crate) fn invocation(argv: Vec<OsString>) -> anyhow::Result<Invocation> {
    let mut argv = argv.into_iter();
    let program = argv.next().unwrap_or_default();
    let args: Vec<OsString> = argv.collect();
    let as_plugin = Path::new(&program)
        .file_name()
        .is_some_and(|name| name == OsStr::new(&format!("docker-{NAME}")));
    if !as_plugin {
        return Ok(Invocation::Run {
            plugin: false,
            args,
            docker: DaemonSelection::default(),
        });
    }
    if args.len() == 1 && args[0] == METADATA_COMMAND {
        return Ok(Invocation::Metadata);
    }
    // `docker [GLOBAL OPTIONS] dlgrab ARGS`; run by hand without the
    // `dlgrab` word, the arguments are dlgrab's own.
    match global_options(&args)? {
        Some((docker, rest)) => Ok(Invocation::Run {
            plugin: true,
            args: rest.to_vec(),
            docker,
        }),
        None => Ok(Invocation::Run {
            plugin: true,
            args,
            docker: DaemonSelection::default(),
        }),
    }
}

/// The Docker CLI's global options before the word `dlgrab`, and what
/// follows it; `None` when no `dlgrab` word follows options.
fn global_options(args: &[OsString]) -> anyhow::Result<Option<(DaemonSelection, &[OsString])>> {
    let mut docker = DaemonSelection::default();
    let mut i = 0;
    while i < args.len() {
        let Some(arg) = args[i].to_str() else {
            return Ok(None);
        };
        if arg == NAME {
            return Ok(Some((docker, &args[i + 1..])));
        }
        if !arg.starts_with('-') {
            return Ok(None);
        }
        // `--name value`, `--name=value`, `-x value`, `-xvalue`, `-x=value`.
        let (name, inline) = match arg.split_once('=') {
            Some((name, value)) if arg.starts_with("--") => (name, Some(value.to_owned())),
            _ if !arg.starts_with("--") && arg.len() > 2 => {
                let value = arg[2..].strip_prefix('=').unwrap_or(&arg[2..]);
                (&arg[..2], Some(value.to_owned()))
            }
            _ => (arg, None),
        };
        let takes_value = matches!(
            name,
            "--context"
                | "-c"
                | "--host"
                | "-H"
                | "--config"
                | "--log-level"
                | "-l"
                | "--tlscacert"
                | "--tlscert"
                | "--tlskey"
        );
        let value = if takes_value {
            match inline {
                Some(value) => Some(value),
                None => {
                    i += 1;
                    match args.get(i).and_then(|v| v.to_str()) {
                        Some(value) => Some(value.to_owned()),
                        None => bail!("docker option {name} needs a value"),
                    }
                }
            }
        } else {
            None
        };
        match (name, value) {
            ("--context" | "-c", value) => docker.context = value,
            ("--host" | "-H", value) => docker.host = value,
            ("--config", value) => docker.config_dir = value.map(PathBuf::from),
            ("--debug" | "-D" | "--log-level" | "-l", _) => {}
            ("--tls" | "--tlsverify" | "--tlscacert" | "--tlscert" | "--tlskey", _) => bail!(
                "docker {name} is not supported by docker dlgrab: use a context with TLS \
                 (docker context create NAME --docker host=tcp://…,ca=…,cert=…,key=…) \
                 or DOCKER_TLS_VERIFY and DOCKER_CERT_PATH"
            ),
            // Not a global option: these are dlgrab's own arguments.
            _ => return Ok(None),
        }
        i += 1;
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(args: &[&str]) -> Vec<OsString> {
        args.iter().map(OsString::from).collect()
    }

    #[track_caller]
    fn check(args: &[&str], docker: DaemonSelection, rest: &[&str]) {
        let got = invocation(argv(args)).unwrap();
        assert_eq!(
            got,
            Invocation::Run {
                plugin: true,
                args: argv(rest),
                docker
            }
        );
    }

    fn with(context: Option<&str>, host: Option<&str>, config: Option<&str>) -> DaemonSelection {
        DaemonSelection {
            context: context.map(str::to_owned),
            host: host.map(str::to_owned),
            config_dir: config.map(PathBuf::from),
        }
    }

    const PLUGIN: &str = "/home/u/.docker/cli-plugins/docker-dlgrab";

    #[test]
    fn metadata_is_answered_only_as_a_plugin() {
        assert_eq!(
            invocation(argv(&[PLUGIN, METADATA_COMMAND])).unwrap(),
            Invocation::Metadata
        );
        let direct = invocation(argv(&["dlgrab", METADATA_COMMAND])).unwrap();
        assert!(matches!(direct, Invocation::Run { plugin: false, .. }));
        let json: serde_json::Value = serde_json::from_str(&metadata()).unwrap();
        assert_eq!(json["SchemaVersion"], "0.1.0");
        assert_eq!(json["Vendor"], "dlgrab");
        assert_eq!(json["Version"], env!("CARGO_PKG_VERSION"));
        assert!(
            json["ShortDescription"]
                .as_str()
                .is_some_and(|s| !s.is_empty())
        );
    }

    #[test]
    fn global_options_come_before_the_plugin_name() {
        let none = DaemonSelection::default();
        check(
            &[PLUGIN, "dlgrab", "img", "-o", "d"],
            none.clone(),
            &["img", "-o", "d"],
        );
        check(
            &[PLUGIN, "--context", "remote", "dlgrab", "img"],
            with(Some("remote"), None, None),
            &["img"],
        );
        check(
            &[PLUGIN, "-c=r", "dlgrab", "x"],
            with(Some("r"), None, None),
            &["x"],
        );
        check(
            &[PLUGIN, "-cr", "dlgrab", "x"],
            with(Some("r"), None, None),
            &["x"],
        );
        check(
            &[
                PLUGIN,
                "-H",
                "unix:///s",
                "--config=/cfg",
                "-D",
                "-l",
                "debug",
                "dlgrab",
                "x",
            ],
            with(None, Some("unix:///s"), Some("/cfg")),
            &["x"],
        );
        // dlgrab's own --context after the plugin name stays dlgrab's.
        check(
            &[PLUGIN, "dlgrab", "--context", "a", "x"],
            none.clone(),
            &["--context", "a", "x"],
        );
        // Run by hand: the arguments are dlgrab's.
        check(&[PLUGIN, "img", "-o", "d"], none, &["img", "-o", "d"]);
    }

    #[test]
    fn tls_options_are_refused_with_advice() {
        let err = invocation(argv(&[PLUGIN, "--tlsverify", "dlgrab", "x"])).unwrap_err();
        assert!(err.to_string().contains("context"), "{err}");
        assert!(invocation(argv(&[PLUGIN, "--context"])).is_err());
    }

    #[test]
    fn plain_dlgrab_keeps_its_arguments() {
        assert_eq!(
            invocation(argv(&["/usr/bin/dlgrab", "--context", "x", "img"])).unwrap(),
            Invocation::Run {
                plugin: false,
                args: argv(&["--context", "x", "img"]),
                docker: DaemonSelection::default(),
            }
        );
    }
}
