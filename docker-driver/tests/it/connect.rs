//! Connecting and version negotiation.

use docker_driver::{BollardDriver, DockerDriver, DriverError, ImageStore};
use serde_json::json;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::fake::{Fake, version_json};

#[tokio::test]
async fn negotiates_from_ping() {
    let fake = Fake::new().await;
    fake.classic().await;
    let driver = fake.driver().await;
    assert_eq!(driver.api_version(), "1.41");
    let info = driver.info().await.unwrap();
    assert_eq!(info.server_version, "20.10.24");
    assert_eq!(info.api_version, "1.41");
    assert_eq!(
        info.image_store,
        ImageStore::Classic {
            driver: "overlay2".into()
        }
    );
    assert_eq!((info.os.as_str(), info.arch.as_str()), ("linux", "amd64"));
    assert_eq!(
        fake.request_lines().await,
        ["GET /v1.41/version", "GET /v1.41/info"]
    );
    // The version is negotiated before any versioned call.
    let first = fake.requests().await;
    assert!(
        matches!(
            first.first().map(|r| r.url.path()),
            Some("/version" | "/_ping")
        ),
        "{:?}",
        first
            .iter()
            .map(|r| r.url.path().to_owned())
            .collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn negotiates_from_version_without_ping_header() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/_ping"))
        .respond_with(ResponseTemplate::new(200).set_body_string("OK"))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/version"))
        .respond_with(ResponseTemplate::new(200).set_body_json(version_json()))
        .mount(&server)
        .await;
    let driver = BollardDriver::connect_with(&format!("http://{}", server.address()))
        .await
        .unwrap();
    assert_eq!(driver.api_version(), "1.41");
}

#[tokio::test]
async fn newer_daemons_get_bollards_version() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/_ping"))
        .respond_with(ResponseTemplate::new(200).insert_header("API-Version", "1.99"))
        .mount(&server)
        .await;
    let driver = BollardDriver::connect_with(&format!("tcp://{}", server.address()))
        .await
        .unwrap();
    assert_ne!(driver.api_version(), "1.99");
}

#[tokio::test]
async fn detects_the_containerd_store() {
    let fake = Fake::new().await;
    fake.get("/version", version_json()).await;
    fake.get(
        "/info",
        json!({"Driver": "overlayfs",
               "DriverStatus": [["driver-type", "io.containerd.snapshotter.v1"]]}),
    )
    .await;
    let info = fake.driver().await.info().await.unwrap();
    assert_eq!(info.image_store, ImageStore::Containerd);
}

#[tokio::test]
async fn unreachable_hosts() {
    // A privileged port nothing listens on here. (A port freed by dropping
    // a listener may be taken by a test running beside this one.)
    let host = "tcp://127.0.0.1:1".to_owned();
    let err = BollardDriver::connect_with(&host).await.unwrap_err();
    assert!(
        matches!(&err, DriverError::Unreachable { host: h, .. } if *h == host),
        "{err:?}"
    );
    assert!(err.to_string().contains(&host), "{err}");

    let err = BollardDriver::connect_with("unix:///nonexistent/docker.sock")
        .await
        .unwrap_err();
    assert!(matches!(err, DriverError::Unreachable { .. }), "{err:?}");

    // (ssh:// is dialled since `--to`; a scheme nobody serves is refused.)
    let err = BollardDriver::connect_with("npipe:////./pipe/docker_engine")
        .await
        .unwrap_err();
    assert!(matches!(err, DriverError::InvalidHost { .. }), "{err:?}");
}
