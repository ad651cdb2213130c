use std::io::{Read, Write};
use std::path::Path;

use base64::Engine as _;
use sha2::{Digest as _, Sha256};

use super::tar_split::Assembler;
use super::*;

/// One entry of a test layer.
pub(crate) enum Item<'a> {
    Dir(&'a [u8]),
    File(&'a [u8], &'a [u8]),
    /// A hard link `name` → `target`.
    Link(&'a [u8], &'a [u8]),
    /// A symlink `name` → `target`.
    Symlink(&'a [u8], &'a [u8]),
}

/// A tar of `items` (GNU headers, as Docker's tars), its tar-split JSON
/// lines, as tar-split's disassembler writes them, and the files laid out
/// under `folder`.
pub(crate) fn layer(items: &[Item<'_>], folder: &Path) -> (Vec<u8>, String) {
    use std::os::unix::ffi::OsStrExt;
    let mut builder = tar::Builder::new(Vec::new());
    for item in items {
        let mut header = tar::Header::new_gnu();
        header.set_mode(0o644);
        header.set_mtime(1_700_000_000);
        let (name, data): (&[u8], &[u8]) = match item {
            Item::Dir(name) => {
                header.set_entry_type(tar::EntryType::Directory);
                header.set_mode(0o755);
                (name, b"")
            }
            Item::File(name, data) => (name, data),
            Item::Link(name, target) => {
                header.set_entry_type(tar::EntryType::Link);
                header
                    .set_link_name(std::ffi::OsStr::from_bytes(target))
                    .unwrap();
                (name, b"")
            }
            Item::Symlink(name, target) => {
                header.set_entry_type(tar::EntryType::Symlink);
                header
                    .set_link_name(std::ffi::OsStr::from_bytes(target))
                    .unwrap();
                (name, b"")
            }
        };
        header.set_size(data.len() as u64);
        builder
            .append_data(&mut header, std::ffi::OsStr::from_bytes(name), data)
            .unwrap();
        let path = folder.join(std::ffi::OsStr::from_bytes(
            name.strip_prefix(b"./").unwrap_or(name),
        ));
        match item {
            Item::Dir(_) => std::fs::create_dir_all(&path).unwrap(),
            Item::File(..) => {
                std::fs::create_dir_all(path.parent().unwrap()).unwrap();
                std::fs::write(&path, data).unwrap();
            }
            // Never read: their entries carry no data.
            Item::Link(..) | Item::Symlink(..) => {}
        }
    }
    let tar = builder.into_inner().unwrap();
    (tar.clone(), split(&tar))
}

/// tar-split's JSON lines for `tar`.
pub(crate) fn split(tar: &[u8]) -> String {
    let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
    let mut lines = String::new();
    let mut at = 0usize;
    let mut archive = tar::Archive::new(tar);
    for entry in archive.entries().unwrap() {
        let entry = entry.unwrap();
        let start = entry.raw_file_position() as usize;
        let size = entry.size() as usize;
        lines.push_str(&format!(
            "{{\"type\":2,\"payload\":\"{}\"}}\n",
            b64(&tar[at..start])
        ));
        let name = entry.path_bytes().into_owned();
        let name_field = match std::str::from_utf8(&name) {
            Ok(text) => format!("\"name\":{}", serde_json::to_string(text).unwrap()),
            Err(_) => format!("\"name_raw\":\"{}\"", b64(&name)),
        };
        let payload = if size == 0 {
            "null".to_owned()
        } else {
            let crc = crc::Crc::<u64>::new(&crc::CRC_64_GO_ISO).checksum(&tar[start..start + size]);
            format!("\"{}\"", b64(&crc.to_be_bytes()))
        };
        lines.push_str(&format!(
            "{{\"type\":1,{name_field},\"size\":{size},\"payload\":{payload}}}\n"
        ));
        at = start + size;
    }
    lines.push_str(&format!(
        "{{\"type\":2,\"payload\":\"{}\"}}\n",
        b64(&tar[at..])
    ));
    lines
}

fn assemble(lines: &str, folder: &Path) -> std::io::Result<Vec<u8>> {
    let mut out = Vec::new();
    Assembler::new(lines.as_bytes(), folder.to_path_buf()).read_to_end(&mut out)?;
    Ok(out)
}

fn items() -> Vec<Item<'static>> {
    vec![
        Item::Dir(b"./"),
        Item::Dir(b"./etc/"),
        Item::File(b"./etc/hello", b"hello\n"),
        Item::Link(b"./etc/hello-again", b"./etc/hello"),
        Item::Symlink(b"./etc/hi", b"hello"),
        Item::File(b"./empty", b""),
        // A whiteout: a plain empty file in the tar; overlay2 keeps a
        // character device instead, which is never opened.
        Item::File(b"./etc/.wh.gone", b""),
        Item::File(b"./n\xe9.bin", &[0xff; 1500]),
        Item::File(
            b"./a/very/long/path/that/goes/beyond/the/hundred/bytes/of/a/classic/tar/header/name/field/and/then/some.txt",
            b"long",
        ),
    ]
}

