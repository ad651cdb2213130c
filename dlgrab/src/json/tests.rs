//! Each mode's document, done and failed, serialised and validated against
//! `docs/result.schema.json`; the kinds read off the run's typed errors.

use std::path::PathBuf;

use serde_json::{Value, json};

use super::*;
use crate::copy::How;
use crate::sweep::{Kept, Swept};

/// The schema as shipped.
const SCHEMA_TEXT: &str = include_str!("../../../docs/result.schema.json");

/// Why `document` breaks the schema, one line per error (empty: valid).
fn violations(document: &Value) -> Vec<String> {
    let schema: Value = serde_json::from_str(SCHEMA_TEXT).expect("the schema is JSON");
    let validator = jsonschema::draft202012::new(&schema).expect("the schema is a valid schema");
    validator
        .iter_errors(document)
        .map(|e| format!("{}: {e}", e.instance_path()))
        .collect()
}

/// `document` as JSON, checked against the schema.
#[track_caller]
fn valid(document: &Document) -> Value {
    let value = serde_json::to_value(document).expect("serialises");
    let errors = violations(&value);
    assert!(
        errors.is_empty(),
        "{value:#}\nbreaks the schema:\n{}",
        errors.join("\n")
    );
    value
}

#[track_caller]
fn invalid(value: &Value) {
    assert!(
        !violations(value).is_empty(),
        "{value:#}\nwas taken by the schema"
    );
}

const DIFF_ID: &str = "sha256:5f70bf18a086007016e948b04aed3b82103a36bea41755b6cddfaf10ace3c6ef";

fn exported(index: usize) -> Exported {
    Exported {
        image: "sha256:aa".into(),
        index,
        diff_id: DIFF_ID.into(),
        id: "0123abcd".into(),
        route: "store",
        route_reason: "the layer store is readable".into(),
        tar_size: 1024,
        files: vec![PathBuf::from("out/0123abcd/layer.tar")],
    }
}

fn no_such_image(reference: &str) -> Failure {
    Failure::of(
        &docker_driver::DriverError::NoSuchImage {
            reference: reference.into(),
        }
        .into(),
    )
}

#[test]
fn export_done_and_failed_items() {
    let items = vec![
        Item::layer("app:1", Action::Exported, exported(1), 0.25),
        Item::failed("nosuch:1", no_such_image("nosuch:1"), Some(0.01)),
    ];
    let document = Document::finished(Mode::Export, items, Totals::None, 0.3);
    let value = valid(&document);
    assert_eq!(value["schema"], 1);
    assert_eq!(value["mode"], "export");
    assert_eq!(value["ok"], false);
    assert_eq!(
        value["error"],
        json!({"kind": "no_such_image", "message": "no such image: nosuch:1"}),
        "the run's error is the first failed item's"
    );
    let done = &value["items"][0];
    assert_eq!(done["reference"], "app:1");
    assert_eq!(done["action"], "exported");
    assert_eq!(done["route"], "store");
    assert_eq!(done["route_reason"], "the layer store is readable");
    assert_eq!(done["bytes"], 1024);
    assert_eq!(done["diff_id"], DIFF_ID);
    assert_eq!(done["files"], json!(["out/0123abcd/layer.tar"]));
    assert_eq!(done["error"], Value::Null);
    let failed = &value["items"][1];
    assert_eq!(failed["action"], "failed");
    assert_eq!(failed["error"]["kind"], "no_such_image");
    assert_eq!(failed["route"], Value::Null);
}

#[test]
fn export_all_done_is_ok() {
    let items = vec![Item::layer("app:1", Action::Exported, exported(0), 0.2)];
    let value = valid(&Document::finished(Mode::Export, items, Totals::None, 0.2));
    assert_eq!(value["ok"], true);
    assert_eq!(value["error"], Value::Null);
}

#[test]
fn since_totals() {
    let mut layer = exported(2);
    layer.files.clear();
    let items = vec![Item::layer("app:2", Action::Archived, layer, 0.5)];
    let totals = Totals::Since(SinceTotals {
        base: "app:1".into(),
        image: "app:2".into(),
        image_id: "sha256:bb".into(),
        shared_layers: 2,
        archive: "delta.tar".into(),
        size: 4096,
    });
    let value = valid(&Document::finished(Mode::Since, items, totals, 0.6));
    assert_eq!(value["base"], "app:1");
    assert_eq!(value["shared_layers"], 2);
    assert_eq!(value["archive"], "delta.tar");
    assert_eq!(value["items"][0]["action"], "archived");
}

