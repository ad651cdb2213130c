//! The export flow on a scripted daemon: `MockDockerDriver` answers the
//! Engine API calls, and its `push` drives a small fake daemon that pushes
//! like the containerd store does (HEAD every blob, upload the absent ones,
//! HEAD then PUT the manifest) into the real temporary registry.

use std::io::Write as _;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use docker_driver::{
    BoxStream, DaemonInfo, DriverError, HistoryRow, ImageDetails, ImageStore, LayerSelector,
    MockDockerDriver, PushEvent, RegistryCredentials, ResolvedLayer,
};
use futures::StreamExt as _;
use layer_writer::Format;
use sha2::{Digest as _, Sha256};

use super::*;

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

/// A three-layer image as a daemon would hold it.
struct Fixture {
    tars: Vec<Vec<u8>>,
    blobs: Vec<(String, Vec<u8>)>,
    config: (String, Vec<u8>),
    manifest: Vec<u8>,
}

fn sha(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

fn layer_tar(name: &str, data: &[u8]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_gnu();
    header.set_size(data.len() as u64);
    header.set_mode(0o644);
    header.set_mtime(1_700_000_000);
    header.set_cksum();
    builder
        .append_data(&mut header, name, data)
        .expect("tar entry");
    builder.into_inner().expect("tar")
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(data).expect("gzip");
    encoder.finish().expect("gzip")
}

fn fixture() -> Arc<Fixture> {
    let tars: Vec<Vec<u8>> = ["a", "b", "c"]
        .iter()
        .map(|n| layer_tar(&format!("{n}.txt"), n.repeat(1000).as_bytes()))
        .collect();
    let diff_ids: Vec<String> = tars.iter().map(|t| sha(t)).collect();
    let blobs: Vec<(String, Vec<u8>)> =
        tars.iter().map(|t| gzip(t)).map(|g| (sha(&g), g)).collect();
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "created": "2024-01-01T00:00:00Z",
        "config": {"Cmd": ["/bin/sh"]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": [
            {"created": "2024-01-01T00:00:00Z", "created_by": "ADD a.txt /"},
            {"created": "2024-01-01T00:00:00Z", "created_by": "ADD b.txt /"},
            {"created": "2024-01-01T00:00:00Z", "created_by": "ADD c.txt /"}
        ]
    }))
    .expect("config");
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": sha(&config), "size": config.len()},
        "layers": blobs.iter().map(|(d, b)| serde_json::json!({
            "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": d, "size": b.len()
        })).collect::<Vec<_>>()
    }))
    .expect("manifest");
    Arc::new(Fixture {
        tars,
        blobs,
        config: (sha(&config), config),
        manifest,
    })
}

fn details(f: &Fixture, repo_digests: &[&str]) -> ImageDetails {
    let n = f.tars.len();
    ImageDetails {
        id: f.config.0.clone(),
        repo_tags: vec!["demo:1".into()],
        repo_digests: repo_digests.iter().map(|s| s.to_string()).collect(),
        parent: None,
        created: None,
        os: "linux".into(),
        architecture: "amd64".into(),
        variant: None,
        diff_ids: f.tars.iter().map(|t| sha(t)).collect(),
        history: (0..n)
            .map(|i| HistoryRow {
                id: (i == n - 1).then(|| f.config.0.clone()),
                created: None,
                created_by: format!("ADD {i}"),
                size: 1000,
                comment: String::new(),
                empty_layer: false,
                layer_index: Some(i),
            })
            .collect(),
    }
}