#[test]
fn rebuilds_the_exact_tar() {
    let dir = tempfile::tempdir().unwrap();
    let (tar, lines) = layer(&items(), dir.path());
    assert!(lines.contains("name_raw"), "a non-UTF-8 name is stored raw");
    assert_eq!(assemble(&lines, dir.path()).unwrap(), tar);
}

#[test]
fn reads_in_small_pieces() {
    let dir = tempfile::tempdir().unwrap();
    let (tar, lines) = layer(&items(), dir.path());
    let mut assembler = Assembler::new(lines.as_bytes(), dir.path().to_path_buf());
    let mut out = Vec::new();
    let mut buf = [0u8; 7];
    loop {
        let n = assembler.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        out.extend_from_slice(&buf[..n]);
    }
    assert_eq!(out, tar);
}

#[track_caller]
fn check_fails(
    change: impl FnOnce(&Path),
    lines_change: impl FnOnce(String) -> String,
    what: &str,
) {
    let dir = tempfile::tempdir().unwrap();
    let (_, lines) = layer(&items(), dir.path());
    change(dir.path());
    let Err(err) = assemble(&lines_change(lines), dir.path()) else {
        panic!("assembling should fail with {what:?}");
    };
    let message = err.to_string();
    assert!(
        message.contains(what),
        "{message:?} should mention {what:?}"
    );
}

#[test]
fn changed_missing_or_short_files_fail() {
    check_fails(
        |d| std::fs::write(d.join("etc/hello"), b"HELLO\n").unwrap(),
        |l| l,
        "checksum",
    );
    check_fails(
        |d| std::fs::write(d.join("etc/hello"), b"hel").unwrap(),
        |l| l,
        "has 3 bytes",
    );
    check_fails(
        |d| std::fs::remove_file(d.join("etc/hello")).unwrap(),
        |l| l,
        "cannot read",
    );
    check_fails(
        |_| {},
        |l| l.replace("\"name\":\"etc/hello\"", "\"name\":\"../../etc/hello\""),
        "does not name a file inside",
    );
    check_fails(
        |_| {},
        |l| l.replace("\"type\":2", "\"type\":7"),
        "unknown entry type",
    );
    check_fails(|_| {}, |l| format!("{l}not json\n"), "not a valid entry");
}

#[test]
fn a_longer_file_keeps_the_recorded_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let (tar, lines) = layer(&[Item::File(b"f", b"abc")], dir.path());
    std::fs::OpenOptions::new()
        .append(true)
        .open(dir.path().join("f"))
        .unwrap()
        .write_all(b"appended")
        .unwrap();
    assert_eq!(assemble(&lines, dir.path()).unwrap(), tar);
}

#[test]
fn chain_ids() {
    let d = |c: char| format!("sha256:{}", c.to_string().repeat(64));
    assert_eq!(chain_id(&[]), "");
    assert_eq!(chain_id(&[d('a')]), d('a'));
    let c1 = format!(
        "sha256:{}",
        hex::encode(Sha256::digest(format!("{} {}", d('a'), d('b'))))
    );
    assert_eq!(chain_id(&[d('a'), d('b')]), c1);
    let c2 = format!(
        "sha256:{}",
        hex::encode(Sha256::digest(format!("{c1} {}", d('c'))))
    );
    assert_eq!(chain_id(&[d('a'), d('b'), d('c')]), c2);
}