#[test]
fn since_that_failed_has_no_totals() {
    let failure = Failure::of(&Kind::NothingNew.error("nothing new: every layer of a is in b"));
    let document = Document::stopped(Mode::Since, failure, Vec::new(), Totals::None, 0.1);
    let value = valid(&document);
    assert_eq!(value["error"]["kind"], "nothing_new");
    assert!(value.get("archive").is_none(), "{value:#}");
    // A since document that claims success must name its archive.
    let mut ok = value.clone();
    ok["ok"] = json!(true);
    ok["error"] = Value::Null;
    invalid(&ok);
}

#[test]
fn copy_items_and_totals() {
    let copied = Copied {
        image: "app:1".into(),
        image_id: "sha256:aa".into(),
        dest_image_id: "sha256:aa".into(),
        tags: vec!["app:1".into()],
        how: How::Delta,
        layers: 3,
        layers_skipped: 2,
        layers_sent: 1,
        bytes_sent: 2048,
        routes: vec!["push"],
        seconds: 0.4,
    };
    let items = vec![
        Item::copied(copied),
        Item::failed("gone:1", no_such_image("gone:1"), None),
    ];
    let totals = Totals::Copy(CopyTotals {
        destination: "ssh://me@far".into(),
        layers_skipped: 2,
        layers_sent: 1,
        bytes_sent: 2048,
        rate: 5120.0,
    });
    let value = valid(&Document::finished(Mode::Copy, items, totals, 0.5));
    assert_eq!(value["destination"], "ssh://me@far");
    let done = &value["items"][0];
    assert_eq!(done["reference"], "app:1");
    assert_eq!(done["how"], "delta");
    assert_eq!(done["bytes"], 2048);
    assert_eq!(done["seconds"], 0.4);
    assert!(done.get("image").is_none(), "the name typed is `reference`");
    assert_eq!(value["items"][1]["error"]["kind"], "no_such_image");
}

#[test]
fn copy_that_could_not_start_names_its_destination() {
    let failure = Failure::of(&Kind::DaemonUnreachable.error("cannot connect to far"));
    let totals = Totals::Copy(CopyTotals {
        destination: "far".into(),
        ..CopyTotals::default()
    });
    let value = valid(&Document::stopped(
        Mode::Copy,
        failure,
        Vec::new(),
        totals,
        0.0,
    ));
    assert_eq!(value["destination"], "far");
    let mut without = value.clone();
    without
        .as_object_mut()
        .expect("an object")
        .remove("destination");
    invalid(&without);
}

#[test]
fn list_rows() {
    let rows = [
        LayerRow {
            index: 0,
            diff_id: DIFF_ID.into(),
            history_id: None,
            size: 5,
            created_by: "ADD a /".into(),
        },
        LayerRow {
            index: 1,
            diff_id: DIFF_ID.into(),
            history_id: Some("sha256:top".into()),
            size: 7,
            created_by: "RUN x".into(),
        },
    ];
    let items = rows
        .into_iter()
        .map(|row| Item::listed("app:1", row))
        .collect();
    let value = valid(&Document::finished(Mode::List, items, Totals::None, 0.0));
    assert_eq!(value["items"][1]["history_id"], "sha256:top");
    assert_eq!(value["items"][0]["history_id"], Value::Null);
    assert_eq!(value["items"][1]["bytes"], 7);
    assert_eq!(value["items"][1]["action"], "listed");
}

