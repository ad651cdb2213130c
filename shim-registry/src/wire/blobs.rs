//! Blob and upload endpoints.

use bytes::Bytes;
use http::{Method, Response, StatusCode, header};
use http_body::Body;
use oci_spec::image::Digest;
use serde_json::json;

use super::body::ResponseBody;
use super::error::{ApiError, Code};
use super::range::{ByteRange, parse_content_range, resolve_range, upload_range};
use super::reply::Reply;
use super::request::{Incoming, upload_stream};
use super::route::{parse_digest, query_value};
use crate::events::RegistryEvent;
use crate::policy::Presence;
use crate::state::Shared;

const OCTET_STREAM: &str = "application/octet-stream";

fn digest_param(value: Option<&str>) -> Result<Digest, ApiError> {
    let value = value
        .ok_or_else(|| ApiError::new(Code::DigestInvalid).detail("digest parameter missing"))?;
    parse_digest(value)
        .ok_or_else(|| ApiError::new(Code::DigestInvalid).detail(json!({ "digest": value })))
}

fn upload_location(name: &str, id: &str) -> String {
    format!("/v2/{name}/blobs/uploads/{id}")
}

fn blob_location(name: &str, digest: &Digest) -> String {
    format!("/v2/{name}/blobs/{digest}")
}

/// Whether a blob counts as present in `name`, and its size.
async fn presence(shared: &Shared, name: &str, digest: &Digest) -> Result<Option<u64>, ApiError> {
    Ok(match shared.presence.blob(name, digest) {
        Presence::Stored => shared.storage.stat_blob(digest).await?,
        Presence::Present { size } => Some(size),
        Presence::Absent => None,
    })
}

/// `GET` and `HEAD /v2/<name>/blobs/<digest>`.
pub(super) async fn get<B>(
    shared: &Shared,
    name: &str,
    digest: &str,
    req: Incoming<B>,
) -> Result<Response<ResponseBody>, ApiError> {
    let digest = parse_digest(digest)
        .ok_or_else(|| ApiError::new(Code::DigestInvalid).detail(json!({ "digest": digest })))?;
    let unknown =
        || ApiError::new(Code::BlobUnknown).detail(json!({ "digest": digest.to_string() }));
    if req.method == Method::HEAD {
        if let Some(pace) = shared.presence.pace_head(name, &digest) {
            pace.await;
        }
        let size = presence(shared, name, &digest).await?;
        shared.events.event(&RegistryEvent::BlobHeadAnswered {
            repository: name.to_owned(),
            digest: digest.clone(),
            present: size.is_some(),
        });
        let size = size.ok_or_else(unknown)?;
        return Ok(Reply::new(StatusCode::OK)
            .header(header::CONTENT_LENGTH, size.to_string())
            .header(header::CONTENT_TYPE, OCTET_STREAM)
            .header(header::ACCEPT_RANGES, "bytes")
            .header("docker-content-digest", digest.as_ref())
            .header(header::ETAG, format!("\"{digest}\""))
            .response());
    }
    // GET serves stored bytes only, and never what the policy claims absent.
    if shared.presence.blob(name, &digest) == Presence::Absent {
        return Err(unknown());
    }
    let size = shared
        .storage
        .stat_blob(&digest)
        .await?
        .ok_or_else(unknown)?;
    let range = resolve_range(
        req.headers.get(header::RANGE).and_then(|v| v.to_str().ok()),
        size,
    );
    let reply = Reply::new(StatusCode::OK)
        .header(header::CONTENT_TYPE, OCTET_STREAM)
        .header(header::ACCEPT_RANGES, "bytes")
        .header("docker-content-digest", digest.as_ref())
        .header(header::ETAG, format!("\"{digest}\""));
    let (reply, part) = match range {
        ByteRange::Whole => (reply.header(header::CONTENT_LENGTH, size.to_string()), None),
        ByteRange::Part(r) => {
            let reply = Reply::new(StatusCode::PARTIAL_CONTENT)
                .header(header::CONTENT_TYPE, OCTET_STREAM)
                .header(header::ACCEPT_RANGES, "bytes")
                .header("docker-content-digest", digest.as_ref())
                .header(header::CONTENT_LENGTH, (r.end - r.start).to_string())
                .header(
                    header::CONTENT_RANGE,
                    format!("bytes {}-{}/{size}", r.start, r.end - 1),
                );
            (reply, Some(r))
        }
        ByteRange::Unsatisfiable => {
            return Err(ApiError::new(Code::RangeInvalid)
                .detail(json!({ "size": size }))
                .with_content_range(size));
        }
    };
    let reader = shared
        .storage
        .open_blob_range(&digest, part)
        .await?
        .ok_or_else(unknown)?;
    Ok(reply.stream(ResponseBody::reader(reader)))
}

