//! Load: fifty clients at once push and pull overlapping blobs and
//! manifests into one registry, round after round, on memory and on
//! filesystem storage. Nothing may be lost or corrupted (every pulled blob
//! and manifest is hashed against its digest), an abandoned upload leaves
//! nothing behind, and neither file descriptors nor memory keep growing.
//!
//! File descriptors are counted precisely (sockets of the registry's port,
//! files under the storage root) and as the process's total; memory as
//! VmRSS with a generous bound, since other tests of this binary may run
//! beside these.

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use reqwest::{Body, Client, Method, StatusCode};
use shim_registry::storage::{FsStorage, MemoryStorage, Storage};

use crate::support::{Running, bytes, expect_status, header, sha256, start_on};

const CLIENTS: usize = 50;
const ROUNDS: usize = 4;
/// Distinct layer blobs; each group of clients pushes `PER_GROUP` of them,
/// overlapping the next group's.
const BLOBS: usize = 24;
const GROUPS: usize = 10;
const PER_GROUP: usize = 4;
const REPOSITORIES: usize = 5;
/// Growth of VmRSS allowed between the first round and any later one. A
/// leak of what a round moves (about 150 MiB of bodies) would exceed it.
const RSS_GROWTH_BOUND: u64 = 128 << 20;
/// Growth of the process's descriptor count allowed beside the exact
/// counts (other tests of this binary may hold a few meanwhile); a leak
/// per request would be several hundred per round.
const FD_GROWTH_BOUND: usize = 100;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_clients_on_memory_storage() {
    let _one = crate::support::HEAVY.lock().await;
    run(Arc::new(MemoryStorage::new()), None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_clients_on_filesystem_storage() {
    let _one = crate::support::HEAVY.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("store");
    let storage = Arc::new(FsStorage::new(&root).unwrap());
    run(storage, Some(&root)).await;
}

/// What every client works from: the blobs, and per group the config
/// and the manifest (identical for the clients of a group).
struct Fixture {
    blobs: Vec<(String, Bytes)>,
    groups: Vec<Group>,
}

struct Group {
    repository: String,
    tag: String,
    config: (String, Bytes),
    layers: Vec<usize>,
    manifest: Bytes,
    manifest_digest: String,
}

impl Fixture {
    fn new() -> Self {
        // 1 KiB to about 700 KiB; blob 0 is empty.
        let blobs: Vec<(String, Bytes)> = (0..BLOBS)
            .map(|j| {
                let data = Bytes::from(bytes((j * 29 * 1024 + j * 7) % (700 << 10), j as u64));
                (sha256(&data), data)
            })
            .collect();
        let groups = (0..GROUPS)
            .map(|g| {
                let config = Bytes::from(format!("{{\"group\":{g}}}"));
                let layers: Vec<usize> = (0..PER_GROUP).map(|k| (g * 2 + k) % BLOBS).collect();
                let manifest = serde_json::json!({
                    "schemaVersion": 2,
                    "mediaType": "application/vnd.oci.image.manifest.v1+json",
                    "config": {
                        "mediaType": "application/vnd.oci.image.config.v1+json",
                        "digest": sha256(&config),
                        "size": config.len(),
                    },
                    "layers": layers.iter().map(|&j| serde_json::json!({
                        "mediaType": "application/vnd.oci.image.layer.v1.tar",
                        "digest": blobs[j].0,
                        "size": blobs[j].1.len(),
                    })).collect::<Vec<_>>(),
                });
                let manifest = Bytes::from(serde_json::to_vec(&manifest).unwrap());
                Group {
                    repository: format!("load/r{}", g % REPOSITORIES),
                    tag: format!("t{g}"),
                    config: (sha256(&config), config),
                    layers,
                    manifest_digest: sha256(&manifest),
                    manifest,
                }
            })
            .collect();
        Self { blobs, groups }
    }
}

async fn run(storage: Arc<dyn Storage>, root: Option<&Path>) {
    let mut reg = start_on(storage).await;
    let port = reg.handle.addr().port();
    let fixture = Arc::new(Fixture::new());
    let started = Instant::now();
    let mut first: Option<(usize, u64)> = None;
    for round in 0..ROUNDS {
        let mut clients = Vec::with_capacity(CLIENTS);
        let barrier = Arc::new(tokio::sync::Barrier::new(CLIENTS));
        for i in 0..CLIENTS {
            let fixture = fixture.clone();
            let base = reg.base.clone();
            let barrier = barrier.clone();
            clients.push(tokio::spawn(async move {
                client(i, round, &base, &fixture, &barrier).await;
            }));
        }
        for c in clients {
            c.await
                .expect("a client failed (its panic is printed above)");
        }
        verify_all(&reg, &fixture).await;
        // The events of the round: no storage failure among them; drained
        // so that the channel does not grow.
        let events = reg.events();
        assert!(
            !events
                .iter()
                .any(|e| matches!(e, shim_registry::RegistryEvent::StorageFailed { .. })),
            "storage failed: {events:?}"
        );

        // Every client is gone: the registry holds no connection and no
        // file, and drops the abandoned sessions' data.
        settle("the registry's connections to close", || {
            port_sockets(port) == 0
        })
        .await;
        if let Some(root) = root {
            settle("no file open under the storage root", || {
                open_files_under(root) == 0
            })
            .await;
            settle("no upload left in uploads/", || {
                std::fs::read_dir(root.join("uploads")).unwrap().count() == 0
            })
            .await;
        }
        let (fds, rss) = (fd_count(), vm_rss());
        report(round, fds, rss, started.elapsed());
        match first {
            None => first = Some((fds, rss)),
            Some((fds0, rss0)) => {
                assert!(
                    fds <= fds0 + FD_GROWTH_BOUND,
                    "descriptors grew from {fds0} after round 0 to {fds} after round {round}"
                );
                assert!(
                    rss <= rss0 + RSS_GROWTH_BOUND,
                    "VmRSS grew from {rss0} after round 0 to {rss} after round {round}"
                );
            }
        }
    }
    reg.handle.shutdown().await;
}

/// One client of one round: pushes its group's blobs (each its own way)
/// and config, pulls what others may be pushing, abandons one upload
/// midway, puts its group's manifest and pulls everything back.
async fn client(i: usize, round: usize, base: &str, fx: &Fixture, barrier: &tokio::sync::Barrier) {
    let http = Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    let group = &fx.groups[i % GROUPS];
    let repo = group.repository.as_str();
    let url = |path: &str| format!("{base}{path}");
    barrier.wait().await;

    for (k, &j) in group.layers.iter().enumerate() {
        let (digest, data) = &fx.blobs[j];
        match (i / GROUPS + k + round) % 3 {
            0 => push_monolithic(&http, base, repo, digest, data).await,
            1 => push_chunked(&http, base, repo, digest, data).await,
            _ => push_streamed(&http, base, repo, digest, data).await,
        }
        // A blob another group pushes meanwhile: absent or whole.
        let (other, expected) = &fx.blobs[(j + 7 + i) % BLOBS];
        let r = http
            .get(url(&format!("/v2/{repo}/blobs/{other}")))
            .send()
            .await
            .unwrap();
        match r.status() {
            StatusCode::OK => {
                let got = r.bytes().await.unwrap();
                assert_eq!(sha256(&got), *other, "client {i}: a pulled blob is corrupt");
                assert_eq!(got.len(), expected.len());
            }
            StatusCode::NOT_FOUND => {}
            s => panic!("client {i}: GET blob {other}: {s}"),
        }
    }
    push_monolithic(&http, base, repo, &group.config.0, &group.config.1).await;
    // Blob 0 is empty; a chunk of none would end the body.
    abandon_upload(
        &http,
        base,
        repo,
        &fx.blobs[1 + (i + round) % (BLOBS - 1)].1,
    )
    .await;

    let r = http
        .put(url(&format!("/v2/{repo}/manifests/{}", group.tag)))
        .header("content-type", "application/vnd.oci.image.manifest.v1+json")
        .body(group.manifest.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED, "client {i}: manifest put");
    assert_eq!(header(&r, "docker-content-digest"), group.manifest_digest);

    // Pull back: the manifest by tag and by digest, each layer whole and
    // one range of it.
    for reference in [&group.tag, &group.manifest_digest] {
        let r = http
            .get(url(&format!("/v2/{repo}/manifests/{reference}")))
            .header("accept", "application/vnd.oci.image.manifest.v1+json")
            .send()
            .await
            .unwrap();
        assert_eq!(
            r.status(),
            StatusCode::OK,
            "client {i}: manifest {reference}"
        );
        assert_eq!(header(&r, "docker-content-digest"), group.manifest_digest);
        let body = r.bytes().await.unwrap();
        assert_eq!(
            sha256(&body),
            group.manifest_digest,
            "client {i}: manifest corrupt"
        );
    }
    for &j in &group.layers {
        let (digest, data) = &fx.blobs[j];
        pull_blob(&http, base, repo, digest, data).await;
        if data.len() > 300 {
            let r = http
                .get(url(&format!("/v2/{repo}/blobs/{digest}")))
                .header("range", "bytes=100-299")
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), StatusCode::PARTIAL_CONTENT);
            assert_eq!(r.bytes().await.unwrap(), data.slice(100..300));
        }
    }
}

