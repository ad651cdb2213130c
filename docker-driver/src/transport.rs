//! The HTTP client under bollard: one hyper client over a Unix socket or
//! TCP, shared by bollard (as its custom transport) and by the few raw
//! requests whose answers bollard's models lose (push progress, inspect's
//! `Parent`), plus the mapping of transport failures to [`DriverError`].

use std::io;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bollard::{BollardRequest, ClientVersion};
use bytes::Bytes;
use http::{Method, Request, Response, Uri};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpStream, UnixStream};
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use crate::context::DaemonEndpoint;
use crate::error::DriverError;
use crate::one_connection::{self, OneConnection};

/// The request body type bollard sends.
pub(crate) type Body = <BollardRequest as RequestBody>::Body;

/// Names the body type of a request type.
pub(crate) trait RequestBody {
    type Body;
}

impl<B> RequestBody for Request<B> {
    type Body = B;
}

/// Where the daemon listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Endpoint {
    Unix(PathBuf),
    /// `host:port`.
    Tcp(String),
    /// `ssh://…`: `ssh … docker system dial-stdio` per connection (one
    /// connection for every request: [`OneConnection`]).
    Ssh(crate::ssh::SshTarget),
}

impl Endpoint {
    pub(crate) fn parse(host: &str) -> Result<Self, DriverError> {
        let invalid = || DriverError::InvalidHost {
            host: host.to_owned(),
        };
        if host.starts_with("ssh://") {
            return crate::ssh::SshTarget::parse(host).map(Endpoint::Ssh);
        }
        if let Some(path) = host.strip_prefix("unix://") {
            if path.is_empty() {
                return Err(invalid());
            }
            return Ok(Endpoint::Unix(PathBuf::from(path)));
        }
        let rest = host
            .strip_prefix("tcp://")
            .or_else(|| host.strip_prefix("http://"))
            .ok_or_else(invalid)?;
        let authority = rest.trim_end_matches('/');
        if authority.is_empty() || authority.contains('/') {
            return Err(invalid());
        }
        let has_port = match authority.rsplit_once(':') {
            Some((_, port)) => !port.contains(']') && !port.is_empty(),
            None => false,
        };
        Ok(Endpoint::Tcp(if has_port {
            authority.to_owned()
        } else {
            format!("{authority}:2375")
        }))
    }

    /// The scheme and authority of request URIs.
    fn base_url(&self) -> String {
        match self {
            // Any host will do: the connector dials the socket.
            Endpoint::Unix(_) => "http://localhost".to_owned(),
            Endpoint::Tcp(authority) => format!("http://{authority}"),
            // As the Docker CLI names it: the remote `docker` dials its daemon.
            Endpoint::Ssh(_) => "http://docker.example.com".to_owned(),
        }
    }
}

/// A connection to the daemon.
pub(crate) enum Conn {
    Tcp(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
    Unix(UnixStream),
    Ssh(Box<crate::ssh::SshStream>),
}

impl AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            Conn::Tls(s) => Pin::new(s).poll_read(cx, buf),
            Conn::Unix(s) => Pin::new(s).poll_read(cx, buf),
            Conn::Ssh(s) => Pin::new(&mut **s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Conn::Tcp(s) => Pin::new(s).poll_write(cx, buf),
            Conn::Tls(s) => Pin::new(s).poll_write(cx, buf),
            Conn::Unix(s) => Pin::new(s).poll_write(cx, buf),
            Conn::Ssh(s) => Pin::new(&mut **s).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Tcp(s) => Pin::new(s).poll_flush(cx),
            Conn::Tls(s) => Pin::new(s).poll_flush(cx),
            Conn::Unix(s) => Pin::new(s).poll_flush(cx),
            Conn::Ssh(s) => Pin::new(&mut **s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            Conn::Tls(s) => Pin::new(s).poll_shutdown(cx),
            Conn::Unix(s) => Pin::new(s).poll_shutdown(cx),
            Conn::Ssh(s) => Pin::new(&mut **s).poll_shutdown(cx),
        }
    }
}

