//! Command-line interface: the original DLGrab's flags, and what comes beyond them.

use std::path::PathBuf;

use clap::{ArgAction, CommandFactory, Parser, ValueEnum};

use crate::plan::Via;

/// Export single layers of a local Docker image, verified, without exporting the whole image.
///
/// dlgrab runs a small registry on 127.0.0.1, tags the image into it, asks
/// the daemon to push, and keeps only the layers asked for. Where pushing
/// would cost more than `docker save` (a classic image store that uploads
/// every layer of a never-pushed image), it reads the layers out of a
/// `docker save` stream instead, or, for a local daemon read as root, out
/// of the daemon's own layer store. Every layer is checked against its
/// diff ID before it is put in place.
#[derive(Debug, Parser)]
#[command(
    name = "dlgrab",
    version = env!("DLGRAB_VERSION"),
    max_term_width = 100,
    disable_help_flag = true
)]
pub(crate) struct Args {
    /// Layer to export: an image name (its top layer), an image or layer ID, or a diff ID.
    ///
    /// A layer or image ID may be short or full, including the intermediate
    /// image IDs `docker history` shows; a diff ID is the sha256 of a
    /// layer's uncompressed tar. Several may be given. With --to, each is an
    /// image to copy.
    #[arg(value_name = "LAYER", required_unless_present_any = ["list", "generate", "clean"])]
    pub(crate) layers: Vec<String>,

    /// Folder to write into (default: .), or `-` for the layer's tar on stdout.
    ///
    /// The folder is made if missing. With --since: the archive file (or `-`
    /// for stdout).
    #[arg(
        short,
        long,
        value_name = "DIR",
        default_value = ".",
        hide_default_value = true
    )]
    pub(crate) outdir: PathBuf,

    /// One archive (-o FILE) of the layers IMAGE has beyond BASE.
    ///
    /// `docker load -i FILE` on a daemon holding BASE gives IMAGE with its
    /// original image ID. `-o -` writes the archive to stdout.
    #[arg(
        long,
        value_name = "BASE",
        conflicts_with_all = ["list", "index", "diff_id", "format", "registry_format"]
    )]
    pub(crate) since: Option<String>,

    /// Copy the images named to another daemon, sending only the layers it lacks.
    ///
    /// The images go as one stream into DEST's load API. DEST is a host
    /// (`unix://…`, `tcp://…` with DOCKER_TLS_VERIFY and DOCKER_CERT_PATH as
    /// the Docker CLI reads them, `ssh://[user@]host[:port]` through `ssh …
    /// docker system dial-stdio`) or a context name.
    #[arg(
        long,
        value_name = "DEST",
        conflicts_with_all = ["since", "list", "index", "diff_id", "format", "registry_format", "outdir", "data_root"]
    )]
    pub(crate) to: Option<String>,

    /// Port of the temporary registry on 127.0.0.1 (0 picks a free one).
    #[arg(
        short,
        long,
        value_name = "PORT",
        default_value_t = 0,
        hide_short_help = true
    )]
    pub(crate) port: u16,

    /// Alone: remove what dead dlgrab runs left behind, and say what.
    ///
    /// Without LAYER: remove what dead dlgrab runs left behind (their
    /// temporary tags on the daemon, their scratch files in the -o folder)
    /// and report it. With LAYER: kept for compatibility with the original
    /// DLGrab; dlgrab always removes its temporary tags, and every run
    /// sweeps dead runs' leftovers first.
    #[arg(long)]
    pub(crate) clean: bool,

    /// Give up when the daemon sends nothing for SECS seconds during a push
    /// or a save (a hung daemon or push); 0 waits forever.
    #[arg(
        long,
        value_name = "SECS",
        default_value_t = 600,
        hide_short_help = true
    )]
    pub(crate) timeout: u64,

    /// Print debug logs on stderr (RUST_LOG refines them).
    #[arg(long, hide_short_help = true)]
    pub(crate) debug: bool,

    /// Write what a registry would store (same as `--format registry`).
    #[arg(long, conflicts_with = "format", hide_short_help = true)]
    pub(crate) registry_format: bool,

    /// Output format: seed (DLGrab's, the default), oci or registry.
    ///
    /// `seed` is the original DLGrab layout (`<id>/{json,layer.tar,VERSION}`,
    /// kept loadable by `docker load`), `oci` an OCI image layout, `registry`
    /// a registry's storage layout.
    #[arg(long, value_enum, hide_possible_values = true)]
    pub(crate) format: Option<FormatArg>,

    /// Export layer N (0 = base) of each image named, instead of its top layer.
    #[arg(long, value_name = "N", conflicts_with = "diff_id")]
    pub(crate) index: Option<usize>,

    /// Export the layer with this diff ID (sha256 of its uncompressed tar) of each image named.
    #[arg(long, value_name = "DIFF_ID", hide_short_help = true)]
    pub(crate) diff_id: Option<String>,

    /// List IMAGE's layers (index, diff ID, history ID, size, created by).
    #[arg(long, value_name = "IMAGE", conflicts_with = "layers")]
    pub(crate) list: Option<String>,

    /// Print machine-readable results on stdout (messages go to stderr).
    ///
    /// One JSON document whatever the mode, also when the run fails
    /// (docs/result.schema.json): an item per IMAGE as typed, with what was
    /// done, the route and why, bytes, seconds, or the error. Several
    /// IMAGEs are exported as far as each can be; the exit status is 1 if
    /// any failed.
    #[arg(long)]
    pub(crate) json: bool,

    /// Print nothing but errors.
    #[arg(short, long)]
    pub(crate) quiet: bool,

    /// Replace layers already in the output folder instead of failing.
    #[arg(long)]
    pub(crate) force: bool,

    /// Docker context whose daemon to use (`docker context ls` lists them).
    ///
    /// As `docker --context`: it beats DOCKER_HOST, DOCKER_CONTEXT and
    /// `docker context use`.
    #[arg(short = 'c', long, value_name = "NAME", conflicts_with = "data_root")]
    pub(crate) context: Option<String>,

    /// Print a completion script (bash, zsh, fish) or the man page (man).
    ///
    /// The script or page goes to stdout; `cargo xtask dist` writes them all.
    #[arg(
        long,
        value_enum,
        value_name = "WHAT",
        exclusive = true,
        hide_possible_values = true
    )]
    pub(crate) generate: Option<Generate>,

    /// How to get the layers: push, save, store, archive or auto (default).
    ///
    /// `push`: the daemon pushes into the temporary registry; `save`: one
    /// `docker save` stream; `store`: the daemon's layer store on disk (a
    /// local daemon, dlgrab run as root); `archive`: the layer store read
    /// through the Engine API by a container made for it (classic stores);
    /// `auto`: whichever is cheapest.
    #[arg(
        long,
        value_enum,
        default_value_t = ViaArg::Auto,
        hide_default_value = true,
        hide_possible_values = true
    )]
    pub(crate) via: ViaArg,

    /// Which platform of a multi-platform image (os/arch[/variant]).
    ///
    /// As `docker --platform` takes it; default: the one the daemon shows
    /// the image as. An image without that platform here is an error naming
    /// the platforms it has.
    #[arg(long, value_name = "OS/ARCH[/VARIANT]", hide_short_help = true)]
    pub(crate) platform: Option<docker_driver::manifest::Platform>,

    /// Read from this Docker data root without any daemon (read-only).
    ///
    /// E.g. a copy of /var/lib/docker with a classic image store.
    #[arg(long, value_name = "DIR")]
    pub(crate) data_root: Option<PathBuf>,

    /// Print this help; `man dlgrab` has the rest.
    #[arg(short = 'h', long, action = ArgAction::HelpShort)]
    help: Option<bool>,
}

