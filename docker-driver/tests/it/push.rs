//! Pushing: the request, the progress, errors, and cancelling.

use std::time::Duration;

use docker_driver::{BollardDriver, DockerDriver, DriverError, PushEvent};
use futures::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use wiremock::matchers::{header, method, path, query_param};
use wiremock::{Mock, ResponseTemplate};

use crate::fake::{Fake, V};

const REPO: &str = "127.0.0.1:5000/dlgrab-x";

async fn push_answering(status: u16, body: &str) -> (Fake, Vec<Result<PushEvent, DriverError>>) {
    let fake = Fake::new().await;
    Mock::given(method("POST"))
        .and(path(format!("{V}/images/{REPO}/push")))
        .and(query_param("tag", "t"))
        .and(header("X-Registry-Auth", "e30="))
        .respond_with(
            ResponseTemplate::new(status).set_body_raw(body.to_owned(), "application/json"),
        )
        .expect(1)
        .mount(&fake.server)
        .await;
    let events = fake.driver().await.push(REPO, "t", None).collect().await;
    (fake, events)
}

fn layer(id: &str, status: &str) -> PushEvent {
    PushEvent::Layer {
        id: id.into(),
        status: status.into(),
        current: None,
        total: None,
    }
}

#[tokio::test]
async fn reports_progress_and_the_pushed_manifest() {
    let body = concat!(
        "{\"status\":\"The push refers to repository [127.0.0.1:5000/dlgrab-x]\"}\r\n",
        "{\"status\":\"Preparing\",\"progressDetail\":{},\"id\":\"0123456789ab\"}\r\n",
        "{\"status\":\"Pushing\",\"progressDetail\":{\"current\":5,\"total\":10},\"id\":\"0123456789ab\"}\r\n",
        "{\"status\":\"Pushed\",\"progressDetail\":{},\"id\":\"0123456789ab\"}\r\n",
        "{\"status\":\"t: digest: sha256:aa size: 528\"}\r\n",
        "{\"progressDetail\":{},\"aux\":{\"Tag\":\"t\",\"Digest\":\"sha256:aa\",\"Size\":528}}\r\n",
    );
    let (_fake, events) = push_answering(200, body).await;
    let events: Vec<PushEvent> = events.into_iter().map(Result::unwrap).collect();
    assert_eq!(
        events,
        [
            PushEvent::Status("The push refers to repository [127.0.0.1:5000/dlgrab-x]".into()),
            layer("0123456789ab", "Preparing"),
            PushEvent::Layer {
                id: "0123456789ab".into(),
                status: "Pushing".into(),
                current: Some(5),
                total: Some(10),
            },
            layer("0123456789ab", "Pushed"),
            PushEvent::Status("t: digest: sha256:aa size: 528".into()),
            PushEvent::Pushed {
                tag: "t".into(),
                digest: "sha256:aa".into(),
                size: Some(528),
            },
        ]
    );
}

