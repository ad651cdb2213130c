//! Tagging and the untag safety rules.

use docker_driver::{DockerDriver, DriverError};
use serde_json::json;
use wiremock::matchers::{method, path, query_param};
use wiremock::{Mock, ResponseTemplate};

use crate::fake::{Fake, Image, V, digest};

const TAG: &str = "127.0.0.1:5000/dlgrab-x:t";

#[tokio::test]
async fn tag_request() {
    let fake = Fake::new().await;
    Mock::given(method("POST"))
        .and(path(format!("{V}/images/app:1/tag")))
        .respond_with(ResponseTemplate::new(201))
        .expect(1)
        .mount(&fake.server)
        .await;
    fake.driver()
        .await
        .tag("app:1", "127.0.0.1:5000/dlgrab-x", "t")
        .await
        .unwrap();
    assert_eq!(
        fake.request_lines().await,
        ["POST /v1.41/images/app:1/tag?repo=127.0.0.1%3A5000%2Fdlgrab-x&tag=t"]
    );
}

/// A classic daemon with `image` and `others`, and a DELETE of TAG that
/// answers `delete_answer` and must be called `deletes` times.
async fn daemon(
    image: &Image,
    others: &[&Image],
    deletes: u64,
    delete_answer: serde_json::Value,
) -> Fake {
    let fake = Fake::new().await;
    fake.classic().await;
    fake.image(image).await;
    let mut all = vec![image];
    all.extend(others);
    fake.list(&all).await;
    Mock::given(method("DELETE"))
        .and(path(format!("{V}/images/{TAG}")))
        .and(query_param("noprune", "true"))
        .and(query_param("force", "false"))
        .respond_with(ResponseTemplate::new(200).set_body_json(delete_answer))
        .expect(deletes)
        .mount(&fake.server)
        .await;
    fake
}

#[tokio::test]
async fn untag_removes_a_tag_when_another_reference_remains() {
    let image = Image::new('a', &['1'], &["app:1", TAG]);
    let fake = daemon(&image, &[], 1, json!([{"Untagged": TAG}])).await;
    fake.driver().await.untag(TAG).await.unwrap();
    let lines = fake.request_lines().await;
    assert_eq!(
        lines.last().unwrap(),
        &format!("DELETE {V}/images/{TAG}?force=false&noprune=true")
    );
}

#[tokio::test]
async fn untag_keeps_a_parent_image_untagged() {
    let image = Image::new('a', &['1'], &[TAG]);
    let mut child = Image::new('b', &['1', '2'], &["app:1"]);
    child.parent = Some(image.id.clone());
    let fake = daemon(&image, &[&child], 1, json!([{"Untagged": TAG}])).await;
    fake.driver().await.untag(TAG).await.unwrap();
}

#[track_caller]
fn check_refused(result: Result<(), DriverError>) {
    match result {
        Err(DriverError::UntagWouldDelete { reference }) => assert_eq!(reference, TAG),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn untag_refuses_when_the_image_would_go() {
    // The only reference.
    let image = Image::new('a', &['1'], &[TAG]);
    let fake = daemon(&image, &[], 0, json!([])).await;
    check_refused(fake.driver().await.untag(TAG).await);
    // A digest of the same repository goes with its last tag.
    let mut image = Image::new('a', &['1'], &[TAG]);
    image.digests = vec![format!("127.0.0.1:5000/dlgrab-x@{}", digest('d'))];
    let fake = daemon(&image, &[], 0, json!([])).await;
    check_refused(fake.driver().await.untag(TAG).await);
    // Wiremock checks on drop that no DELETE came.
}

#[tokio::test]
async fn untag_reports_deleted_images() {
    let image = Image::new('a', &['1'], &["app:1", TAG]);
    let answer = json!([{"Untagged": TAG}, {"Deleted": digest('a')}]);
    let fake = daemon(&image, &[], 1, answer).await;
    match fake.driver().await.untag(TAG).await {
        Err(DriverError::ImageDeleted { reference, deleted }) => {
            assert_eq!(reference, TAG);
            assert_eq!(deleted, [digest('a')]);
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn untag_takes_tags_only() {
    let image = Image::new('a', &['1'], &["app:1"]);
    let fake = daemon(&image, &[], 0, json!([])).await;
    let err = fake.driver().await.untag(&digest('a')).await.unwrap_err();
    assert!(matches!(err, DriverError::NotATag { .. }), "{err:?}");
}
