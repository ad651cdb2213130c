//! Manifests, tags and referrers.

use reqwest::{Method, StatusCode};
use serde_json::json;
use shim_registry::RegistryEvent;

use crate::support::{Running, expect_error, header, sha256, sha512, start};

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";

/// Pushes a config and a layer; returns an image manifest using them.
async fn image(reg: &Running, name: &str, media_type: &str, extra: serde_json::Value) -> Vec<u8> {
    let config = reg.push_blob(name, b"{}").await;
    let layer = reg
        .push_blob(name, format!("layer of {extra}").as_bytes())
        .await;
    let mut m = json!({
        "schemaVersion": 2,
        "mediaType": media_type,
        "config": { "mediaType": "application/vnd.oci.image.config.v1+json", "digest": config, "size": 2 },
        "layers": [ { "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": layer, "size": 1 } ],
    });
    if let serde_json::Value::Object(extra) = extra {
        for (k, v) in extra {
            m[k] = v;
        }
    }
    // Odd spacing on purpose: the bytes must be kept exactly.
    serde_json::to_string_pretty(&m).unwrap().into_bytes()
}

#[tokio::test]
async fn put_get_head_by_tag_and_digest() {
    let mut reg = start().await;
    let body = image(&reg, "img/x", DOCKER_MANIFEST, json!({})).await;
    let d = sha256(&body);
    reg.events();
    let r = reg
        .put_manifest("img/x", "v1", DOCKER_MANIFEST, &body)
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(header(&r, "docker-content-digest"), d);
    assert_eq!(header(&r, "location"), format!("/v2/img/x/manifests/{d}"));
    assert!(r.headers().get("oci-subject").is_none());
    let events = reg.events();
    assert!(
        matches!(&events[..], [RegistryEvent::ManifestPut { repository, reference, digest, media_type, body: b }]
        if repository == "img/x" && reference == "v1" && digest.as_ref() == d && media_type == DOCKER_MANIFEST && b[..] == body[..])
    );

    for reference in ["v1", d.as_str()] {
        let r = reg
            .req(Method::GET, &format!("/v2/img/x/manifests/{reference}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(header(&r, "content-type"), DOCKER_MANIFEST);
        assert_eq!(header(&r, "docker-content-digest"), d);
        assert_eq!(r.bytes().await.unwrap(), body);
        let r = reg
            .req(Method::HEAD, &format!("/v2/img/x/manifests/{reference}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(header(&r, "content-length"), body.len().to_string());
        assert_eq!(header(&r, "docker-content-digest"), d);
    }
    let r = reg
        .req(Method::GET, "/v2/img/x/manifests/v2")
        .send()
        .await
        .unwrap();
    expect_error(r, StatusCode::NOT_FOUND, "MANIFEST_UNKNOWN").await;
    let r = reg
        .req(Method::HEAD, "/v2/img/x/manifests/v2")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn put_by_digest_verifies_it() {
    let reg = start().await;
    let body = image(&reg, "d", OCI_MANIFEST, json!({})).await;
    let r = reg
        .put_manifest("d", &sha256(&body), OCI_MANIFEST, &body)
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let r = reg
        .put_manifest("d", &sha512(&body), OCI_MANIFEST, &body)
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(header(&r, "docker-content-digest"), sha512(&body));
    let r = reg
        .put_manifest("d", &sha256(b"else"), OCI_MANIFEST, &body)
        .await;
    expect_error(r, StatusCode::BAD_REQUEST, "DIGEST_INVALID").await;
}

#[tokio::test]
async fn invalid_manifests() {
    let reg = start().await;
    let r = reg.put_manifest("i", "t", OCI_MANIFEST, b"not json").await;
    expect_error(r, StatusCode::BAD_REQUEST, "MANIFEST_INVALID").await;
    let r = reg
        .put_manifest(
            "i",
            "t",
            OCI_MANIFEST,
            br#"{"schemaVersion":2,"layers":[]}"#,
        )
        .await;
    expect_error(r, StatusCode::BAD_REQUEST, "MANIFEST_INVALID").await;
    let body = image(&reg, "i", OCI_MANIFEST, json!({})).await;
    let r = reg.put_manifest("i", "t", DOCKER_MANIFEST, &body).await;
    expect_error(r, StatusCode::BAD_REQUEST, "MANIFEST_INVALID").await;
    let r = reg.put_manifest("i", "bad:tag:", OCI_MANIFEST, &body).await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    // blobs that were never pushed
    let missing = json!({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": { "mediaType": "a/b", "digest": sha256(b"no config"), "size": 9 },
        "layers": [],
    });
    let r = reg
        .put_manifest("i", "t", OCI_MANIFEST, missing.to_string().as_bytes())
        .await;
    expect_error(r, StatusCode::BAD_REQUEST, "MANIFEST_BLOB_UNKNOWN").await;
}

#[tokio::test]
async fn large_manifests_are_accepted() {
    let reg = start().await;
    let padding = "x".repeat(5 << 20);
    let body = json!({ "schemaVersion": 2, "mediaType": "application/vnd.example+json", "annotations": { "pad": padding } }).to_string();
    let r = reg
        .put_manifest("big", "t", "application/vnd.example+json", body.as_bytes())
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let r = reg
        .req(Method::GET, "/v2/big/manifests/t")
        .send()
        .await
        .unwrap();
    assert_eq!(r.bytes().await.unwrap().len(), body.len());
}

#[tokio::test]
async fn delete_tags_and_manifests() {
    let reg = start().await;
    let body = image(&reg, "del", OCI_MANIFEST, json!({})).await;
    let d = sha256(&body);
    for t in ["a", "b"] {
        assert_eq!(
            reg.put_manifest("del", t, OCI_MANIFEST, &body)
                .await
                .status(),
            StatusCode::CREATED
        );
    }
    let r = reg
        .req(Method::DELETE, "/v2/del/manifests/a")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let r = reg
        .req(Method::GET, "/v2/del/manifests/a")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let r = reg
        .req(Method::GET, &format!("/v2/del/manifests/{d}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let r = reg
        .req(Method::DELETE, &format!("/v2/del/manifests/{d}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let r = reg
        .req(Method::GET, "/v2/del/manifests/b")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let r = reg
        .req(Method::DELETE, &format!("/v2/del/manifests/{d}"))
        .send()
        .await
        .unwrap();
    expect_error(r, StatusCode::NOT_FOUND, "MANIFEST_UNKNOWN").await;
}

#[tokio::test]
async fn tags_list_pages() {
    let reg = start().await;
    let body = image(&reg, "t/l", OCI_MANIFEST, json!({})).await;
    for t in ["c", "a", "e", "b", "d"] {
        reg.put_manifest("t/l", t, OCI_MANIFEST, &body).await;
    }
    let list = |q: &'static str| {
        let req = reg.req(Method::GET, &format!("/v2/t/l/tags/list{q}"));
        async move {
            let r = req.send().await.unwrap();
            assert_eq!(r.status(), StatusCode::OK);
            let link = r
                .headers()
                .get("link")
                .map(|l| l.to_str().unwrap().to_owned());
            let v: serde_json::Value = serde_json::from_slice(&r.bytes().await.unwrap()).unwrap();
            assert_eq!(v["name"], "t/l");
            (v["tags"].clone(), link)
        }
    };
    assert_eq!(list("").await, (json!(["a", "b", "c", "d", "e"]), None));
    assert_eq!(
        list("?n=2").await,
        (
            json!(["a", "b"]),
            Some(r#"</v2/t/l/tags/list?n=2&last=b>; rel="next""#.to_owned())
        )
    );
    assert_eq!(
        list("?n=2&last=b").await,
        (
            json!(["c", "d"]),
            Some(r#"</v2/t/l/tags/list?n=2&last=d>; rel="next""#.to_owned())
        )
    );
    assert_eq!(list("?n=2&last=d").await, (json!(["e"]), None));
    assert_eq!(list("?n=0").await.0, json!([]));
    let r = reg
        .req(Method::GET, "/v2/nobody/tags/list")
        .send()
        .await
        .unwrap();
    expect_error(r, StatusCode::NOT_FOUND, "NAME_UNKNOWN").await;
}

#[tokio::test]
async fn referrers() {
    let reg = start().await;
    let subject_body = image(&reg, "r", OCI_MANIFEST, json!({})).await;
    let subject = sha256(&subject_body);
    let descriptor =
        json!({ "mediaType": OCI_MANIFEST, "digest": subject, "size": subject_body.len() });
    // The subject need not exist yet.
    let sig = image(&reg, "r", OCI_MANIFEST, json!({ "artifactType": "application/vnd.example.sig", "subject": descriptor, "annotations": { "k": "v" } })).await;
    let r = reg
        .put_manifest("r", &sha256(&sig), OCI_MANIFEST, &sig)
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(header(&r, "oci-subject"), subject);
    let sbom = image(&reg, "r", OCI_MANIFEST, json!({ "subject": descriptor })).await;
    assert_eq!(
        reg.put_manifest("r", &sha256(&sbom), OCI_MANIFEST, &sbom)
            .await
            .status(),
        StatusCode::CREATED
    );
    reg.put_manifest("r", "subject", OCI_MANIFEST, &subject_body)
        .await;

    let r = reg
        .req(Method::GET, &format!("/v2/r/referrers/{subject}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(header(&r, "content-type"), OCI_INDEX);
    assert!(r.headers().get("oci-filters-applied").is_none());
    let v: serde_json::Value = serde_json::from_slice(&r.bytes().await.unwrap()).unwrap();
    assert_eq!(v["schemaVersion"], 2);
    assert_eq!(v["mediaType"], OCI_INDEX);
    let manifests = v["manifests"].as_array().unwrap();
    assert_eq!(manifests.len(), 2);
    let sig_entry = manifests
        .iter()
        .find(|m| m["digest"] == sha256(&sig))
        .unwrap();
    assert_eq!(sig_entry["artifactType"], "application/vnd.example.sig");
    assert_eq!(sig_entry["annotations"]["k"], "v");
    assert_eq!(sig_entry["size"], sig.len());
    assert_eq!(sig_entry["mediaType"], OCI_MANIFEST);
    let sbom_entry = manifests
        .iter()
        .find(|m| m["digest"] == sha256(&sbom))
        .unwrap();
    assert_eq!(
        sbom_entry["artifactType"],
        "application/vnd.oci.image.config.v1+json"
    );

    let r = reg
        .req(
            Method::GET,
            &format!("/v2/r/referrers/{subject}?artifactType=application/vnd.example.sig"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(header(&r, "oci-filters-applied"), "artifactType");
    let v: serde_json::Value = serde_json::from_slice(&r.bytes().await.unwrap()).unwrap();
    assert_eq!(v["manifests"].as_array().unwrap().len(), 1);

    let r = reg
        .req(
            Method::GET,
            &format!("/v2/r/referrers/{}", sha256(b"nothing")),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let v: serde_json::Value = serde_json::from_slice(&r.bytes().await.unwrap()).unwrap();
    assert_eq!(v["manifests"], json!([]));
    let r = reg
        .req(Method::GET, "/v2/r/referrers/sha256:12")
        .send()
        .await
        .unwrap();
    expect_error(r, StatusCode::BAD_REQUEST, "DIGEST_INVALID").await;
}

/// Refuses manifests pushed by the tag `final`; storage answers for blobs.
struct RefuseFinal;

impl shim_registry::PresencePolicy for RefuseFinal {
    fn blob(
        &self,
        _repository: &str,
        _digest: &shim_registry::oci_spec::image::Digest,
    ) -> shim_registry::Presence {
        shim_registry::Presence::Stored
    }

    fn refuse_manifest(
        &self,
        _repository: &str,
        reference: &str,
        media_type: &str,
        body: &[u8],
    ) -> Option<String> {
        assert_eq!(media_type, OCI_MANIFEST);
        assert!(body.starts_with(b"{"));
        (reference == "final").then(|| "not this one".to_owned())
    }
}

#[tokio::test]
async fn a_policy_refuses_a_manifest_it_still_reports() {
    let mut reg =
        crate::support::start_with(|b| b.presence(std::sync::Arc::new(RefuseFinal))).await;
    let body = image(&reg, "img/r", OCI_MANIFEST, json!({})).await;
    let d = sha256(&body);
    reg.events();
    let r = reg
        .put_manifest("img/r", "final", OCI_MANIFEST, &body)
        .await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let reply: serde_json::Value = serde_json::from_slice(&r.bytes().await.unwrap()).unwrap();
    assert_eq!(reply["errors"][0]["code"], "DENIED", "{reply}");
    assert_eq!(
        reply["errors"][0]["detail"]["reason"], "not this one",
        "{reply}"
    );
    let events = reg.events();
    assert!(
        matches!(&events[..], [RegistryEvent::ManifestRefused { repository, reference, digest, media_type, body: b }]
        if repository == "img/r" && reference == "final" && digest.as_ref() == d && media_type == OCI_MANIFEST && b[..] == body[..]),
        "{events:?}"
    );
    // Nothing was stored, under the tag or the digest.
    for reference in ["final", d.as_str()] {
        let r = reg
            .req(Method::HEAD, &format!("/v2/img/r/manifests/{reference}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::NOT_FOUND, "{reference}");
    }
    // A malformed manifest is refused as malformed, not by the policy.
    let r = reg.put_manifest("img/r", "final", OCI_MANIFEST, b"{").await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    // Other references are taken.
    let r = reg.put_manifest("img/r", &d, OCI_MANIFEST, &body).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let r = reg
        .put_manifest("img/r", "other", OCI_MANIFEST, &body)
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
}