/// A fake classic data root.
pub(crate) struct FakeRoot {
    pub(crate) dir: tempfile::TempDir,
    pub(crate) driver: &'static str,
}

impl FakeRoot {
    pub(crate) fn new(driver: &'static str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        for sub in [
            "layerdb/sha256",
            "imagedb/content/sha256",
            "imagedb/metadata/sha256",
        ] {
            std::fs::create_dir_all(dir.path().join("image").join(driver).join(sub)).unwrap();
        }
        Self { dir, driver }
    }

    pub(crate) fn image_dir(&self) -> PathBuf {
        self.dir.path().join("image").join(self.driver)
    }

    /// Adds a layer on top of `below` (diff IDs, base first); returns its
    /// tar and diff ID.
    pub(crate) fn add_layer(&self, below: &[String], items: &[Item<'_>]) -> (Vec<u8>, String) {
        let cache_id = format!("cache{}", below.len());
        let folder = match self.driver {
            "vfs" => self.dir.path().join("vfs/dir").join(&cache_id),
            d => self.dir.path().join(d).join(&cache_id).join("diff"),
        };
        std::fs::create_dir_all(&folder).unwrap();
        let (tar, lines) = layer(items, &folder);
        let diff_id = format!("sha256:{}", hex::encode(Sha256::digest(&tar)));
        let mut ids = below.to_vec();
        ids.push(diff_id.clone());
        let chain = chain_id(&ids);
        let dir = self
            .image_dir()
            .join("layerdb/sha256")
            .join(&chain["sha256:".len()..]);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("diff"), &diff_id).unwrap();
        std::fs::write(dir.join("cache-id"), &cache_id).unwrap();
        std::fs::write(dir.join("size"), "42").unwrap();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(lines.as_bytes()).unwrap();
        std::fs::write(dir.join("tar-split.json.gz"), gz.finish().unwrap()).unwrap();
        (tar, diff_id)
    }

    /// Adds an image config; returns the image ID.
    pub(crate) fn add_image(&self, config: &serde_json::Value, parent: Option<&str>) -> String {
        let bytes = serde_json::to_vec(config).unwrap();
        let hex = hex::encode(Sha256::digest(&bytes));
        std::fs::write(
            self.image_dir().join("imagedb/content/sha256").join(&hex),
            &bytes,
        )
        .unwrap();
        if let Some(parent) = parent {
            let meta = self.image_dir().join("imagedb/metadata/sha256").join(&hex);
            std::fs::create_dir_all(&meta).unwrap();
            std::fs::write(meta.join("parent"), parent).unwrap();
        }
        format!("sha256:{hex}")
    }
}

#[track_caller]
fn check_store(driver: &'static str) {
    let root = FakeRoot::new(driver);
    let (base, d0) = root.add_layer(&[], &[Item::Dir(b"bin/"), Item::File(b"bin/sh", b"#!")]);
    let (top, d1) = root.add_layer(
        std::slice::from_ref(&d0),
        &[
            Item::File(b"etc/.wh.passwd", b""),
            Item::File(b"app", &[7; 70_000]),
        ],
    );
    let store = LayerStore::detect(root.dir.path()).unwrap();
    assert_eq!(store.driver(), driver);
    let mut out = Vec::new();
    store
        .layer_tar(std::slice::from_ref(&d0))
        .unwrap()
        .read_to_end(&mut out)
        .unwrap();
    assert_eq!(out, base);
    out.clear();
    let both = [d0.clone(), d1.clone()];
    store
        .layer_tar(&both)
        .unwrap()
        .read_to_end(&mut out)
        .unwrap();
    assert_eq!(out, top);
    // The top layer alone is not a chain the store has.
    assert!(matches!(
        store.layer_tar(std::slice::from_ref(&d1)),
        Err(DataRootError::LayerNotInStore { .. })
    ));
    assert_eq!(store.layer_size(&chain_id(&both)), 42);
}

