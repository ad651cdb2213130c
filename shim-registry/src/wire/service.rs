//! The hyper service: routing requests to handlers, and common headers.

use std::io;
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body::Body;
use http_body_util::{BodyExt, Limited};

use super::body::ResponseBody;
use super::error::{ApiError, Code};
use super::reply::Reply;
use super::request::Incoming;
use super::route::{Route, query_pairs, query_value, valid_name};
use super::{blobs, manifests};
use crate::auth::{Action, Need, Refusal, TokenRefusal, TokenRequest};
use crate::fault::Fault;
use crate::state::Shared;

/// The largest `POST /token` form read.
const MAX_TOKEN_FORM: usize = 64 << 10;

/// The registry as a hyper [`Service`](hyper::service::Service); clone it
/// freely (an `Arc` inside).
///
/// Accepts any request body with [`Bytes`] frames, e.g.
/// [`hyper::body::Incoming`].
#[derive(Clone)]
pub struct RegistryService {
    shared: Arc<Shared>,
    /// Whether requests arrive over TLS (for the token realm's scheme).
    tls: bool,
}

impl std::fmt::Debug for RegistryService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryService").finish_non_exhaustive()
    }
}

impl RegistryService {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        Self { shared, tls: false }
    }

    /// The same service, for connections that speak TLS.
    pub(crate) fn over_tls(mut self) -> Self {
        self.tls = true;
        self
    }
}

impl<B> hyper::service::Service<Request<B>> for RegistryService
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Response = Response<ResponseBody>;
    /// Only from fault injection's [`Fault::Reset`](crate::fault::Fault::Reset):
    /// the connection is closed without an answer.
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, io::Error>> + Send>>;

    fn call(&self, request: Request<B>) -> Self::Future {
        let shared = self.shared.clone();
        let tls = self.tls;
        Box::pin(async move { handle_with_faults(&shared, tls, request).await })
    }
}

async fn handle_with_faults<B>(
    shared: &Shared,
    tls: bool,
    request: Request<B>,
) -> Result<Response<ResponseBody>, io::Error>
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let Some(faults) = &shared.faults else {
        return Ok(handle(shared, tls, request).await);
    };
    let decision = faults.decide(request.method(), request.uri().path());
    if !decision.delay.is_zero() {
        tokio::time::sleep(decision.delay).await;
    }
    match decision.fault {
        None | Some(Fault::Delay(_)) => Ok(handle(shared, tls, request).await),
        Some(Fault::Reset) => Err(io::Error::new(
            io::ErrorKind::ConnectionAborted,
            "fault injection: connection closed without an answer",
        )),
        Some(Fault::Respond { status, code }) => {
            let body = serde_json::to_vec(&serde_json::json!({
                "errors": [{ "code": code, "message": "injected fault" }]
            }))
            .expect("json serializes");
            let reply = Reply::new(status).header(header::CONTENT_TYPE, "application/json");
            Ok(reply.body_unless_head(request.method(), body))
        }
        Some(Fault::CutBody { after }) => Ok(handle(shared, tls, request)
            .await
            .map(|body| body.cut_after(after))),
    }
}

