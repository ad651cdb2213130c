//! Save, load and build.

use bytes::Bytes;
use docker_driver::{BuildOptions, DockerDriver, DriverError};
use futures::{StreamExt, TryStreamExt, stream};
use serde_json::json;
use wiremock::matchers::{body_bytes, method, path, query_param};
use wiremock::{Mock, ResponseTemplate};

use crate::fake::{Fake, V, digest};

#[tokio::test]
async fn export_streams_the_archive() {
    let fake = Fake::new().await;
    Mock::given(method("GET"))
        .and(path(format!("{V}/images/get")))
        .respond_with(ResponseTemplate::new(200).set_body_bytes(vec![7u8; 100_000]))
        .mount(&fake.server)
        .await;
    let chunks: Vec<Bytes> = fake
        .driver()
        .await
        .export_images(&["app:1".into(), "app:2".into()])
        .try_collect()
        .await
        .unwrap();
    assert_eq!(chunks.iter().map(Bytes::len).sum::<usize>(), 100_000);
    assert_eq!(
        fake.request_lines().await,
        ["GET /v1.41/images/get?names=app%3A1&names=app%3A2"]
    );
}

#[tokio::test]
async fn export_of_a_missing_image() {
    let fake = Fake::new().await;
    fake.error("GET", "/images/get", 404, "reference does not exist")
        .await;
    let result: Result<Vec<Bytes>, _> = fake
        .driver()
        .await
        .export_images(&["gone:1".into()])
        .try_collect()
        .await;
    assert!(
        matches!(result, Err(DriverError::NoSuchImage { .. })),
        "{result:?}"
    );
}

#[tokio::test]
async fn load_sends_the_archive_and_reports_loaded_images() {
    let fake = Fake::new().await;
    let answer = concat!(
        "{\"status\":\"Loading layer\",\"progressDetail\":{\"current\":1,\"total\":2},\"id\":\"ab\"}\r\n",
        "{\"stream\":\"Loaded image: app:1\\n\"}\r\n",
        "{\"stream\":\"Loaded image ID: sha256:aa\\n\"}\r\n",
    );
    Mock::given(method("POST"))
        .and(path(format!("{V}/images/load")))
        .and(query_param("quiet", "false"))
        .and(body_bytes(b"archive-bytes".to_vec()))
        .respond_with(ResponseTemplate::new(200).set_body_raw(answer, "application/json"))
        .expect(1)
        .mount(&fake.server)
        .await;
    let archive = stream::iter([
        Bytes::from_static(b"archive-"),
        Bytes::from_static(b"bytes"),
    ]);
    let loaded = fake.driver().await.load(archive.boxed()).await.unwrap();
    assert_eq!(
        loaded,
        ["Loaded image: app:1", "Loaded image ID: sha256:aa"]
    );
}

#[tokio::test]
async fn load_errors() {
    let fake = Fake::new().await;
    let answer =
        "{\"errorDetail\":{\"message\":\"unexpected EOF\"},\"error\":\"unexpected EOF\"}\n";
    Mock::given(method("POST"))
        .and(path(format!("{V}/images/load")))
        .respond_with(ResponseTemplate::new(200).set_body_raw(answer, "application/json"))
        .mount(&fake.server)
        .await;
    let err = fake
        .driver()
        .await
        .load(stream::iter([Bytes::from_static(b"x")]).boxed())
        .await
        .unwrap_err();
    assert_eq!(err.to_string(), "loading images failed: unexpected EOF");
}

#[tokio::test]
async fn build_with_the_classic_builder() {
    let fake = Fake::new().await;
    let answer = concat!(
        "{\"stream\":\"Step 1/1 : FROM scratch\\n\"}\r\n",
        "{\"aux\":{\"ID\":\"sha256:bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb\"}}\r\n",
        "{\"stream\":\"Successfully built bbbbbbbbbbbb\\n\"}\r\n",
    );
    Mock::given(method("POST"))
        .and(path(format!("{V}/build")))
        .and(query_param("t", "app:1"))
        .and(query_param("version", "1"))
        .and(query_param("rm", "true"))
        .and(query_param("forcerm", "true"))
        .and(query_param("labels", r#"{"k":"v"}"#))
        .and(body_bytes(b"context".to_vec()))
        .respond_with(ResponseTemplate::new(200).set_body_raw(answer, "application/json"))
        .expect(1)
        .mount(&fake.server)
        .await;
    let options = BuildOptions {
        tag: "app:1".into(),
        classic_builder: true,
        labels: vec![("k".into(), "v".into())],
    };
    let id = fake
        .driver()
        .await
        .build(Bytes::from_static(b"context"), options)
        .await
        .unwrap();
    assert_eq!(id, digest('b'));
}

#[tokio::test]
async fn build_errors() {
    let fake = Fake::new().await;
    let answer = concat!(
        "{\"stream\":\"Step 1/2 : FROM scratch\\n\"}\r\n",
        "{\"errorDetail\":{\"code\":1,\"message\":\"The command '/bin/sh -c false' returned a non-zero code: 1\"},\"error\":\"x\"}\r\n",
    );
    Mock::given(method("POST"))
        .and(path(format!("{V}/build")))
        .respond_with(ResponseTemplate::new(200).set_body_raw(answer, "application/json"))
        .mount(&fake.server)
        .await;
    let err = fake
        .driver()
        .await
        .build(
            Bytes::new(),
            BuildOptions {
                tag: "app:1".into(),
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "building app:1 failed: The command '/bin/sh -c false' returned a non-zero code: 1"
    );
    let _ = json!(null);
}