/// Examples for `--help` and the man page: a command line, what it does.
pub(crate) const EXAMPLES: [(&str, &str); 8] = [
    ("dlgrab IMAGE -o DIR", "export IMAGE's top layer into DIR"),
    (
        "dlgrab --list IMAGE",
        "list IMAGE's layers, numbered from 0",
    ),
    (
        "dlgrab IMAGE --index 2 -o DIR",
        "export layer 2 (0 is the base)",
    ),
    (
        "dlgrab IMAGE -o - | tar -t",
        "stream the top layer's tar to a pipe",
    ),
    (
        "dlgrab --since BASE IMAGE -o d.tar",
        "what IMAGE adds to BASE, for docker load",
    ),
    (
        "dlgrab --to ssh://me@far IMAGE",
        "copy IMAGE to another daemon, lacking layers only",
    ),
    (
        "dlgrab --data-root /mnt/docker IMAGE",
        "read a data root, no daemon needed",
    ),
    (
        "dlgrab --generate zsh",
        "print a completion script (bash, zsh, fish) or man",
    ),
];

/// Environment variables dlgrab reads: the name, what it does.
pub(crate) const ENVIRONMENT: [(&str, &str); 7] = [
    (
        "DOCKER_HOST",
        "the daemon's address, as for docker (beats the current context)",
    ),
    (
        "DOCKER_CONTEXT",
        "the docker context to use, when DOCKER_HOST is not set",
    ),
    (
        "DOCKER_CONFIG",
        "the Docker CLI's config folder (default ~/.docker)",
    ),
    (
        "DOCKER_TLS_VERIFY",
        "with DOCKER_HOST=tcp://…: verify the daemon's certificate",
    ),
    (
        "DOCKER_CERT_PATH",
        "the folder of ca.pem, cert.pem and key.pem for TLS",
    ),
    (
        "RUST_LOG",
        "which logs to print, e.g. dlgrab=debug (see --debug)",
    ),
    (
        "TMPDIR",
        "where -o - and --since to stdout write their scratch folder",
    ),
];

