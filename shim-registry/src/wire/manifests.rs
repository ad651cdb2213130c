//! Manifest, tag-list and referrers endpoints.

use bytes::Bytes;
use http::{Method, Response, StatusCode, header};
use http_body::Body;
use http_body_util::{BodyExt, Limited};
use oci_spec::image::{Digest, DigestAlgorithm, ImageIndex, ImageManifest};
use serde_json::{Value, json};

use super::body::ResponseBody;
use super::error::{ApiError, Code};
use super::reply::Reply;
use super::request::Incoming;
use super::route::{parse_digest, parse_reference, percent_encode, query_value, valid_tag};
use crate::events::RegistryEvent;
use crate::policy::Presence;
use crate::state::Shared;
use crate::storage::{Reference, StoredManifest, hashing::digest_of};

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";

fn reference(s: &str) -> Result<Reference, ApiError> {
    parse_reference(s).ok_or_else(|| {
        if s.contains(':') {
            ApiError::new(Code::DigestInvalid).detail(json!({ "digest": s }))
        } else {
            ApiError::new(Code::ManifestInvalid)
                .detail(json!({ "tag": s, "reason": "invalid tag" }))
        }
    })
}

fn manifest_unknown(reference: &Reference) -> ApiError {
    ApiError::new(Code::ManifestUnknown).detail(json!({ "reference": reference.to_string() }))
}

fn invalid(reason: impl Into<String>) -> ApiError {
    ApiError::new(Code::ManifestInvalid).detail(json!({ "reason": reason.into() }))
}

/// `GET` and `HEAD /v2/<name>/manifests/<reference>`.
pub(super) async fn get(
    shared: &Shared,
    name: &str,
    reference_str: &str,
    method: &Method,
) -> Result<Response<ResponseBody>, ApiError> {
    let reference = reference(reference_str)?;
    let (digest, manifest) = shared
        .storage
        .get_manifest(name, &reference)
        .await?
        .ok_or_else(|| manifest_unknown(&reference))?;
    Ok(Reply::new(StatusCode::OK)
        .header(header::CONTENT_TYPE, &manifest.media_type)
        .header("docker-content-digest", digest.as_ref())
        .header(header::ETAG, format!("\"{digest}\""))
        .body_unless_head(method, manifest.body))
}

/// `DELETE /v2/<name>/manifests/<reference>`: a tag, or a manifest by digest.
pub(super) async fn delete(
    shared: &Shared,
    name: &str,
    reference_str: &str,
) -> Result<Response<ResponseBody>, ApiError> {
    let reference = reference(reference_str)?;
    if shared.storage.delete_manifest(name, &reference).await? {
        Ok(Reply::new(StatusCode::ACCEPTED).empty())
    } else {
        Err(manifest_unknown(&reference))
    }
}

/// What a manifest `PUT` learned from the body.
struct Checked {
    media_type: String,
    subject: Option<Digest>,
    /// Blobs the manifest needs (config and layers of an image manifest).
    blobs: Vec<Digest>,
}

/// Validates a manifest body against its `Content-Type`.
fn check_manifest(content_type: Option<&str>, body: &[u8]) -> Result<Checked, ApiError> {
    let value: Value =
        serde_json::from_slice(body).map_err(|e| invalid(format!("not json: {e}")))?;
    let Some(object) = value.as_object() else {
        return Err(invalid("not a json object"));
    };
    if let Some(v) = object.get("schemaVersion")
        && v.as_u64() != Some(2)
    {
        return Err(invalid("schemaVersion must be 2"));
    }
    let field_type = object.get("mediaType").and_then(Value::as_str);
    let header_type = content_type
        .map(|c| c.split(';').next().unwrap_or(c).trim())
        .filter(|c| !c.is_empty());
    if let (Some(h), Some(f)) = (header_type, field_type)
        && h != f
    {
        return Err(invalid(format!(
            "Content-Type {h} differs from mediaType {f}"
        )));
    }
    let media_type = header_type
        .or(field_type)
        .map(str::to_owned)
        .unwrap_or_else(|| {
            if object.contains_key("manifests") {
                OCI_INDEX
            } else {
                OCI_MANIFEST
            }
            .to_owned()
        });
    let mut blobs = Vec::new();
    match media_type.as_str() {
        OCI_MANIFEST | DOCKER_MANIFEST => {
            let m: ImageManifest = serde_json::from_slice(body)
                .map_err(|e| invalid(format!("not an image manifest: {e}")))?;
            blobs.push(m.config().digest().clone());
            for layer in m.layers() {
                // Foreign layers live elsewhere.
                if layer.urls().as_ref().is_none_or(Vec::is_empty) {
                    blobs.push(layer.digest().clone());
                }
            }
        }
        OCI_INDEX | DOCKER_LIST => {
            let _: ImageIndex = serde_json::from_slice(body)
                .map_err(|e| invalid(format!("not an image index: {e}")))?;
        }
        // Other media types are stored as they are.
        _ => {}
    }
    let subject = match object.get("subject") {
        None | Some(Value::Null) => None,
        Some(s) => Some(
            s.get("digest")
                .and_then(Value::as_str)
                .and_then(parse_digest)
                .ok_or_else(|| invalid("subject has no valid digest"))?,
        ),
    };
    Ok(Checked {
        media_type,
        subject,
        blobs,
    })
}

