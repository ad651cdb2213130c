//! One connection carrying every request in turn, for hosts where a
//! connection is dear: over `ssh://` each one is an `ssh` process and a
//! remote `docker system dial-stdio`, most of a second each.
//!
//! hyper's pooled client would not do: it hands an idle connection back to
//! its pool from a task of its own after the response ends, so a request
//! sent right after the previous one's body was read often finds the pool
//! empty and dials again (three ssh connections for one `--to` copy).
//! Here requests go one after another, HTTP/1.1 keep-alive, on the
//! connection last dialled: a request waits for the one before it to end
//! ([`BUSY_WAIT`] at most; a caller may hold a response stream open while
//! it asks something else, and then a new connection is dialled and used
//! from then on). A connection that closed (a response dropped unread
//! closes it, as a cancelled push or save needs) is replaced by a new one.

use std::time::Duration;

use http::header::HOST;
use http::{HeaderValue, Request, Response, Uri};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use tokio::sync::Mutex;
use tower_service::Service;

use crate::transport::{Body, Connector};

/// How long a request waits for the one before it on the connection to
/// end before it dials a connection of its own. The gap between a body
/// read to its end and the connection ready again is a task switch.
pub(crate) const BUSY_WAIT: Duration = Duration::from_millis(300);

/// Dials made for one request at most (a new connection that is closed at
/// once means the host is unreachable: its error is the answer).
const DIALS: usize = 2;

/// What failed under HTTP: dialling or the exchange.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SendError {
    /// The connection could not be made.
    #[error("cannot connect")]
    Dial(#[source] std::io::Error),
    /// The HTTP/1 handshake or exchange failed.
    #[error("the request failed")]
    Http(#[source] hyper::Error),
    /// The request could not be put in origin form.
    #[error("invalid request")]
    Request(#[source] http::Error),
}

impl From<SendError> for bollard::errors::Error {
    fn from(e: SendError) -> Self {
        match e {
            SendError::Dial(e) => e.into(),
            SendError::Http(e) => e.into(),
            SendError::Request(e) => e.into(),
        }
    }
}

/// The connection, dialled when first needed and again when it closed.
pub(crate) struct OneConnection {
    connector: Connector,
    current: Mutex<Option<SendRequest<Body>>>,
}

impl OneConnection {
    pub(crate) fn new(connector: Connector) -> Self {
        OneConnection {
            connector,
            current: Mutex::new(None),
        }
    }

    /// Sends `request` (absolute URI) on the connection; the response head.
    pub(crate) async fn request(
        &self,
        request: Request<Body>,
    ) -> Result<Response<Incoming>, SendError> {
        let mut request = origin_form(request)?;
        let mut dials = 0;
        loop {
            let mut current = self.current.lock().await;
            let mut closed = None;
            let ready = match current.take() {
                Some(mut sender) => match tokio::time::timeout(BUSY_WAIT, sender.ready()).await {
                    Ok(Ok(())) => Some(sender),
                    Ok(Err(e)) => {
                        tracing::debug!("the daemon connection closed: {e}");
                        closed = Some(e);
                        None
                    }
                    // Dropping it lets its exchange go on to its end.
                    Err(_) => {
                        tracing::debug!(
                            "the daemon connection is still busy after {BUSY_WAIT:?}: dialling another"
                        );
                        None
                    }
                },
                None => None,
            };
            let mut sender = match ready {
                Some(sender) => sender,
                None if dials == DIALS => {
                    return Err(closed.map_or_else(
                        || {
                            SendError::Dial(std::io::Error::other(
                                "the daemon connection closed at once",
                            ))
                        },
                        SendError::Http,
                    ));
                }
                None => {
                    dials += 1;
                    self.dial().await?
                }
            };
            let sent = sender.try_send_request(request);
            *current = Some(sender);
            // The next request may queue behind this one from now on.
            drop(current);
            match sent.await {
                Ok(response) => return Ok(response),
                Err(mut e) => match e.take_message() {
                    // Not written: the connection closed meanwhile; again
                    // on a new one.
                    Some(unsent) if dials < DIALS => {
                        tracing::debug!("request not sent ({}): again", e.error());
                        request = unsent;
                    }
                    _ => return Err(SendError::Http(e.into_error())),
                },
            }
        }
    }

    /// A new connection, its HTTP/1 side running in a task of its own
    /// until every handle to it is gone and its last exchange has ended.
    async fn dial(&self) -> Result<SendRequest<Body>, SendError> {
        let mut connector = self.connector.clone();
        let io = connector
            .call(Uri::from_static("http://docker.example.com"))
            .await
            .map_err(SendError::Dial)?;
        let (sender, connection) = hyper::client::conn::http1::handshake(io)
            .await
            .map_err(SendError::Http)?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!("daemon connection ended: {e}");
            }
        });
        let mut sender = sender;
        sender.ready().await.map_err(SendError::Http)?;
        Ok(sender)
    }
}

/// `http://host/path?q` as `/path?q` with `Host: host`, as HTTP/1.1
/// requests go on a connection of their own.
fn origin_form(request: Request<Body>) -> Result<Request<Body>, SendError> {
    let (mut parts, body) = request.into_parts();
    if let Some(authority) = parts.uri.authority() {
        let host =
            HeaderValue::from_str(authority.as_str()).map_err(|e| SendError::Request(e.into()))?;
        parts.headers.entry(HOST).or_insert(host);
    }
    let path = parts
        .uri
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_owned();
    parts.uri = path
        .parse()
        .map_err(|e: http::uri::InvalidUri| SendError::Request(e.into()))?;
    Ok(Request::from_parts(parts, body))
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    #[test]
    fn requests_go_in_origin_form_with_their_host() {
        let request = Request::get("http://docker.example.com/v1.41/images/json?all=1")
            .body(bollard::body_full(Bytes::new()))
            .unwrap();
        let request = origin_form(request).unwrap();
        assert_eq!(request.uri(), "/v1.41/images/json?all=1");
        assert_eq!(request.headers()[HOST], "docker.example.com");
    }
}