/// Exit statuses: the code, in a word, in a sentence.
pub(crate) const EXIT_STATUS: [(u8, &str, &str); 5] = [
    (0, "done", "everything asked for was done"),
    (
        1,
        "error",
        "an error, which the message on stderr names; with several IMAGEs, any that failed (the others were exported); also --clean when something could not be removed",
    ),
    (2, "usage error", "the command line is wrong"),
    (
        130,
        "interrupted",
        "interrupted by Ctrl-C or SIGTERM: the temporary tags were removed, the layers written in full kept",
    ),
    (
        141,
        "stdout closed early",
        "stdout's reader went away before the end (dlgrab IMAGE -o - | head)",
    ),
];

/// The command with its help footer: examples, environment, exit status.
pub(crate) fn command() -> clap::Command {
    let mut footer = String::from("Examples:\n");
    for (line, what) in EXAMPLES {
        footer.push_str(&format!("  {line:<38} {what}\n"));
    }
    let names: Vec<&str> = ENVIRONMENT.iter().map(|(name, _)| *name).collect();
    footer.push_str(&format!(
        "\nEnvironment: {}\n  (as docker reads them), {}.\n",
        names[..5].join(", "),
        names[5..].join(", ")
    ));
    let codes: Vec<String> = EXIT_STATUS
        .iter()
        .map(|(code, word, _)| format!("{code} {word}"))
        .collect();
    footer.push_str(&format!("Exit status: {}.\n", codes.join(", ")));
    footer.push_str("More: man dlgrab, or dlgrab --generate man | man -l -");
    Args::command().after_help(footer)
}

/// Output formats of `--format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum FormatArg {
    /// `<id>/{json,layer.tar,VERSION}` plus the files `docker load` needs.
    Seed,
    /// An OCI image layout.
    Oci,
    /// The storage layout of the CNCF distribution registry.
    Registry,
}

/// What `--generate` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Generate {
    /// Bash completions.
    Bash,
    /// Zsh completions.
    Zsh,
    /// Fish completions.
    Fish,
    /// The man page (roff).
    Man,
}

/// Ways of getting a layer out of the daemon (`--via`; see [`crate::plan::Via`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum ViaArg {
    /// The cheapest for this daemon and image.
    Auto,
    /// A push into the temporary registry.
    Push,
    /// A `docker save` stream.
    Save,
    /// The layer's tar rebuilt from the daemon's classic layer store (its
    /// data root must be readable: a local daemon, dlgrab run as root).
    Store,
    /// The store route through the Engine API: the layer store read by a
    /// container that is created, never started, and removed (classic
    /// stores; any user the daemon serves, local or remote).
    Archive,
}

impl Args {
    /// The output format the flags ask for.
    pub(crate) fn format(&self) -> layer_writer::Format {
        match (self.registry_format, self.format) {
            (true, _) | (false, Some(FormatArg::Registry)) => layer_writer::Format::Registry,
            (false, Some(FormatArg::Oci)) => layer_writer::Format::Oci,
            (false, Some(FormatArg::Seed) | None) => layer_writer::Format::Seed,
        }
    }

    /// The route `--via` asks for.
    pub(crate) fn via(&self) -> Via {
        match self.via {
            ViaArg::Auto => Via::Auto,
            ViaArg::Push => Via::Push,
            ViaArg::Save => Via::Save,
            ViaArg::Store => Via::Store,
            ViaArg::Archive => Via::Archive,
        }
    }

    /// Whether stdout carries data (`-o -`), so messages go to stderr.
    pub(crate) fn stdout_is_data(&self) -> bool {
        self.outdir.as_os_str() == "-"
    }

