//! Each error a user can meet without a daemon, as stderr shows it: what
//! failed, with what they typed, and what to try, in one or two sentences.

use std::path::Path;

use crate::{NO_DAEMON, dlgrab, dlgrab_in, failed};

/// Asserts that no run of four words comes twice in `message` (a cause
/// repeating its context, as `cannot connect …: cannot connect …` did).
#[track_caller]
fn no_doubled_phrase(message: &str) {
    let words: Vec<String> = message
        .split_whitespace()
        .map(|w| {
            w.trim_matches(|c: char| !c.is_alphanumeric())
                .to_lowercase()
        })
        .collect();
    let phrases: Vec<&[String]> = words.windows(4).collect();
    for (i, phrase) in phrases.iter().enumerate() {
        assert!(
            !phrases.iter().skip(i + 4).any(|p| p == phrase),
            "{:?} comes twice in:\n{message}",
            phrase.join(" ")
        );
    }
}

/// The error of `dlgrab ARGS` (exit status 1), checked and snapshotted.
#[track_caller]
fn check(name: &str, args: &[&str]) {
    let stderr = failed(&dlgrab(args), 1);
    check_message(name, &stderr);
}

#[track_caller]
fn check_message(name: &str, stderr: &str) {
    assert!(stderr.starts_with("dlgrab: error: "), "{stderr}");
    assert!(
        stderr.lines().count() <= 2,
        "more than two lines:\n{stderr}"
    );
    assert!(!stderr.contains(".dlgrab-"), "a scratch path:\n{stderr}");
    assert!(!stderr.contains("os error"), "library words:\n{stderr}");
    no_doubled_phrase(stderr);
    insta::assert_snapshot!(name, stderr);
}

#[test]
fn no_daemon_at_docker_host() {
    let stderr = failed(&dlgrab(&["busybox"]), 1);
    assert!(stderr.contains(NO_DAEMON), "{stderr}");
    check_message("no_daemon_at_docker_host", &stderr);
}

#[test]
fn no_daemon_of_a_context() {
    let dir = tempfile::tempdir().expect("tempdir");
    // A context as `docker context create far --docker host=…` writes it.
    let name = "far";
    let meta = dir
        .path()
        .join(".docker/contexts/meta")
        .join(sha256_hex(name));
    std::fs::create_dir_all(&meta).expect("mkdir");
    let json = format!(
        r#"{{"Name":"{name}","Metadata":{{}},"Endpoints":{{"docker":{{"Host":"{NO_DAEMON}","SkipTLSVerify":false}}}}}}"#
    );
    std::fs::write(meta.join("meta.json"), json).expect("meta.json");
    let out = dlgrab_in(dir.path(), &["--context", name, "busybox"])
        .output()
        .expect("dlgrab runs");
    check_message("no_daemon_of_a_context", &failed(&out, 1));
}

/// The sha256 of `text` in hex, as the context store names its folders.
fn sha256_hex(text: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(text.as_bytes()))
}

#[test]
fn a_file_where_the_output_folder_goes() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("afile"), "").expect("afile");
    let out = dlgrab_in(dir.path(), &["busybox", "-o", "afile"])
        .output()
        .expect("dlgrab runs");
    check_message("a_file_where_the_output_folder_goes", &failed(&out, 1));
    assert!(Path::new(&dir.path().join("afile")).is_file());
}

#[test]
fn references_are_refused_before_any_daemon_call() {
    // No daemon answers at DOCKER_HOST: these errors come before dlgrab
    // tries to connect.
    check("uppercase_reference", &["UPPER:case"]);
    check("empty_reference", &[""]);
    check("empty_tag", &["busybox:"]);
    check("history_placeholder", &["<missing>"]);
    check("uppercase_list", &["--list", "Busybox"]);
    check(
        "uppercase_since",
        &["--since", "Base", "app:1", "-o", "d.tar"],
    );
}

#[test]
fn flag_combinations() {
    check("stdout_and_two_layers", &["a", "b", "-o", "-"]);
    check("since_without_output", &["--since", "base", "app:1"]);
}

#[test]
fn usage_errors_exit_2() {
    let stderr = failed(&dlgrab(&[]), 2);
    assert!(stderr.contains("Usage: dlgrab"), "{stderr}");
    let stderr = failed(&dlgrab(&["--index", "x", "busybox"]), 2);
    assert!(stderr.contains("invalid value 'x'"), "{stderr}");
}

#[test]
fn the_doubled_phrase_check_finds_one() {
    let doubled = std::panic::catch_unwind(|| {
        no_doubled_phrase("cannot connect to the daemon: cannot connect to the daemon at x")
    });
    assert!(doubled.is_err());
    no_doubled_phrase("dlgrab: error: a b c d e f");
}

/// `-o -` with a terminal on stdout (a pty from util-linux's `script`,
/// part of every Debian) is refused before any daemon is asked: a layer's
/// tar is no use on a screen.
#[test]
fn a_tar_is_never_written_to_a_terminal() {
    let command = format!("{} busybox -o -", env!("CARGO_BIN_EXE_dlgrab"));
    let out = std::process::Command::new("script")
        .args(["-qec", &command, "/dev/null"])
        .env("DOCKER_HOST", "unix:///nonexistent/docker.sock")
        .env_remove("DOCKER_CONTEXT")
        .stdin(std::process::Stdio::null())
        .output()
        .expect("script runs");
    let shown = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{shown}");
    assert!(
        shown.contains("-o - writes a tar to stdout, which is a terminal here"),
        "{shown}"
    );
    assert!(
        !shown.contains("nonexistent"),
        "a daemon was asked: {shown}"
    );
}
