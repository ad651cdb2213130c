//! Blob reads, deletes, ranges and the presence policy.

use std::sync::Arc;

use reqwest::{Method, StatusCode};
use shim_registry::oci_spec::image::Digest;
use shim_registry::{Presence, PresencePolicy, RegistryEvent};

use crate::support::{bytes, expect_error, header, sha256, start, start_with};

#[tokio::test]
async fn base_endpoint_answers_200_json() {
    let reg = start().await;
    let r = reg.req(Method::GET, "/v2/").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(
        header(&r, "docker-distribution-api-version"),
        "registry/2.0"
    );
    assert_eq!(r.text().await.unwrap(), "{}");
    let r = reg.req(Method::GET, "/v2").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
}

#[tokio::test]
async fn head_get_and_ranges() {
    let reg = start().await;
    let data = bytes(100_000, 1);
    let d = reg.push_blob("a/b/c", &data).await;
    let path = format!("/v2/a/b/c/blobs/{d}");

    let r = reg.req(Method::HEAD, &path).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(header(&r, "content-length"), "100000");
    assert_eq!(header(&r, "docker-content-digest"), d);
    assert_eq!(header(&r, "content-type"), "application/octet-stream");

    let r = reg.req(Method::GET, &path).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(header(&r, "docker-content-digest"), d);
    assert_eq!(r.bytes().await.unwrap(), data);

    let r = reg
        .req(Method::GET, &path)
        .header("range", "bytes=10-19")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(header(&r, "content-range"), "bytes 10-19/100000");
    assert_eq!(header(&r, "content-length"), "10");
    assert_eq!(r.bytes().await.unwrap(), data[10..20]);

    let r = reg
        .req(Method::GET, &path)
        .header("range", "bytes=99990-")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(r.bytes().await.unwrap(), data[99990..]);

    let r = reg
        .req(Method::GET, &path)
        .header("range", "bytes=100000-")
        .send()
        .await
        .unwrap();
    assert_eq!(header(&r, "content-range"), "bytes */100000");
    expect_error(r, StatusCode::RANGE_NOT_SATISFIABLE, "RANGE_INVALID").await;
}

