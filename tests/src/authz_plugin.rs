//! A real Docker authorization plugin (moby's `pkg/authorization` protocol,
//! a legacy plugin on a unix socket under `/run/docker/plugins`) that
//! refuses a container creation binding a host path and allows every
//! other request. A dockerd started with `--authorization-plugin NAME`
//! ([`crate::PrivateDaemon::start_with`]) asks it about each request, so
//! the refusal dlgrab sees is the daemon's own.
//!
//! The plugin must serve before the daemon starts (dockerd activates it
//! when validating its configuration). It runs on a thread of its own and
//! stops when dropped; its socket goes too.

use std::convert::Infallible;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use tokio::sync::oneshot;

use crate::background::{Background, serve_unix};

use crate::authz_proxy::{AUTHZ_MESSAGE, binds_a_host_path};

/// Where dockerd looks for a legacy plugin's socket by its name.
const PLUGIN_SOCKETS: &str = "/run/docker/plugins";

/// A running plugin; stopped on drop.
#[derive(Debug)]
pub struct AuthzPlugin {
    name: String,
    socket: PathBuf,
    asked: Arc<AtomicUsize>,
    refused: Arc<AtomicUsize>,
    server: Background,
}

impl AuthzPlugin {
    /// Starts a plugin under a name of its own (`/run/docker/plugins/NAME.sock`).
    /// Needs root (the folder is root's); `Err` says why it cannot.
    pub fn start() -> Result<AuthzPlugin, String> {
        let name = crate::unique_name("dlgrab-authz");
        std::fs::create_dir_all(PLUGIN_SOCKETS)
            .map_err(|e| format!("mkdir {PLUGIN_SOCKETS}: {e}"))?;
        let socket = Path::new(PLUGIN_SOCKETS).join(format!("{name}.sock"));
        let listener = std::os::unix::net::UnixListener::bind(&socket)
            .and_then(|l| l.set_nonblocking(true).map(|()| l))
            .map_err(|e| format!("cannot listen on {}: {e}", socket.display()))?;
        let asked = Arc::new(AtomicUsize::new(0));
        let refused = Arc::new(AtomicUsize::new(0));
        let counters = (Arc::clone(&asked), Arc::clone(&refused));
        let server =
            match Background::spawn("authz-plugin", |stopped| serve(listener, counters, stopped)) {
                Ok(server) => server,
                Err(e) => {
                    let _ = std::fs::remove_file(&socket);
                    return Err(e);
                }
            };
        Ok(AuthzPlugin {
            name,
            socket,
            asked,
            refused,
            server,
        })
    }

    /// The name to start dockerd with (`--authorization-plugin NAME`); its
    /// refusals read "authorization denied by plugin NAME: …".
    pub fn name(&self) -> &str {
        &self.name
    }

    /// How many requests the daemon asked about.
    pub fn asked(&self) -> usize {
        self.asked.load(Ordering::SeqCst)
    }

    /// How many container creations it refused.
    pub fn refused(&self) -> usize {
        self.refused.load(Ordering::SeqCst)
    }
}

impl Drop for AuthzPlugin {
    fn drop(&mut self) {
        self.server.stop();
        let _ = std::fs::remove_file(&self.socket);
    }
}

type Counters = (Arc<AtomicUsize>, Arc<AtomicUsize>);

async fn serve(
    listener: std::os::unix::net::UnixListener,
    counters: Counters,
    stopped: oneshot::Receiver<()>,
) {
    serve_unix(listener, stopped, move |request| {
        handle(request, counters.clone())
    })
    .await;
}

/// The plugin protocol: `Plugin.Activate`, then `AuthZPlugin.AuthZReq`
/// before each request and `AuthZPlugin.AuthZRes` after it.
async fn handle(
    request: Request<Incoming>,
    (asked, refused): Counters,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = request.uri().path().to_owned();
    let body = request
        .into_body()
        .collect()
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    let answer = match path.as_str() {
        "/Plugin.Activate" => serde_json::json!({ "Implements": ["authz"] }),
        "/AuthZPlugin.AuthZReq" => {
            asked.fetch_add(1, Ordering::SeqCst);
            if refuses(&body) {
                refused.fetch_add(1, Ordering::SeqCst);
                serde_json::json!({ "Allow": false, "Msg": AUTHZ_MESSAGE })
            } else {
                serde_json::json!({ "Allow": true })
            }
        }
        "/AuthZPlugin.AuthZRes" => serde_json::json!({ "Allow": true }),
        _ => serde_json::json!({ "Err": format!("unknown call {path}") }),
    };
    let mut response = Response::new(Full::new(Bytes::from(answer.to_string())));
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/vnd.docker.plugins.v1+json"),
    );
    Ok(response)
}

/// Whether an `AuthZReq` asks to create a container binding a host path
/// (the request body comes base64-encoded, as Go encodes `[]byte`).
fn refuses(body: &[u8]) -> bool {
    let Ok(asked) = serde_json::from_slice::<serde_json::Value>(body) else {
        return false;
    };
    let creates = asked["RequestMethod"] == "POST"
        && asked["RequestUri"].as_str().is_some_and(|uri| {
            uri.split('?')
                .next()
                .is_some_and(|p| p.ends_with("/containers/create"))
        });
    let request_body = asked["RequestBody"]
        .as_str()
        .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
        .unwrap_or_default();
    creates && binds_a_host_path(&request_body)
}

#[cfg(test)]
mod tests {
    use base64::Engine as _;

    use super::refuses;

    fn asked(method: &str, uri: &str, body: &serde_json::Value) -> Vec<u8> {
        let body = base64::engine::general_purpose::STANDARD.encode(body.to_string());
        serde_json::json!({ "RequestMethod": method, "RequestUri": uri, "RequestBody": body })
            .to_string()
            .into_bytes()
    }

    #[test]
    fn only_a_creation_binding_a_host_path_is_refused() {
        let binds = serde_json::json!({ "HostConfig": { "Binds": ["/var/lib/docker:/r:ro"] } });
        let mounts = serde_json::json!({ "HostConfig": { "Mounts": [{ "Type": "bind" }] } });
        let plain = serde_json::json!({ "HostConfig": {} });
        assert!(refuses(&asked(
            "POST",
            "/v1.43/containers/create?name=x",
            &binds
        )));
        assert!(refuses(&asked("POST", "/containers/create", &mounts)));
        assert!(!refuses(&asked("POST", "/v1.43/containers/create", &plain)));
        assert!(!refuses(&asked("GET", "/v1.43/containers/create", &binds)));
        assert!(!refuses(&asked("POST", "/v1.43/images/create", &binds)));
        assert!(!refuses(b"not json"));
    }
}
