//! Fault injection: each action, matching by method, path and occurrence;
//! and the bounds on what a client can make the registry store.

use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::Value;
use shim_registry::fault::{Fault, FaultRule, Faults, Occurrence};
use shim_registry::{RegistryBuilder, RegistryEvent};

use crate::support::{bytes, sha256, start_with};

#[tokio::test]
async fn respond_fires_on_the_nth_matching_request_only() {
    let reg = start_with(|b: RegistryBuilder| {
        b.faults(
            Faults::new().rule(
                FaultRule::glob("/v2/**/blobs/uploads/")
                    .method(Method::POST)
                    .on(Occurrence::Nth(2))
                    .fault(Fault::respond(
                        StatusCode::TOO_MANY_REQUESTS,
                        "TOOMANYREQUESTS",
                    )),
            ),
        )
    })
    .await;
    let mut statuses = Vec::new();
    for _ in 0..3 {
        // A GET of the same path does not count.
        let r = reg
            .req(Method::GET, "/v2/a/blobs/uploads/")
            .send()
            .await
            .unwrap();
        assert_ne!(r.status(), StatusCode::TOO_MANY_REQUESTS);
        let r = reg
            .req(Method::POST, "/v2/a/blobs/uploads/")
            .send()
            .await
            .unwrap();
        statuses.push(r.status());
        if r.status() == StatusCode::TOO_MANY_REQUESTS {
            let v: Value =
                serde_json::from_slice::<Value>(&r.bytes().await.unwrap()).expect("json body");
            assert_eq!(v["errors"][0]["code"], "TOOMANYREQUESTS");
        }
    }
    assert_eq!(
        statuses,
        [
            StatusCode::ACCEPTED,
            StatusCode::TOO_MANY_REQUESTS,
            StatusCode::ACCEPTED
        ]
    );
}

#[tokio::test]
async fn delay_holds_the_answer() {
    let reg = start_with(|b: RegistryBuilder| {
        b.faults(
            Faults::new().rule(
                FaultRule::regex("^/v2/$")
                    .unwrap()
                    .fault(Fault::Delay(Duration::from_millis(300))),
            ),
        )
    })
    .await;
    let started = Instant::now();
    let r = reg.req(Method::GET, "/v2/").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert!(started.elapsed() >= Duration::from_millis(300));
    let started = Instant::now();
    let r = reg
        .req(Method::GET, "/v2/x/tags/list")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert!(started.elapsed() < Duration::from_millis(300));
}

#[tokio::test]
async fn reset_closes_without_an_answer_and_nothing_is_stored() {
    let reg = start_with(|b: RegistryBuilder| {
        b.faults(
            Faults::new().rule(
                FaultRule::glob("/v2/*/manifests/*")
                    .method(Method::PUT)
                    .on(Occurrence::FirstN(1))
                    .fault(Fault::Reset),
            ),
        )
    })
    .await;
    let config = reg.push_blob("r", b"{}").await;
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config, "size": 2},
        "layers": []
    });
    let put = || {
        reg.req(Method::PUT, "/v2/r/manifests/v1")
            .header("content-type", "application/vnd.oci.image.manifest.v1+json")
            .body(manifest.to_string())
            .send()
    };
    let first = put().await;
    assert!(first.is_err(), "an answer came: {first:?}");
    let r = reg
        .req(Method::GET, "/v2/r/manifests/v1")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let second = put().await.unwrap();
    assert_eq!(second.status(), StatusCode::CREATED);
}

#[tokio::test]
async fn cut_body_sends_only_the_first_bytes() {
    let data = bytes(100_000, 7);
    let reg = start_with(|b: RegistryBuilder| {
        b.faults(
            Faults::new().rule(
                FaultRule::glob("/v2/c/blobs/sha256:*")
                    .method(Method::GET)
                    .on(Occurrence::Nth(1))
                    .fault(Fault::CutBody { after: 1000 }),
            ),
        )
    })
    .await;
    let digest = reg.push_blob("c", &data).await;
    let r = reg
        .req(Method::GET, &format!("/v2/c/blobs/{digest}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.content_length(), Some(100_000));
    let mut got = Vec::new();
    let mut r = r;
    let ended = loop {
        match r.chunk().await {
            Ok(Some(c)) => got.extend_from_slice(&c),
            Ok(None) => break Ok(()),
            Err(e) => break Err(e),
        }
    };
    assert!(ended.is_err(), "the body ended cleanly");
    assert_eq!(got, data[..1000]);
    // The second read is whole.
    let r = reg
        .req(Method::GET, &format!("/v2/c/blobs/{digest}"))
        .send()
        .await
        .unwrap();
    assert_eq!(sha256(&r.bytes().await.unwrap()), digest);
}

#[tokio::test]
async fn manifest_size_and_upload_budget_are_bounded() {
    let mut reg =
        start_with(|b: RegistryBuilder| b.max_manifest_size(1024).upload_budget(10_000)).await;
    let big = format!("{{\"schemaVersion\":2,\"x\":\"{}\"}}", "a".repeat(2000));
    let r = reg
        .req(Method::PUT, "/v2/m/manifests/v1")
        .header("content-type", "application/vnd.example+json")
        .body(big)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let v: Value = serde_json::from_slice::<Value>(&r.bytes().await.unwrap()).expect("json body");
    assert_eq!(v["errors"][0]["code"], "SIZE_INVALID");

    reg.push_blob("m", &bytes(6000, 1)).await;
    let data = bytes(6000, 2);
    let r = reg
        .req(
            Method::POST,
            &format!("/v2/m/blobs/uploads/?digest={}", sha256(&data)),
        )
        .body(data)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let v: Value = serde_json::from_slice::<Value>(&r.bytes().await.unwrap()).expect("json body");
    assert_eq!(v["errors"][0]["code"], "SIZE_INVALID");
    let spent: Vec<_> = reg
        .events()
        .into_iter()
        .filter(|e| matches!(e, RegistryEvent::UploadBudgetSpent { repository, .. } if repository == "m"))
        .collect();
    assert_eq!(spent.len(), 1, "{spent:?}");
    let r = reg
        .req(
            Method::GET,
            &format!("/v2/m/blobs/{}", sha256(&bytes(6000, 2))),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
}
