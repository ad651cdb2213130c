//! A real client against the registry: `oci-client` (oras-project's Rust OCI
//! client) pushes and pulls over plain HTTP on the registry's shared
//! HTTP/HTTPS port.

use ::oci_client::client::{ClientConfig, ClientProtocol, Config, ImageLayer};
use ::oci_client::manifest::{
    IMAGE_CONFIG_MEDIA_TYPE, IMAGE_LAYER_GZIP_MEDIA_TYPE, IMAGE_LAYER_MEDIA_TYPE,
    OCI_IMAGE_MEDIA_TYPE, OciDescriptor, OciImageManifest, OciManifest,
};
use ::oci_client::secrets::RegistryAuth;
use ::oci_client::{Client, Reference};
use bytes::Bytes;
use reqwest::{Method, StatusCode};
use shim_registry::RegistryEvent;

use crate::support::{Running, bytes, header, sha256, start};

const REPO: &str = "oci-client/test";
const EMPTY_MEDIA_TYPE: &str = "application/vnd.oci.empty.v1+json";
const SIG_ARTIFACT_TYPE: &str = "application/vnd.example.signature.v1";

/// Chunk size `oci-client` 0.18 uses for chunked blob uploads (a private
/// constant there, `PUSH_CHUNK_MAX_SIZE`).
const OCI_CLIENT_CHUNK: usize = 4 * 1024 * 1024;

/// An `oci-client` speaking plain HTTP (the shim's port also speaks HTTPS,
/// with a self-signed certificate, but plain HTTP is what is tested here).
fn oci_client(use_monolithic_push: bool) -> Client {
    // oci-client is built with `rustls-tls-no-provider` (so that no second
    // crypto backend is compiled): reqwest then needs a process default.
    let _ = rustls::crypto::ring::default_provider().install_default();
    Client::new(ClientConfig {
        protocol: ClientProtocol::Http,
        use_monolithic_push,
        ..Default::default()
    })
}

fn reference(reg: &Running, tag: &str) -> Reference {
    format!("{}/{REPO}:{tag}", reg.handle.addr())
        .parse()
        .expect("reference parses")
}

fn by_digest(reg: &Running, digest: &str) -> Reference {
    Reference::with_digest(reg.handle.addr().to_string(), REPO.into(), digest.into())
}

/// The digest at the end of a `.../manifests/<digest>` URL returned by a push.
fn manifest_digest_of(url: &str) -> String {
    let (_, digest) = url
        .rsplit_once("/manifests/")
        .unwrap_or_else(|| panic!("manifest url {url} ends in /manifests/<digest>"));
    assert!(digest.starts_with("sha256:"), "{url}");
    digest.to_owned()
}

fn image() -> (Vec<ImageLayer>, Config) {
    let layers = vec![
        ImageLayer::oci_v1(bytes(3 * 1024 + 7, 1), None),
        ImageLayer::oci_v1_gzip(bytes(5 * 1024 + 3, 2), None),
    ];
    let config = Config::oci_v1(
        br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#
            .to_vec(),
        None,
    );
    (layers, config)
}

/// Pushes [`image`] as `REPO:tag`; returns the manifest digest the push
/// reported and the pushed manifest's size.
async fn push_image(reg: &mut Running, client: &Client, tag: &str) -> (String, i64) {
    let (layers, config) = image();
    let pushed = client
        .push(
            &reference(reg, tag),
            &layers,
            config.clone(),
            &RegistryAuth::Anonymous,
            None,
        )
        .await
        .expect("oci-client pushes the image");
    assert!(
        pushed
            .config_url
            .ends_with(&format!("/v2/{REPO}/blobs/{}", config.sha256_digest())),
        "config url {}",
        pushed.config_url
    );
    let digest = manifest_digest_of(&pushed.manifest_url);

    let events = reg.events();
    let started = events
        .iter()
        .filter(
            |e| matches!(e, RegistryEvent::UploadStarted { repository, .. } if repository == REPO),
        )
        .count();
    // oci-client pushes blobs chunked (POST, PATCH, PUT) and silently falls
    // back to a second, monolithic session when it thinks the registry broke
    // the spec: one session per blob means no fallback happened.
    assert_eq!(
        started, 3,
        "one upload session per blob (more means oci-client fell back to a monolithic push): {events:?}"
    );
    let committed = events
        .iter()
        .filter(
            |e| matches!(e, RegistryEvent::BlobCommitted { repository, .. } if repository == REPO),
        )
        .count();
    assert_eq!(committed, 3, "{events:?}");
    let size = events
        .iter()
        .find_map(|e| match e {
            RegistryEvent::ManifestPut {
                repository,
                reference,
                digest: d,
                media_type,
                body,
            } if repository == REPO && reference == tag => {
                assert_eq!(d.to_string(), digest, "event digest = pushed digest");
                assert_eq!(sha256(body), digest, "digest is the body's sha256");
                assert_eq!(media_type, OCI_IMAGE_MEDIA_TYPE);
                Some(body.len() as i64)
            }
            _ => None,
        })
        .unwrap_or_else(|| panic!("a ManifestPut for {tag}: {events:?}"));
    (digest, size)
}