impl Connection for Conn {
    fn connected(&self) -> Connected {
        Connected::new()
    }
}

/// Dials the endpoint whatever the request URI says.
#[derive(Clone)]
pub(crate) struct Connector(Arc<Dial>);

/// Where to connect, and the TLS handshake to make over TCP.
struct Dial {
    endpoint: Endpoint,
    tls: Option<(TlsConnector, rustls::pki_types::ServerName<'static>)>,
}

impl tower_service::Service<Uri> for Connector {
    type Response = TokioIo<Conn>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<TokioIo<Conn>>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: Uri) -> Self::Future {
        let dial = Arc::clone(&self.0);
        Box::pin(async move {
            let conn = match &dial.endpoint {
                Endpoint::Unix(path) => Conn::Unix(UnixStream::connect(path).await?),
                Endpoint::Ssh(target) => Conn::Ssh(Box::new(target.dial()?)),
                Endpoint::Tcp(authority) => {
                    let stream = TcpStream::connect(authority.as_str()).await?;
                    stream.set_nodelay(true)?;
                    match &dial.tls {
                        Some((tls, name)) => {
                            Conn::Tls(Box::new(tls.connect(name.clone(), stream).await?))
                        }
                        None => Conn::Tcp(stream),
                    }
                }
            };
            Ok(TokioIo::new(conn))
        })
    }
}

/// The HTTP client and where it points.
#[derive(Clone)]
pub(crate) struct Transport {
    client: Http,
    base_url: String,
    /// The host as the user gave it, for messages.
    pub(crate) host: String,
}

/// How requests reach the daemon.
#[derive(Clone)]
enum Http {
    /// hyper's client, keeping no idle connection: every request has its
    /// own connection, so dropping a response closes it (the daemon
    /// cancels a push then). `unix://`, `tcp://`, `http://`.
    Pooled(Box<Client<Connector, Body>>),
    /// One connection for every request in turn (`ssh://`, where each
    /// connection is an `ssh` process and a remote `docker`, most of a
    /// second each). A response dropped unread closes it too.
    One(Arc<OneConnection>),
}

impl Http {
    async fn request(
        &self,
        request: Request<Body>,
    ) -> Result<Response<Incoming>, Box<dyn std::error::Error + Send + Sync + 'static>> {
        match self {
            Http::Pooled(client) => Ok(client.request(request).await?),
            Http::One(one) => Ok(one.request(request).await?),
        }
    }

    async fn bollard_request(
        &self,
        request: Request<Body>,
    ) -> Result<Response<Incoming>, bollard::errors::Error> {
        match self {
            Http::Pooled(client) => Ok(client.request(request).await?),
            Http::One(one) => Ok(one.request(request).await?),
        }
    }
}

impl Transport {
    /// A client for `daemon`; TLS is used for a `tcp://` host with TLS
    /// material (as the Docker CLI does, never for `unix://` or `http://`).
    pub(crate) fn new(daemon: &DaemonEndpoint) -> Result<Self, DriverError> {
        let host = daemon.host.as_str();
        let endpoint = Endpoint::parse(host)?;
        let base_url = endpoint.base_url();
        let tls = match (&endpoint, &daemon.tls) {
            (Endpoint::Tcp(authority), Some(files)) if host.starts_with("tcp://") => {
                let config = crate::tls::client_config(&daemon.context, files)?;
                Some((
                    TlsConnector::from(config),
                    crate::tls::server_name(authority)?,
                ))
            }
            _ => None,
        };
        let one = matches!(endpoint, Endpoint::Ssh(_));
        let connector = Connector(Arc::new(Dial { endpoint, tls }));
        let client = if one {
            Http::One(Arc::new(OneConnection::new(connector)))
        } else {
            Http::Pooled(Box::new(
                Client::builder(TokioExecutor::new())
                    .pool_max_idle_per_host(0)
                    .build(connector),
            ))
        };
        Ok(Transport {
            client,
            base_url,
            host: host.to_owned(),
        })
    }