fn driver(f: &Arc<Fixture>, store: ImageStore, repo_digests: &[&str]) -> MockDockerDriver {
    let mut mock = MockDockerDriver::new();
    mock.expect_info().returning(move || {
        Ok(DaemonInfo {
            server_version: "26.1.5".into(),
            api_version: "1.45".into(),
            image_store: store.clone(),
            os: "linux".into(),
            arch: "x86_64".into(),
            root_dir: None,
            elsewhere: None,
            podman: false,
        })
    });
    let image = details(f, repo_digests);
    mock.expect_resolve().returning(move |_, selector| {
        let layer_index = match selector {
            LayerSelector::Index(i) => i,
            _ => image.diff_ids.len() - 1,
        };
        Ok(ResolvedLayer {
            image: image.clone(),
            layer_index,
            requested_id: None,
        })
    });
    mock
}

/// What the fake daemon uploaded, push by push.
type Uploads = Arc<Mutex<Vec<Vec<String>>>>;

/// An HTTP client sending the credentials dlgrab handed the daemon, as the
/// daemon does (dlgrab's registry answers nothing without them).
fn daemon_client(credentials: Option<RegistryCredentials>) -> reqwest::Client {
    let c = credentials.expect("dlgrab hands the daemon credentials for its registry");
    assert!(c.server_address.starts_with("127.0.0.1:"), "{c:?}");
    let unauthenticated = reqwest::Client::new();
    let probe = unauthenticated
        .get(format!("http://{}/v2/", c.server_address))
        .basic_auth(&c.username, Some(&c.password))
        .build()
        .expect("request builds");
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(
        reqwest::header::AUTHORIZATION,
        probe.headers()[reqwest::header::AUTHORIZATION].clone(),
    );
    reqwest::Client::builder()
        .default_headers(headers)
        .build()
        .expect("client builds")
}

/// A push as the containerd store makes it, into the registry `repo` names.
fn fake_push(
    f: Arc<Fixture>,
    uploads: Uploads,
    repo: &str,
    tag: &str,
    credentials: Option<RegistryCredentials>,
) -> BoxStream<Result<PushEvent, DriverError>> {
    let (host, name) = repo.split_once('/').expect("host/name");
    let base = format!("http://{host}/v2/{name}");
    let host = host.to_owned();
    let name = name.to_owned();
    let tag = tag.to_owned();
    Box::pin(futures::stream::once(async move {
        let client = daemon_client(credentials);
        let mut sent = Vec::new();
        let mut blobs: Vec<(String, Vec<u8>)> = f.blobs.clone();
        blobs.push(f.config.clone());
        for (digest, body) in blobs {
            let head = client
                .head(format!("{base}/blobs/{digest}"))
                .send()
                .await
                .expect("HEAD");
            if head.status() == reqwest::StatusCode::OK {
                continue;
            }
            let post = client
                .post(format!("{base}/blobs/uploads/"))
                .send()
                .await
                .expect("POST");
            assert_eq!(post.status(), reqwest::StatusCode::ACCEPTED);
            let location = post.headers()["location"]
                .to_str()
                .expect("location")
                .to_owned();
            let url = format!(
                "http://{host}{location}{}digest={digest}",
                if location.contains('?') { '&' } else { '?' }
            );
            let put = client.put(url).body(body).send().await.expect("PUT");
            assert_eq!(put.status(), reqwest::StatusCode::CREATED);
            sent.push(digest);
        }
        let manifest_url = format!("{base}/manifests/{tag}");
        if client
            .head(&manifest_url)
            .send()
            .await
            .expect("HEAD manifest")
            .status()
            != reqwest::StatusCode::OK
        {
            let put = client
                .put(&manifest_url)
                .header("content-type", OCI_MANIFEST)
                .body(f.manifest.clone())
                .send()
                .await
                .expect("PUT manifest");
            if put.status() == reqwest::StatusCode::FORBIDDEN {
                // As the daemon reports it; it then labels nothing.
                uploads.lock().expect("uploads").push(sent);
                return Err(DriverError::PushRefused {
                    reference: format!("{host}/{name}:{tag}"),
                    message: format!(
                        "unexpected status from PUT request to {manifest_url}: 403 Forbidden"
                    ),
                });
            }
            assert_eq!(put.status(), reqwest::StatusCode::CREATED);
        }
        uploads.lock().expect("uploads").push(sent);
        Ok(PushEvent::Pushed {
            tag,
            digest: sha(&f.manifest),
            size: Some(f.manifest.len() as u64),
        })
    }))
}

