//! One port for HTTP and HTTPS, binding, shutdown and mounting the service.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use shim_registry::{Registry, ServeError, TlsConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::{client, start, start_with};

#[tokio::test]
async fn http_and_https_on_one_port() {
    let reg = start().await;
    let port = reg.handle.addr().port();
    for url in [
        format!("http://127.0.0.1:{port}/v2/"),
        format!("https://127.0.0.1:{port}/v2/"),
        format!("https://localhost:{port}/v2/"),
    ] {
        let r = client().get(&url).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{url}");
        assert_eq!(
            r.headers()["docker-distribution-api-version"],
            "registry/2.0"
        );
    }
    // A blob pushed over TLS reads back over plain HTTP.
    let c = client();
    let data = b"over tls".to_vec();
    let d = crate::support::sha256(&data);
    let r = c
        .post(format!(
            "https://127.0.0.1:{port}/v2/t/blobs/uploads/?digest={d}"
        ))
        .body(data)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let r = reg
        .req(Method::HEAD, &format!("/v2/t/blobs/{d}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
}

#[tokio::test]
async fn provided_certificate() {
    let cert = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).unwrap();
    let reg = start_with(|b| {
        b.tls(TlsConfig::Provided {
            cert_chain_pem: cert.cert.pem().into_bytes(),
            key_pem: cert.signing_key.serialize_pem().into_bytes(),
        })
    })
    .await;
    let port = reg.handle.addr().port();
    let r = client()
        .get(format!("https://127.0.0.1:{port}/v2/"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let bad = Registry::builder()
        .tls(TlsConfig::Provided {
            cert_chain_pem: b"nope".to_vec(),
            key_pem: b"nope".to_vec(),
        })
        .build();
    assert!(bad.is_err());
}

/// With TLS disabled, a ClientHello gets a reply starting with `HTTP/`, which
/// is what makes TLS-first clients fall back to plain HTTP.
#[tokio::test]
async fn tls_disabled_answers_client_hello_with_http() {
    let reg = start_with(|b| b.tls(TlsConfig::Disabled)).await;
    let mut s = tokio::net::TcpStream::connect(reg.handle.addr())
        .await
        .unwrap();
    s.write_all(&[0x16, 0x03, 0x01, 0x00, 0x05, 0x01, 0x00, 0x00, 0x01, 0x00])
        .await
        .unwrap();
    let mut buf = [0u8; 5];
    tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&buf, b"HTTP/");
    let r = reg.req(Method::GET, "/v2/").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let https = client()
        .get(format!(
            "https://127.0.0.1:{}/v2/",
            reg.handle.addr().port()
        ))
        .send()
        .await;
    assert!(https.is_err());
}

#[tokio::test]
async fn bind_errors_and_shutdown() {
    let reg = start().await;
    let addr = reg.handle.addr();
    let again = Registry::builder().build().unwrap().spawn(addr).await;
    assert!(matches!(again, Err(ServeError::Bind { .. })), "{again:?}");
    assert!(reg.handle.url().starts_with("http://127.0.0.1:"));
    reg.handle.shutdown().await;
    let after = client().get(format!("http://{addr}/v2/")).send().await;
    assert!(after.is_err(), "still serving after shutdown");
}

#[tokio::test]
async fn serve_on_a_caller_listener_and_mount_the_service() {
    let registry = Registry::builder()
        .tls(TlsConfig::Disabled)
        .build()
        .unwrap();
    // serve() on a listener the caller bound
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(registry.clone().serve(listener, async move {
        let _ = stopped.await;
    }));
    let r = client()
        .get(format!("http://{addr}/v2/"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    stop.send(()).unwrap();
    task.await.unwrap().unwrap();

    // service() inside a server of our own
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let service = registry.service();
    tokio::spawn(async move {
        let (stream, _) = listener.accept().await.unwrap();
        let io = hyper_util::rt::TokioIo::new(stream);
        let _ = hyper::server::conn::http1::Builder::new()
            .serve_connection(io, service)
            .await;
    });
    let r = client()
        .get(format!("http://{addr}/v2/"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
}