    /// Which layer of each named image to export.
    pub(crate) fn selector(&self) -> docker_driver::LayerSelector {
        match (self.index, &self.diff_id) {
            (Some(i), _) => docker_driver::LayerSelector::Index(i),
            (None, Some(d)) => docker_driver::LayerSelector::DiffId(d.clone()),
            (None, None) => docker_driver::LayerSelector::Top,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn parse(args: &[&str]) -> Args {
        Args::try_parse_from(std::iter::once("dlgrab").chain(args.iter().copied()))
            .expect("arguments parse")
    }

    #[test]
    fn seed_flags_are_accepted() {
        let a = parse(&["--clean", "--debug", "-o", "out", "-p", "5000", "abc123"]);
        assert_eq!(a.layers, ["abc123"]);
        assert_eq!(a.outdir, PathBuf::from("out"));
        assert_eq!(a.port, 5000);
        assert!(a.clean && a.debug);
        assert_eq!(a.format(), layer_writer::Format::Seed);
    }

    #[test]
    fn registry_format_flag_selects_registry_layout() {
        assert_eq!(
            parse(&["--registry-format", "x"]).format(),
            layer_writer::Format::Registry
        );
        assert_eq!(
            parse(&["--format", "oci", "x"]).format(),
            layer_writer::Format::Oci
        );
    }

    #[test]
    fn selectors() {
        assert_eq!(parse(&["x"]).selector(), docker_driver::LayerSelector::Top);
        assert_eq!(
            parse(&["--index", "2", "x"]).selector(),
            docker_driver::LayerSelector::Index(2)
        );
        assert_eq!(
            parse(&["--diff-id", "sha256:ab", "x"]).selector(),
            docker_driver::LayerSelector::DiffId("sha256:ab".into())
        );
    }

    #[test]
    fn since_takes_a_base_and_conflicts_with_layer_selection() {
        let a = parse(&["--since", "base:1", "img:2", "-o", "d.tar"]);
        assert_eq!(a.since.as_deref(), Some("base:1"));
        assert!(!a.stdout_is_data());
        assert!(parse(&["--since", "b", "i", "-o", "-"]).stdout_is_data());
        for extra in [
            &["--index", "1"][..],
            &["--diff-id", "sha256:ab"],
            &["--format", "oci"],
            &["--registry-format"],
        ] {
            let mut argv = vec!["dlgrab", "--since", "b", "i", "-o", "d.tar"];
            argv.extend_from_slice(extra);
            assert!(Args::try_parse_from(argv).is_err(), "{extra:?}");
        }
    }

    #[test]
    fn context_flag_and_generate() {
        assert_eq!(
            parse(&["-c", "remote", "x"]).context.as_deref(),
            Some("remote")
        );
        assert_eq!(
            parse(&["--context", "remote", "x"]).context.as_deref(),
            Some("remote")
        );
        assert_eq!(parse(&["x"]).context, None);
        assert_eq!(parse(&["--generate", "zsh"]).generate, Some(Generate::Zsh));
        assert!(Args::try_parse_from(["dlgrab", "--generate", "man", "x"]).is_err());
        assert!(Args::try_parse_from(["dlgrab", "-c", "r", "--data-root", "/d", "x"]).is_err());
    }

    #[test]
    fn clean_alone_sweeps_and_timeout_defaults_to_ten_minutes() {
        let a = parse(&["--clean"]);
        assert!(a.clean && a.layers.is_empty());
        assert_eq!(a.timeout, 600);
        assert_eq!(parse(&["--timeout", "5", "x"]).timeout, 5);
        assert!(Args::try_parse_from(["dlgrab", "--timeout", "soon", "x"]).is_err());
    }

    #[test]
    fn to_takes_a_destination_and_images() {
        let a = parse(&["--to", "ssh://me@far", "img:1", "img:2"]);
        assert_eq!(a.to.as_deref(), Some("ssh://me@far"));
        assert_eq!(a.layers, ["img:1", "img:2"]);
        for extra in [&["--since", "b"][..], &["-o", "out"], &["--index", "1"]] {
            let mut argv = vec!["dlgrab", "--to", "ctx", "img"];
            argv.extend_from_slice(extra);
            assert!(Args::try_parse_from(argv).is_err(), "{extra:?}");
        }
        assert!(Args::try_parse_from(["dlgrab", "--to", "ctx"]).is_err());
    }

    #[test]
    fn platform_takes_os_arch_and_variant() {
        let a = parse(&["--platform", "linux/arm64/v8", "x"]);
        assert_eq!(
            a.platform.map(|p| p.to_string()).as_deref(),
            Some("linux/arm64/v8")
        );
        assert_eq!(parse(&["x"]).platform, None);
        let err = Args::try_parse_from(["dlgrab", "--platform", "arm64", "x"]).unwrap_err();
        assert!(
            err.to_string().contains("expected os/arch[/variant]"),
            "{err}"
        );
    }

    #[test]
    fn a_layer_or_list_is_required() {
        assert!(Args::try_parse_from(["dlgrab"]).is_err());
        assert!(Args::try_parse_from(["dlgrab", "--list", "img"]).is_ok());
        assert!(Args::try_parse_from(["dlgrab", "--list", "img", "x"]).is_err());
        assert!(
            Args::try_parse_from(["dlgrab", "--registry-format", "--format", "oci", "x"]).is_err()
        );
    }
}
