//! A TLS-terminating proxy on 127.0.0.1 in front of a daemon's unix socket,
//! for testing `tcp://` daemon hosts with TLS as the Docker CLI uses them
//! (`DOCKER_TLS_VERIFY=1`, `DOCKER_CERT_PATH` holding `ca.pem`, `cert.pem`
//! and `key.pem`): the test daemons listen on unix sockets only.
//!
//! [`TlsProxy::start`] makes a throw-away CA, a server certificate for
//! `127.0.0.1` and a client certificate, all signed by it, and writes the
//! client's material to a temporary folder ([`TlsProxy::cert_path`]). The
//! proxy requires a client certificate signed by that CA, then relays the
//! connection to the socket. A [`Fault`] can cut or stall a connection once
//! it has relayed so many bytes towards the daemon (a `docker load` body
//! cut or stuck halfway). The proxy runs on a thread of its own and stops,
//! closing every connection, when dropped; its folder goes too.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::RootCertStore;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::server::WebPkiClientVerifier;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UnixStream};

use crate::background::Background;

/// What the proxy does to a connection once it has relayed more than
/// `after` bytes towards the daemon.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Relays everything.
    None,
    /// Closes both sides at once, without TLS close_notify.
    Cut {
        /// Bytes relayed first.
        after: u64,
    },
    /// Relays nothing more that way (what the client sends is read and
    /// dropped) and holds the connection open until the client closes it;
    /// then the daemon's side is closed too.
    Stall {
        /// Bytes relayed first.
        after: u64,
    },
}

/// A running proxy; stopped on drop.
#[derive(Debug)]
pub struct TlsProxy {
    port: u16,
    dir: PathBuf,
    shared: Arc<Shared>,
    server: Background,
}

#[derive(Debug)]
struct Shared {
    fault: Mutex<Fault>,
    /// TLS sessions with a verified client certificate.
    sessions: AtomicUsize,
    /// Handshakes that failed (no or a wrong client certificate, no TLS).
    refused: AtomicUsize,
    /// Connections the fault hit.
    faulted: AtomicUsize,
}

impl TlsProxy {
    /// Starts a proxy in front of `docker_host` (`unix:///path`). `Err`
    /// says why it cannot.
    pub fn start(docker_host: &str) -> Result<TlsProxy, String> {
        let socket = PathBuf::from(
            docker_host
                .strip_prefix("unix://")
                .ok_or_else(|| format!("not a unix socket: {docker_host}"))?,
        );
        let dir = std::env::temp_dir().join(format!(
            "dlgrab-tls-proxy-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos())
        ));
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let made = Material::make().and_then(|m| {
            m.write_client(&dir)?;
            m.server_config()
        });
        let config = match made {
            Ok(config) => config,
            Err(e) => {
                let _ = std::fs::remove_dir_all(&dir);
                return Err(e);
            }
        };
        let std_listener = std::net::TcpListener::bind((std::net::Ipv4Addr::LOCALHOST, 0))
            .and_then(|l| l.set_nonblocking(true).map(|()| l));
        let listener = match std_listener {
            Ok(l) => l,
            Err(e) => {
                let _ = std::fs::remove_dir_all(&dir);
                return Err(format!("cannot bind 127.0.0.1: {e}"));
            }
        };
        let port = listener.local_addr().map_err(|e| e.to_string())?.port();
        let shared = Arc::new(Shared {
            fault: Mutex::new(Fault::None),
            sessions: AtomicUsize::new(0),
            refused: AtomicUsize::new(0),
            faulted: AtomicUsize::new(0),
        });
        let serving = Arc::clone(&shared);
        let server = Background::spawn("tls-proxy", |stopped| async move {
            let Ok(listener) = TcpListener::from_std(listener) else {
                return;
            };
            let acceptor = tokio_rustls::TlsAcceptor::from(config);
            tokio::select! {
                () = accept(listener, acceptor, socket, serving) => {}
                _ = stopped => {}
            }
        })?;
        Ok(TlsProxy {
            port,
            dir,
            shared,
            server,
        })
    }

    /// The Docker host of the proxy: `tcp://127.0.0.1:PORT`.
    pub fn host(&self) -> String {
        format!("tcp://127.0.0.1:{}", self.port)
    }

    /// The folder holding the client's `ca.pem`, `cert.pem` and `key.pem`
    /// (for `DOCKER_CERT_PATH`, or a context's `ca=…,cert=…,key=…`).
    pub fn cert_path(&self) -> &Path {
        &self.dir
    }

    /// From now on, what happens to connections (those open included).
    pub fn set_fault(&self, fault: Fault) {
        *self.shared.fault.lock().unwrap_or_else(|e| e.into_inner()) = fault;
    }

    /// TLS sessions opened with a verified client certificate so far.
    pub fn sessions(&self) -> usize {
        self.shared.sessions.load(Ordering::SeqCst)
    }

    /// Handshakes refused so far (no client certificate, another CA's, no TLS).
    pub fn refused(&self) -> usize {
        self.shared.refused.load(Ordering::SeqCst)
    }

    /// Connections cut or stalled by the fault so far.
    pub fn faulted(&self) -> usize {
        self.shared.faulted.load(Ordering::SeqCst)
    }
}

