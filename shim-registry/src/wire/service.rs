//! The hyper service: routing requests to handlers, and common headers.

use std::convert::Infallible;
use std::io;
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::TryStreamExt;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body::Body;
use http_body_util::BodyDataStream;

use super::body::ResponseBody;
use super::error::{ApiError, Code};
use super::route::{Route, query_pairs, valid_name};
use super::{blobs, manifests};
use crate::Shared;
use crate::events::RegistryEvent;
use crate::storage::ByteStream;

/// The registry as a hyper [`Service`](hyper::service::Service); clone it
/// freely (an `Arc` inside).
///
/// Accepts any request body with [`Bytes`] frames, e.g.
/// [`hyper::body::Incoming`].
#[derive(Clone)]
pub struct RegistryService {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for RegistryService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryService").finish_non_exhaustive()
    }
}

impl RegistryService {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        Self { shared }
    }
}

impl<B> hyper::service::Service<Request<B>> for RegistryService
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Response = Response<ResponseBody>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn call(&self, request: Request<B>) -> Self::Future {
        let shared = self.shared.clone();
        Box::pin(async move { Ok(handle(&shared, request).await) })
    }
}

/// The parts of a request the handlers need, with the body split off.
pub(super) struct Incoming<B> {
    pub(super) method: Method,
    pub(super) headers: http::HeaderMap,
    pub(super) query: Vec<(String, String)>,
    pub(super) body: B,
}

async fn handle<B>(shared: &Shared, request: Request<B>) -> Response<ResponseBody>
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    tracing::debug!(%method, %path, "request");
    let mut response = match dispatch(shared, request).await {
        Ok(r) => r,
        Err(e) => {
            tracing::debug!(%method, %path, status = %e.status, code = ?e.code, "request failed");
            error_response(&e, method == Method::HEAD)
        }
    };
    response.headers_mut().insert(
        "docker-distribution-api-version",
        HeaderValue::from_static("registry/2.0"),
    );
    response
}

async fn dispatch<B>(
    shared: &Shared,
    request: Request<B>,
) -> Result<Response<ResponseBody>, ApiError>
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let Some(route) = Route::parse(request.uri().path()) else {
        return Err(ApiError::new(Code::Unsupported)
            .status(StatusCode::NOT_FOUND)
            .detail("no such endpoint"));
    };
    let (parts, body) = request.into_parts();
    let req = Incoming {
        method: parts.method,
        headers: parts.headers,
        query: query_pairs(parts.uri.query()),
        body,
    };
    let name = match &route {
        Route::Base => None,
        Route::Blob { name, .. }
        | Route::UploadStart { name }
        | Route::Upload { name, .. }
        | Route::Manifest { name, .. }
        | Route::Tags { name }
        | Route::Referrers { name, .. } => Some(name.as_str()),
    };
    if let Some(name) = name
        && !valid_name(name)
    {
        return Err(ApiError::new(Code::NameInvalid).detail(serde_json::json!({ "name": name })));
    }
    let m = req.method.clone();
    match route {
        Route::Base if m == Method::GET || m == Method::HEAD => Ok(Reply::new(StatusCode::OK)
            .header(header::CONTENT_TYPE, "application/json")
            .body_unless_head(&m, "{}")),
        Route::Blob { name, digest } => match m {
            Method::GET | Method::HEAD => blobs::get(shared, &name, &digest, req).await,
            Method::DELETE => blobs::delete(shared, &digest).await,
            _ => Err(method_not_allowed()),
        },
        Route::UploadStart { name } => match m {
            Method::POST => blobs::start_upload(shared, &name, req).await,
            _ => Err(method_not_allowed()),
        },
        Route::Upload { name, id } => match m {
            Method::PATCH => blobs::patch_upload(shared, &name, &id, req).await,
            Method::PUT => blobs::put_upload(shared, &name, &id, req).await,
            Method::GET => blobs::upload_status(shared, &name, &id).await,
            Method::DELETE => blobs::cancel_upload(shared, &name, &id).await,
            _ => Err(method_not_allowed()),
        },
        Route::Manifest { name, reference } => match m {
            Method::GET | Method::HEAD => manifests::get(shared, &name, &reference, &m).await,
            Method::PUT => manifests::put(shared, &name, &reference, req).await,
            Method::DELETE => manifests::delete(shared, &name, &reference).await,
            _ => Err(method_not_allowed()),
        },
        Route::Tags { name } => match m {
            Method::GET => manifests::tags(shared, &name, &req.query).await,
            _ => Err(method_not_allowed()),
        },
        Route::Referrers { name, digest } => match m {
            Method::GET => manifests::referrers(shared, &name, &digest, &req.query).await,
            _ => Err(method_not_allowed()),
        },
        Route::Base => Err(method_not_allowed()),
    }
}

