//! Error responses: `{"errors":[{"code","message","detail"}]}`.

use http::StatusCode;
use serde_json::json;

use crate::storage::StorageError;

/// An error code of the distribution spec (plus the reference registry's
/// `RANGE_INVALID` and `UNKNOWN`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Code {
    BlobUnknown,
    BlobUploadInvalid,
    BlobUploadUnknown,
    DigestInvalid,
    ManifestBlobUnknown,
    ManifestInvalid,
    ManifestUnknown,
    NameInvalid,
    NameUnknown,
    SizeInvalid,
    Unsupported,
    RangeInvalid,
    Unauthorized,
    Denied,
    Unknown,
}

impl Code {
    fn as_str(self) -> &'static str {
        match self {
            Code::BlobUnknown => "BLOB_UNKNOWN",
            Code::BlobUploadInvalid => "BLOB_UPLOAD_INVALID",
            Code::BlobUploadUnknown => "BLOB_UPLOAD_UNKNOWN",
            Code::DigestInvalid => "DIGEST_INVALID",
            Code::ManifestBlobUnknown => "MANIFEST_BLOB_UNKNOWN",
            Code::ManifestInvalid => "MANIFEST_INVALID",
            Code::ManifestUnknown => "MANIFEST_UNKNOWN",
            Code::NameInvalid => "NAME_INVALID",
            Code::NameUnknown => "NAME_UNKNOWN",
            Code::SizeInvalid => "SIZE_INVALID",
            Code::Unsupported => "UNSUPPORTED",
            Code::RangeInvalid => "RANGE_INVALID",
            Code::Unauthorized => "UNAUTHORIZED",
            Code::Denied => "DENIED",
            Code::Unknown => "UNKNOWN",
        }
    }

    fn message(self) -> &'static str {
        match self {
            Code::BlobUnknown => "blob unknown to registry",
            Code::BlobUploadInvalid => "blob upload invalid",
            Code::BlobUploadUnknown => "blob upload unknown to registry",
            Code::DigestInvalid => "provided digest did not match uploaded content",
            Code::ManifestBlobUnknown => {
                "manifest references a manifest or blob unknown to registry"
            }
            Code::ManifestInvalid => "manifest invalid",
            Code::ManifestUnknown => "manifest unknown to registry",
            Code::NameInvalid => "invalid repository name",
            Code::NameUnknown => "repository name not known to registry",
            Code::SizeInvalid => "provided length did not match content length",
            Code::Unsupported => "the operation is unsupported",
            Code::RangeInvalid => "invalid content range",
            Code::Unauthorized => "authentication required",
            Code::Denied => "requested access to the resource is denied",
            Code::Unknown => "unknown error",
        }
    }

    fn status(self) -> StatusCode {
        match self {
            Code::BlobUnknown
            | Code::BlobUploadUnknown
            | Code::ManifestUnknown
            | Code::NameUnknown => StatusCode::NOT_FOUND,
            Code::BlobUploadInvalid
            | Code::DigestInvalid
            | Code::ManifestBlobUnknown
            | Code::ManifestInvalid
            | Code::NameInvalid
            | Code::SizeInvalid => StatusCode::BAD_REQUEST,
            Code::Unsupported => StatusCode::METHOD_NOT_ALLOWED,
            Code::RangeInvalid => StatusCode::RANGE_NOT_SATISFIABLE,
            Code::Unauthorized => StatusCode::UNAUTHORIZED,
            Code::Denied => StatusCode::FORBIDDEN,
            Code::Unknown => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

/// An error answer.
#[derive(Debug)]
pub(crate) struct ApiError {
    pub(crate) status: StatusCode,
    pub(crate) code: Code,
    pub(crate) detail: Option<serde_json::Value>,
    /// Extra response headers.
    pub(crate) headers: Vec<(http::HeaderName, String)>,
}

impl ApiError {
    /// `code` with its usual status.
    pub(crate) fn new(code: Code) -> Self {
        Self {
            status: code.status(),
            code,
            detail: None,
            headers: Vec::new(),
        }
    }

    /// With a detail for the client.
    pub(crate) fn detail(mut self, detail: impl Into<serde_json::Value>) -> Self {
        self.detail = Some(detail.into());
        self
    }

    /// With another status.
    pub(crate) fn status(mut self, status: StatusCode) -> Self {
        self.status = status;
        self
    }

    /// With `Content-Range: bytes */<size>` (for 416 on a blob read).
    pub(crate) fn with_content_range(mut self, size: u64) -> Self {
        self.headers
            .push((http::header::CONTENT_RANGE, format!("bytes */{size}")));
        self
    }

    /// With the upload's `Location`, `Range` and `Docker-Upload-UUID`, so a
    /// client can resume.
    pub(crate) fn with_upload(mut self, name: &str, id: &str, size: u64) -> Self {
        self.headers.push((
            http::header::LOCATION,
            format!("/v2/{name}/blobs/uploads/{id}"),
        ));
        self.headers
            .push((http::header::RANGE, super::range::upload_range(size)));
        self.headers.push((
            http::HeaderName::from_static("docker-upload-uuid"),
            id.to_owned(),
        ));
        self
    }

    /// The JSON body.
    pub(crate) fn body(&self) -> Vec<u8> {
        let mut entry = json!({ "code": self.code.as_str(), "message": self.code.message() });
        if let Some(d) = &self.detail {
            entry["detail"] = d.clone();
        }
        serde_json::to_vec(&json!({ "errors": [entry] })).expect("json serializes")
    }
}

impl From<StorageError> for ApiError {
    fn from(e: StorageError) -> Self {
        match e {
            StorageError::UploadUnknown { id } => {
                ApiError::new(Code::BlobUploadUnknown).detail(json!({ "uuid": id }))
            }
            StorageError::UploadBusy { id } => ApiError::new(Code::BlobUploadInvalid)
                .status(StatusCode::CONFLICT)
                .detail(
                    json!({ "uuid": id, "reason": "another request is writing to this upload" }),
                ),
            StorageError::DigestMismatch { expected, actual } => ApiError::new(Code::DigestInvalid)
                .detail(json!({ "expected": expected.to_string(), "actual": actual.to_string() })),
            StorageError::UnsupportedAlgorithm { algorithm } => {
                ApiError::new(Code::DigestInvalid).detail(json!({ "unsupported": algorithm }))
            }
            StorageError::Incoming { source }
                if source
                    .get_ref()
                    .is_some_and(|e| e.is::<crate::budget::BudgetExhausted>()) =>
            {
                ApiError::new(Code::SizeInvalid)
                    .status(StatusCode::PAYLOAD_TOO_LARGE)
                    .detail(json!({ "reason": "the registry's upload budget is spent" }))
            }
            StorageError::Incoming { source } => {
                ApiError::new(Code::BlobUploadInvalid).detail(source.to_string())
            }
            other => {
                tracing::error!(error = %other, "storage failed");
                let mut chain = other.to_string();
                let mut src = std::error::Error::source(&other);
                while let Some(s) = src {
                    chain.push_str(": ");
                    chain.push_str(&s.to_string());
                    src = s.source();
                }
                ApiError::new(Code::Unknown).detail(chain)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_shape() {
        let e = ApiError::new(Code::BlobUnknown).detail("x");
        assert_eq!(e.status, StatusCode::NOT_FOUND);
        let v: serde_json::Value = serde_json::from_slice(&e.body()).unwrap();
        assert_eq!(v["errors"][0]["code"], "BLOB_UNKNOWN");
        assert_eq!(v["errors"][0]["detail"], "x");
        assert!(v["errors"][0]["message"].is_string());
    }
}