#[tokio::test]
async fn push_then_pull_an_image() {
    let mut reg = start().await;
    let client = oci_client(false);
    let (digest, _) = push_image(&mut reg, &client, "v1").await;
    let (layers, config) = image();
    let auth = RegistryAuth::Anonymous;
    let image_ref = reference(&reg, "v1");

    let pulled = client
        .pull(
            &image_ref,
            &auth,
            vec![IMAGE_LAYER_MEDIA_TYPE, IMAGE_LAYER_GZIP_MEDIA_TYPE],
        )
        .await
        .expect("oci-client pulls the image");
    assert_eq!(pulled.digest.as_deref(), Some(digest.as_str()));
    assert_eq!(pulled.config.data, config.data);
    assert_eq!(pulled.config.media_type, IMAGE_CONFIG_MEDIA_TYPE);
    // `pull` fetches layers concurrently and collects them as they finish.
    let mut got: Vec<(String, Bytes)> = pulled
        .layers
        .iter()
        .map(|l| (l.media_type.clone(), l.data.clone()))
        .collect();
    let mut want: Vec<(String, Bytes)> = layers
        .iter()
        .map(|l| (l.media_type.clone(), l.data.clone()))
        .collect();
    got.sort();
    want.sort();
    assert!(got == want, "pulled layers differ from the pushed ones");
    let manifest = pulled.manifest.expect("pull returns the manifest");
    let layer_digests: Vec<_> = manifest.layers.iter().map(|d| d.digest.clone()).collect();
    assert_eq!(
        layer_digests,
        layers.iter().map(|l| l.sha256_digest()).collect::<Vec<_>>()
    );
    assert_eq!(manifest.config.digest, config.sha256_digest());

    // Manifest by tag and by digest, and its digest by HEAD.
    for r in [image_ref.clone(), by_digest(&reg, &digest)] {
        let (manifest, got) = client
            .pull_manifest(&r, &auth)
            .await
            .unwrap_or_else(|e| panic!("pull_manifest {r}: {e}"));
        assert_eq!(got, digest, "pull_manifest {r}");
        assert!(
            matches!(&manifest, OciManifest::Image(m) if m.layers.len() == 2),
            "{manifest:?}"
        );
    }
    let head = client
        .fetch_manifest_digest(&image_ref, &auth)
        .await
        .expect("fetch_manifest_digest");
    assert_eq!(head, digest);

    let tags = client
        .list_tags(&image_ref, &auth, None, None)
        .await
        .expect("list_tags");
    assert_eq!(tags.name, REPO);
    assert!(tags.tags.iter().any(|t| t == "v1"), "{:?}", tags.tags);

    for layer in &layers {
        assert!(
            client
                .blob_exists(&image_ref, &layer.sha256_digest())
                .await
                .expect("blob_exists")
        );
    }
    assert!(
        !client
            .blob_exists(&image_ref, &sha256(b"never pushed"))
            .await
            .expect("blob_exists of a missing blob")
    );

    reg.handle.shutdown().await;
}

/// Pulls a blob whole (no `Range`) with both blob pull APIs.
async fn pull_whole(client: &Client, image: &Reference, digest: &str, expected: &[u8]) {
    let mut out = Vec::new();
    client
        .pull_blob(image, &digest, &mut out)
        .await
        .unwrap_or_else(|e| panic!("pull_blob {digest}: {e}"));
    assert!(out == expected, "pull_blob {digest}: bytes differ");

    let stream = client
        .pull_blob_stream(image, &digest)
        .await
        .unwrap_or_else(|e| panic!("pull_blob_stream {digest}: {e}"));
    assert_eq!(stream.content_length, Some(expected.len() as u64));
    let mut streamed = Vec::with_capacity(expected.len());
    let mut stream = stream.stream;
    while let Some(chunk) = futures_util::StreamExt::next(&mut stream).await {
        streamed.extend_from_slice(&chunk.expect("stream chunk"));
    }
    assert!(
        streamed == expected,
        "pull_blob_stream {digest}: bytes differ"
    );
}