/// `DELETE /v2/<name>/blobs/<digest>`.
pub(super) async fn delete(
    shared: &Shared,
    digest: &str,
) -> Result<Response<ResponseBody>, ApiError> {
    let digest = parse_digest(digest)
        .ok_or_else(|| ApiError::new(Code::DigestInvalid).detail(json!({ "digest": digest })))?;
    if shared.storage.delete_blob(&digest).await? {
        Ok(Reply::new(StatusCode::ACCEPTED).empty())
    } else {
        Err(ApiError::new(Code::BlobUnknown).detail(json!({ "digest": digest.to_string() })))
    }
}

/// `POST /v2/<name>/blobs/uploads/`: a session, a monolithic upload
/// (`?digest=`), or a mount (`?mount=&from=`).
pub(super) async fn start_upload<B>(
    shared: &Shared,
    name: &str,
    req: Incoming<B>,
) -> Result<Response<ResponseBody>, ApiError>
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    if let Some(mount) = query_value(&req.query, "mount") {
        let digest = digest_param(Some(mount))?;
        // Mountable when present in the repository it is mounted from
        // (without `from`, the registry may look where it likes: here).
        let from = query_value(&req.query, "from").unwrap_or(name);
        if presence(shared, from, &digest).await?.is_some() {
            return Ok(Reply::new(StatusCode::CREATED)
                .header(header::LOCATION, blob_location(name, &digest))
                .header("docker-content-digest", digest.as_ref())
                .empty());
        }
        // Not mountable: fall back to a session, as the spec says.
    } else if let Some(d) = query_value(&req.query, "digest") {
        let digest = digest_param(Some(d))?;
        let id = shared
            .storage
            .create_upload(name)
            .await
            .map_err(|e| storage_failed(shared, name, None, e))?;
        started(shared, name, &id);
        let stream = upload_stream(req.body, shared, name, &id, 0);
        let size = shared
            .storage
            .append_upload(name, &id, stream)
            .await
            .map_err(|e| storage_failed(shared, name, Some(&id), e))?;
        received(shared, name, &id, size);
        return commit(shared, name, &id, &digest).await;
    }
    let id = shared
        .storage
        .create_upload(name)
        .await
        .map_err(|e| storage_failed(shared, name, None, e))?;
    started(shared, name, &id);
    Ok(Reply::new(StatusCode::ACCEPTED)
        .header(header::LOCATION, upload_location(name, &id))
        .header(header::RANGE, "0-0")
        .header("docker-upload-uuid", &id)
        .empty())
}

/// Reports a failure of the registry's own storage (not of the client's
/// request) as [`RegistryEvent::StorageFailed`], then answers as usual.
fn storage_failed(
    shared: &Shared,
    name: &str,
    id: Option<&str>,
    e: crate::storage::StorageError,
) -> ApiError {
    use crate::storage::StorageError;
    if let StorageError::Incoming { source } = &e
        && source
            .get_ref()
            .is_some_and(|s| s.is::<crate::budget::BudgetExhausted>())
    {
        shared.events.event(&RegistryEvent::UploadBudgetSpent {
            repository: name.to_owned(),
            upload_id: id.map(str::to_owned),
        });
    }
    if matches!(e, StorageError::Io { .. } | StorageError::Backend { .. }) {
        let mut message = e.to_string();
        let mut source = std::error::Error::source(&e);
        while let Some(s) = source {
            message.push_str(": ");
            message.push_str(&s.to_string());
            source = s.source();
        }
        shared.events.event(&RegistryEvent::StorageFailed {
            repository: name.to_owned(),
            upload_id: id.map(str::to_owned),
            message,
        });
    }
    e.into()
}

fn started(shared: &Shared, name: &str, id: &str) {
    shared.events.event(&RegistryEvent::UploadStarted {
        repository: name.to_owned(),
        upload_id: id.to_owned(),
    });
}

fn received(shared: &Shared, name: &str, id: &str, total: u64) {
    shared.events.event(&RegistryEvent::BytesReceived {
        repository: name.to_owned(),
        upload_id: id.to_owned(),
        total,
    });
}

async fn commit(
    shared: &Shared,
    name: &str,
    id: &str,
    digest: &Digest,
) -> Result<Response<ResponseBody>, ApiError> {
    let size = shared
        .storage
        .commit_upload(name, id, digest)
        .await
        .map_err(|e| storage_failed(shared, name, Some(id), e))?;
    tracing::debug!(repository = name, %digest, size, "blob committed");
    shared.events.event(&RegistryEvent::BlobCommitted {
        repository: name.to_owned(),
        digest: digest.clone(),
        size,
    });
    Ok(Reply::new(StatusCode::CREATED)
        .header(header::LOCATION, blob_location(name, digest))
        .header("docker-content-digest", digest.as_ref())
        .empty())
}

