//! The accept loop: one port, plain HTTP/1.1 or TLS decided by the first byte.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use crate::Registry;
use crate::state::Shared;
use crate::wire::RegistryService;

/// The first byte of a TLS handshake record.
const TLS_HANDSHAKE: u8 = 0x16;
/// How long a new connection may take to send its first byte.
const FIRST_BYTE_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a TLS handshake may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);
/// How long request headers may take to arrive.
const HEADER_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a graceful shutdown waits for requests in flight.
const GRACE: Duration = Duration::from_secs(10);
/// How often abandoned uploads are looked for.
const SWEEP_INTERVAL: Duration = Duration::from_secs(30);

/// Why serving failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServeError {
    /// The address could not be bound.
    #[error("cannot bind {addr}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The listener's own address could not be read.
    #[error("cannot read the listening address")]
    LocalAddr {
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// A registry serving on a background task.
///
/// Dropping the handle stops the server without waiting for it.
#[derive(Debug)]
pub struct RegistryHandle {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), ServeError>>>,
}

impl RegistryHandle {
    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The plain-HTTP base URL, e.g. `http://127.0.0.1:5000` (no trailing
    /// slash; `https://` works on the same port when TLS is enabled).
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops accepting connections and waits (a bounded time) for the
    /// requests in flight to finish.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            match task.await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => warn!(error = %e, "registry server ended with an error"),
                Err(e) => warn!(error = %e, "registry server task failed"),
            }
        }
    }
}

pub(crate) async fn spawn(
    registry: Registry,
    addr: SocketAddr,
) -> Result<RegistryHandle, ServeError> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| ServeError::Bind { addr, source })?;
    let bound = listener
        .local_addr()
        .map_err(|source| ServeError::LocalAddr { source })?;
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(serve(registry, listener, async move {
        // Either an explicit stop or a dropped handle.
        let _ = stopped.await;
    }));
    Ok(RegistryHandle {
        addr: bound,
        stop: Some(stop),
        task: Some(task),
    })
}

pub(crate) async fn serve(
    registry: Registry,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let local = listener
        .local_addr()
        .map_err(|source| ServeError::LocalAddr { source })?;
    info!(addr = %local, tls = registry.tls.is_some(), "registry listening");
    let sweeper = tokio::spawn(sweep_uploads(registry.shared.clone()));
    let service = registry.service();
    let acceptor = registry.tls.clone().map(tokio_rustls::TlsAcceptor::from);
    let graceful = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, peer)) => {
                let conn = Connection {
                    service: service.clone(),
                    acceptor: acceptor.clone(),
                    watcher: graceful.watcher(),
                };
                tokio::spawn(conn.run(stream, peer));
            }
            Err(e) => {
                // Usually out of file descriptors: back off instead of spinning.
                warn!(error = %e, "accepting a connection failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    drop(listener);
    sweeper.abort();
    // Held uploads end now rather than keep the shutdown waiting for a
    // release (or read on, when released, what nobody will commit).
    registry.shared.shutdowns.send_modify(|n| *n += 1);
    debug!(connections = graceful.count(), "registry shutting down");
    if tokio::time::timeout(GRACE, graceful.shutdown())
        .await
        .is_err()
    {
        warn!("requests still in flight after the grace period; dropping them");
    }
    info!(addr = %local, "registry stopped");
    Ok(())
}

/// Discards upload sessions left idle too long.
async fn sweep_uploads(shared: Arc<Shared>) {
    let mut tick = tokio::time::interval(SWEEP_INTERVAL.min(shared.upload_expiry));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        match shared
            .storage
            .purge_stale_uploads(shared.upload_expiry)
            .await
        {
            Ok(0) => {}
            Ok(n) => debug!(count = n, "discarded abandoned uploads"),
            Err(e) => warn!(error = %e, "discarding abandoned uploads failed"),
        }
    }
}

/// One accepted connection and what it needs.
struct Connection {
    service: RegistryService,
    acceptor: Option<tokio_rustls::TlsAcceptor>,
    watcher: Watcher,
}

impl Connection {
    async fn run(self, stream: TcpStream, peer: SocketAddr) {
        let _ = stream.set_nodelay(true);
        let mut first = [0u8; 1];
        let peeked = tokio::time::timeout(FIRST_BYTE_TIMEOUT, stream.peek(&mut first)).await;
        match peeked {
            Ok(Ok(1)) => {}
            Ok(Ok(_)) => return, // closed before sending anything
            Ok(Err(e)) => {
                debug!(%peer, error = %e, "connection failed before its first byte");
                return;
            }
            Err(_) => {
                debug!(%peer, "connection sent nothing; closing it");
                return;
            }
        }
        match (&self.acceptor, first[0]) {
            (Some(acceptor), TLS_HANDSHAKE) => {
                let handshake =
                    tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await;
                match handshake {
                    Ok(Ok(tls)) => {
                        let conn = Connection {
                            service: self.service.clone().over_tls(),
                            acceptor: None,
                            watcher: self.watcher,
                        };
                        conn.serve_http(TokioIo::new(tls), peer).await;
                    }
                    Ok(Err(e)) => debug!(%peer, error = %e, "tls handshake failed"),
                    Err(_) => debug!(%peer, "tls handshake timed out"),
                }
            }
            // Plain HTTP; with TLS disabled a ClientHello gets hyper's
            // `HTTP/1.1 400`, which makes TLS-first clients fall back.
            _ => self.serve_http(TokioIo::new(stream), peer).await,
        }
    }

    async fn serve_http<I>(self, io: I, peer: SocketAddr)
    where
        I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    {
        let mut builder = http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(HEADER_TIMEOUT)
            .keep_alive(true);
        let conn = builder.serve_connection(io, self.service);
        if let Err(e) = self.watcher.watch(conn).await {
            debug!(%peer, error = %e, "connection ended with an error");
        }
    }
}