#[tokio::test]
async fn unknown_and_invalid_blobs() {
    let reg = start().await;
    let missing = sha256(b"missing");
    let r = reg
        .req(Method::GET, &format!("/v2/x/blobs/{missing}"))
        .send()
        .await
        .unwrap();
    expect_error(r, StatusCode::NOT_FOUND, "BLOB_UNKNOWN").await;
    let r = reg
        .req(Method::HEAD, &format!("/v2/x/blobs/{missing}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let r = reg
        .req(Method::GET, "/v2/x/blobs/sha256:abc")
        .send()
        .await
        .unwrap();
    expect_error(r, StatusCode::BAD_REQUEST, "DIGEST_INVALID").await;
    let r = reg
        .req(Method::GET, &format!("/v2/Upper/blobs/{missing}"))
        .send()
        .await
        .unwrap();
    expect_error(r, StatusCode::BAD_REQUEST, "NAME_INVALID").await;
    let r = reg
        .req(Method::GET, "/v2/x/nothing/here")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert_eq!(
        header(&r, "docker-distribution-api-version"),
        "registry/2.0"
    );
}

#[tokio::test]
async fn delete_blob() {
    let reg = start().await;
    let d = reg.push_blob("x", b"to delete").await;
    let r = reg
        .req(Method::DELETE, &format!("/v2/x/blobs/{d}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let r = reg
        .req(Method::HEAD, &format!("/v2/x/blobs/{d}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let r = reg
        .req(Method::DELETE, &format!("/v2/x/blobs/{d}"))
        .send()
        .await
        .unwrap();
    expect_error(r, StatusCode::NOT_FOUND, "BLOB_UNKNOWN").await;
}

/// Claims every blob present with size 7, except the one named absent.
struct Claims {
    absent: String,
}

impl PresencePolicy for Claims {
    fn blob(&self, _repository: &str, digest: &Digest) -> Presence {
        if digest.as_ref() == self.absent {
            Presence::Absent
        } else {
            Presence::Present { size: 7 }
        }
    }
}

#[tokio::test]
async fn presence_policy_steers_head_get_and_mount() {
    let stored = b"stored blob".to_vec();
    let stored_d = sha256(&stored);
    let mut reg = start_with(|b| {
        b.presence(Arc::new(Claims {
            absent: stored_d.clone(),
        }))
    })
    .await;
    reg.push_blob("p", &stored).await;
    let claimed = sha256(b"never pushed");

    // Claimed present though not stored: HEAD 200 with the claimed size, GET 404.
    let r = reg
        .req(Method::HEAD, &format!("/v2/p/blobs/{claimed}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(header(&r, "content-length"), "7");
    let r = reg
        .req(Method::GET, &format!("/v2/p/blobs/{claimed}"))
        .send()
        .await
        .unwrap();
    expect_error(r, StatusCode::NOT_FOUND, "BLOB_UNKNOWN").await;
    // Claimed absent though stored.
    let r = reg
        .req(Method::HEAD, &format!("/v2/p/blobs/{stored_d}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let r = reg
        .req(Method::GET, &format!("/v2/p/blobs/{stored_d}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);

    // Mount: 201 for a present blob, a 202 session for an absent one.
    let r = reg
        .req(
            Method::POST,
            &format!("/v2/q/blobs/uploads/?mount={claimed}&from=p"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(header(&r, "location"), format!("/v2/q/blobs/{claimed}"));
    assert_eq!(header(&r, "docker-content-digest"), claimed);
    let r = reg
        .req(
            Method::POST,
            &format!("/v2/q/blobs/uploads/?mount={stored_d}&from=p"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    assert!(header(&r, "location").starts_with("/v2/q/blobs/uploads/"));

    let heads: Vec<_> = reg
        .events()
        .into_iter()
        .filter_map(|e| match e {
            RegistryEvent::BlobHeadAnswered {
                digest, present, ..
            } => Some((digest.to_string(), present)),
            _ => None,
        })
        .collect();
    assert_eq!(
        heads,
        vec![(claimed.clone(), true), (stored_d.clone(), false)]
    );
}

#[tokio::test]
async fn mount_of_stored_blob_with_default_policy() {
    let reg = start().await;
    let d = reg.push_blob("from", b"shared").await;
    let r = reg
        .req(
            Method::POST,
            &format!("/v2/to/blobs/uploads/?mount={d}&from=from"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let missing = sha256(b"nope");
    let r = reg
        .req(
            Method::POST,
            &format!("/v2/to/blobs/uploads/?mount={missing}&from=from"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
}

/// Claims every blob present in one repository; elsewhere, storage answers.
struct OnlyIn {
    repository: &'static str,
}

impl PresencePolicy for OnlyIn {
    fn blob(&self, repository: &str, _digest: &Digest) -> Presence {
        if repository == self.repository {
            Presence::Present { size: 7 }
        } else {
            Presence::Stored
        }
    }
}

#[tokio::test]
async fn a_mount_asks_the_policy_about_the_repository_it_comes_from() {
    let reg = start_with(|b| b.presence(Arc::new(OnlyIn { repository: "mine" }))).await;
    let claimed = sha256(b"claimed in mine only");
    let post = |target: &str, from: &str| {
        reg.req(
            Method::POST,
            &format!("/v2/{target}/blobs/uploads/?mount={claimed}&from={from}"),
        )
        .send()
    };
    // Into another repository from the one where it is claimed: mounted.
    assert_eq!(
        post("theirs", "mine").await.unwrap().status(),
        StatusCode::CREATED
    );
    // Into the claiming repository from one where it is not: a session.
    assert_eq!(
        post("mine", "theirs").await.unwrap().status(),
        StatusCode::ACCEPTED
    );
}

/// Holds every `HEAD` until the test lets it go, then claims the blob.
struct Paced {
    go: Arc<tokio::sync::Semaphore>,
    asked: Arc<std::sync::atomic::AtomicUsize>,
}

impl PresencePolicy for Paced {
    fn blob(&self, _repository: &str, _digest: &Digest) -> Presence {
        Presence::Present { size: 7 }
    }

    fn pace_head(&self, _repository: &str, _digest: &Digest) -> Option<shim_registry::HeadPace> {
        self.asked.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let go = self.go.clone();
        Some(Box::pin(async move {
            go.acquire().await.expect("open").forget();
        }))
    }
}

#[tokio::test]
async fn a_policy_paces_head_answers() {
    let go = Arc::new(tokio::sync::Semaphore::new(0));
    let asked = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let policy = Arc::new(Paced {
        go: go.clone(),
        asked: asked.clone(),
    });
    let reg = start_with(|b| b.presence(policy)).await;
    let digest = sha256(b"never stored");
    let url = format!("{}/v2/paced/blobs/{digest}", reg.base);
    let heads: Vec<_> = (0..3)
        .map(|_| tokio::spawn(reg.client.head(&url).send()))
        .collect();
    // Nobody is answered while the pace holds.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while asked.load(std::sync::atomic::Ordering::SeqCst) < 3 {
        assert!(
            std::time::Instant::now() < deadline,
            "the HEADs did not arrive"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert!(
        heads.iter().all(|h| !h.is_finished()),
        "answered while paced"
    );
    // One let go: exactly one answered.
    go.add_permits(1);
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert_eq!(heads.iter().filter(|h| h.is_finished()).count(), 1);
    go.add_permits(2);
    for head in heads {
        let r = head.await.unwrap().unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(header(&r, "content-length"), "7");
    }
    // GET is not paced.
    let r = reg.client.get(&url).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert_eq!(asked.load(std::sync::atomic::Ordering::SeqCst), 3);
}
