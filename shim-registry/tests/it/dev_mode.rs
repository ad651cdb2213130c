//! What the conformance suite's dev mode (`OCI_VERSION=1.1+dev`) checks
//! beyond 1.1: tags pushed as `?tag=` parameters of a push by digest (with
//! sha512 manifests too), and an inverted `Range` answered 416.

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::support::{Running, expect_error, header, sha256, sha512, start};

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

async fn manifest(reg: &Running, name: &str) -> Vec<u8> {
    let config = reg.push_blob(name, b"{\"dev\":1}").await;
    serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": { "mediaType": "application/vnd.oci.image.config.v1+json", "digest": config, "size": 9 },
        "layers": [],
    }))
    .unwrap()
}

async fn put_with_tags(
    reg: &Running,
    name: &str,
    digest: &str,
    query: &str,
    body: &[u8],
) -> reqwest::Response {
    reg.req(
        Method::PUT,
        &format!("/v2/{name}/manifests/{digest}?{query}"),
    )
    .header("content-type", OCI_MANIFEST)
    .body(body.to_vec())
    .send()
    .await
    .unwrap()
}

/// The `OCI-Tag` values of a response, split on commas.
fn oci_tags(r: &reqwest::Response) -> Vec<String> {
    r.headers()
        .get_all("oci-tag")
        .iter()
        .flat_map(|v| v.to_str().unwrap().split(','))
        .map(|t| t.trim().to_owned())
        .collect()
}

#[tokio::test]
async fn tag_parameters_on_a_push_by_digest() {
    let reg = start().await;
    let body = manifest(&reg, "tp").await;
    for digest in [sha256(&body), sha512(&body)] {
        let algo = &digest[..6];
        let (a, b) = (format!("{algo}-a"), format!("{algo}-b"));
        let r = put_with_tags(
            &reg,
            "tp",
            &digest,
            &format!("tag={a}&tag={b}&tag={a}"),
            &body,
        )
        .await;
        assert_eq!(r.status(), StatusCode::CREATED);
        assert_eq!(header(&r, "docker-content-digest"), digest);
        assert_eq!(oci_tags(&r), [a.clone(), b.clone(), a.clone()]);
        for tag in [&a, &b] {
            // The tag points at the manifest under the pushed digest's algorithm.
            let r = reg
                .req(Method::HEAD, &format!("/v2/tp/manifests/{tag}"))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), StatusCode::OK, "{tag}");
            assert_eq!(header(&r, "docker-content-digest"), digest, "{tag}");
        }
    }
    let r = reg
        .req(Method::GET, "/v2/tp/tags/list")
        .send()
        .await
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&r.bytes().await.unwrap()).unwrap();
    assert_eq!(
        v["tags"],
        json!(["sha256-a", "sha256-b", "sha512-a", "sha512-b"])
    );

    // A push by digest without parameters answers no OCI-Tag.
    let r = put_with_tags(&reg, "tp", &sha256(&body), "", &body).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    assert!(r.headers().get("oci-tag").is_none());
}

#[tokio::test]
async fn an_invalid_tag_parameter_stores_nothing() {
    let reg = start().await;
    let body = manifest(&reg, "bad").await;
    let digest = sha256(&body);
    let r = put_with_tags(&reg, "bad", &digest, "tag=ok&tag=-no", &body).await;
    expect_error(r, StatusCode::BAD_REQUEST, "MANIFEST_INVALID").await;
    for reference in ["ok", digest.as_str()] {
        let r = reg
            .req(Method::HEAD, &format!("/v2/bad/manifests/{reference}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::NOT_FOUND, "{reference}");
    }
}

#[tokio::test]
async fn an_inverted_range_is_rejected() {
    let reg = start().await;
    let data = vec![7u8; 2048];
    let d = reg.push_blob("rg", &data).await;
    let r = reg
        .req(Method::GET, &format!("/v2/rg/blobs/{d}"))
        .header("range", "bytes=500-0")
        .send()
        .await
        .unwrap();
    assert_eq!(header(&r, "content-range"), "bytes */2048");
    expect_error(r, StatusCode::RANGE_NOT_SATISFIABLE, "RANGE_INVALID").await;
    // A malformed one is still ignored: the whole blob.
    let r = reg
        .req(Method::GET, &format!("/v2/rg/blobs/{d}"))
        .header("range", "bytes=5-x")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.bytes().await.unwrap().len(), 2048);
}
