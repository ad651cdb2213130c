//! Upload sessions: monolithic, streamed, chunked, and failures.

use std::sync::Arc;

use bytes::Bytes;
use reqwest::{Body, Method, StatusCode};
use shim_registry::RegistryEvent;
use shim_registry::storage::{FsStorage, MemoryStorage, Storage};

use crate::support::{Running, bytes, expect_error, header, sha256, sha512, start, start_on};

const EMPTY: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

async fn head_size(reg: &Running, name: &str, digest: &str) -> Option<String> {
    let r = reg
        .req(Method::HEAD, &format!("/v2/{name}/blobs/{digest}"))
        .send()
        .await
        .unwrap();
    (r.status() == StatusCode::OK).then(|| header(&r, "content-length"))
}

#[tokio::test]
async fn post_opens_a_session() {
    let mut reg = start().await;
    let r = reg
        .req(Method::POST, "/v2/a/b/blobs/uploads/")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let loc = header(&r, "location");
    let uuid = header(&r, "docker-upload-uuid");
    assert_eq!(loc, format!("/v2/a/b/blobs/uploads/{uuid}"));
    assert_eq!(header(&r, "range"), "0-0");
    let r = reg.client.get(reg.url(&loc, "")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(header(&r, "range"), "0-0");
    assert!(
        matches!(&reg.events()[..], [RegistryEvent::UploadStarted { repository, upload_id }] if repository == "a/b" && *upload_id == uuid)
    );
}

/// Docker's classic push: one chunked PATCH without Content-Range, then an
/// empty PUT, then a HEAD.
#[tokio::test]
async fn streamed_patch_then_empty_put() {
    for storage in storages() {
        let mut reg = start_on(storage.0).await;
        let data = bytes(3 << 20, 2);
        let d = sha256(&data);
        let loc = reg.start_upload("lib/img").await;
        let chunks: Vec<Result<Bytes, std::io::Error>> = data
            .chunks(65_536)
            .map(|c| Ok(Bytes::copy_from_slice(c)))
            .collect();
        let r = reg
            .client
            .patch(reg.url(&loc, ""))
            .body(Body::wrap_stream(futures_util::stream::iter(chunks)))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::ACCEPTED);
        assert_eq!(header(&r, "range"), format!("0-{}", data.len() - 1));
        let loc = header(&r, "location");
        let r = reg
            .client
            .put(reg.url(&loc, &format!("digest={}", d.replace(':', "%3A"))))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::CREATED);
        assert_eq!(header(&r, "location"), format!("/v2/lib/img/blobs/{d}"));
        assert_eq!(header(&r, "docker-content-digest"), d);
        assert_eq!(
            head_size(&reg, "lib/img", &d).await,
            Some((3 << 20).to_string())
        );
        let events = reg.events();
        assert!(
            events.iter().any(
                |e| matches!(e, RegistryEvent::BytesReceived { total, .. } if *total == 3 << 20)
            )
        );
        assert!(events.iter().any(|e| matches!(e, RegistryEvent::BlobCommitted { digest, size, .. } if digest.as_ref() == d && *size == 3 << 20)));
    }
}

