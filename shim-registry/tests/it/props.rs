//! Hostile requests over HTTP: arbitrary paths, `Content-Range` and
//! `Content-Length` of upload chunks, manifest bodies and media types,
//! pagination `n`/`last`. The registry never answers 5xx, never drops the
//! connection, and keeps serving.

use proptest::prelude::*;
use reqwest::{Method, StatusCode};

use crate::support::{Running, start};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 128,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// Sends a request; the answer must come, and not be a server error.
async fn answer(reg: &Running, request: reqwest::RequestBuilder) -> StatusCode {
    let r = request.send().await.expect("the registry answered");
    let status = r.status();
    let body = r.bytes().await.expect("the body arrived");
    assert!(
        !status.is_server_error(),
        "{status}: {}",
        String::from_utf8_lossy(&body)
    );
    if status.is_client_error() && !body.is_empty() {
        let v: serde_json::Value = serde_json::from_slice(&body).expect("error body is json");
        assert!(v["errors"][0]["code"].is_string(), "{v}");
    }
    // Still serving.
    let r = reg.req(Method::GET, "/v2/").send().await.expect("still up");
    assert_eq!(r.status(), StatusCode::OK);
    status
}

fn json_value() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        any::<f64>().prop_map(serde_json::Value::from),
        any::<String>().prop_map(serde_json::Value::from),
        Just(serde_json::Value::from(
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        )),
    ];
    leaf.prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::from),
            prop::collection::btree_map(
                prop_oneof![
                    Just("schemaVersion".to_owned()),
                    Just("mediaType".to_owned()),
                    Just("config".to_owned()),
                    Just("layers".to_owned()),
                    Just("manifests".to_owned()),
                    Just("subject".to_owned()),
                    Just("digest".to_owned()),
                    Just("size".to_owned()),
                    "[a-z]{1,6}",
                ],
                inner,
                0..6
            )
            .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    })
}

#[test]
fn manifest_bodies_and_media_types() {
    let rt = runtime();
    let reg = rt.block_on(start());
    let types = prop_oneof![
        Just("application/vnd.oci.image.manifest.v1+json".to_owned()),
        Just("application/vnd.oci.image.index.v1+json".to_owned()),
        Just("application/vnd.docker.distribution.manifest.v2+json".to_owned()),
        Just("application/vnd.docker.distribution.manifest.list.v2+json".to_owned()),
        "[ -~]{0,40}",
    ];
    let bodies = prop_oneof![
        json_value().prop_map(|v| v.to_string().into_bytes()),
        any::<Vec<u8>>(),
    ];
    proptest!(config(), |(media_type in types, body in bodies, reference in prop_oneof![Just("t".to_owned()), "[ -~]{1,20}"])| {
        let path = format!("/v2/p/manifests/{}", url_escape(&reference));
        rt.block_on(async {
            let mut request = reg.req(Method::PUT, &path).body(body);
            if let Ok(v) = reqwest::header::HeaderValue::from_str(&media_type) {
                request = request.header("content-type", v);
            }
            let status = answer(&reg, request).await;
            assert!(
                [StatusCode::CREATED, StatusCode::BAD_REQUEST, StatusCode::NOT_FOUND, StatusCode::PAYLOAD_TOO_LARGE, StatusCode::METHOD_NOT_ALLOWED].contains(&status),
                "{status}"
            );
        });
    });
}

#[test]
fn upload_chunks_with_hostile_ranges() {
    let rt = runtime();
    let reg = rt.block_on(start());
    let ranges = prop_oneof![
        any::<String>(),
        "(bytes )?[0-9]{1,20}-[0-9]{1,20}",
        Just(format!("0-{}", u64::MAX)),
        Just(format!("{}-{}", u64::MAX, u64::MAX)),
    ];
    // reqwest sends the body's Content-Length with every chunk.
    proptest!(config(), |(range in ranges, data in prop::collection::vec(any::<u8>(), 0..64))| {
        rt.block_on(async {
            let location = reg.start_upload("r").await;
            let mut request = reg.client.patch(reg.url(&location, "")).body(data);
            if let Ok(v) = reqwest::header::HeaderValue::from_str(&range) {
                request = request.header("content-range", v);
            }
            let status = answer(&reg, request).await;
            assert!(
                [StatusCode::ACCEPTED, StatusCode::BAD_REQUEST, StatusCode::RANGE_NOT_SATISFIABLE].contains(&status),
                "{status}"
            );
        });
    });
}

#[test]
fn pagination_and_paths() {
    let rt = runtime();
    let reg = rt.block_on(start());
    rt.block_on(async {
        let config = reg.push_blob("q", b"{}").await;
        for tag in ["a", "b", "c"] {
            let manifest = serde_json::json!({
                "schemaVersion": 2,
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config, "size": 2},
                "layers": []
            });
            let r = reg
                .req(Method::PUT, &format!("/v2/q/manifests/{tag}"))
                .header("content-type", "application/vnd.oci.image.manifest.v1+json")
                .body(manifest.to_string())
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), StatusCode::CREATED);
        }
    });
    let values = prop_oneof![any::<String>(), "-?[0-9]{0,25}", Just(String::new())];
    let paths = prop_oneof![
        "/v2/[a-zA-Z0-9/._%:-]{0,40}",
        "(/[a-z0-9%.]{0,6}){0,8}",
        any::<String>().prop_map(|s| format!("/v2/{}", url_escape(&s))),
    ];
    let methods = prop_oneof![
        Just(Method::GET),
        Just(Method::HEAD),
        Just(Method::DELETE),
        Just(Method::POST),
        Just(Method::PUT),
        Just(Method::PATCH),
    ];
    proptest!(config(), |(n in values.clone(), last in values, path in paths, method in methods)| {
        rt.block_on(async {
            let request = reg
                .req(Method::GET, "/v2/q/tags/list")
                .query(&[("n", n.as_str()), ("last", last.as_str())]);
            let status = answer(&reg, request).await;
            assert!([StatusCode::OK, StatusCode::BAD_REQUEST].contains(&status), "{status}");
            if reqwest::Url::parse(&format!("{}{path}", reg.base)).is_ok() {
                let _ = answer(&reg, reg.req(method, &path)).await;
            }
        });
    });
}

/// Percent-escapes everything but unreserved characters.
fn url_escape(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}