/// One upload session, whose last progress event counts every byte, and the
/// blob committed with its size.
fn assert_one_session(events: &[RegistryEvent], digest: &str, len: usize) {
    let sessions: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            RegistryEvent::UploadStarted { upload_id, .. } => Some(upload_id.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(
        sessions.len(),
        1,
        "one upload session (more means oci-client fell back to a monolithic push): {events:?}"
    );
    let received = events
        .iter()
        .filter_map(|e| match e {
            RegistryEvent::BytesReceived {
                upload_id, total, ..
            } if *upload_id == sessions[0] => Some(*total),
            _ => None,
        })
        .max();
    assert_eq!(received, Some(len as u64));
    assert!(
        events.iter().any(|e| matches!(
            e,
            RegistryEvent::BlobCommitted { digest: d, size, .. }
                if d.to_string() == digest && *size == len as u64
        )),
        "{digest} committed with size {len}: {events:?}"
    );
}

#[tokio::test]
async fn chunked_push_of_blobs_larger_than_a_chunk() {
    let mut reg = start().await;
    let client = oci_client(false);
    let image_ref = reference(&reg, "big");

    // `push_blob`: 4 MiB + 1 MiB + 123 bytes in two PATCHes.
    let data = bytes(5 * 1024 * 1024 + 123, 7);
    assert!(data.len() > OCI_CLIENT_CHUNK);
    let digest = sha256(&data);
    let url = client
        .push_blob(&image_ref, data.clone(), &digest)
        .await
        .expect("push_blob (chunked)");
    assert!(
        url.ends_with(&format!("/v2/{REPO}/blobs/{digest}")),
        "blob url {url}"
    );
    assert_one_session(&reg.events(), &digest, data.len());
    pull_whole(&client, &image_ref, &digest, &data).await;

    // `push_blob_stream_chunked` (digest computed on the fly, no monolithic
    // fallback): uneven stream items, one PATCH per item piece (2 MiB, then
    // 4 MiB + 1 MiB, then 1 byte).
    let data = bytes(7 * 1024 * 1024 + 1, 8);
    let pieces: Vec<::oci_client::errors::Result<Bytes>> = vec![
        Ok(Bytes::copy_from_slice(&data[..2 * 1024 * 1024])),
        Ok(Bytes::copy_from_slice(
            &data[2 * 1024 * 1024..7 * 1024 * 1024],
        )),
        Ok(Bytes::copy_from_slice(&data[7 * 1024 * 1024..])),
    ];
    let pushed = client
        .push_blob_stream_chunked(&image_ref, futures_util::stream::iter(pieces))
        .await
        .expect("push_blob_stream_chunked");
    let digest = sha256(&data);
    assert_eq!(pushed.blob_digest, digest);
    assert_eq!(pushed.size, data.len() as u64);
    assert_one_session(&reg.events(), &digest, data.len());
    pull_whole(&client, &image_ref, &digest, &data).await;

    reg.handle.shutdown().await;
}

#[tokio::test]
async fn monolithic_push_mode() {
    let mut reg = start().await;
    let client = oci_client(true);
    let image_ref = reference(&reg, "mono");
    let data = bytes(5 * 1024 * 1024 + 5, 9);
    let digest = sha256(&data);
    client
        .push_blob(&image_ref, data.clone(), &digest)
        .await
        .expect("push_blob (monolithic)");
    assert_one_session(&reg.events(), &digest, data.len());
    pull_whole(&client, &image_ref, &digest, &data).await;

    // A whole image in monolithic mode too.
    let (digest, _) = push_image(&mut reg, &client, "mono").await;
    let pulled = client
        .pull(
            &image_ref,
            &RegistryAuth::Anonymous,
            vec![IMAGE_LAYER_MEDIA_TYPE, IMAGE_LAYER_GZIP_MEDIA_TYPE],
        )
        .await
        .expect("pull");
    assert_eq!(pulled.digest.as_deref(), Some(digest.as_str()));

    reg.handle.shutdown().await;
}

#[tokio::test]
async fn artifact_with_a_subject_is_listed_as_a_referrer() {
    let mut reg = start().await;
    let client = oci_client(false);
    let auth = RegistryAuth::Anonymous;
    let (subject_digest, subject_size) = push_image(&mut reg, &client, "v1").await;

    let empty = Config::new(b"{}".to_vec(), EMPTY_MEDIA_TYPE.into(), None);
    let signature = ImageLayer::new(
        b"not really a signature".to_vec(),
        "application/vnd.example.signature.v1+raw".into(),
        None,
    );
    let mut manifest = OciImageManifest::build(std::slice::from_ref(&signature), &empty, None);
    manifest.media_type = Some(OCI_IMAGE_MEDIA_TYPE.into());
    manifest.artifact_type = Some(SIG_ARTIFACT_TYPE.into());
    manifest.annotations = Some([("org.example.kind".to_owned(), "sig".to_owned())].into());
    manifest.subject = Some(OciDescriptor {
        media_type: OCI_IMAGE_MEDIA_TYPE.into(),
        digest: subject_digest.clone(),
        size: subject_size,
        ..Default::default()
    });
    let pushed = client
        .push(
            &reference(&reg, "sig"),
            &[signature],
            empty,
            &auth,
            Some(manifest),
        )
        .await
        .expect("oci-client pushes the artifact");
    let artifact_digest = manifest_digest_of(&pushed.manifest_url);
    let events = reg.events();
    let artifact_size = events
        .iter()
        .find_map(|e| match e {
            RegistryEvent::ManifestPut {
                reference, body, ..
            } if reference == "sig" => Some(body.len() as i64),
            _ => None,
        })
        .unwrap_or_else(|| panic!("a ManifestPut for sig: {events:?}"));

    // The spec's answer to a manifest with a subject: `OCI-Subject` on the
    // PUT. oci-client does not look, so check it here with a plain request.
    let (raw, _) = client
        .pull_manifest_raw(&reference(&reg, "sig"), &auth, &[OCI_IMAGE_MEDIA_TYPE])
        .await
        .expect("pull_manifest_raw");
    let r = reg
        .req(Method::PUT, &format!("/v2/{REPO}/manifests/sig"))
        .header("content-type", OCI_IMAGE_MEDIA_TYPE)
        .body(raw.to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(header(&r, "oci-subject"), subject_digest);

    // The referrers API (a 404 would make oci-client fall back to the tag
    // schema, which finds nothing here: a hit proves the native API answered).
    let subject = by_digest(&reg, &subject_digest);
    let index = client
        .pull_referrers(&subject, None)
        .await
        .expect("pull_referrers");
    assert_eq!(index.schema_version, 2);
    assert_eq!(
        index.media_type.as_deref(),
        Some("application/vnd.oci.image.index.v1+json")
    );
    assert_eq!(index.manifests.len(), 1, "{index:?}");
    let entry = &index.manifests[0];
    assert_eq!(entry.digest, artifact_digest);
    assert_eq!(entry.size, artifact_size);
    assert_eq!(entry.media_type, OCI_IMAGE_MEDIA_TYPE);
    assert_eq!(entry.artifact_type.as_deref(), Some(SIG_ARTIFACT_TYPE));
    assert_eq!(
        entry
            .annotations
            .as_ref()
            .and_then(|a| a.get("org.example.kind"))
            .map(String::as_str),
        Some("sig")
    );

    // Filtered by artifact type (server side: oci-client does not filter the
    // native API's answer).
    let hit = client
        .pull_referrers(&subject, Some(SIG_ARTIFACT_TYPE))
        .await
        .expect("pull_referrers filtered");
    assert_eq!(hit.manifests.len(), 1, "{hit:?}");
    let miss = client
        .pull_referrers(&subject, Some("application/vnd.example.other"))
        .await
        .expect("pull_referrers filtered, no match");
    assert!(miss.manifests.is_empty(), "{miss:?}");

    // The artifact itself pulls back, subject and all.
    let (manifest, digest) = client
        .pull_manifest(&by_digest(&reg, &artifact_digest), &auth)
        .await
        .expect("pull the artifact by digest");
    assert_eq!(digest, artifact_digest);
    match manifest {
        OciManifest::Image(m) => {
            assert_eq!(m.artifact_type.as_deref(), Some(SIG_ARTIFACT_TYPE));
            assert_eq!(
                m.subject.map(|s| s.digest),
                Some(subject_digest.clone()),
                "subject kept"
            );
        }
        other => panic!("an image manifest, got {other:?}"),
    }

    reg.handle.shutdown().await;
}
