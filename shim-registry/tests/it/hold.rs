//! `UploadHold`: sessions past a size stop being read, and go on when the
//! hold is released; nothing waits for a hold after shutdown.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use reqwest::{Body, StatusCode};
use shim_registry::{RegistryEvent, TlsConfig, UploadHold};

use crate::support::{Running, bytes, expect_status, sha256, start_with};

const CHUNK: usize = 64 << 10;

/// More than a loopback connection's buffers hold (a few MiB each way).
const BIG: usize = 24 << 20;

/// Starts a streamed `PATCH` of `data` in `CHUNK`s; counts the bytes the
/// client has handed to its connection.
fn streamed_patch(
    reg: &Running,
    url: String,
    data: Arc<Vec<u8>>,
) -> (
    Arc<AtomicU64>,
    tokio::task::JoinHandle<reqwest::Result<reqwest::Response>>,
) {
    let produced = Arc::new(AtomicU64::new(0));
    let count = produced.clone();
    let chunks = (0..data.len().div_ceil(CHUNK)).map(move |i| {
        let end = ((i + 1) * CHUNK).min(data.len());
        count.fetch_add((end - i * CHUNK) as u64, Ordering::SeqCst);
        Ok::<_, std::io::Error>(Bytes::copy_from_slice(&data[i * CHUNK..end]))
    });
    let client = reg.client.clone();
    let task = tokio::spawn(async move {
        client
            .patch(url)
            .body(Body::wrap_stream(futures_util::stream::iter(chunks)))
            .send()
            .await
    });
    (produced, task)
}

/// The `PATCH` started by [`streamed_patch`] once it ends (within 30 s),
/// answered `202 Accepted`.
async fn accepted(
    task: tokio::task::JoinHandle<reqwest::Result<reqwest::Response>>,
    why: &str,
) -> reqwest::Response {
    let r = tokio::time::timeout(Duration::from_secs(30), task)
        .await
        .expect(why)
        .unwrap()
        .unwrap();
    expect_status(r, StatusCode::ACCEPTED).await
}

/// Waits (bounded) for the registry to report a held upload.
async fn wait_held(reg: &mut Running) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, reg.events.recv()).await {
            Ok(Some(RegistryEvent::UploadHeld { total, .. })) => return total,
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => panic!("no UploadHeld event within 20 s"),
        }
    }
}

#[tokio::test]
async fn a_held_upload_stops_being_read_and_goes_on_when_released() {
    let _one = crate::support::HEAVY.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let storage = Arc::new(shim_registry::storage::FsStorage::new(dir.path()).unwrap());
    let hold = UploadHold::new();
    hold.hold_beyond(1 << 20);
    let mut reg = start_with(|b| {
        b.tls(TlsConfig::Disabled)
            .upload_hold(hold.clone())
            .storage(storage)
    })
    .await;
    let data = Arc::new(bytes(BIG, 7));
    let loc = reg.start_upload("held").await;
    let (produced, task) = streamed_patch(&reg, reg.url(&loc, ""), data.clone());

    let total = wait_held(&mut reg).await;
    assert!(total <= 1 << 20, "held only past the limit: {total}");
    // The client can fill the connection's buffers, then its sends block.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let first = produced.load(Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let second = produced.load(Ordering::SeqCst);
    assert_eq!(first, second, "the client kept sending while held");
    assert!(
        second < BIG as u64,
        "all {second} bytes sent while held past 1 MiB"
    );
    assert!(!task.is_finished(), "the held request ended");
    assert_eq!(hold.limit(), Some(1 << 20));

    hold.release();
    assert_eq!(hold.limit(), None);
    let r = accepted(task, "the released upload ends").await;
    assert_eq!(
        crate::support::header(&r, "range"),
        format!("0-{}", BIG - 1)
    );
    let digest = sha256(&data);
    let loc = crate::support::header(&r, "location");
    let r = reg
        .client
        .put(reg.url(&loc, &format!("digest={digest}")))
        .send()
        .await
        .unwrap();
    expect_status(r, StatusCode::CREATED).await;
    let r = reg
        .client
        .get(format!("{}/v2/held/blobs/{digest}", reg.base))
        .send()
        .await
        .unwrap();
    let mut r = expect_status(r, StatusCode::OK).await;
    let mut hasher = <sha2::Sha256 as sha2::Digest>::new();
    while let Some(chunk) = r.chunk().await.unwrap() {
        sha2::Digest::update(&mut hasher, &chunk);
    }
    let got = format!("sha256:{}", hex::encode(sha2::Digest::finalize(hasher)));
    assert_eq!(got, digest);
}

