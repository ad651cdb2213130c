//! A daemon whose authorization plugin refuses bind mounts, as a client
//! sees it: a proxy on a unix socket in front of a daemon's socket that
//! answers `POST …/containers/create` with a host path bound (`Binds`, or a
//! `Mounts` entry of type `bind`) as dockerd does when a plugin denies a
//! request (`403`, `{"message":"authorization denied by plugin NAME:
//! MSG"}`, moby's `pkg/authorization`), and relays every other request to
//! the daemon unchanged, bodies streamed both ways.
//!
//! Starting a real plugin needs a daemon started with
//! `--authorization-plugin` (and the plugin serving before the daemon's
//! first request); this gives dlgrab the same answer on any daemon of the
//! matrix. The proxy runs on a thread of its own and stops when dropped;
//! its socket folder goes too.

use std::convert::Infallible;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::UnixStream;
use tokio::sync::oneshot;

use crate::background::{Background, serve_unix};

/// The plugin name the refusals give.
pub const AUTHZ_PLUGIN: &str = "dlgrab-test-authz";
/// What the plugin says when it refuses.
pub const AUTHZ_MESSAGE: &str = "bind mounts are not allowed here";

type Body = BoxBody<Bytes, hyper::Error>;

/// A running proxy; stopped on drop.
#[derive(Debug)]
pub struct AuthzProxy {
    dir: PathBuf,
    refused: Arc<AtomicUsize>,
    server: Background,
}

impl AuthzProxy {
    /// Starts a proxy in front of `docker_host` (`unix:///path`), its
    /// socket open to every local user (a `docker` group member runs
    /// dlgrab through it). `Err` says why it cannot.
    pub fn start(docker_host: &str) -> Result<AuthzProxy, String> {
        let daemon = PathBuf::from(
            docker_host
                .strip_prefix("unix://")
                .ok_or_else(|| format!("not a unix socket: {docker_host}"))?,
        );
        let dir = std::env::temp_dir().join(crate::names::unique_scratch_name("dlgrab-authz"));
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let socket = dir.join("docker.sock");
        let listener = std::os::unix::net::UnixListener::bind(&socket)
            .and_then(|l| l.set_nonblocking(true).map(|()| l))
            .map_err(|e| format!("cannot listen on {}: {e}", socket.display()));
        let opened = listener.and_then(|l| {
            use std::os::unix::fs::PermissionsExt as _;
            for (path, mode) in [(&dir, 0o755), (&socket, 0o666)] {
                std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
                    .map_err(|e| format!("{}: {e}", path.display()))?;
            }
            Ok(l)
        });
        let listener = match opened {
            Ok(l) => l,
            Err(e) => {
                let _ = std::fs::remove_dir_all(&dir);
                return Err(e);
            }
        };
        let refused = Arc::new(AtomicUsize::new(0));
        let counting = Arc::clone(&refused);
        let server = Background::spawn("authz-proxy", |stopped| {
            serve(listener, daemon, counting, stopped)
        })?;
        Ok(AuthzProxy {
            dir,
            refused,
            server,
        })
    }

    /// The `DOCKER_HOST` of the proxy.
    pub fn host(&self) -> String {
        format!("unix://{}", self.dir.join("docker.sock").display())
    }

    /// How many container creations it refused.
    pub fn refused(&self) -> usize {
        self.refused.load(Ordering::SeqCst)
    }
}

impl Drop for AuthzProxy {
    fn drop(&mut self) {
        self.server.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Accepts connections until `stopped`, each served on a task of its own.
async fn serve(
    listener: std::os::unix::net::UnixListener,
    daemon: PathBuf,
    refused: Arc<AtomicUsize>,
    stopped: oneshot::Receiver<()>,
) {
    serve_unix(listener, stopped, move |request| {
        handle(request, daemon.clone(), Arc::clone(&refused))
    })
    .await;
}

/// Refuses a container creation that binds a host path; relays the rest.
async fn handle(
    request: Request<Incoming>,
    daemon: PathBuf,
    refused: Arc<AtomicUsize>,
) -> Result<Response<Body>, Infallible> {
    let creates = request.method() == hyper::Method::POST
        && request.uri().path().ends_with("/containers/create");
    let request = if creates {
        let (parts, body) = request.into_parts();
        let Ok(body) = body.collect().await.map(|c| c.to_bytes()) else {
            return Ok(answer(StatusCode::BAD_REQUEST, "cannot read the request"));
        };
        if binds_a_host_path(&body) {
            refused.fetch_add(1, Ordering::SeqCst);
            return Ok(answer(
                StatusCode::FORBIDDEN,
                &format!("authorization denied by plugin {AUTHZ_PLUGIN}: {AUTHZ_MESSAGE}"),
            ));
        }
        Request::from_parts(parts, full(body))
    } else {
        request.map(BodyExt::boxed)
    };
    Ok(match relay(request, &daemon).await {
        Ok(response) => response.map(BodyExt::boxed),
        Err(e) => answer(StatusCode::BAD_GATEWAY, &format!("the proxy: {e}")),
    })
}

/// Sends `request` to the daemon on a connection of its own.
async fn relay(
    request: Request<Body>,
    daemon: &std::path::Path,
) -> Result<Response<Incoming>, String> {
    let stream = UnixStream::connect(daemon)
        .await
        .map_err(|e| format!("cannot connect to {}: {e}", daemon.display()))?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(connection);
    sender
        .send_request(request)
        .await
        .map_err(|e| e.to_string())
}

/// Whether a `containers/create` body binds a host path.
pub(crate) fn binds_a_host_path(body: &[u8]) -> bool {
    let Ok(spec) = serde_json::from_slice::<serde_json::Value>(body) else {
        return false;
    };
    let host = &spec["HostConfig"];
    let binds = host["Binds"].as_array().is_some_and(|b| !b.is_empty());
    let mounts = host["Mounts"]
        .as_array()
        .is_some_and(|m| m.iter().any(|m| m["Type"] == "bind"));
    binds || mounts
}

fn full(bytes: Bytes) -> Body {
    Full::new(bytes).map_err(|never| match never {}).boxed()
}

/// A daemon-style error answer.
fn answer(status: StatusCode, message: &str) -> Response<Body> {
    let body = serde_json::json!({ "message": message }).to_string();
    let mut response = Response::new(full(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    response
}