/// A push as a classic store makes it: the layers in `unasked` (never
/// pushed nor pulled) are announced `Pushing`, top first, and uploaded
/// without a HEAD; the others are asked about first. Progress names each
/// layer by its diff ID's first 12 hex digits. Stops when the stream is
/// dropped (as the daemon cancels).
fn fake_classic_push(
    f: Arc<Fixture>,
    uploads: Uploads,
    unasked: Vec<usize>,
    repo: &str,
    tag: &str,
    credentials: Option<RegistryCredentials>,
) -> BoxStream<Result<PushEvent, DriverError>> {
    let (host, name) = repo.split_once('/').expect("host/name");
    let base = format!("http://{host}/v2/{name}");
    let host = host.to_owned();
    let tag = tag.to_owned();
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<PushEvent, DriverError>>(1);
    let ids: Vec<String> = f.tars.iter().map(|t| sha(t)[7..19].to_owned()).collect();
    let layer = move |i: usize, status: &str| {
        Ok(PushEvent::Layer {
            id: ids[i].clone(),
            status: status.to_owned(),
            current: None,
            total: None,
        })
    };
    tokio::spawn(async move {
        let client = daemon_client(credentials);
        let mut sent = Vec::new();
        let n = f.blobs.len();
        for &i in unasked.iter().rev() {
            if tx.send(layer(i, "Pushing")).await.is_err() {
                return;
            }
        }
        for i in (0..n).rev() {
            let (digest, body) = f.blobs[i].clone();
            let asked = !unasked.contains(&i);
            if asked {
                let head = client
                    .head(format!("{base}/blobs/{digest}"))
                    .send()
                    .await
                    .expect("HEAD");
                if head.status() == reqwest::StatusCode::OK {
                    if tx.send(layer(i, "Layer already exists")).await.is_err() {
                        return;
                    }
                    continue;
                }
            }
            let post = client
                .post(format!("{base}/blobs/uploads/"))
                .send()
                .await
                .expect("POST");
            let location = post.headers()["location"]
                .to_str()
                .expect("location")
                .to_owned();
            let url = format!(
                "http://{host}{location}{}digest={digest}",
                if location.contains('?') { '&' } else { '?' }
            );
            let put = client.put(url).body(body).send().await.expect("PUT");
            assert_eq!(put.status(), reqwest::StatusCode::CREATED);
            sent.push(digest);
            if tx.send(layer(i, "Pushed")).await.is_err() {
                return;
            }
        }
        let (digest, body) = f.config.clone();
        let head = client
            .head(format!("{base}/blobs/{digest}"))
            .send()
            .await
            .expect("HEAD");
        if head.status() != reqwest::StatusCode::OK {
            let post = client
                .post(format!("{base}/blobs/uploads/"))
                .send()
                .await
                .expect("POST");
            let location = post.headers()["location"]
                .to_str()
                .expect("location")
                .to_owned();
            let url = format!(
                "http://{host}{location}{}digest={digest}",
                if location.contains('?') { '&' } else { '?' }
            );
            client.put(url).body(body).send().await.expect("PUT");
            sent.push(digest);
        }
        let put = client
            .put(format!("{base}/manifests/{tag}"))
            .header("content-type", OCI_MANIFEST)
            .body(f.manifest.clone())
            .send()
            .await
            .expect("PUT manifest");
        assert_eq!(put.status(), reqwest::StatusCode::CREATED);
        uploads.lock().expect("uploads").push(sent);
        let _ = tx
            .send(Ok(PushEvent::Pushed {
                tag,
                digest: sha(&f.manifest),
                size: Some(f.manifest.len() as u64),
            }))
            .await;
    });
    Box::pin(futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    }))
}

