//! Resolving what the user typed to an image and a layer.

use docker_driver::{DockerDriver, DriverError, LayerSelector};

use crate::fake::{Fake, Image, digest};

/// Images: `a` (intermediate, layers 1), `b` = app:1 (layers 1 2, parent
/// a), `c0…` and `c1…` (IDs sharing a prefix, layers 1 3).
async fn daemon() -> Fake {
    let fake = Fake::new().await;
    let a = Image::new('a', &['1'], &[]);
    let mut b = Image::new('b', &['1', '2'], &["app:1"]);
    b.parent = Some(digest('a'));
    b.history[1].0 = digest('a');
    let mut c0 = Image::new('c', &['1', '3'], &[]);
    c0.id = format!("sha256:c0{}", "c".repeat(62));
    c0.history[0].0 = c0.id.clone();
    let mut c1 = c0.clone();
    c1.id = format!("sha256:c1{}", "c".repeat(62));
    c1.history[0].0 = c1.id.clone();
    for image in [&a, &b, &c0, &c1] {
        fake.image(image).await;
    }
    fake.list(&[&a, &b, &c0, &c1]).await;
    fake
}

/// `expected`: (image ID char, layer index, requested ID char) or the error.
#[track_caller]
fn check(
    got: Result<docker_driver::ResolvedLayer, DriverError>,
    expected: Result<(char, usize, Option<char>), &str>,
) {
    let got = got
        .map(|r| {
            (
                r.image.id.clone(),
                r.layer_index,
                r.requested_id.clone(),
                r.diff_id().to_owned(),
            )
        })
        .map_err(|e| e.to_string());
    let expected = expected
        .map(|(id, index, requested)| {
            (
                digest(id),
                index,
                requested.map(digest),
                // Layer digests in these fakes: b has 1 2.
                [digest('1'), digest('2')][index].clone(),
            )
        })
        .map_err(str::to_owned);
    assert_eq!(got, expected);
}

#[tokio::test]
async fn resolves_names_ids_and_diff_ids() {
    let fake = daemon().await;
    let driver = fake.driver().await;
    let b = digest('b');
    let b_hex = &b["sha256:".len()..];
    check(
        driver.resolve("app:1", LayerSelector::Top).await,
        Ok(('b', 1, None)),
    );
    check(
        driver.resolve("app:1", LayerSelector::Index(0)).await,
        Ok(('b', 0, None)),
    );
    check(
        driver
            .resolve("app:1", LayerSelector::DiffId(digest('2')))
            .await,
        Ok(('b', 1, None)),
    );
    check(
        driver.resolve(&b, LayerSelector::Top).await,
        Ok(('b', 1, Some('b'))),
    );
    check(
        driver.resolve(b_hex, LayerSelector::Top).await,
        Ok(('b', 1, Some('b'))),
    );
    check(
        driver.resolve("bbbb", LayerSelector::Top).await,
        Ok(('b', 1, Some('b'))),
    );
    check(
        driver.resolve("sha256:bbb", LayerSelector::Top).await,
        Ok(('b', 1, Some('b'))),
    );
    // An intermediate image from `docker history`.
    check(
        driver.resolve("aaaaaaaaaaaa", LayerSelector::Top).await,
        Ok(('a', 0, Some('a'))),
    );
    // A diff ID: the tagged image holding it.
    check(
        driver.resolve(&digest('2'), LayerSelector::Top).await,
        Ok(('b', 1, None)),
    );
    check(
        driver.resolve(&digest('1'), LayerSelector::Top).await,
        Ok(('b', 0, None)),
    );
}

#[tokio::test]
async fn resolution_errors() {
    let fake = daemon().await;
    fake.error("GET", "/images/nope:1/json", 404, "No such image: nope:1")
        .await;
    fake.error("GET", "/images/dddd/json", 404, "No such image: dddd")
        .await;
    let driver = fake.driver().await;
    let c0 = format!("sha256:c0{}", "c".repeat(62));
    let c1 = format!("sha256:c1{}", "c".repeat(62));
    check(
        driver.resolve("c", LayerSelector::Top).await,
        Err(&format!(
            "image id prefix c is ambiguous: it matches {c0}, {c1}"
        )),
    );
    match driver.resolve("sha256:c", LayerSelector::Top).await {
        Err(DriverError::AmbiguousId { prefix, candidates }) => {
            assert_eq!(prefix, "sha256:c");
            assert_eq!(candidates, [c0, c1]);
        }
        other => panic!("{other:?}"),
    }
    check(
        driver.resolve("dddd", LayerSelector::Top).await,
        Err("no such image: dddd"),
    );
    check(
        driver.resolve("nope:1", LayerSelector::Top).await,
        Err("no such image: nope:1"),
    );
    check(
        driver.resolve("app:1", LayerSelector::Index(2)).await,
        Err("app:1 has no layer 2: its 2 layers are numbered 0 (the base) to 1"),
    );
    check(
        driver
            .resolve("app:1", LayerSelector::DiffId(digest('9')))
            .await,
        Err(&format!(
            "image {} has no layer {}",
            digest('b'),
            digest('9')
        )),
    );
    // A full digest that is neither an image nor a layer.
    fake.error(
        "GET",
        &format!("/images/{}/json", digest('9')),
        404,
        "No such image",
    )
    .await;
    check(
        driver.resolve(&digest('9'), LayerSelector::Top).await,
        Err(&format!("no such image: {}", digest('9'))),
    );
}