#[tokio::test]
async fn uploads_within_the_hold_are_not_held() {
    let _one = crate::support::HEAVY.lock().await;
    let hold = UploadHold::new();
    hold.hold_beyond(1 << 20);
    let mut reg = start_with(|b| b.tls(TlsConfig::Disabled).upload_hold(hold)).await;
    // Exactly the limit, monolithic and streamed.
    let data = bytes(1 << 20, 8);
    reg.push_blob("small", &data).await;
    let loc = reg.start_upload("small").await;
    let (_, task) = streamed_patch(&reg, reg.url(&loc, ""), Arc::new(data));
    accepted(task, "an upload within the hold is not held").await;
    let held = reg
        .events()
        .into_iter()
        .filter(|e| matches!(e, RegistryEvent::UploadHeld { .. }))
        .count();
    assert_eq!(held, 0);
}

#[tokio::test]
async fn raising_the_hold_lets_a_session_go_on_to_the_new_size() {
    let _one = crate::support::HEAVY.lock().await;
    let hold = UploadHold::new();
    hold.hold_beyond(1 << 20);
    let mut reg = start_with(|b| b.tls(TlsConfig::Disabled).upload_hold(hold.clone())).await;
    let data = Arc::new(bytes(16 << 20, 9));
    let loc = reg.start_upload("raised").await;
    let (_, task) = streamed_patch(&reg, reg.url(&loc, ""), data);
    let first = wait_held(&mut reg).await;
    hold.hold_beyond(8 << 20);
    let second = wait_held(&mut reg).await;
    assert!(
        first <= 1 << 20 && second > 1 << 20 && second <= 8 << 20,
        "held at {first}, then at {second}"
    );
    hold.release();
    accepted(task, "the released upload ends").await;
}

#[tokio::test]
async fn shutdown_ends_held_uploads_without_reading_on() {
    let _one = crate::support::HEAVY.lock().await;
    let hold = UploadHold::new();
    hold.hold_beyond(1 << 20);
    let storage = Arc::new(shim_registry::storage::MemoryStorage::new());
    let mut reg = start_with(|b| {
        b.tls(TlsConfig::Disabled)
            .upload_hold(hold.clone())
            .storage(storage.clone())
    })
    .await;
    let loc = reg.start_upload("shut").await;
    let id = loc.rsplit('/').next().unwrap().to_owned();
    let (_, task) = streamed_patch(&reg, reg.url(&loc, ""), Arc::new(bytes(16 << 20, 10)));
    let held = wait_held(&mut reg).await;
    let Running { handle, .. } = reg;
    // The grace period is 10 s: a held request would keep shutdown waiting
    // for all of it.
    tokio::time::timeout(Duration::from_secs(5), handle.shutdown())
        .await
        .expect("shutdown did not wait for the held upload");
    assert_eq!(hold.limit(), Some(1 << 20), "the hold is left as it was");
    let answer = tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .expect("the held request ended")
        .unwrap();
    if let Ok(r) = answer {
        assert!(!r.status().is_success(), "{}", r.status());
    }
    // Nothing past the hold was taken into the session.
    use shim_registry::storage::Storage as _;
    let size = storage.upload_size("shut", &id).await.unwrap().unwrap_or(0);
    assert!(
        size <= held,
        "the session grew from {held} to {size} after the hold"
    );
}