fn exporter(
    mock: MockDockerDriver,
    outdir: &std::path::Path,
    via: Via,
) -> (Exporter, Arc<Cleanup>) {
    let driver: Arc<dyn DockerDriver> = Arc::new(mock);
    let cleanup = Arc::new(Cleanup::new(driver.clone()));
    let options = ExportOptions {
        outdir: outdir.to_owned(),
        format: Format::Seed,
        port: 0,
        via,
        replace: false,
        platform: None,
    };
    (
        Exporter::new(
            driver,
            cleanup.clone(),
            Arc::new(Reporter::new(true, false)),
            options,
        ),
        cleanup,
    )
}

fn is_temporary_tag(reference: &str) -> bool {
    reference.starts_with("127.0.0.1:")
        && reference.contains("/dlgrab-")
        && reference.ends_with(":export")
}

/// Entries of `dir` that dlgrab's scratch space would leave.
fn scratch_left(dir: &std::path::Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with(".dlgrab-"))
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn push_route_uploads_only_the_wanted_layer_and_the_config() {
    let f = fixture();
    let out = tempfile::tempdir().expect("tempdir");
    let uploads: Uploads = Arc::default();
    let mut mock = driver(&f, ImageStore::Containerd, &[]);
    let tagged = Arc::new(Mutex::new(String::new()));
    let t = tagged.clone();
    mock.expect_tag()
        .times(1)
        .returning(move |image, repo, tag| {
            assert_eq!(image, sha(&fixture().config.1));
            *t.lock().expect("tag") = format!("{repo}:{tag}");
            Ok(())
        });
    let (fx, up) = (f.clone(), uploads.clone());
    mock.expect_push()
        .times(2)
        .returning(move |repo, tag, credentials| {
            fake_push(fx.clone(), up.clone(), repo, tag, credentials)
        });
    let t = tagged.clone();
    mock.expect_untag().times(1).returning(move |reference| {
        assert!(is_temporary_tag(reference), "{reference}");
        assert_eq!(
            *t.lock().expect("tag"),
            reference,
            "untag removes exactly the tag made"
        );
        Ok(())
    });
    let (exporter, cleanup) = exporter(mock, out.path(), Via::Auto);

    let written = exporter
        .run(&["demo:1".into()], LayerSelector::Index(1))
        .await
        .expect("export");
    assert!(cleanup.run().await.is_empty());

    let uploads = uploads.lock().expect("uploads").clone();
    assert_eq!(uploads.len(), 2, "a survey and a capture push");
    assert!(
        uploads[0].is_empty(),
        "the survey uploads nothing: {:?}",
        uploads[0]
    );
    assert_eq!(
        uploads[1],
        [f.blobs[1].0.clone(), f.config.0.clone()],
        "the capture uploads the wanted layer and the config"
    );
    assert_eq!(written.len(), 1);
    assert_eq!(written[0].route, "push");
    assert_eq!(written[0].diff_id, sha(&f.tars[1]));
    let tar = out.path().join(&written[0].id).join("layer.tar");
    assert_eq!(std::fs::read(&tar).expect("layer.tar"), f.tars[1]);
    assert!(
        scratch_left(out.path()).is_empty(),
        "{:?}",
        scratch_left(out.path())
    );
}