#[tokio::test]
async fn ranged_chunks_in_order_and_out_of_order() {
    let reg = start().await;
    let data = bytes(1000, 3);
    let loc = reg.start_upload("c").await;
    let r = reg
        .client
        .patch(reg.url(&loc, ""))
        .header("content-range", "0-399")
        .body(data[..400].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    assert_eq!(header(&r, "range"), "0-399");
    let loc = header(&r, "location");
    // A chunk that does not start at 400.
    let r = reg
        .client
        .patch(reg.url(&loc, ""))
        .header("content-range", "500-599")
        .body(data[500..600].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(header(&r, "range"), "0-399");
    expect_error(r, StatusCode::RANGE_NOT_SATISFIABLE, "BLOB_UPLOAD_INVALID").await;
    let r = reg
        .client
        .patch(reg.url(&loc, ""))
        .header("content-range", "400-799")
        .body(data[400..800].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    assert_eq!(header(&r, "range"), "0-799");
    let r = reg.client.get(reg.url(&loc, "")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(header(&r, "range"), "0-799");
    // The last chunk comes with the PUT.
    let d = sha256(&data);
    let r = reg
        .client
        .put(reg.url(&loc, &format!("digest={d}")))
        .header("content-range", "800-999")
        .body(data[800..].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let r = reg
        .req(Method::GET, &format!("/v2/c/blobs/{d}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.bytes().await.unwrap(), data);
}

#[tokio::test]
async fn single_post_with_digest() {
    let reg = start().await;
    let data = b"monolithic".to_vec();
    let d = sha256(&data);
    let r = reg
        .req(Method::POST, &format!("/v2/m/blobs/uploads/?digest={d}"))
        .header("content-type", "application/octet-stream")
        .body(data)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(header(&r, "location"), format!("/v2/m/blobs/{d}"));
    assert_eq!(head_size(&reg, "m", &d).await, Some("10".into()));
}

#[tokio::test]
async fn empty_blobs_on_every_path() {
    let reg = start().await;
    // POST ?digest= with an empty body
    let r = reg
        .req(
            Method::POST,
            &format!("/v2/e/blobs/uploads/?digest={EMPTY}"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    // POST + PUT without body
    let loc = reg.start_upload("e2").await;
    let r = reg
        .client
        .put(reg.url(&loc, &format!("digest={EMPTY}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(head_size(&reg, "e2", EMPTY).await, Some("0".into()));
    let r = reg
        .req(Method::GET, &format!("/v2/e2/blobs/{EMPTY}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert!(r.bytes().await.unwrap().is_empty());
}

#[tokio::test]
async fn sha512_blobs() {
    let reg = start().await;
    let data = bytes(70_000, 4);
    let d = sha512(&data);
    // streamed PATCH, then PUT: the digest algorithm is only known at the end
    let loc = reg.start_upload("s").await;
    let r = reg
        .client
        .patch(reg.url(&loc, ""))
        .body(data.clone())
        .send()
        .await
        .unwrap();
    let loc = header(&r, "location");
    let r = reg
        .client
        .put(reg.url(&loc, &format!("digest={d}")))
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        StatusCode::CREATED,
        "{}",
        r.text().await.unwrap()
    );
    assert_eq!(head_size(&reg, "s", &d).await, Some("70000".into()));
    let r = reg
        .req(Method::GET, &format!("/v2/s/blobs/{d}"))
        .send()
        .await
        .unwrap();
    assert_eq!(header(&r, "docker-content-digest"), d);
    assert_eq!(r.bytes().await.unwrap(), data);
    // monolithic POST
    let d2 = sha512(b"x");
    let r = reg
        .req(Method::POST, &format!("/v2/s/blobs/uploads/?digest={d2}"))
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
}

#[tokio::test]
async fn wrong_digests_are_rejected_and_nothing_is_kept() {
    let reg = start().await;
    let data = b"some data".to_vec();
    let wrong = sha256(b"other data");
    // POST ?digest=
    let r = reg
        .req(
            Method::POST,
            &format!("/v2/w/blobs/uploads/?digest={wrong}"),
        )
        .body(data.clone())
        .send()
        .await
        .unwrap();
    expect_error(r, StatusCode::BAD_REQUEST, "DIGEST_INVALID").await;
    // POST + PUT with body
    let loc = reg.start_upload("w").await;
    let r = reg
        .client
        .put(reg.url(&loc, &format!("digest={wrong}")))
        .body(data.clone())
        .send()
        .await
        .unwrap();
    expect_error(r, StatusCode::BAD_REQUEST, "DIGEST_INVALID").await;
    // the session is gone after a failed commit
    let r = reg.client.get(reg.url(&loc, "")).send().await.unwrap();
    expect_error(r, StatusCode::NOT_FOUND, "BLOB_UPLOAD_UNKNOWN").await;
    // PATCH + empty PUT
    let loc = reg.start_upload("w").await;
    let r = reg
        .client
        .patch(reg.url(&loc, ""))
        .body(data.clone())
        .send()
        .await
        .unwrap();
    let loc = header(&r, "location");
    let r = reg
        .client
        .put(reg.url(&loc, &format!("digest={wrong}")))
        .send()
        .await
        .unwrap();
    expect_error(r, StatusCode::BAD_REQUEST, "DIGEST_INVALID").await;
    // sha512 mismatch
    let loc = reg.start_upload("w").await;
    let r = reg
        .client
        .put(reg.url(&loc, &format!("digest={}", sha512(b"other"))))
        .body(data.clone())
        .send()
        .await
        .unwrap();
    expect_error(r, StatusCode::BAD_REQUEST, "DIGEST_INVALID").await;
    // malformed, unsupported and missing digests
    let loc = reg.start_upload("w").await;
    for q in [
        "digest=sha256:1234",
        "digest=md5:d41d8cd98f00b204e9800998ecf8427e",
        "digest=nonsense",
        "",
    ] {
        let r = reg
            .client
            .put(reg.url(&loc, q))
            .body(data.clone())
            .send()
            .await
            .unwrap();
        expect_error(r, StatusCode::BAD_REQUEST, "DIGEST_INVALID").await;
    }
    let r = reg
        .req(Method::POST, "/v2/w/blobs/uploads/?digest=sha256:12")
        .body(data.clone())
        .send()
        .await
        .unwrap();
    expect_error(r, StatusCode::BAD_REQUEST, "DIGEST_INVALID").await;
    for d in [wrong, sha256(&data)] {
        assert_eq!(
            head_size(&reg, "w", &d).await,
            None,
            "{d} must not be stored"
        );
    }
}

#[tokio::test]
async fn unknown_and_cancelled_sessions() {
    let reg = start().await;
    let r = reg
        .req(Method::GET, "/v2/u/blobs/uploads/nope")
        .send()
        .await
        .unwrap();
    expect_error(r, StatusCode::NOT_FOUND, "BLOB_UPLOAD_UNKNOWN").await;
    let r = reg
        .req(Method::PATCH, "/v2/u/blobs/uploads/nope")
        .body("x")
        .send()
        .await
        .unwrap();
    expect_error(r, StatusCode::NOT_FOUND, "BLOB_UPLOAD_UNKNOWN").await;
    let r = reg
        .req(
            Method::PUT,
            &format!("/v2/u/blobs/uploads/nope?digest={EMPTY}"),
        )
        .send()
        .await
        .unwrap();
    expect_error(r, StatusCode::NOT_FOUND, "BLOB_UPLOAD_UNKNOWN").await;
    let loc = reg.start_upload("u").await;
    // a session belongs to its repository
    let other = loc.replace("/v2/u/", "/v2/v/");
    let r = reg.client.get(reg.url(&other, "")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let r = reg.client.delete(reg.url(&loc, "")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let r = reg.client.delete(reg.url(&loc, "")).send().await.unwrap();
    expect_error(r, StatusCode::NOT_FOUND, "BLOB_UPLOAD_UNKNOWN").await;
}

#[tokio::test]
async fn expired_sessions_are_discarded() {
    let storage = MemoryStorage::new();
    let id = storage.create_upload("r").await.unwrap();
    assert_eq!(
        storage
            .purge_stale_uploads(std::time::Duration::from_secs(60))
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        storage
            .purge_stale_uploads(std::time::Duration::ZERO)
            .await
            .unwrap(),
        1
    );
    assert_eq!(storage.upload_size("r", &id).await.unwrap(), None);
}

fn storages() -> Vec<(Arc<dyn Storage>, Option<tempfile::TempDir>)> {
    let dir = tempfile::tempdir().unwrap();
    let fs = FsStorage::new(dir.path().join("store")).unwrap();
    vec![
        (Arc::new(MemoryStorage::new()), None),
        (Arc::new(fs), Some(dir)),
    ]
}

fn files_under(dir: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            out.push(e.file_name().to_string_lossy().into_owned());
        }
    }
    out
}

#[tokio::test]
async fn fs_storage_leaves_no_temp_files() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("store");
    let storage = Arc::new(FsStorage::new(&root).unwrap());
    let reg = start_on(storage.clone()).await;
    let uploads = root.join("uploads");
    let data = bytes(2 << 20, 5);

    // digest mismatch
    let loc = reg.start_upload("f").await;
    let r = reg
        .client
        .put(reg.url(&loc, &format!("digest={}", sha256(b"x"))))
        .body(data.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    // cancelled session
    let loc = reg.start_upload("f").await;
    reg.client
        .patch(reg.url(&loc, ""))
        .body(data.clone())
        .send()
        .await
        .unwrap();
    reg.client.delete(reg.url(&loc, "")).send().await.unwrap();
    // client that disconnects in the middle of a streamed PATCH
    let loc = reg.start_upload("f").await;
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(1);
    let stream =
        futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|x| (x, rx)) });
    let client = reg.client.clone();
    let url = reg.url(&loc, "");
    let pending = tokio::spawn(async move {
        client
            .patch(url)
            .body(Body::wrap_stream(stream))
            .send()
            .await
    });
    tx.send(Ok(Bytes::from(data.clone()))).await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    tx.send(Err(std::io::Error::other("client gives up")))
        .await
        .unwrap();
    let _ = pending.await;
    let mut left = files_under(&uploads);
    for _ in 0..50 {
        if left.is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        left = files_under(&uploads);
    }
    assert!(left.is_empty(), "temp files left: {left:?}");
    let r = reg.client.get(reg.url(&loc, "")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);

    // a good upload ends up under blobs/ and nowhere else
    let d = reg.push_blob("f", &data).await;
    assert!(files_under(&uploads).is_empty());
    let hex = d.strip_prefix("sha256:").unwrap();
    assert_eq!(
        std::fs::read(root.join("blobs/sha256").join(hex)).unwrap(),
        data
    );
    // and a caller can open it through the trait
    let digest = d.parse().unwrap();
    let mut reader = storage.open_blob(&digest).await.unwrap().expect("stored");
    let mut back = Vec::new();
    tokio::io::AsyncReadExt::read_to_end(&mut reader, &mut back)
        .await
        .unwrap();
    assert_eq!(back, data);
    reg.handle.shutdown().await;
}