/// The current size of a session, or 404.
async fn session_size(shared: &Shared, name: &str, id: &str) -> Result<u64, ApiError> {
    shared
        .storage
        .upload_size(name, id)
        .await?
        .ok_or_else(|| ApiError::new(Code::BlobUploadUnknown).detail(json!({ "uuid": id })))
}

/// Checks a `Content-Range` against the session's size: the chunk must
/// start where the data so far ends.
async fn check_chunk(
    shared: &Shared,
    name: &str,
    id: &str,
    headers: &http::HeaderMap,
) -> Result<u64, ApiError> {
    let size = session_size(shared, name, id).await?;
    let Some(value) = headers.get(header::CONTENT_RANGE) else {
        return Ok(size);
    };
    let out_of_order = |detail: serde_json::Value| {
        ApiError::new(Code::BlobUploadInvalid)
            .status(StatusCode::RANGE_NOT_SATISFIABLE)
            .detail(detail)
            .with_upload(name, id, size)
    };
    let Some((start, end)) = value.to_str().ok().and_then(parse_content_range) else {
        return Err(out_of_order(json!({ "content-range": "malformed" })));
    };
    if start != size {
        return Err(out_of_order(
            json!({ "expected_start": size, "start": start }),
        ));
    }
    let length = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    // `end` may be u64::MAX: the range's length is computed without overflow
    // (found by tests/it/props.rs).
    let range_length = (end - start).checked_add(1);
    if let Some(length) = length
        && Some(length) != range_length
    {
        return Err(out_of_order(
            json!({ "content-length": length, "range_end": end, "range_start": start }),
        ));
    }
    Ok(size)
}

/// `PATCH /v2/<name>/blobs/uploads/<id>`: a streamed or ranged chunk.
pub(super) async fn patch_upload<B>(
    shared: &Shared,
    name: &str,
    id: &str,
    req: Incoming<B>,
) -> Result<Response<ResponseBody>, ApiError>
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let base = check_chunk(shared, name, id, &req.headers).await?;
    let stream = upload_stream(req.body, shared, name, id, base);
    let size = shared
        .storage
        .append_upload(name, id, stream)
        .await
        .map_err(|e| storage_failed(shared, name, Some(id), e))?;
    received(shared, name, id, size);
    Ok(Reply::new(StatusCode::ACCEPTED)
        .header(header::LOCATION, upload_location(name, id))
        .header(header::RANGE, upload_range(size))
        .header("docker-upload-uuid", id)
        .empty())
}

/// `PUT /v2/<name>/blobs/uploads/<id>?digest=`: the last chunk (if any),
/// then verify and store.
pub(super) async fn put_upload<B>(
    shared: &Shared,
    name: &str,
    id: &str,
    req: Incoming<B>,
) -> Result<Response<ResponseBody>, ApiError>
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let digest = digest_param(query_value(&req.query, "digest"))?;
    let base = check_chunk(shared, name, id, &req.headers).await?;
    if !req.body.is_end_stream() {
        let stream = upload_stream(req.body, shared, name, id, base);
        let size = shared
            .storage
            .append_upload(name, id, stream)
            .await
            .map_err(|e| storage_failed(shared, name, Some(id), e))?;
        if size != base {
            received(shared, name, id, size);
        }
    }
    commit(shared, name, id, &digest).await
}

/// `GET /v2/<name>/blobs/uploads/<id>`: how much arrived.
pub(super) async fn upload_status(
    shared: &Shared,
    name: &str,
    id: &str,
) -> Result<Response<ResponseBody>, ApiError> {
    let size = session_size(shared, name, id).await?;
    Ok(Reply::new(StatusCode::NO_CONTENT)
        .header(header::LOCATION, upload_location(name, id))
        .header(header::RANGE, upload_range(size))
        .header("docker-upload-uuid", id)
        .empty())
}

/// `DELETE /v2/<name>/blobs/uploads/<id>`.
pub(super) async fn cancel_upload(
    shared: &Shared,
    name: &str,
    id: &str,
) -> Result<Response<ResponseBody>, ApiError> {
    if shared.storage.cancel_upload(name, id).await? {
        Ok(Reply::new(StatusCode::NO_CONTENT).empty())
    } else {
        Err(ApiError::new(Code::BlobUploadUnknown).detail(json!({ "uuid": id })))
    }
}