#[tokio::test]
async fn an_error_in_the_stream_ends_it() {
    let body = concat!(
        "{\"status\":\"Preparing\",\"progressDetail\":{},\"id\":\"ab\"}\n",
        "{\"errorDetail\":{\"message\":\"connection refused\"},\"error\":\"connection refused\"}\n",
        "{\"status\":\"Pushed\",\"progressDetail\":{},\"id\":\"ab\"}\n",
    );
    let (_fake, events) = push_answering(200, body).await;
    assert_eq!(events.len(), 2, "{events:?}");
    assert_eq!(events[0].as_ref().unwrap(), &layer("ab", "Preparing"));
    match &events[1] {
        Err(DriverError::PushRefused { reference, message }) => {
            assert_eq!(reference, "127.0.0.1:5000/dlgrab-x:t");
            assert_eq!(message, "connection refused");
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn http_errors() {
    let (_fake, events) = push_answering(
        404,
        r#"{"message":"An image does not exist locally with the tag: x"}"#,
    )
    .await;
    assert!(
        matches!(&events[..], [Err(DriverError::NoSuchImage { .. })]),
        "{events:?}"
    );
    let (_fake, events) = push_answering(500, r#"{"message":"boom"}"#).await;
    match &events[..] {
        [Err(DriverError::PushRefused { message, .. })] => assert_eq!(message, "boom"),
        other => panic!("{other:?}"),
    }
}

/// A one-connection-per-request fake that answers the push with one line
/// and then waits: dropping the stream must close the connection.
#[tokio::test]
async fn dropping_the_stream_closes_the_request() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (closed_tx, closed_rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let mut closed_tx = Some(closed_tx);
        loop {
            let (mut conn, _) = listener.accept().await.unwrap();
            let mut head = Vec::new();
            let mut buf = [0u8; 1024];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                let n = conn.read(&mut buf).await.unwrap();
                assert!(n > 0);
                head.extend_from_slice(&buf[..n]);
            }
            let head = String::from_utf8_lossy(&head).into_owned();
            if head.starts_with("GET /version") {
                let body = br#"{"Version":"20.10.24","ApiVersion":"1.41","MinAPIVersion":"1.12"}"#;
                let reply = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
                    body.len()
                );
                conn.write_all(reply.as_bytes()).await.unwrap();
                conn.write_all(body).await.unwrap();
                continue;
            }
            if head.starts_with("GET /_ping") {
                conn.write_all(
                    b"HTTP/1.1 200 OK\r\nAPI-Version: 1.41\r\nContent-Length: 2\r\n\r\nOK",
                )
                .await
                .unwrap();
                continue;
            }
            assert!(
                head.starts_with("POST /v1.41/images/r/push?tag=t "),
                "{head}"
            );
            let line = b"{\"status\":\"Preparing\",\"id\":\"ab\"}\r\n";
            let chunk = format!("{:x}\r\n", line.len());
            conn.write_all(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n")
                .await
                .unwrap();
            conn.write_all(chunk.as_bytes()).await.unwrap();
            conn.write_all(line).await.unwrap();
            conn.write_all(b"\r\n").await.unwrap();
            // The push goes on until the client hangs up.
            while conn.read(&mut buf).await.map(|n| n > 0).unwrap_or(false) {}
            if let Some(tx) = closed_tx.take() {
                let _ = tx.send(());
            }
        }
    });
    let driver = BollardDriver::connect_with(&format!("tcp://{addr}"))
        .await
        .unwrap();
    let mut events = driver.push("r", "t", None);
    let first = events.next().await.unwrap().unwrap();
    assert_eq!(first, layer("ab", "Preparing"));
    drop(events);
    tokio::time::timeout(Duration::from_secs(10), closed_rx)
        .await
        .expect("the connection was not closed")
        .unwrap();
}

#[tokio::test]
async fn credentials_go_in_x_registry_auth_as_padded_url_safe_base64_json() {
    use base64::Engine;
    let credentials = docker_driver::RegistryCredentials {
        username: "dlgrab".into(),
        password: "p?>~".into(),
        server_address: "127.0.0.1:5000".into(),
    };
    let value = credentials.header_value();
    let json = base64::engine::general_purpose::URL_SAFE
        .decode(&value)
        .expect("padded url-safe base64");
    let json: serde_json::Value = serde_json::from_slice(&json).expect("json");
    assert_eq!(
        json,
        serde_json::json!({
            "username": "dlgrab", "password": "p?>~", "serveraddress": "127.0.0.1:5000"
        })
    );
    assert!(
        !format!("{credentials:?}").contains("p?>~"),
        "debug shows the password"
    );
    let fake = Fake::new().await;
    Mock::given(method("POST"))
        .and(path(format!("{V}/images/{REPO}/push")))
        .and(header("X-Registry-Auth", value.as_str()))
        .respond_with(ResponseTemplate::new(200).set_body_raw("", "application/json"))
        .expect(1)
        .mount(&fake.server)
        .await;
    let events: Vec<_> = fake
        .driver()
        .await
        .push(REPO, "t", Some(credentials))
        .collect()
        .await;
    assert!(events.iter().all(Result::is_ok), "{events:?}");
}