#[tokio::test]
async fn a_refused_survey_push_fails_and_leaves_no_tag_and_no_output() {
    let f = fixture();
    let out = tempfile::tempdir().expect("tempdir");
    let mut mock = driver(&f, ImageStore::Containerd, &[]);
    mock.expect_tag().times(1).returning(|_, _, _| Ok(()));
    mock.expect_push().times(1).returning(|repo, tag, _| {
        let reference = format!("{repo}:{tag}");
        Box::pin(futures::stream::iter([
            Ok(PushEvent::Status("The push refers to repository".into())),
            Err(DriverError::PushRefused {
                reference,
                message: "denied: requested access to the resource is denied".into(),
            }),
        ]))
    });
    mock.expect_untag()
        .times(1)
        .withf(is_temporary_tag)
        .returning(|_| Ok(()));
    // Forced: with auto, docker save would be taken instead.
    let (exporter, cleanup) = exporter(mock, out.path(), Via::Push);

    let error = exporter
        .run(&["demo:1".into()], LayerSelector::Top)
        .await
        .expect_err("the push is refused");
    let text = format!("{error:#}");
    assert!(
        text.contains("push to dlgrab's registry failed") && text.contains("denied"),
        "{text}"
    );
    assert!(cleanup.run().await.is_empty());
    let left: Vec<_> = std::fs::read_dir(out.path()).expect("outdir").collect();
    assert!(left.is_empty(), "nothing may be left: {left:?}");
}

#[tokio::test]
async fn auto_takes_docker_save_when_the_daemon_fails_the_push() {
    // E.g. Docker 26.1's containerd store and a pulled multi-platform
    // image ("Make sure you have all the referenced content"), or a daemon
    // whose 127.0.0.1 is not ours ("connection refused").
    let f = fixture();
    let out = tempfile::tempdir().expect("tempdir");
    let mut mock = driver(&f, ImageStore::Containerd, &[]);
    mock.expect_tag().times(1).returning(|_, _, _| Ok(()));
    mock.expect_push().times(1).returning(|repo, tag, _| {
        let reference = format!("{repo}:{tag}");
        Box::pin(futures::stream::iter([Err(DriverError::PushRefused {
            reference,
            message: "content digest sha256:abc: not found. Make sure you have all the referenced content and try again.".into(),
        })]))
    });
    mock.expect_untag()
        .times(1)
        .withf(is_temporary_tag)
        .returning(|_| Ok(()));
    let config = f.config.1.clone();
    mock.expect_image_config().times(1).returning(move |_| {
        Ok(docker_driver::ImageConfig {
            bytes: config.clone(),
            index: None,
        })
    });
    expect_save(&mut mock, save_stream(&f, true));
    let (exporter, cleanup) = exporter(mock, out.path(), Via::Auto);

    let written = exporter
        .run(&["demo:1".into()], LayerSelector::Top)
        .await
        .expect("docker save after the failed push");
    assert_eq!(written[0].route, "save");
    assert!(
        written[0].route_reason.contains("push")
            && written[0].route_reason.contains("referenced content"),
        "{}",
        written[0].route_reason
    );
    let tar = out.path().join(&written[0].id).join("layer.tar");
    assert_eq!(std::fs::read(tar).expect("layer.tar"), f.tars[2]);
    assert!(cleanup.run().await.is_empty());
    assert!(
        scratch_left(out.path()).is_empty(),
        "{:?}",
        scratch_left(out.path())
    );
}

#[tokio::test]
async fn a_failed_tag_is_reported_and_the_push_never_starts() {
    let f = fixture();
    let out = tempfile::tempdir().expect("tempdir");
    let mut mock = driver(&f, ImageStore::Containerd, &[]);
    mock.expect_tag().times(1).returning(|image, _, _| {
        Err(DriverError::NoSuchImage {
            reference: image.to_owned(),
        })
    });
    mock.expect_push().never();
    // The recorded tag is removed, best effort; it was never made.
    mock.expect_untag().times(1).returning(|r| {
        Err(DriverError::NoSuchImage {
            reference: r.to_owned(),
        })
    });
    let (exporter, cleanup) = exporter(mock, out.path(), Via::Auto);

    let error = exporter
        .run(&["demo:1".into()], LayerSelector::Top)
        .await
        .expect_err("tag fails");
    assert!(format!("{error:#}").contains("cannot tag"), "{error:#}");
    assert!(cleanup.run().await.is_empty());
    assert!(scratch_left(out.path()).is_empty());
}

