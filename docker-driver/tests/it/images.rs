//! Inspect, history mapping, listing, and error answers.

use docker_driver::{DockerDriver, DriverError};

use crate::fake::{Fake, Image, digest};

#[tokio::test]
async fn history_is_oldest_first_and_mapped_to_layers() {
    let fake = Fake::new().await;
    let mut image = Image::new('f', &['1', '2'], &["app:1"]);
    image.parent = Some(digest('e'));
    // Newest first, as the API gives it; ENV adds no layer; `RUN true`
    // adds an empty one (size 0) that the layer count gives away.
    image.history = vec![
        (digest('f'), 0, "/bin/sh -c #(nop)  ENV K=V".into()),
        (digest('e'), 0, "/bin/sh -c true".into()),
        (
            "<missing>".into(),
            100,
            "/bin/sh -c #(nop) ADD file:x in / ".into(),
        ),
    ];
    fake.image(&image).await;
    let details = fake.driver().await.inspect_image("app:1").await.unwrap();
    assert_eq!(details.id, digest('f'));
    assert_eq!(details.parent, Some(digest('e')));
    assert_eq!(details.diff_ids, [digest('1'), digest('2')]);
    let rows: Vec<_> = details
        .history
        .iter()
        .map(|r| (r.id.clone(), r.empty_layer, r.layer_index, r.size))
        .collect();
    assert_eq!(
        rows,
        [
            (None, false, Some(0), 100),
            (Some(digest('e')), false, Some(1), 0),
            (Some(digest('f')), true, None, 0),
        ]
    );
    assert_eq!(details.history[0].created, Some(1_700_000_000));
    assert_eq!(
        fake.request_lines().await,
        [
            "GET /v1.41/images/app:1/json".to_owned(),
            format!("GET /v1.41/images/{}/history", digest('f')),
        ]
    );
}

#[track_caller]
fn check_error(err: DriverError, expected: &str) {
    assert_eq!(err.to_string(), expected, "{err:?}");
}

#[tokio::test]
async fn error_answers() {
    let fake = Fake::new().await;
    fake.error("GET", "/images/gone:1/json", 404, "No such image: gone:1")
        .await;
    fake.error("GET", "/images/boom:1/json", 500, "Boom").await;
    fake.error("DELETE", "/images/used:1", 409, "conflict: image is in use")
        .await;
    fake.error("POST", "/images/gone:1/tag", 404, "No such image: gone:1")
        .await;
    let driver = fake.driver().await;
    check_error(
        driver.inspect_image("gone:1").await.unwrap_err(),
        "no such image: gone:1",
    );
    check_error(
        driver.inspect_image("boom:1").await.unwrap_err(),
        "inspecting an image: the daemon answered 500: Boom",
    );
    check_error(
        driver.remove_image("used:1").await.unwrap_err(),
        "removing an image: the daemon answered 409: conflict: image is in use",
    );
    check_error(
        driver.tag("gone:1", "r", "t").await.unwrap_err(),
        "no such image: gone:1",
    );
}

#[tokio::test]
async fn lists_all_images_without_none_tags() {
    let fake = Fake::new().await;
    let mut child = Image::new('b', &['1', '2'], &["app:1"]);
    child.parent = Some(digest('a'));
    let parent = Image::new('a', &['1'], &[]);
    fake.list(&[&child, &parent]).await;
    let images = fake.driver().await.list_images().await.unwrap();
    let got: Vec<_> = images
        .iter()
        .map(|i| (i.id.clone(), i.parent_id.clone(), i.repo_tags.clone()))
        .collect();
    assert_eq!(
        got,
        [
            (digest('b'), Some(digest('a')), vec!["app:1".to_owned()]),
            (digest('a'), None, vec![]),
        ]
    );
    assert_eq!(
        fake.request_lines().await,
        ["GET /v1.41/images/json?all=true&shared-size=false&digests=false&manifests=false"]
    );
}
