//! Bad input gives a clear error and leaves nothing behind.

use std::io::Cursor;

use layer_writer::{Format, WriteError, WriterOptions};

use crate::support::*;

#[track_caller]
fn check_rejected(blob: Vec<u8>, index: usize, want: fn(&WriteError) -> bool) {
    let s = synthetic();
    for format in [Format::Seed, Format::Oci, Format::Registry] {
        let dir = tempfile::tempdir().unwrap();
        let w = writer(
            dir.path(),
            WriterOptions {
                format,
                replace: false,
            },
        );
        let rt = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .unwrap();
        let err = rt
            .block_on(w.write_layer(&s.image, index, Cursor::new(blob.clone())))
            .unwrap_err();
        assert!(want(&err), "{format:?}: unexpected {err:?}");
        assert!(!err.to_string().is_empty());
        check_tree(dir.path(), &s.image, &[]);
    }
}

#[test]
fn wrong_diff_id() {
    let s = synthetic();
    check_rejected(s.tars[1].clone(), 0, |e| {
        matches!(e, WriteError::DiffIdMismatch { .. })
    });
    check_rejected(gzip(&s.tars[1]), 0, |e| {
        matches!(e, WriteError::DiffIdMismatch { .. })
    });
}

#[test]
fn gzip_garbage() {
    let mut blob = vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3];
    blob.extend(std::iter::repeat_n(0xa5u8, 4000));
    check_rejected(blob, 0, |e| matches!(e, WriteError::Decompress(_)));
}

#[test]
fn truncated_gzip() {
    let s = synthetic();
    let big = tar_of(&[("big", &vec![7u8; 200_000][..]), ("x", b"x")]);
    let _ = s;
    let gz = gzip(&big);
    check_rejected(gz[..gz.len() / 2].to_vec(), 0, |e| {
        matches!(e, WriteError::Decompress(_))
    });
}

#[test]
fn truncated_tar() {
    let s = synthetic();
    let t = &s.tars[1];
    // Not parsed: its bytes do not hash to the diff ID.
    check_rejected(t[..700].to_vec(), 1, |e| {
        matches!(e, WriteError::DiffIdMismatch { .. })
    });
}

#[test]
fn unknown_compression() {
    check_rejected(
        b"this is not a layer at all, just some text".repeat(30),
        0,
        |e| matches!(e, WriteError::UnknownCompression),
    );
}

#[test]
fn tar_garbage_inside_gzip() {
    let mut t = synthetic().tars[0].clone();
    t[600..700].copy_from_slice(&[0xffu8; 100]);
    t[0..100].copy_from_slice(&[b'z'; 100]); // header checksum now wrong
    check_rejected(gzip(&t), 0, |e| {
        matches!(e, WriteError::DiffIdMismatch { .. })
    });
}

#[test]
fn no_such_layer() {
    check_rejected(Vec::new(), 7, |e| {
        matches!(e, WriteError::NoSuchLayer { index: 7, count: 3 })
    });
}

#[tokio::test]
async fn read_error_midway() {
    struct Failing(usize);
    impl tokio::io::AsyncRead for Failing {
        fn poll_read(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
            buf: &mut tokio::io::ReadBuf<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            if self.0 == 0 {
                return std::task::Poll::Ready(Err(std::io::Error::other("connection reset")));
            }
            self.0 -= 1;
            let mut h = tar::Header::new_gnu();
            h.set_size(0);
            h.set_path("f").unwrap();
            h.set_cksum();
            buf.put_slice(h.as_bytes());
            std::task::Poll::Ready(Ok(()))
        }
    }
    let s = synthetic();
    let dir = tempfile::tempdir().unwrap();
    let w = writer(dir.path(), WriterOptions::default());
    let err = w.write_layer(&s.image, 0, Failing(3)).await.unwrap_err();
    assert!(matches!(err, WriteError::Read(_)), "{err:?}");
    check_tree(dir.path(), &s.image, &[]);
}

#[tokio::test]
async fn cancelled_write_leaves_nothing() {
    let s = synthetic();
    let dir = tempfile::tempdir().unwrap();
    let w = writer(dir.path(), WriterOptions::default());
    let (mut tx, rx) = tokio::io::duplex(1024);
    let t = s.tars[0].clone();
    let feeder = tokio::spawn(async move {
        use tokio::io::AsyncWriteExt;
        let _ = tx.write_all(&t[..512]).await;
        tokio::time::sleep(std::time::Duration::from_secs(30)).await;
        drop(tx);
    });
    let write = w.write_layer(&s.image, 0, rx);
    let r = tokio::time::timeout(std::time::Duration::from_millis(300), write).await;
    assert!(r.is_err(), "the write should still be waiting");
    feeder.abort(); // closes the stream: the worker sees the flag and cleans up
    for _ in 0..100 {
        if tree(dir.path(), &s.image).is_empty() {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    check_tree(dir.path(), &s.image, &[]);
}

#[test]
fn diff_id_of_reads_gzip_zstd_and_plain_tar_alike_and_names_what_it_cannot_read() {
    let tar = tar_of(&[("a.txt", b"alpha"), ("dir/b.bin", &[7u8; 70_000])]);
    let want = sha(&tar);
    let zstd = zstd::stream::encode_all(&tar[..], 3).unwrap();
    for (name, blob) in [("tar", tar.clone()), ("gzip", gzip(&tar)), ("zstd", zstd)] {
        assert_eq!(layer_writer::diff_id_of(&blob[..]).unwrap(), want, "{name}");
    }
    assert!(matches!(
        layer_writer::diff_id_of(&b"neither gzip nor tar"[..]),
        Err(WriteError::UnknownCompression)
    ));
    let gz = gzip(&tar);
    assert!(matches!(
        layer_writer::diff_id_of(&gz[..gz.len() / 2]),
        Err(WriteError::Decompress(_))
    ));
}