#[test]
fn clean_leftovers() {
    let swept = Swept {
        tags_removed: vec!["127.0.0.1:1/dlgrab-run-x:export".into()],
        containers_removed: vec!["dlgrab-archive-run-x".into()],
        tags_kept: vec![Kept {
            name: "127.0.0.1:1/dlgrab-run-y:export".into(),
            reason: "it is the image's only name".into(),
            failed: false,
        }],
        files_removed: vec![PathBuf::from("out/.dlgrab-scratch-run-x")],
        files_kept: vec![Kept {
            name: "out/.dlgrab-tmp-run-z".into(),
            reason: "permission denied".into(),
            failed: true,
        }],
    };
    let value = valid(&Document::finished(
        Mode::Clean,
        swept_items(&swept),
        Totals::None,
        0.0,
    ));
    let actions: Vec<&str> = value["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|i| i["action"].as_str().expect("action"))
        .collect();
    assert_eq!(actions, ["removed", "removed", "kept", "removed", "failed"]);
    assert_eq!(value["ok"], false, "a leftover not removed fails the run");
    assert_eq!(value["error"]["kind"], "output");
    assert_eq!(value["items"][1]["what"], "container");
    assert_eq!(value["items"][2]["reason"], "it is the image's only name");
    assert_eq!(value["items"][0]["reference"], Value::Null);
}

#[test]
fn every_mode_stopped_before_any_item() {
    let failure = Failure::of(&Kind::DaemonUnreachable.error("cannot connect"));
    for mode in [Mode::Export, Mode::Since, Mode::List, Mode::Clean] {
        let document = Document::stopped(mode, failure.clone(), Vec::new(), Totals::None, 0.0);
        let value = valid(&document);
        assert_eq!(value["ok"], false);
        assert_eq!(value["items"], json!([]));
    }
}

#[test]
fn the_schema_refuses_what_it_should() {
    let good = valid(&Document::finished(
        Mode::Export,
        vec![Item::failed("x", no_such_image("x"), None)],
        Totals::None,
        0.0,
    ));
    let mut unknown_kind = good.clone();
    unknown_kind["items"][0]["error"]["kind"] = json!("oops");
    invalid(&unknown_kind);
    let mut failed_without_error = good.clone();
    failed_without_error["items"][0]["error"] = Value::Null;
    invalid(&failed_without_error);
    let mut ok_with_error = good.clone();
    ok_with_error["ok"] = json!(true);
    invalid(&ok_with_error);
    let mut other_schema = good.clone();
    other_schema["schema"] = json!(2);
    invalid(&other_schema);
    let mut exported_without_diff_id = valid(&Document::finished(
        Mode::Export,
        vec![Item::layer("a", Action::Exported, exported(0), 0.0)],
        Totals::None,
        0.0,
    ));
    exported_without_diff_id["items"][0]
        .as_object_mut()
        .expect("an item")
        .remove("diff_id");
    invalid(&exported_without_diff_id);
}

#[test]
fn kinds_come_from_typed_errors() {
    use docker_driver::DriverError;
    #[track_caller]
    fn check(error: anyhow::Error, kind: Kind) {
        assert_eq!(Kind::of(&error), kind, "{error:#}");
    }
    check(
        docker_driver::check_typed("Bad:Ref")
            .expect_err("refused")
            .into(),
        Kind::BadReference,
    );
    check(
        anyhow::Error::new(DriverError::NoSuchImage {
            reference: "x".into(),
        })
        .context("cannot find the base image x"),
        Kind::NoSuchImage,
    );
    check(
        DriverError::NoLayerAtIndex {
            reference: "x".into(),
            index: 9,
            count: 2,
        }
        .into(),
        Kind::NoSuchLayer,
    );
    check(
        anyhow::Error::new(std::io::Error::from(std::io::ErrorKind::BrokenPipe))
            .context("cannot write the layer to stdout"),
        Kind::Output,
    );
    check(
        layer_writer::WriteError::DiffIdMismatch {
            expected: DIFF_ID.parse().expect("a digest"),
            actual: DIFF_ID.parse().expect("a digest"),
        }
        .into(),
        Kind::VerificationFailed,
    );
    check(anyhow::anyhow!("something else"), Kind::Internal);
    // A tag wins over the causes below it, and inside a context too.
    check(
        Kind::RouteFailed
            .tag(
                DriverError::NoSuchImage {
                    reference: "x".into(),
                }
                .into(),
            )
            .context("more"),
        Kind::RouteFailed,
    );
}

#[test]
fn a_tag_changes_no_word_of_the_message() {
    let error =
        anyhow::Error::new(std::io::Error::other("disk full")).context("cannot write the archive");
    let before = format!("{error:#}");
    let tagged = Kind::Output.tag(error);
    assert_eq!(format!("{tagged:#}"), before);
    assert_eq!(Failure::of(&tagged).message, before);
}