/// `PUT /v2/<name>/manifests/<reference>`.
pub(super) async fn put<B>(
    shared: &Shared,
    name: &str,
    reference_str: &str,
    req: Incoming<B>,
) -> Result<Response<ResponseBody>, ApiError>
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let reference = reference(reference_str)?;
    // Tags pushed with a manifest pushed by digest: `?tag=a&tag=b` (spec, end-7b).
    let tag_params: Vec<String> = req
        .query
        .iter()
        .filter(|(k, _)| k == "tag")
        .map(|(_, v)| v.clone())
        .collect();
    let content_type = req
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let limit = shared.max_manifest;
    let body = Limited::new(req.body, limit)
        .collect()
        .await
        .map_err(|e| {
            if e.is::<http_body_util::LengthLimitError>() {
                ApiError::new(Code::SizeInvalid)
                    .status(StatusCode::PAYLOAD_TOO_LARGE)
                    .detail(json!({ "limit": limit }))
            } else {
                invalid(format!("reading the body failed: {e}"))
            }
        })?
        .to_bytes();
    let checked = check_manifest(content_type.as_deref(), &body)?;
    let algorithm = match &reference {
        Reference::Digest(d) => d.algorithm().clone(),
        Reference::Tag(_) => DigestAlgorithm::Sha256,
    };
    let digest = digest_of(&algorithm, &body)?;
    if let Reference::Digest(d) = &reference
        && *d != digest
    {
        return Err(ApiError::new(Code::DigestInvalid)
            .detail(json!({ "expected": d.to_string(), "actual": digest.to_string() })));
    }
    for blob in &checked.blobs {
        let known = match shared.presence.blob(name, blob) {
            Presence::Stored => shared.storage.stat_blob(blob).await?.is_some(),
            Presence::Present { .. } => true,
            Presence::Absent => false,
        };
        if !known {
            return Err(ApiError::new(Code::ManifestBlobUnknown)
                .detail(json!({ "digest": blob.to_string() })));
        }
    }
    let tags = tags_to_set(&reference, &tag_params)?;
    if let Some(message) =
        shared
            .presence
            .refuse_manifest(name, reference_str, &checked.media_type, &body)
    {
        tracing::debug!(repository = name, reference = reference_str, %digest, "manifest refused by the policy");
        shared.events.event(&RegistryEvent::ManifestRefused {
            repository: name.to_owned(),
            reference: reference_str.to_owned(),
            digest: digest.clone(),
            media_type: checked.media_type,
            body,
        });
        return Err(ApiError::new(Code::Denied).detail(json!({ "reason": message })));
    }
    let stored = StoredManifest::new(
        checked.media_type.clone(),
        body.clone(),
        checked.subject.clone(),
    );
    shared
        .storage
        .put_manifest(name, &digest, stored, &tags)
        .await?;
    tracing::debug!(repository = name, reference = reference_str, %digest, "manifest stored");
    shared.events.event(&RegistryEvent::ManifestPut {
        repository: name.to_owned(),
        reference: reference_str.to_owned(),
        digest: digest.clone(),
        media_type: checked.media_type,
        body,
    });
    let mut reply = Reply::new(StatusCode::CREATED)
        .header(header::LOCATION, format!("/v2/{name}/manifests/{digest}"))
        .header("docker-content-digest", digest.as_ref());
    if let Some(subject) = &checked.subject {
        reply = reply.header("oci-subject", subject.as_ref());
    }
    if !tag_params.is_empty() {
        // One `OCI-Tag` list of every tag accepted (RFC 9110 list syntax).
        reply = reply.header("oci-tag", tag_params.join(", "));
    }
    Ok(reply.empty())
}

/// The tags a manifest `PUT` points at its manifest: the reference when it
/// is a tag, and every `tag` query parameter (each checked, no duplicates).
fn tags_to_set(reference: &Reference, params: &[String]) -> Result<Vec<String>, ApiError> {
    let mut tags = Vec::with_capacity(params.len() + 1);
    if let Reference::Tag(t) = reference {
        tags.push(t.clone());
    }
    for tag in params {
        if !valid_tag(tag) {
            return Err(ApiError::new(Code::ManifestInvalid)
                .detail(json!({ "tag": tag, "reason": "invalid tag parameter" })));
        }
        if !tags.contains(tag) {
            tags.push(tag.clone());
        }
    }
    Ok(tags)
}