async fn handle<B>(shared: &Shared, tls: bool, request: Request<B>) -> Response<ResponseBody>
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    tracing::debug!(%method, %path, "request");
    let outcome = if path == "/token" && shared.auth.serves_tokens() {
        token(shared, request).await
    } else {
        dispatch(shared, tls, request).await
    };
    let mut response = match outcome {
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

/// `GET /token` (Basic credentials) and `POST /token` (an OAuth2 password
/// grant form).
async fn token<B>(shared: &Shared, request: Request<B>) -> Result<Response<ResponseBody>, ApiError>
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let (parts, body) = request.into_parts();
    let authorization = parts
        .headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let token_request = match parts.method {
        Method::GET => TokenRequest::from_get(&query_pairs(parts.uri.query()), authorization),
        Method::POST => {
            let form = Limited::new(body, MAX_TOKEN_FORM)
                .collect()
                .await
                .map_err(|_| {
                    ApiError::new(Code::Unsupported)
                        .status(StatusCode::BAD_REQUEST)
                        .detail("unreadable or oversized token form")
                })?
                .to_bytes();
            let form = std::str::from_utf8(&form).map_err(|_| {
                ApiError::new(Code::Unsupported)
                    .status(StatusCode::BAD_REQUEST)
                    .detail("token form is not utf-8")
            })?;
            TokenRequest::from_form(&query_pairs(Some(form)), authorization)
        }
        _ => return Err(method_not_allowed()),
    };
    match shared.auth.issue(&token_request) {
        Ok(answer) => Ok(Reply::new(StatusCode::OK)
            .header(header::CONTENT_TYPE, "application/json")
            .body(serde_json::to_vec(&answer).expect("json serializes"))),
        Err(TokenRefusal::Unauthorized(refusal)) => Err(refused(refusal)),
        Err(TokenRefusal::UnsupportedGrant(grant)) => Err(ApiError::new(Code::Unsupported)
            .status(StatusCode::BAD_REQUEST)
            .detail(serde_json::json!({ "grant_type": grant }))),
    }
}

/// The error answer of a refused request.
fn refused(refusal: Refusal) -> ApiError {
    match refusal {
        Refusal::Unauthorized { challenge } => {
            let mut e = ApiError::new(Code::Unauthorized);
            e.headers.push((header::WWW_AUTHENTICATE, challenge));
            e
        }
        Refusal::Denied => ApiError::new(Code::Denied),
    }
}

/// What a request to `route` with `method` needs.
fn need(route: &Route, method: &Method) -> Need {
    let access = |repository: &str, action| Need::Access {
        repository: repository.to_owned(),
        action,
    };
    let read_or = |name: &str, other| {
        if method == Method::GET || method == Method::HEAD {
            access(name, Action::Pull)
        } else {
            access(name, other)
        }
    };
    match route {
        Route::Base => Need::Login,
        Route::Blob { name, .. } | Route::Manifest { name, .. } => {
            if method == Method::DELETE {
                access(name, Action::Delete)
            } else {
                read_or(name, Action::Push)
            }
        }
        Route::UploadStart { name } | Route::Upload { name, .. } => access(name, Action::Push),
        Route::Tags { name } | Route::Referrers { name, .. } => read_or(name, Action::Pull),
    }
}

/// `scheme://host` of a request, for the token realm; a `Host` header with
/// characters a host cannot hold is not echoed.
fn origin(headers: &http::HeaderMap, tls: bool) -> String {
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .filter(|h| {
            !h.is_empty()
                && h.bytes().all(|b| {
                    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']')
                })
        })
        .unwrap_or("localhost");
    format!("{}://{host}", if tls { "https" } else { "http" })
}

async fn dispatch<B>(
    shared: &Shared,
    tls: bool,
    request: Request<B>,
) -> Result<Response<ResponseBody>, ApiError>
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let Some(route) = Route::parse(request.uri().path()) else {
        // Unknown endpoints tell nothing to whoever has not logged in.
        if shared.auth.is_required() {
            let authorization = request
                .headers()
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok());
            let origin = origin(request.headers(), tls);
            shared
                .auth
                .check(authorization, &Need::Login, &origin)
                .map_err(refused)?;
        }
        return Err(ApiError::new(Code::Unsupported)
            .status(StatusCode::NOT_FOUND)
            .detail("no such endpoint"));
    };
    let (parts, body) = request.into_parts();
    let mut req = Incoming {
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
    if shared.auth.is_required() {
        let authorization = req
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        let origin = origin(&req.headers, tls);
        shared
            .auth
            .check(authorization, &need(&route, &req.method), &origin)
            .map_err(refused)?;
        // A mount needs pull on the source repository; without it the
        // request starts an upload session instead, as the spec allows.
        if let Route::UploadStart { .. } = &route
            && let Some(from) = query_value(&req.query, "from").map(str::to_owned)
        {
            let pull = Need::Access {
                repository: from,
                action: Action::Pull,
            };
            if shared.auth.check(authorization, &pull, &origin).is_err() {
                req.query.retain(|(k, _)| k != "mount" && k != "from");
            }
        }
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
