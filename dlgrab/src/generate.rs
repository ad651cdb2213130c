//! Shell completions and the man page, generated from the clap definition
//! (`dlgrab --generate bash|zsh|fish|man`; `cargo xtask dist` writes them
//! all under `target/dist`).

use std::io::Write;

use clap::CommandFactory;
use clap_complete::Shell;

use crate::cli::{Args, Generate};

/// Writes the completion script or man page `what` to `out`.
pub(crate) fn write(what: Generate, out: &mut dyn Write) -> anyhow::Result<()> {
    let mut command = Args::command();
    let shell = match what {
        Generate::Bash => Shell::Bash,
        Generate::Zsh => Shell::Zsh,
        Generate::Fish => Shell::Fish,
        Generate::Man => {
            clap_mangen::Man::new(command).render(out)?;
            return Ok(());
        }
    };
    clap_complete::generate(shell, &mut command, "dlgrab", out);
    Ok(())
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
        // clap_complete's scripts also offer hidden flags (--generate): that
        // flag works, it is only left out of --help and the man page.
        for what in [Generate::Bash, Generate::Zsh, Generate::Fish] {
            let script = generated(what);
            for flag in ["context", "since", "outdir", "registry-format", "oci"] {
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
        assert!(page.contains("\\-\\-context"), "{page}");
        assert!(!page.contains("\\-\\-generate"), "{page}");
    }
}
