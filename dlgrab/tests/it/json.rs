//! `--json` when the run fails with no daemon to talk to: one document on
//! stdout, valid against `docs/result.schema.json`, saying what failed;
//! none for a usage error clap refuses.

use std::process::Output;

use serde_json::{Value, json};

use crate::{NO_DAEMON, dlgrab};

/// The stdout of a run that exited with `code`, as a document checked
/// against the schema.
#[track_caller]
fn document(out: &Output, code: i32) -> Value {
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(code),
        "stdout:\n{stdout}\nstderr:\n{stderr}"
    );
    let value: Value = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("stdout is not JSON ({e}):\n{stdout}\nstderr:\n{stderr}"));
    let schema: Value =
        serde_json::from_str(include_str!("../../../docs/result.schema.json")).expect("schema");
    let validator = jsonschema::draft202012::new(&schema).expect("a valid schema");
    let errors: Vec<String> = validator
        .iter_errors(&value)
        .map(|e| format!("{}: {e}", e.instance_path()))
        .collect();
    assert!(
        errors.is_empty(),
        "{value:#}\nbreaks the schema:\n{}",
        errors.join("\n")
    );
    assert_eq!(value["schema"], 1);
    // stderr says it too, for a person.
    assert!(stderr.contains("dlgrab: error: "), "{stderr}");
    value
}

#[test]
fn no_daemon_is_a_document_with_no_items() {
    let value = document(&dlgrab(&["many:1", "nosuch:1", "--json"]), 1);
    assert_eq!(value["mode"], "export");
    assert_eq!(value["ok"], false);
    assert_eq!(value["items"], json!([]));
    assert_eq!(value["error"]["kind"], "daemon_unreachable");
    let message = value["error"]["message"].as_str().expect("a message");
    assert!(message.contains(NO_DAEMON), "{message}");
}

#[test]
fn every_mode_says_it_when_no_daemon_answers() {
    for (args, mode) in [
        (&["--list", "busybox", "--json"][..], "list"),
        (&["--clean", "--json"][..], "clean"),
        (
            &["--since", "a:1", "a:2", "-o", "d.tar", "--json"][..],
            "since",
        ),
        (
            &["--to", "unix:///nonexistent/dest.sock", "a:1", "--json"][..],
            "copy",
        ),
    ] {
        let value = document(&dlgrab(args), 1);
        assert_eq!(value["mode"], mode, "{args:?}");
        assert_eq!(
            value["error"]["kind"], "daemon_unreachable",
            "{args:?}: {value:#}"
        );
    }
}

#[test]
fn a_copy_that_cannot_start_names_its_destination() {
    let value = document(
        &dlgrab(&["--to", "unix:///nonexistent/dest.sock", "a:1", "--json"]),
        1,
    );
    assert_eq!(value["destination"], "unix:///nonexistent/dest.sock");
    assert_eq!(value["bytes_sent"], 0);
}

#[test]
fn bad_references_are_failed_items_and_ask_no_daemon() {
    let value = document(&dlgrab(&["Bad:Ref", "<missing>", "--json"]), 1);
    assert_eq!(value["mode"], "export");
    assert_eq!(value["error"]["kind"], "bad_reference");
    let items = value["items"].as_array().expect("items");
    let typed: Vec<&str> = items
        .iter()
        .map(|i| i["reference"].as_str().expect("reference"))
        .collect();
    assert_eq!(
        typed,
        ["Bad:Ref", "<missing>"],
        "one item per reference, in order"
    );
    for item in items {
        assert_eq!(item["action"], "failed", "{item}");
        assert_eq!(item["error"]["kind"], "bad_reference", "{item}");
    }
    let message = value["error"]["message"].as_str().expect("a message");
    assert!(
        !message.contains(NO_DAEMON),
        "the daemon was not asked: {message}"
    );
}

#[test]
fn a_refused_flag_combination_is_a_document() {
    let value = document(
        &dlgrab(&["a:1", "b:1", "--since", "base:1", "-o", "d.tar", "--json"]),
        1,
    );
    assert_eq!(value["mode"], "since");
    assert_eq!(value["error"]["kind"], "bad_arguments");
}

#[test]
fn a_usage_error_prints_no_document() {
    let out = dlgrab(&["--json", "--no-such-flag", "busybox"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        out.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}
