//! `cargo xtask dist`: shell completions and the man page, generated from
//! dlgrab's clap definition (`dlgrab --generate …`), under `target/dist`.
//!
//! ```text
//! target/dist/completions/dlgrab.bash   bash (source it, or copy to bash-completion's folder)
//! target/dist/completions/_dlgrab       zsh (a folder of $fpath)
//! target/dist/completions/dlgrab.fish   fish (~/.config/fish/completions)
//! target/dist/man/dlgrab.1              man page (a man1 folder of $MANPATH)
//! ```

use std::fs;
use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result, bail, ensure};

/// Where everything goes, from the workspace root.
const DIST: &str = "target/dist";

/// What is generated: `--generate` value, file under `target/dist`.
const FILES: [(&str, &str); 4] = [
    ("bash", "completions/dlgrab.bash"),
    ("zsh", "completions/_dlgrab"),
    ("fish", "completions/dlgrab.fish"),
    ("man", "man/dlgrab.1"),
];

/// `cargo xtask dist [completions|man]`.
pub(crate) fn run(args: &[&str]) -> Result<()> {
    let wanted: Vec<_> = match args {
        [] => FILES.iter().collect(),
        ["completions"] => FILES.iter().filter(|(what, _)| *what != "man").collect(),
        ["man"] => FILES.iter().filter(|(what, _)| *what == "man").collect(),
        _ => bail!("usage: cargo xtask dist [completions|man]"),
    };
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    crate::sh::run(Command::new(cargo).args(["build", "-q", "-p", "dlgrab"]))?;
    let dlgrab = Path::new("target/debug/dlgrab");
    for (what, file) in wanted {
        let out = Command::new(dlgrab)
            .args(["--generate", what])
            .output()
            .with_context(|| format!("cannot run {}", dlgrab.display()))?;
        ensure!(
            out.status.success() && !out.stdout.is_empty(),
            "dlgrab --generate {what} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let path = Path::new(DIST).join(file);
        fs::create_dir_all(path.parent().expect("files lie in folders"))?;
        fs::write(&path, &out.stdout)
            .with_context(|| format!("cannot write {}", path.display()))?;
        println!("{}", path.display());
    }
    Ok(())
}
