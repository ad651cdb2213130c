//! Hostile tar-split metadata: garbage lines, names that leave the layer
//! folder (`../`, absolute, raw bytes), sizes beyond the files, bad
//! payloads. The assembler must never panic nor read a file outside the
//! folder, and its errors say what failed.

use std::io::Read;
use std::path::{Component, Path};

use base64::Engine as _;
use proptest::prelude::*;

use super::{Assembler, inside};

/// Bytes of a file beside the layer folder, which no stream may reach.
const OUTSIDE: &[u8] = b"OUTSIDE-THE-LAYER-FOLDER";

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// A name made of plain, `.`, `..` and empty components, maybe absolute.
fn name() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::collection::vec(
            prop::sample::select(vec!["a", "f", "..", ".", "", "outside", "dir"]),
            0..6
        )
        .prop_map(|parts| parts.join("/")),
        prop::collection::vec(
            prop::sample::select(vec!["a", "f", "..", ".", "", "outside", "dir"]),
            0..6
        )
        .prop_map(|parts| format!("/{}", parts.join("/"))),
        Just("../outside".to_owned()),
        Just("./../outside".to_owned()),
        Just("dir/../../outside".to_owned()),
        "\\PC{0,20}",
    ]
}

/// One line of a hostile stream.
fn line() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        // A raw segment.
        prop::collection::vec(any::<u8>(), 0..600).prop_map(|p| format!(
            r#"{{"type":2,"payload":"{}"}}"#,
            b64(&p)
        )
        .into_bytes()),
        // A file entry, by name or raw name, any size and checksum.
        (
            name(),
            any::<bool>(),
            prop_oneof![0..64u64, any::<u64>()],
            prop::collection::vec(any::<u8>(), 0..10)
        )
            .prop_map(|(name, raw, size, crc)| {
                let name = if raw {
                    format!(r#""name_raw":"{}""#, b64(name.as_bytes()))
                } else {
                    format!(r#""name":{}"#, serde_json::to_string(&name).unwrap())
                };
                format!(
                    r#"{{"type":1,{name},"size":{size},"payload":"{}"}}"#,
                    b64(&crc)
                )
                .into_bytes()
            }),
        // Not base64, unknown types, not JSON, random bytes.
        Just(br#"{"type":2,"payload":"%%%not base64"}"#.to_vec()),
        any::<u8>().prop_map(|t| format!(r#"{{"type":{t}}}"#).into_bytes()),
        "\\PC{0,40}".prop_map(String::into_bytes),
        prop::collection::vec(any::<u8>(), 0..80),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// A name is either refused or a path below the folder.
    #[test]
    fn names_stay_inside(name in prop::collection::vec(any::<u8>(), 0..60), text in name()) {
        let folder = Path::new("/layer/diff");
        for name in [&name[..], text.as_bytes()] {
            if let Ok(path) = inside(folder, name) {
                let rest = path.strip_prefix(folder).expect("below the folder");
                prop_assert!(rest.components().all(|c| matches!(c, Component::Normal(_))), "{path:?}");
                prop_assert!(rest.components().next().is_some());
            }
        }
    }

    /// Hostile streams: no panic, nothing from outside the folder (what a
    /// failed read emitted before its error included), errors with a
    /// message.
    #[test]
    fn hostile_streams_never_panic_nor_escape(lines in prop::collection::vec(line(), 0..12)) {
        let tmp = tempfile::tempdir().unwrap();
        let folder = tmp.path().join("diff");
        std::fs::create_dir_all(folder.join("dir")).unwrap();
        std::fs::write(folder.join("a"), b"0123456789").unwrap();
        std::fs::write(folder.join("dir/f"), b"").unwrap();
        std::fs::write(tmp.path().join("outside"), OUTSIDE).unwrap();
        let stream = lines.join(&b'\n');
        let mut out = Vec::new();
        let result = Assembler::new(&stream[..], folder).read_to_end(&mut out);
        prop_assert!(
            !out.windows(OUTSIDE.len()).any(|w| w == OUTSIDE),
            "a file outside the layer folder was read"
        );
        if let Err(e) = result {
            prop_assert!(!e.to_string().is_empty());
        }
    }
}