    /// A bollard client over this transport.
    pub(crate) fn bollard(
        &self,
        timeout: Duration,
        version: &ClientVersion,
    ) -> Result<bollard::Docker, DriverError> {
        let client = self.client.clone();
        let prefix = format!("/v{}.{}", version.major_version, version.minor_version);
        bollard::Docker::connect_with_custom_transport(
            move |request: BollardRequest| {
                let client = client.clone();
                let request = with_version(request, &prefix);
                async move { client.bollard_request(request?).await }
            },
            Some(self.base_url.as_str()),
            timeout.as_secs(),
            version,
        )
        .map_err(|e| DriverError::Protocol {
            operation: "connect",
            source: Box::new(e),
        })
    }

    /// The full URI of `path_and_query` (which starts with `/`), under the
    /// API version prefix if one is given.
    pub(crate) fn uri(&self, version: Option<&ClientVersion>, path_and_query: &str) -> String {
        match version {
            Some(v) => format!(
                "{}/v{}.{}{}",
                self.base_url, v.major_version, v.minor_version, path_and_query
            ),
            None => format!("{}{}", self.base_url, path_and_query),
        }
    }

    /// Sends a request with an empty body; the response whatever its status.
    pub(crate) async fn send(
        &self,
        operation: &'static str,
        method: Method,
        uri: &str,
        headers: &[(&str, &str)],
    ) -> Result<Response<Incoming>, DriverError> {
        let mut builder = Request::builder().method(method).uri(uri);
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        let request = builder
            .body(bollard::body_full(Bytes::new()))
            .map_err(|e| DriverError::Protocol {
                operation,
                source: Box::new(e),
            })?;
        self.client
            .request(request)
            .await
            .map_err(|e| classify(operation, &self.host, e))
    }

    /// Sends a GET and reads the whole answer, within `timeout`.
    pub(crate) async fn get(
        &self,
        operation: &'static str,
        uri: &str,
        timeout: Duration,
    ) -> Result<(http::StatusCode, http::HeaderMap, Bytes), DriverError> {
        let exchange = async {
            let response = self.send(operation, Method::GET, uri, &[]).await?;
            let (parts, body) = response.into_parts();
            let body = body
                .collect()
                .await
                .map_err(|e| classify(operation, &self.host, Box::new(e)))?
                .to_bytes();
            Ok((parts.status, parts.headers, body))
        };
        tokio::time::timeout(timeout, exchange)
            .await
            .map_err(|_| DriverError::Timeout { operation })?
    }
}

/// Puts the API version prefix on a request's path. bollard 0.21 builds
/// `…/v1.xx/<path>` and then joins the absolute path onto it, which drops
/// the prefix: without this the daemon would answer at its own (newest)
/// version rather than the negotiated one.
fn with_version(
    request: BollardRequest,
    prefix: &str,
) -> Result<BollardRequest, bollard::errors::Error> {
    let (mut parts, body) = request.into_parts();
    let path = parts.uri.path();
    if !is_versioned(path) {
        let path_and_query = match parts.uri.query() {
            Some(query) => format!("{prefix}{path}?{query}"),
            None => format!("{prefix}{path}"),
        };
        let mut uri = parts.uri.into_parts();
        uri.path_and_query = Some(path_and_query.parse().map_err(http::Error::from)?);
        parts.uri = Uri::from_parts(uri).map_err(http::Error::from)?;
    }
    Ok(Request::from_parts(parts, body))
}

/// Whether a path starts with `/v<major>.<minor>/`.
fn is_versioned(path: &str) -> bool {
    let Some(rest) = path.strip_prefix("/v") else {
        return false;
    };
    let Some((version, _)) = rest.split_once('/') else {
        return false;
    };
    version.split_once('.').is_some_and(|(major, minor)| {
        !major.is_empty()
            && !minor.is_empty()
            && major
                .bytes()
                .chain(minor.bytes())
                .all(|b| b.is_ascii_digit())
    })
}

