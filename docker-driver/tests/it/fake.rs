//! A fake Docker daemon: wiremock speaking the Engine API at one version.

use docker_driver::BollardDriver;
use serde_json::{Value, json};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

pub(crate) const V: &str = "/v1.41";

pub(crate) struct Fake {
    pub(crate) server: MockServer,
}

impl Fake {
    /// A daemon answering `/_ping` with API version 1.41.
    pub(crate) async fn new() -> Fake {
        let server = MockServer::start().await;
        Mock::given(method("GET"))
            .and(path("/_ping"))
            .respond_with(
                ResponseTemplate::new(200)
                    .insert_header("API-Version", "1.41")
                    .set_body_string("OK"),
            )
            .mount(&server)
            .await;
        Fake { server }
    }

    pub(crate) fn host(&self) -> String {
        format!("tcp://{}", self.server.address())
    }

    pub(crate) async fn driver(&self) -> BollardDriver {
        BollardDriver::connect_with(&self.host()).await.unwrap()
    }

    /// `GET /v1.41{p}` answers `body`.
    pub(crate) async fn get(&self, p: &str, body: Value) {
        Mock::given(method("GET"))
            .and(path(format!("{V}{p}")))
            .respond_with(ResponseTemplate::new(200).set_body_json(body))
            .mount(&self.server)
            .await;
    }

    /// `m /v1.41{p}` answers `status` with a Docker error body.
    pub(crate) async fn error(&self, m: &str, p: &str, status: u16, message: &str) {
        Mock::given(method(m))
            .and(path(format!("{V}{p}")))
            .respond_with(
                ResponseTemplate::new(status).set_body_json(json!({ "message": message })),
            )
            .mount(&self.server)
            .await;
    }

    /// A classic daemon (`/info` says overlay2).
    pub(crate) async fn classic(&self) {
        self.get(
            "/info",
            json!({"Driver": "overlay2", "DriverStatus": [["Backing Filesystem", "extfs"]]}),
        )
        .await;
        self.get("/version", version_json()).await;
    }

    /// An image: inspect by ID and by each tag, and its history.
    pub(crate) async fn image(&self, image: &Image) {
        let inspect = json!({
            "Id": image.id,
            "RepoTags": image.tags,
            "RepoDigests": image.digests,
            "Parent": image.parent.clone().unwrap_or_default(),
            "Created": "2024-01-01T00:00:00Z",
            "Os": "linux",
            "Architecture": "amd64",
            "RootFS": {"Type": "layers", "Layers": image.layers},
        });
        let mut names = vec![image.id.clone()];
        names.extend(image.tags.iter().cloned());
        for name in names {
            self.get(&format!("/images/{name}/json"), inspect.clone())
                .await;
        }
        let history: Vec<Value> = image
            .history
            .iter()
            .map(|(id, size, created_by)| {
                json!({"Id": id, "Created": 1_700_000_000, "CreatedBy": created_by,
                       "Tags": null, "Size": size, "Comment": ""})
            })
            .collect();
        self.get(&format!("/images/{}/history", image.id), json!(history))
            .await;
    }

    /// `GET /images/json?all=1` lists these images.
    pub(crate) async fn list(&self, images: &[&Image]) {
        let list: Vec<Value> = images
            .iter()
            .map(|i| {
                json!({"Id": i.id, "ParentId": i.parent.clone().unwrap_or_default(),
                       "RepoTags": if i.tags.is_empty() { json!(["<none>:<none>"]) } else { json!(i.tags) },
                       "RepoDigests": i.digests, "Created": 1, "Size": 1, "SharedSize": -1,
                       "VirtualSize": 1, "Labels": null, "Containers": -1})
            })
            .collect();
        self.get("/images/json", json!(list)).await;
    }

    pub(crate) async fn requests(&self) -> Vec<Request> {
        self.server.received_requests().await.unwrap_or_default()
    }

    /// The requests as `METHOD path?query`, without the version
    /// negotiation (`/_ping`, the unversioned `/version`).
    pub(crate) async fn request_lines(&self) -> Vec<String> {
        self.requests()
            .await
            .iter()
            .filter(|r| r.url.path() != "/_ping" && r.url.path() != "/version")
            .map(|r| match r.url.query() {
                Some(q) => format!("{} {}?{}", r.method, r.url.path(), q),
                None => format!("{} {}", r.method, r.url.path()),
            })
            .collect()
    }
}

pub(crate) fn version_json() -> Value {
    json!({"Version": "20.10.24", "ApiVersion": "1.41", "MinAPIVersion": "1.12",
           "Os": "linux", "Arch": "amd64"})
}

/// A fake image.
#[derive(Clone)]
pub(crate) struct Image {
    pub(crate) id: String,
    pub(crate) tags: Vec<String>,
    pub(crate) digests: Vec<String>,
    pub(crate) parent: Option<String>,
    pub(crate) layers: Vec<String>,
    /// Newest first: (Id, Size, CreatedBy).
    pub(crate) history: Vec<(String, i64, String)>,
}

/// `sha256:` and 64 times `c`.
pub(crate) fn digest(c: char) -> String {
    format!("sha256:{}", c.to_string().repeat(64))
}

impl Image {
    /// An image with `layers` layers of size 1, one history row each.
    pub(crate) fn new(id: char, layers: &[char], tags: &[&str]) -> Image {
        let layers: Vec<String> = layers.iter().map(|c| digest(*c)).collect();
        let mut history: Vec<(String, i64, String)> = layers
            .iter()
            .map(|_| ("<missing>".to_owned(), 1, "/bin/sh -c make".to_owned()))
            .collect();
        history.reverse();
        if let Some(top) = history.first_mut() {
            top.0 = digest(id);
        }
        Image {
            id: digest(id),
            tags: tags.iter().map(|t| t.to_string()).collect(),
            digests: vec![],
            parent: None,
            layers,
            history,
        }
    }
}