async fn push_monolithic(http: &Client, base: &str, repo: &str, digest: &str, data: &Bytes) {
    let loc = start_upload(http, base, repo).await;
    let r = http
        .put(location_url(base, &loc, &format!("digest={digest}")))
        .body(data.clone())
        .send()
        .await
        .unwrap();
    expect_status(r, StatusCode::CREATED).await;
}

/// PATCHes of at most 64 KiB with Content-Range, then an empty PUT.
async fn push_chunked(http: &Client, base: &str, repo: &str, digest: &str, data: &Bytes) {
    let mut loc = start_upload(http, base, repo).await;
    let mut at = 0;
    for chunk in data.chunks(64 << 10) {
        let r = http
            .patch(location_url(base, &loc, ""))
            .header("content-type", "application/octet-stream")
            .header("content-range", format!("{}-{}", at, at + chunk.len() - 1))
            .body(data.slice(at..at + chunk.len()))
            .send()
            .await
            .unwrap();
        let r = expect_status(r, StatusCode::ACCEPTED).await;
        loc = header(&r, "location");
        at += chunk.len();
    }
    let r = http
        .put(location_url(base, &loc, &format!("digest={digest}")))
        .send()
        .await
        .unwrap();
    expect_status(r, StatusCode::CREATED).await;
}