/// The message of an Engine API error body (`{"message": "…"}`), or the body.
pub(crate) fn error_message(body: &[u8]) -> String {
    #[derive(serde::Deserialize)]
    struct Message {
        message: String,
    }
    match serde_json::from_slice::<Message>(body) {
        Ok(m) => m.message,
        Err(_) => String::from_utf8_lossy(body).trim().to_owned(),
    }
}

/// Maps a failure below HTTP to [`DriverError`]: connection refused or a
/// missing socket is [`DriverError::Unreachable`], EACCES is
/// [`DriverError::PermissionDenied`], anything else
/// [`DriverError::Transport`].
pub(crate) fn classify(
    operation: &'static str,
    host: &str,
    error: Box<dyn std::error::Error + Send + Sync + 'static>,
) -> DriverError {
    let mut connect = false;
    let mut kind = None;
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(&*error);
    while let Some(e) = cause {
        if let Some(e) = e.downcast_ref::<hyper_util::client::legacy::Error>() {
            connect |= e.is_connect();
        }
        connect |= matches!(
            e.downcast_ref::<one_connection::SendError>(),
            Some(one_connection::SendError::Dial(_))
        );
        if let Some(e) = e.downcast_ref::<io::Error>() {
            kind.get_or_insert(e.kind());
        }
        cause = e.source();
    }
    let host = host.to_owned();
    match kind {
        Some(io::ErrorKind::PermissionDenied) => DriverError::PermissionDenied {
            host,
            source: error,
        },
        Some(
            io::ErrorKind::ConnectionRefused
            | io::ErrorKind::NotFound
            | io::ErrorKind::AddrNotAvailable
            | io::ErrorKind::HostUnreachable
            | io::ErrorKind::NetworkUnreachable,
        ) => DriverError::Unreachable {
            host,
            source: error,
        },
        _ if connect => DriverError::Unreachable {
            host,
            source: error,
        },
        _ => DriverError::Transport {
            operation,
            source: error,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn check(host: &str, expected: Option<Endpoint>) {
        assert_eq!(Endpoint::parse(host).ok(), expected, "{host}");
    }

    #[test]
    fn versions_paths() {
        let request = Request::get("http://localhost/images/json?all=true")
            .body(bollard::body_full(Bytes::new()))
            .unwrap();
        let request = with_version(request, "/v1.41").unwrap();
        assert_eq!(request.uri(), "http://localhost/v1.41/images/json?all=true");
        let request = with_version(request, "/v1.41").unwrap();
        assert_eq!(request.uri(), "http://localhost/v1.41/images/json?all=true");
        assert!(!is_versioned("/version"));
        assert!(!is_versioned("/v1.x/y"));
    }

    #[test]
    fn parses_hosts() {
        check(
            "unix:///var/run/docker.sock",
            Some(Endpoint::Unix("/var/run/docker.sock".into())),
        );
        check(
            "tcp://127.0.0.1:2376",
            Some(Endpoint::Tcp("127.0.0.1:2376".into())),
        );
        check(
            "tcp://10.0.0.1",
            Some(Endpoint::Tcp("10.0.0.1:2375".into())),
        );
        check("http://[::1]:80/", Some(Endpoint::Tcp("[::1]:80".into())));
        check("http://[::1]", Some(Endpoint::Tcp("[::1]:2375".into())));
        check(
            "ssh://me@host:2222",
            Some(Endpoint::Ssh(crate::ssh::SshTarget {
                user: Some("me".into()),
                host: "host".into(),
                port: Some(2222),
                socket: None,
            })),
        );
        check("ssh://me:pw@host", None);
        check("npipe:////./pipe/docker_engine", None);
        check("unix://", None);
        check("/var/run/docker.sock", None);
    }
}
