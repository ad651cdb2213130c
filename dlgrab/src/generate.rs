//! Shell completions and the man page, generated from the clap definition
//! (`dlgrab --generate bash|zsh|fish|man`; `cargo xtask dist` writes them
//! all under `target/dist`). The man page adds to clap's sections a
//! synopsis per mode, and EXAMPLES, ENVIRONMENT, EXIT STATUS and FILES
//! from the tables `--help` prints in short ([`crate::cli::EXAMPLES`], …).

use std::io::Write;

use clap_complete::Shell;

use crate::cli::{ENVIRONMENT, EXAMPLES, EXIT_STATUS, Generate};

/// Writes the completion script or man page `what` to `out`.
pub(crate) fn write(what: Generate, out: &mut dyn Write) -> anyhow::Result<()> {
    let mut command = crate::cli::command();
    let shell = match what {
        Generate::Bash => Shell::Bash,
        Generate::Zsh => Shell::Zsh,
        Generate::Fish => Shell::Fish,
        Generate::Man => return man_page(command, out),
    };
    clap_complete::generate(shell, &mut command, "dlgrab", out);
    Ok(())
}

/// The synopsis, one line per mode: (options before, operands after).
const SYNOPSIS: [&str; 6] = [
    "[OPTIONS] LAYER...",
    "--list IMAGE [OPTIONS]",
    "--since BASE IMAGE -o FILE [OPTIONS]",
    "--to DEST IMAGE... [OPTIONS]",
    "--clean [-o DIR] [OPTIONS]",
    "--generate bash|zsh|fish|man",
];

/// What dlgrab reads and writes besides its arguments.
const FILES: [(&str, &str); 5] = [
    (
        "DIR/.dlgrab-*",
        "a run's scratch files in the -o folder, removed when it ends; a later run (or --clean) removes those of runs that died",
    ),
    (
        "$TMPDIR/.dlgrab-*",
        "the scratch folder of -o - and of --since writing to stdout",
    ),
    (
        "$TMPDIR/dlgrab-names.lock",
        "held while dlgrab adds or removes its temporary tag on a daemon",
    ),
    (
        "~/.docker/config.json, ~/.docker/contexts/",
        "the Docker CLI's current context and its context store, read to find the daemon (DOCKER_CONFIG moves them)",
    ),
    (
        "/var/lib/docker",
        "a local daemon's data root, read (never written) by the store route and by --data-root",
    ),
];

fn man_page(command: clap::Command, out: &mut dyn Write) -> anyhow::Result<()> {
    // Not `Man::render`: its synopsis shows `[LAYER]` for LAYER..., and
    // the sections after OPTIONS come from the tables.
    let man = clap_mangen::Man::new(command);
    man.render_title(out)?;
    man.render_name_section(out)?;
    writeln!(out, ".SH SYNOPSIS")?;
    for (i, line) in SYNOPSIS.iter().enumerate() {
        if i > 0 {
            writeln!(out, ".br")?;
        }
        writeln!(out, "\\fBdlgrab\\fR {}", roff(line))?;
    }
    man.render_description_section(out)?;
    man.render_options_section(out)?;
    writeln!(out, ".SH EXAMPLES")?;
    for (line, what) in EXAMPLES {
        writeln!(
            out,
            ".TP\n\\fB{}\\fR\n{}",
            roff(line),
            roff(&sentence(what))
        )?;
    }
    writeln!(out, ".SH ENVIRONMENT")?;
    for (name, what) in ENVIRONMENT {
        writeln!(
            out,
            ".TP\n\\fB{}\\fR\n{}",
            roff(name),
            roff(&sentence(what))
        )?;
    }
    writeln!(out, ".SH \"EXIT STATUS\"")?;
    for (code, _, what) in EXIT_STATUS {
        writeln!(out, ".TP\n\\fB{code}\\fR\n{}", roff(&sentence(what)))?;
    }
    writeln!(out, ".SH FILES")?;
    for (path, what) in FILES {
        writeln!(
            out,
            ".TP\n\\fI{}\\fR\n{}",
            roff(path),
            roff(&sentence(what))
        )?;
    }
    man.render_version_section(out)?;
    Ok(())
}

/// `text` with a capital first letter and a final period.
fn sentence(text: &str) -> String {
    let mut chars = text.chars();
    let first = chars.next().map(|c| c.to_uppercase().to_string());
    format!("{}{}.", first.unwrap_or_default(), chars.as_str())
}

/// `text` as roff prints it literally: backslashes and dashes escaped, and
/// a line that starts with a control character kept as text.
fn roff(text: &str) -> String {
    let escaped = text.replace('\\', "\\e").replace('-', "\\-");
    if escaped.starts_with(['.', '\'']) {
        format!("\\&{escaped}")
    } else {
        escaped
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn generated(what: Generate) -> String {
        let mut out = Vec::new();
        write(what, &mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn completions_know_the_flags() {
        for what in [Generate::Bash, Generate::Zsh, Generate::Fish] {
            let script = generated(what);
            for flag in [
                "context",
                "since",
                "outdir",
                "registry-format",
                "oci",
                "generate",
            ] {
                assert!(script.contains(flag), "{what:?} lacks {flag}");
            }
        }
        assert!(generated(Generate::Bash).contains("complete -F"));
        assert!(generated(Generate::Fish).contains("complete -c dlgrab"));
        assert!(generated(Generate::Zsh).starts_with("#compdef dlgrab"));
    }

    #[test]
    fn man_page() {
        let page = generated(Generate::Man);
        assert!(page.starts_with(".ie \\n(.g .ds Aq"), "{}", &page[..80]);
        assert!(page.contains(".TH dlgrab 1"), "{page}");
        for section in [
            ".SH NAME",
            ".SH SYNOPSIS",
            ".SH DESCRIPTION",
            ".SH OPTIONS",
            ".SH EXAMPLES",
            ".SH ENVIRONMENT",
            ".SH \"EXIT STATUS\"",
            ".SH FILES",
        ] {
            assert!(page.contains(section), "{section} missing:\n{page}");
        }
        assert!(!page.contains(".SH EXTRA"), "{page}");
        for text in [
            "\\fBdlgrab\\fR [OPTIONS] LAYER...",
            "\\-\\-context",
            "\\-\\-generate",
            "DOCKER_HOST",
            "\\fB130\\fR",
            "dlgrab \\-\\-list IMAGE",
        ] {
            assert!(page.contains(text), "{text} missing:\n{page}");
        }
    }

    #[test]
    fn roff_escapes() {
        assert_eq!(roff("-o -"), "\\-o \\-");
        assert_eq!(roff(".dlgrab-x"), "\\&.dlgrab\\-x");
        assert_eq!(roff("a\\b"), "a\\eb");
        assert_eq!(sentence("the end"), "The end.");
    }
}