fn method_not_allowed() -> ApiError {
    ApiError::new(Code::Unsupported).detail("method not allowed on this endpoint")
}

fn error_response(e: &ApiError, head: bool) -> Response<ResponseBody> {
    let body = e.body();
    let mut reply = Reply::new(e.status).header(header::CONTENT_TYPE, "application/json");
    for (name, value) in &e.headers {
        reply = reply.header(name.clone(), value);
    }
    if head {
        reply.response()
    } else {
        reply = reply.header(header::CONTENT_LENGTH, body.len().to_string());
        reply.body(body)
    }
}

/// Builds a response; header values are ours and always valid.
pub(super) struct Reply {
    response: Response<ResponseBody>,
}

impl Reply {
    pub(super) fn new(status: StatusCode) -> Self {
        let mut response = Response::new(ResponseBody::empty());
        *response.status_mut() = status;
        Self { response }
    }

    pub(super) fn header(
        mut self,
        name: impl header::IntoHeaderName,
        value: impl AsRef<str>,
    ) -> Self {
        match HeaderValue::from_str(value.as_ref()) {
            Ok(v) => {
                self.response.headers_mut().insert(name, v);
            }
            Err(_) => tracing::warn!(value = value.as_ref(), "dropping an invalid header value"),
        }
        self
    }

    /// An empty body with `Content-Length: 0`.
    pub(super) fn empty(self) -> Response<ResponseBody> {
        self.header(header::CONTENT_LENGTH, "0").response
    }

    /// No body and no length set here (for `HEAD`, where it is set by the caller).
    pub(super) fn response(self) -> Response<ResponseBody> {
        self.response
    }

    pub(super) fn body(mut self, body: impl Into<Bytes>) -> Response<ResponseBody> {
        *self.response.body_mut() = ResponseBody::full(body);
        self.response
    }

    pub(super) fn stream(mut self, body: ResponseBody) -> Response<ResponseBody> {
        *self.response.body_mut() = body;
        self.response
    }

    /// `body` with its `Content-Length`, sent only when the method is not `HEAD`.
    pub(super) fn body_unless_head(
        self,
        method: &Method,
        body: impl Into<Bytes>,
    ) -> Response<ResponseBody> {
        let body = body.into();
        let reply = self.header(header::CONTENT_LENGTH, body.len().to_string());
        if method == Method::HEAD {
            reply.response()
        } else {
            reply.body(body)
        }
    }
}

/// The request body as a stream of data frames, reporting progress of the
/// upload `upload_id` (whose size before this request was `base`).
pub(super) fn upload_stream<B>(
    body: B,
    shared: &Shared,
    repository: &str,
    upload_id: &str,
    base: u64,
) -> ByteStream<'static>
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    const EVERY: u64 = 1 << 20;
    let events = shared.events.clone();
    let repository = repository.to_owned();
    let upload_id = upload_id.to_owned();
    let mut total = base;
    let mut reported = base;
    let stream = BodyDataStream::new(body)
        .map_err(|e| io::Error::other(e.into()))
        .inspect_ok(move |frame| {
            total += frame.len() as u64;
            if total - reported >= EVERY {
                reported = total;
                events.event(&RegistryEvent::BytesReceived {
                    repository: repository.clone(),
                    upload_id: upload_id.clone(),
                    total,
                });
            }
        });
    Box::pin(stream)
}