/// A save stream in the OCI layout of Docker 25+ (uncompressed layers
/// named by their diff IDs), with or without the image config.
fn save_stream(f: &Fixture, with_config: bool) -> Bytes {
    let mut save = tar::Builder::new(Vec::new());
    let mut entries: Vec<(String, &[u8])> = f.tars.iter().map(|t| (sha(t), &t[..])).collect();
    if with_config {
        entries.push((f.config.0.clone(), &f.config.1[..]));
    }
    entries.sort();
    for (digest, data) in entries {
        let mut header = tar::Header::new_gnu();
        header.set_size(data.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        let hex = digest.trim_start_matches("sha256:");
        save.append_data(&mut header, format!("blobs/sha256/{hex}"), data)
            .expect("entry");
    }
    Bytes::from(save.into_inner().expect("tar"))
}

/// `export_images` answering `save` once, in small chunks.
fn expect_save(mock: &mut MockDockerDriver, save: Bytes) {
    mock.expect_export_images().times(1).returning(move |_| {
        let chunks: Vec<Result<Bytes, DriverError>> = save
            .chunks(4096)
            .map(|c| Ok(Bytes::copy_from_slice(c)))
            .collect();
        Box::pin(futures::stream::iter(chunks))
    });
}

/// A classic store holding the fixture; the config must come from the one
/// save stream, not from a first one.
fn on_a_classic_store(f: &Arc<Fixture>) -> MockDockerDriver {
    let mut mock = driver(
        f,
        ImageStore::Classic {
            driver: "overlay2".into(),
        },
        &[],
    );
    mock.expect_image_config().never();
    mock
}

/// A classic store holding the fixture as a never-pushed image: its survey
/// push announces every layer uploaded unasked (and is dropped before the
/// end: the uploads stay empty).
fn never_pushed_on_a_classic_store(f: &Arc<Fixture>) -> (MockDockerDriver, Uploads) {
    let mut mock = on_a_classic_store(f);
    mock.expect_tag().times(1).returning(|_, _, _| Ok(()));
    let uploads: Uploads = Arc::default();
    let (fx, up) = (f.clone(), uploads.clone());
    mock.expect_push()
        .times(1)
        .returning(move |repo, tag, credentials| {
            fake_classic_push(
                fx.clone(),
                up.clone(),
                vec![0, 1, 2],
                repo,
                tag,
                credentials,
            )
        });
    mock.expect_untag().times(1).returning(|_| Ok(()));
    (mock, uploads)
}

#[tokio::test]
async fn a_never_pushed_image_on_a_classic_store_goes_through_one_docker_save() {
    let f = fixture();
    let out = tempfile::tempdir().expect("tempdir");
    // The survey push sees the daemon uploading every layer unasked and
    // gives way to docker save before anything is written.
    let (mut mock, uploads) = never_pushed_on_a_classic_store(&f);
    expect_save(&mut mock, save_stream(&f, true));
    let (exporter, cleanup) = exporter(mock, out.path(), Via::Auto);

    let written = exporter
        .run(&["demo:1".into()], LayerSelector::Index(1))
        .await
        .expect("export");
    assert!(cleanup.run().await.is_empty());
    assert_eq!(written[0].route, "save");
    assert!(
        written[0].route_reason.contains("survey push showed")
            && written[0].route_reason.contains("unasked"),
        "{}",
        written[0].route_reason
    );
    assert!(
        uploads.lock().expect("uploads").is_empty(),
        "the survey was dropped before its end"
    );
    assert!(scratch_left(out.path()).is_empty());
    let folder = out.path().join(&written[0].id);
    assert_eq!(
        std::fs::read(folder.join("layer.tar")).expect("layer.tar"),
        f.tars[1]
    );
    // The files that need the config are there too.
    assert!(folder.join("json").is_file());
    let manifest = std::fs::read_to_string(out.path().join("manifest.json")).expect("manifest");
    assert!(
        manifest.contains(f.config.0.trim_start_matches("sha256:")),
        "{manifest}"
    );
}

#[tokio::test]
async fn a_save_stream_without_the_config_fails_and_writes_nothing() {
    let f = fixture();
    let out = tempfile::tempdir().expect("tempdir");
    let (mut mock, _uploads) = never_pushed_on_a_classic_store(&f);
    expect_save(&mut mock, save_stream(&f, false));
    let (exporter, _cleanup) = exporter(mock, out.path(), Via::Auto);

    let error = exporter
        .run(&["demo:1".into()], LayerSelector::Top)
        .await
        .expect_err("no config");
    assert!(
        format!("{error:#}").contains("not found in the save archive"),
        "{error:#}"
    );
    let left: Vec<_> = std::fs::read_dir(out.path())
        .expect("outdir")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

#[tokio::test]
async fn the_save_route_on_the_containerd_store_reads_the_config_first() {
    // There the image ID is a manifest digest, so the config cannot be
    // recognised in the stream by it.
    let f = fixture();
    let out = tempfile::tempdir().expect("tempdir");
    let mut mock = driver(&f, ImageStore::Containerd, &[]);
    mock.expect_push().never();
    let config = f.config.1.clone();
    mock.expect_image_config().times(1).returning(move |_| {
        Ok(docker_driver::ImageConfig {
            bytes: config.clone(),
            index: None,
        })
    });
    expect_save(&mut mock, save_stream(&f, true));
    let (exporter, _cleanup) = exporter(mock, out.path(), Via::Save);

    let written = exporter
        .run(&["demo:1".into()], LayerSelector::Top)
        .await
        .expect("export");
    assert_eq!(written[0].route, "save");
    let tar = out.path().join(&written[0].id).join("layer.tar");
    assert_eq!(std::fs::read(tar).expect("layer.tar"), f.tars[2]);
}

#[tokio::test]
async fn an_interrupted_push_is_cancelled_and_cleaned_up() {
    let f = fixture();
    let out = tempfile::tempdir().expect("tempdir");
    let mut mock = driver(&f, ImageStore::Containerd, &[]);
    mock.expect_tag().times(1).returning(|_, _, _| Ok(()));
    let dropped = Arc::new(AtomicUsize::new(0));
    let d = dropped.clone();
    mock.expect_push().times(1).returning(move |_, _, _| {
        // A push that never ends, and notices when it is dropped.
        struct OnDrop(Arc<AtomicUsize>);
        impl Drop for OnDrop {
            fn drop(&mut self) {
                self.0.fetch_add(1, Ordering::SeqCst);
            }
        }
        let guard = OnDrop(d.clone());
        Box::pin(
            futures::stream::pending::<Result<PushEvent, DriverError>>().map(move |x| {
                let _ = &guard;
                x
            }),
        )
    });
    mock.expect_untag()
        .times(1)
        .withf(is_temporary_tag)
        .returning(|_| Ok(()));
    let (exporter, cleanup) = exporter(mock, out.path(), Via::Auto);

    let requests = ["demo:1".to_owned()];
    let run = exporter.run(&requests, LayerSelector::Top);
    assert!(
        tokio::time::timeout(Duration::from_millis(500), run)
            .await
            .is_err(),
        "the push never ends"
    );
    assert_eq!(
        dropped.load(Ordering::SeqCst),
        1,
        "dropping the export drops the push stream"
    );
    assert!(cleanup.run().await.is_empty());
    assert!(
        scratch_left(out.path()).is_empty(),
        "{:?}",
        scratch_left(out.path())
    );
}

#[tokio::test]
async fn a_retagged_pulled_image_on_a_classic_store_goes_by_push() {
    // Pulled, then retagged and its pulled name removed: no repo digest
    // left, but the daemon asks about every layer before uploading.
    let f = fixture();
    let out = tempfile::tempdir().expect("tempdir");
    let mut mock = on_a_classic_store(&f);
    mock.expect_tag().times(1).returning(|_, _, _| Ok(()));
    let uploads: Uploads = Arc::default();
    let (fx, up) = (f.clone(), uploads.clone());
    mock.expect_push()
        .times(2)
        .returning(move |repo, tag, credentials| {
            fake_classic_push(fx.clone(), up.clone(), Vec::new(), repo, tag, credentials)
        });
    mock.expect_untag().times(1).returning(|_| Ok(()));
    mock.expect_export_images().never();
    let (exporter, cleanup) = exporter(mock, out.path(), Via::Auto);

    let written = exporter
        .run(&["demo:1".into()], LayerSelector::Index(1))
        .await
        .expect("export");
    assert!(cleanup.run().await.is_empty());
    assert_eq!(written[0].route, "push");
    assert!(
        written[0].route_reason.contains("survey"),
        "{}",
        written[0].route_reason
    );
    let uploads = uploads.lock().expect("uploads").clone();
    assert_eq!(uploads.len(), 2, "a survey and a capture push");
    assert!(uploads[0].is_empty(), "{:?}", uploads[0]);
    assert_eq!(uploads[1], [f.blobs[1].0.clone(), f.config.0.clone()]);
    assert_eq!(
        std::fs::read(out.path().join(&written[0].id).join("layer.tar")).expect("layer.tar"),
        f.tars[1]
    );
}

#[tokio::test]
async fn a_small_unasked_top_layer_is_kept_from_the_survey_without_a_second_upload() {
    // An app image on a pulled base: the base is asked about, the two
    // layers above it are uploaded unasked in the survey; small next to
    // the image, they are kept, and the capture push brings only the
    // config.
    let f = fixture();
    let out = tempfile::tempdir().expect("tempdir");
    let mut mock = MockDockerDriver::new();
    mock.expect_info().returning(|| {
        Ok(DaemonInfo {
            server_version: "28.5.2".into(),
            api_version: "1.51".into(),
            image_store: ImageStore::Classic {
                driver: "overlay2".into(),
            },
            os: "linux".into(),
            arch: "x86_64".into(),
            root_dir: None,
            elsewhere: None,
            podman: false,
        })
    });
    let mut image = details(&f, &[]);
    image.history[0].size = 100_000;
    mock.expect_resolve().returning(move |_, _| {
        Ok(ResolvedLayer {
            image: image.clone(),
            layer_index: 2,
            requested_id: None,
        })
    });
    mock.expect_tag().times(1).returning(|_, _, _| Ok(()));
    let uploads: Uploads = Arc::default();
    let (fx, up) = (f.clone(), uploads.clone());
    // Once pushed, the daemon has recorded their digests and asks.
    let pushes = Arc::new(AtomicUsize::new(0));
    mock.expect_push()
        .times(2)
        .returning(move |repo, tag, credentials| {
            let unasked = match pushes.fetch_add(1, Ordering::SeqCst) {
                0 => vec![1, 2],
                _ => Vec::new(),
            };
            fake_classic_push(fx.clone(), up.clone(), unasked, repo, tag, credentials)
        });
    mock.expect_untag().times(1).returning(|_| Ok(()));
    let (exporter, cleanup) = exporter(mock, out.path(), Via::Auto);

    let written = exporter
        .run(&["demo:1".into()], LayerSelector::Top)
        .await
        .expect("export");
    assert!(cleanup.run().await.is_empty());
    assert_eq!(written[0].route, "push");
    let uploads = uploads.lock().expect("uploads").clone();
    assert_eq!(uploads[0], [f.blobs[2].0.clone(), f.blobs[1].0.clone()]);
    // The second push: the daemon now asks about those two, finds them,
    // and uploads only the config.
    assert_eq!(uploads[1], std::slice::from_ref(&f.config.0));
    assert_eq!(
        std::fs::read(out.path().join(&written[0].id).join("layer.tar")).expect("layer.tar"),
        f.tars[2]
    );
}