/// `GET /v2/<name>/tags/list?n=&last=`.
pub(super) async fn tags(
    shared: &Shared,
    name: &str,
    query: &[(String, String)],
) -> Result<Response<ResponseBody>, ApiError> {
    let mut tags = shared
        .storage
        .list_tags(name)
        .await?
        .ok_or_else(|| ApiError::new(Code::NameUnknown).detail(json!({ "name": name })))?;
    tags.sort();
    if let Some(last) = query_value(query, "last") {
        tags.retain(|t| t.as_str() > last);
    }
    let limit = match query_value(query, "n") {
        Some(n) => Some(n.parse::<usize>().map_err(|_| {
            ApiError::new(Code::Unsupported)
                .status(StatusCode::BAD_REQUEST)
                .detail(json!({ "n": n }))
        })?),
        None => None,
    };
    let mut reply = Reply::new(StatusCode::OK).header(header::CONTENT_TYPE, "application/json");
    if let Some(n) = limit
        && tags.len() > n
    {
        tags.truncate(n);
        if let Some(last) = tags.last() {
            reply = reply.header(
                header::LINK,
                format!(
                    "</v2/{name}/tags/list?n={n}&last={}>; rel=\"next\"",
                    percent_encode(last)
                ),
            );
        }
    }
    let body = serde_json::to_vec(&json!({ "name": name, "tags": tags })).expect("json serializes");
    Ok(reply.body_unless_head(&Method::GET, body))
}

/// `GET /v2/<name>/referrers/<digest>?artifactType=`.
pub(super) async fn referrers(
    shared: &Shared,
    name: &str,
    digest: &str,
    query: &[(String, String)],
) -> Result<Response<ResponseBody>, ApiError> {
    let subject = parse_digest(digest)
        .ok_or_else(|| ApiError::new(Code::DigestInvalid).detail(json!({ "digest": digest })))?;
    let filter = query_value(query, "artifactType").filter(|t| !t.is_empty());
    let mut descriptors = Vec::new();
    for (digest, manifest) in shared.storage.referrers(name, &subject).await? {
        let body: Value = serde_json::from_slice(&manifest.body).unwrap_or(Value::Null);
        let artifact_type = body
            .get("artifactType")
            .and_then(Value::as_str)
            .or_else(|| body.pointer("/config/mediaType").and_then(Value::as_str));
        if filter.is_some() && artifact_type != filter {
            continue;
        }
        let mut d = json!({
            "mediaType": manifest.media_type,
            "digest": digest.to_string(),
            "size": manifest.body.len(),
        });
        if let Some(t) = artifact_type {
            d["artifactType"] = json!(t);
        }
        if let Some(a) = body.get("annotations").filter(|a| a.is_object()) {
            d["annotations"] = a.clone();
        }
        descriptors.push(d);
    }
    let index = json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": descriptors,
    });
    let mut reply = Reply::new(StatusCode::OK).header(header::CONTENT_TYPE, OCI_INDEX);
    if filter.is_some() {
        reply = reply.header("oci-filters-applied", "artifactType");
    }
    let body = serde_json::to_vec(&index).expect("json serializes");
    Ok(reply.body_unless_head(&Method::GET, body))
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[track_caller]
    fn reject(content_type: Option<&str>, body: &str) {
        let e = check_manifest(content_type, body.as_bytes())
            .err()
            .expect("rejected");
        assert_eq!(e.code, Code::ManifestInvalid, "{body}");
    }

    #[test]
    fn manifests_checked() {
        reject(None, "nope");
        reject(None, "[]");
        reject(None, r#"{"schemaVersion":1}"#);
        reject(
            Some(OCI_MANIFEST),
            r#"{"schemaVersion":2,"mediaType":"x/y"}"#,
        );
        reject(Some(OCI_MANIFEST), r#"{"schemaVersion":2,"layers":[]}"#);
        let m = format!(
            r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","config":{{"mediaType":"a/b","digest":"{D}","size":0}},"layers":[],"subject":{{"mediaType":"{OCI_MANIFEST}","digest":"{D}","size":2}}}}"#
        );
        let c = check_manifest(
            Some("application/vnd.oci.image.manifest.v1+json; charset=x"),
            m.as_bytes(),
        )
        .unwrap();
        assert_eq!(c.media_type, OCI_MANIFEST);
        assert_eq!(c.blobs.len(), 1);
        assert_eq!(c.subject.unwrap().to_string(), D);
        let c = check_manifest(None, br#"{"schemaVersion":2,"manifests":[]}"#).unwrap();
        assert_eq!(c.media_type, OCI_INDEX);
        let c = check_manifest(Some("application/x-custom"), br#"{"anything":true}"#).unwrap();
        assert_eq!(c.media_type, "application/x-custom");
    }
}
