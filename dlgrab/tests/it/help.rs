//! `--help` fits a screen and says what a newcomer needs first; the man
//! page holds the rest.

use crate::dlgrab;

/// The help `ARGS` print, checked as a successful run.
#[track_caller]
fn help(args: &[&str]) -> String {
    let out = dlgrab(args);
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout).expect("utf-8")
}

#[test]
fn help_fits_a_screen_with_examples_environment_and_exit_status() {
    let text = help(&["--help"]);
    assert_eq!(text, help(&["-h"]));
    let lines = text.lines().count();
    assert!(lines <= 40, "{lines} lines:\n{text}");
    assert!(
        text.lines().all(|l| l.chars().count() <= 100),
        "a line is wider than 100 columns:\n{text}"
    );
    for needle in [
        "dlgrab IMAGE -o DIR",
        "dlgrab --list IMAGE",
        "--index 2",
        "-o - | tar -t",
        "--since BASE IMAGE",
        "--to ",
        "--data-root ",
        "--generate <WHAT>",
        "DOCKER_HOST",
        "DOCKER_CONTEXT",
        "Exit status: 0 done, 1 error, 2 usage error, 130 interrupted",
        "man dlgrab",
    ] {
        assert!(text.contains(needle), "{needle:?} missing:\n{text}");
    }
    insta::assert_snapshot!("help", text);
}

#[test]
fn the_man_page_has_the_rest() {
    let page = help(&["--generate", "man"]);
    for needle in [
        ".SH SYNOPSIS",
        "\\fBdlgrab\\fR [OPTIONS] LAYER...",
        ".SH EXAMPLES",
        ".SH ENVIRONMENT",
        ".SH \"EXIT STATUS\"",
        ".SH FILES",
        // Options --help leaves out.
        "\\-\\-timeout",
        "\\-\\-registry\\-format",
        // The long form of an option's help.
        "intermediate image IDs",
    ] {
        assert!(page.contains(needle), "{needle:?} missing:\n{page}");
    }
    // `man` renders it without a warning, when man is here.
    let Ok(out) = std::process::Command::new("man")
        .args(["--warnings", "-l", "-"])
        .env("MANWIDTH", "80")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write;
            child
                .stdin
                .take()
                .expect("stdin")
                .write_all(page.as_bytes())?;
            child.wait_with_output()
        })
    else {
        return;
    };
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stderr.trim().is_empty(),
        "man: {stderr}"
    );
}
