//! The hyper service: routing requests to handlers, and common headers.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use futures_util::TryStreamExt;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body::Body;
use http_body_util::{BodyDataStream, BodyExt, Limited};

use super::body::ResponseBody;
use super::error::{ApiError, Code};
use super::route::{Route, query_pairs, query_value, valid_name};
use super::{blobs, manifests};
use crate::Shared;
use crate::auth::{Action, Need, Refusal, TokenRefusal, TokenRequest};
use crate::events::RegistryEvent;
use crate::fault::Fault;
use crate::storage::ByteStream;

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

/// The parts of a request the handlers need, with the body split off.
pub(super) struct Incoming<B> {
    pub(super) method: Method,
    pub(super) headers: http::HeaderMap,
    pub(super) query: Vec<(String, String)>,
    pub(super) body: B,
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
/// upload `upload_id` (whose size before this request was `base`), taking
/// each frame from the upload budget and waiting while the upload hold
/// holds the session.
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
    let state = Arc::new(Ingest {
        events: shared.events.clone(),
        budget: shared.upload_budget.clone(),
        hold: shared.upload_hold.clone(),
        shutdowns: shared.shutdowns.subscribe(),
        repository: repository.to_owned(),
        upload_id: upload_id.to_owned(),
        total: AtomicU64::new(base),
        reported: AtomicU64::new(base),
    });
    let stream = BodyDataStream::new(body)
        .map_err(|e| io::Error::other(e.into()))
        .and_then(move |frame| {
            let state = state.clone();
            async move {
                state.take(&frame).await?;
                Ok(frame)
            }
        });
    Box::pin(stream)
}

/// One request's share of an upload session, as its frames arrive.
struct Ingest {
    events: Arc<dyn crate::EventSink>,
    budget: Option<Arc<UploadBudget>>,
    hold: Option<crate::UploadHold>,
    /// Changes when a server of this registry shuts down.
    shutdowns: tokio::sync::watch::Receiver<u64>,
    repository: String,
    upload_id: String,
    /// The session's size with the frames taken so far.
    total: AtomicU64,
    /// The size last reported in a `BytesReceived` event.
    reported: AtomicU64,
}

impl Drop for Ingest {
    fn drop(&mut self) {
        tracing::debug!(
            repository = self.repository,
            upload_id = self.upload_id,
            total = self.total.load(Ordering::Relaxed),
            "upload request ended"
        );
    }
}

impl Ingest {
    /// Progress is reported at most this often (in bytes).
    const EVERY: u64 = 1 << 20;

    /// Takes one frame: from the budget, past the hold, into the count.
    /// Frames come one at a time (the stream polls one future at a time).
    async fn take(&self, frame: &Bytes) -> io::Result<()> {
        let len = frame.len() as u64;
        if let Some(budget) = &self.budget
            && !budget.take(len)
        {
            return Err(io::Error::other(BudgetExhausted));
        }
        let total = self.total.load(Ordering::Relaxed);
        let after = total.saturating_add(len);
        if let Some(hold) = &self.hold
            && hold.holds(after)
        {
            tracing::debug!(
                repository = self.repository,
                upload_id = self.upload_id,
                total,
                "upload held"
            );
            self.events.event(&RegistryEvent::UploadHeld {
                repository: self.repository.clone(),
                upload_id: self.upload_id.clone(),
                total,
            });
            let mut shutdowns = self.shutdowns.clone();
            tokio::select! {
                () = hold.admit(after) => {
                    tracing::debug!(upload_id = self.upload_id, "upload resumed");
                }
                _ = shutdowns.changed() => {
                    tracing::debug!(upload_id = self.upload_id, "held upload ended by shutdown");
                    return Err(io::Error::other("the registry is shutting down"));
                }
            }
        }
        self.total.store(after, Ordering::Relaxed);
        if after - self.reported.load(Ordering::Relaxed) >= Self::EVERY {
            self.reported.store(after, Ordering::Relaxed);
            self.events.event(&RegistryEvent::BytesReceived {
                repository: self.repository.clone(),
                upload_id: self.upload_id.clone(),
                total: after,
            });
        }
        Ok(())
    }
}

/// Blob bytes the registry still takes in (see
/// [`RegistryBuilder::upload_budget`](crate::RegistryBuilder::upload_budget)).
#[derive(Debug)]
pub(crate) struct UploadBudget {
    left: std::sync::atomic::AtomicU64,
}

impl UploadBudget {
    pub(crate) fn new(bytes: u64) -> Self {
        Self {
            left: std::sync::atomic::AtomicU64::new(bytes),
        }
    }

    /// Takes `n` bytes from the budget; `false` (and nothing taken) when
    /// fewer are left.
    fn take(&self, n: u64) -> bool {
        self.left
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |left| {
                left.checked_sub(n)
            })
            .is_ok()
    }
}

/// The error an upload stream ends with when the budget is spent.
#[derive(Debug, thiserror::Error)]
#[error("the registry's upload budget is spent")]
pub(crate) struct BudgetExhausted;