/// Docker's way: one streamed PATCH without Content-Range, an empty PUT.
async fn push_streamed(http: &Client, base: &str, repo: &str, digest: &str, data: &Bytes) {
    let loc = start_upload(http, base, repo).await;
    let frames: Vec<Result<Bytes, std::io::Error>> = (0..data.len())
        .step_by(16 << 10)
        .map(|at| Ok(data.slice(at..data.len().min(at + (16 << 10)))))
        .collect();
    let r = http
        .patch(location_url(base, &loc, ""))
        .body(Body::wrap_stream(futures_util::stream::iter(frames)))
        .send()
        .await
        .unwrap();
    let r = expect_status(r, StatusCode::ACCEPTED).await;
    let loc = header(&r, "location");
    let r = http
        .put(location_url(base, &loc, &format!("digest={digest}")))
        .send()
        .await
        .unwrap();
    expect_status(r, StatusCode::CREATED).await;
}

/// A chunked PATCH of which only the first chunk arrives before the
/// connection closes, as from a client that dies midway (a raw socket, so
/// that it closes only once the registry is appending): the session is
/// gone.
async fn abandon_upload(http: &Client, base: &str, repo: &str, data: &Bytes) {
    use tokio::io::AsyncWriteExt as _;
    let loc = start_upload(http, base, repo).await;
    assert!(loc.starts_with('/'), "a Location of another form: {loc}");
    let first = &data[..data.len().min(32 << 10)];
    assert!(!first.is_empty(), "an empty chunk would end the body");
    let addr = base.strip_prefix("http://").expect("a plain HTTP base");
    let mut socket = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "PATCH {loc} HTTP/1.1\r\nhost: {addr}\r\ntransfer-encoding: chunked\r\n\r\n{:x}\r\n",
        first.len()
    );
    socket.write_all(head.as_bytes()).await.unwrap();
    socket.write_all(first).await.unwrap();
    socket.write_all(b"\r\n").await.unwrap();
    socket.flush().await.unwrap();
    // While the PATCH appends, the session's status is "busy", not 204.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = http.get(location_url(base, &loc, "")).send().await.unwrap();
        if r.status() != StatusCode::NO_CONTENT {
            break;
        }
        assert!(Instant::now() < deadline, "the PATCH never started");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    drop(socket);
    // The registry may still be noticing; it answers 404 once it has.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = http.get(location_url(base, &loc, "")).send().await.unwrap();
        if r.status() == StatusCode::NOT_FOUND {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "an abandoned session lives on: {} {:?}",
            r.status(),
            r.headers()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn start_upload(http: &Client, base: &str, repo: &str) -> String {
    let r = http
        .post(format!("{base}/v2/{repo}/blobs/uploads/"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    header(&r, "location")
}

fn location_url(base: &str, location: &str, query: &str) -> String {
    let url = if location.starts_with('/') {
        format!("{base}{location}")
    } else {
        location.to_owned()
    };
    match (query.is_empty(), url.contains('?')) {
        (true, _) => url,
        (false, true) => format!("{url}&{query}"),
        (false, false) => format!("{url}?{query}"),
    }
}

async fn pull_blob(http: &Client, base: &str, repo: &str, digest: &str, data: &Bytes) {
    let r = http
        .get(format!("{base}/v2/{repo}/blobs/{digest}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK, "GET blob {digest}");
    assert_eq!(header(&r, "docker-content-digest"), digest);
    let got = r.bytes().await.unwrap();
    assert_eq!(sha256(&got), digest, "a pulled blob is corrupt");
    assert_eq!(got.len(), data.len());
}

/// After a round, from a fresh client: every group's manifest and blobs
/// are there and whole, and every repository lists its tags.
async fn verify_all(reg: &Running, fx: &Fixture) {
    let http = Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    for group in &fx.groups {
        let r = http
            .request(
                Method::GET,
                format!(
                    "{}/v2/{}/manifests/{}",
                    reg.base, group.repository, group.tag
                ),
            )
            .header("accept", "application/vnd.oci.image.manifest.v1+json")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(r.bytes().await.unwrap(), group.manifest);
        let (digest, data) = &group.config;
        pull_blob(&http, &reg.base, &group.repository, digest, data).await;
        for &j in &group.layers {
            let (digest, data) = &fx.blobs[j];
            pull_blob(&http, &reg.base, &group.repository, digest, data).await;
        }
    }
    for r in 0..REPOSITORIES {
        let repository = format!("load/r{r}");
        let body = http
            .get(format!("{}/v2/{repository}/tags/list", reg.base))
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        let mut expected: Vec<String> = fx
            .groups
            .iter()
            .filter(|g| g.repository == repository)
            .map(|g| g.tag.clone())
            .collect();
        expected.sort();
        assert_eq!(v["tags"], serde_json::json!(expected), "{repository}");
    }
}

#[expect(clippy::print_stderr, reason = "the measurements, for --nocapture")]
fn report(round: usize, fds: usize, rss: u64, elapsed: Duration) {
    eprintln!(
        "load: round {round} done after {elapsed:.1?}: {fds} descriptors, VmRSS {} KiB",
        rss >> 10
    );
}

/// Waits (at most 10 s) for `done`.
async fn settle(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(Instant::now() < deadline, "waited 10 s for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The targets of this process's open descriptors.
fn fd_targets() -> Vec<String> {
    std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .flatten()
        .filter_map(|e| std::fs::read_link(e.path()).ok())
        .map(|t| t.to_string_lossy().into_owned())
        .collect()
}

fn fd_count() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

fn open_files_under(root: &Path) -> usize {
    let root = root.to_string_lossy();
    fd_targets()
        .iter()
        .filter(|t| t.starts_with(&*root))
        .count()
}

/// This process's descriptors of connections to or from `port` (the
/// listening socket aside), from /proc/net/tcp's inodes.
fn port_sockets(port: u16) -> usize {
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap();
    let port_of = |field: &str| {
        field
            .rsplit(':')
            .next()
            .and_then(|p| u16::from_str_radix(p, 16).ok())
    };
    let inodes: HashSet<String> = table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let (local, remote, state, inode) = (f.get(1)?, f.get(2)?, f.get(3)?, f.get(9)?);
            let ours = port_of(local) == Some(port) || port_of(remote) == Some(port);
            // 0A: LISTEN.
            (ours && *state != "0A").then(|| format!("socket:[{inode}]"))
        })
        .collect();
    fd_targets().iter().filter(|t| inodes.contains(*t)).count()
}

/// VmRSS of this process, in bytes.
fn vm_rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().strip_suffix("kB"))
        .and_then(|v| v.trim().parse::<u64>().ok())
        .expect("VmRSS in /proc/self/status")
        * 1024
}