impl Drop for TlsProxy {
    fn drop(&mut self) {
        self.server.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Accepts connections until the listener fails.
async fn accept(
    listener: TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    socket: PathBuf,
    shared: Arc<Shared>,
) {
    while let Ok((tcp, _)) = listener.accept().await {
        let (acceptor, socket, shared) = (acceptor.clone(), socket.clone(), Arc::clone(&shared));
        tokio::spawn(async move {
            match acceptor.accept(tcp).await {
                Ok(tls) => {
                    shared.sessions.fetch_add(1, Ordering::SeqCst);
                    relay(tls, &socket, &shared).await;
                }
                Err(_) => {
                    shared.refused.fetch_add(1, Ordering::SeqCst);
                }
            }
        });
    }
}

/// How the client-to-daemon half ended.
enum Up {
    /// The client closed its side.
    Done,
    /// Cut by the fault, or a read or write failed: drop both sides.
    Abort,
}

/// Relays one TLS session to the daemon's socket, both ways.
async fn relay(tls: tokio_rustls::server::TlsStream<TcpStream>, socket: &Path, shared: &Shared) {
    let Ok(unix) = UnixStream::connect(socket).await else {
        return;
    };
    let (mut client_r, mut client_w) = tokio::io::split(tls);
    let (mut daemon_r, mut daemon_w) = unix.into_split();
    let up = async {
        let mut buf = vec![0u8; 64 << 10];
        let mut relayed = 0u64;
        loop {
            let n = match client_r.read(&mut buf).await {
                Ok(0) => {
                    let _ = daemon_w.shutdown().await;
                    return Up::Done;
                }
                Ok(n) => n,
                Err(_) => return Up::Abort,
            };
            let fault = *shared.fault.lock().unwrap_or_else(|e| e.into_inner());
            let after = match fault {
                Fault::None => u64::MAX,
                Fault::Cut { after } | Fault::Stall { after } => after,
            };
            let room = after.saturating_sub(relayed).min(n as u64) as usize;
            if daemon_w.write_all(&buf[..room]).await.is_err() {
                return Up::Abort;
            }
            relayed += room as u64;
            if room < n {
                shared.faulted.fetch_add(1, Ordering::SeqCst);
                if let Fault::Stall { .. } = fault {
                    while let Ok(1..) = client_r.read(&mut buf).await {}
                }
                return Up::Abort;
            }
        }
    };
    let down = async {
        let _ = tokio::io::copy(&mut daemon_r, &mut client_w).await;
        let _ = client_w.shutdown().await;
    };
    tokio::pin!(down);
    tokio::select! {
        up = up => match up {
            Up::Done => down.await,
            Up::Abort => {}
        },
        () = &mut down => {}
    }
}

/// The CA, the server's and the client's certificates and keys.
struct Material {
    ca_pem: String,
    ca_der: CertificateDer<'static>,
    server: (CertificateDer<'static>, KeyPair),
    client: (String, KeyPair),
}

impl Material {
    fn make() -> Result<Material, String> {
        let err = |e: rcgen::Error| format!("cannot make test certificates: {e}");
        let ca_key = KeyPair::generate().map_err(err)?;
        let mut ca = CertificateParams::new(Vec::<String>::new()).map_err(err)?;
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        ca.distinguished_name
            .push(DnType::CommonName, "dlgrab test CA");
        let ca_cert = ca.self_signed(&ca_key).map_err(err)?;
        let issuer = Issuer::new(ca, ca_key);

        let server_key = KeyPair::generate().map_err(err)?;
        let mut server =
            CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
                .map_err(err)?;
        server.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        server
            .distinguished_name
            .push(DnType::CommonName, "dlgrab test daemon");
        let server_cert = server.signed_by(&server_key, &issuer).map_err(err)?;

        let client_key = KeyPair::generate().map_err(err)?;
        let mut client = CertificateParams::new(Vec::<String>::new()).map_err(err)?;
        client.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        client
            .distinguished_name
            .push(DnType::CommonName, "dlgrab test client");
        let client_cert = client.signed_by(&client_key, &issuer).map_err(err)?;

        Ok(Material {
            ca_pem: ca_cert.pem(),
            ca_der: ca_cert.der().clone(),
            server: (server_cert.der().clone(), server_key),
            client: (client_cert.pem(), client_key),
        })
    }

    /// `ca.pem`, `cert.pem`, `key.pem` of the client, as the Docker CLI
    /// reads them from `DOCKER_CERT_PATH`.
    fn write_client(&self, dir: &Path) -> Result<(), String> {
        for (name, text) in [
            ("ca.pem", self.ca_pem.clone()),
            ("cert.pem", self.client.0.clone()),
            ("key.pem", self.client.1.serialize_pem()),
        ] {
            std::fs::write(dir.join(name), text).map_err(|e| format!("{name}: {e}"))?;
        }
        Ok(())
    }

    /// The server side: its certificate, and client certificates required
    /// and checked against the CA.
    fn server_config(self) -> Result<Arc<rustls::ServerConfig>, String> {
        let err = |e: rustls::Error| format!("cannot set up the test TLS server: {e}");
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = RootCertStore::empty();
        roots.add(self.ca_der).map_err(err)?;
        let verifier =
            WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                .build()
                .map_err(|e| format!("cannot set up client verification: {e}"))?;
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.server.1.serialize_der()));
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(err)?
            .with_client_cert_verifier(verifier)
            .with_single_cert(vec![self.server.0], key)
            .map_err(err)?;
        Ok(Arc::new(config))
    }
}