#[test]
fn layers_of_each_graph_driver() {
    check_store("overlay2");
    check_store("fuse-overlayfs");
    check_store("vfs");
}

#[test]
fn configs_are_checked_against_their_id() {
    let root = FakeRoot::new("overlay2");
    let id = root.add_image(&serde_json::json!({"rootfs": {"diff_ids": []}}), None);
    let store = LayerStore::open(root.dir.path(), "overlay2").unwrap();
    assert!(store.image_config(&id).is_ok());
    let hex = &id["sha256:".len()..];
    std::fs::write(
        root.image_dir().join("imagedb/content/sha256").join(hex),
        b"{}",
    )
    .unwrap();
    assert!(matches!(
        store.image_config(&id),
        Err(DataRootError::ConfigMismatch { .. })
    ));
}

#[test]
fn stores_that_cannot_be_read() {
    let empty = tempfile::tempdir().unwrap();
    assert!(matches!(
        LayerStore::detect(empty.path()),
        Err(DataRootError::Read { .. })
    ));
    std::fs::create_dir_all(empty.path().join("image")).unwrap();
    assert!(matches!(
        LayerStore::detect(empty.path()),
        Err(DataRootError::NoClassicStore { .. })
    ));
    std::fs::create_dir_all(empty.path().join("image/btrfs/layerdb/sha256")).unwrap();
    assert!(matches!(
        LayerStore::detect(empty.path()),
        Err(DataRootError::UnsupportedGraphDriver { .. })
    ));
    assert!(LayerStore::open(empty.path(), "overlay2").is_err());
}

/// The archive API's tar of one file `name`, after a PAX header (as Go's
/// archive/tar writes for long or precise attributes).
fn file_archive(name: &str, data: &[u8]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    let pax = b"30 mtime=1700000000.123456789\n".to_vec();
    let mut header = tar::Header::new_ustar();
    header.set_entry_type(tar::EntryType::XHeader);
    header.set_size(pax.len() as u64);
    header.set_path("PaxHeaders.0/x").expect("path");
    header.set_cksum();
    builder.append(&header, &pax[..]).expect("pax");
    let mut header = tar::Header::new_ustar();
    header.set_size(data.len() as u64);
    header.set_mode(0o444);
    header.set_cksum();
    builder.append_data(&mut header, name, data).expect("file");
    builder.into_inner().expect("tar")
}

#[test]
fn an_archived_blob_is_its_file_bytes_only() {
    let data: Vec<u8> = (0..70_000u32).map(|i| (i % 253) as u8).collect();
    let hex = hex::encode(Sha256::digest(&data));
    let tar = file_archive(&hex, &data);
    let mut read = Vec::new();
    crate::ArchivedBlob::new(&tar[..])
        .read_to_end(&mut read)
        .expect("read");
    assert!(
        read == data,
        "{} bytes read, {} expected",
        read.len(),
        data.len()
    );

    let digest = format!("sha256:{hex}");
    assert_eq!(
        crate::blob_from_tar(&tar[..], &digest).expect("checked"),
        data
    );
    let other = format!("sha256:{}", "0".repeat(64));
    assert!(matches!(
        crate::blob_from_tar(&tar[..], &other),
        Err(DataRootError::Content { .. })
    ));
}

#[test]
fn an_archive_without_a_file_or_cut_short_is_an_error() {
    let mut builder = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_ustar();
    header.set_entry_type(tar::EntryType::Directory);
    header.set_size(0);
    header.set_cksum();
    builder
        .append_data(&mut header, "blobs/", &[][..])
        .expect("dir");
    let empty = builder.into_inner().expect("tar");
    let err = crate::ArchivedBlob::new(&empty[..])
        .read_to_end(&mut Vec::new())
        .expect_err("no file");
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidData, "{err}");

    let tar = file_archive("f", &[9; 5000]);
    let cut = &tar[..1536 + 2000];
    let err = crate::ArchivedBlob::new(cut)
        .read_to_end(&mut Vec::new())
        .expect_err("cut short");
    assert_eq!(err.kind(), std::io::ErrorKind::UnexpectedEof, "{err}");
}
