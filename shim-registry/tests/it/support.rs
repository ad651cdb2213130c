//! Spawning registries and speaking to them.

use std::sync::Arc;

use reqwest::{Client, Method, RequestBuilder, Response, StatusCode};
use sha2::Digest as _;
use shim_registry::storage::Storage;
use shim_registry::{ChannelSink, Registry, RegistryEvent, RegistryHandle, TlsConfig};
use tokio::sync::mpsc::UnboundedReceiver;

/// Tests that move tens of MiB or count the process's memory and
/// descriptors (the load tests, the upload-hold tests) run one at a time:
/// they share the machine's cores and the process's counters.
pub(crate) static HEAVY: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

pub(crate) struct Running {
    pub(crate) handle: RegistryHandle,
    pub(crate) base: String,
    pub(crate) client: Client,
    pub(crate) events: UnboundedReceiver<RegistryEvent>,
}

pub(crate) async fn start() -> Running {
    start_with(|b| b).await
}

pub(crate) async fn start_with(
    configure: impl FnOnce(shim_registry::RegistryBuilder) -> shim_registry::RegistryBuilder,
) -> Running {
    let (sink, events) = ChannelSink::new();
    let registry = configure(Registry::builder().event_sink(Arc::new(sink)))
        .build()
        .expect("registry builds");
    let handle = registry
        .spawn("127.0.0.1:0".parse().unwrap())
        .await
        .expect("registry spawns");
    let base = handle.url();
    Running {
        handle,
        base,
        client: client(),
        events,
    }
}

pub(crate) async fn start_on(storage: Arc<dyn Storage>) -> Running {
    start_with(|b| b.storage(storage).tls(TlsConfig::Disabled)).await
}

pub(crate) fn client() -> Client {
    Client::builder()
        .danger_accept_invalid_certs(true)
        .build()
        .expect("client builds")
}

impl Running {
    pub(crate) fn req(&self, method: Method, path: &str) -> RequestBuilder {
        self.client.request(method, format!("{}{path}", self.base))
    }

    pub(crate) fn events(&mut self) -> Vec<RegistryEvent> {
        let mut out = Vec::new();
        while let Ok(e) = self.events.try_recv() {
            out.push(e);
        }
        out
    }

    /// Pushes a blob with POST + PUT (monolithic); returns its digest.
    pub(crate) async fn push_blob(&self, name: &str, data: &[u8]) -> String {
        let digest = sha256(data);
        let loc = self.start_upload(name).await;
        let r = self
            .client
            .put(self.url(&loc, &format!("digest={digest}")))
            .body(data.to_vec())
            .send()
            .await
            .unwrap();
        expect_status(r, StatusCode::CREATED).await;
        digest
    }

    /// POST a session; returns its Location.
    pub(crate) async fn start_upload(&self, name: &str) -> String {
        let r = self
            .req(Method::POST, &format!("/v2/{name}/blobs/uploads/"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::ACCEPTED);
        header(&r, "location")
    }

    /// The URL of a (relative) Location with an extra query.
    pub(crate) fn url(&self, location: &str, query: &str) -> String {
        let sep = if location.contains('?') { '&' } else { '?' };
        let base = if location.starts_with('/') {
            format!("{}{location}", self.base)
        } else {
            location.to_owned()
        };
        if query.is_empty() {
            base
        } else {
            format!("{base}{sep}{query}")
        }
    }

    pub(crate) async fn put_manifest(
        &self,
        name: &str,
        reference: &str,
        media_type: &str,
        body: &[u8],
    ) -> Response {
        self.req(Method::PUT, &format!("/v2/{name}/manifests/{reference}"))
            .header("content-type", media_type)
            .body(body.to_vec())
            .send()
            .await
            .unwrap()
    }
}

pub(crate) fn header(r: &Response, name: &str) -> String {
    r.headers()
        .get(name)
        .unwrap_or_else(|| panic!("no {name} header in {r:?}"))
        .to_str()
        .unwrap()
        .to_owned()
}

pub(crate) fn sha256(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(data)))
}

pub(crate) fn sha512(data: &[u8]) -> String {
    format!("sha512:{}", hex::encode(sha2::Sha512::digest(data)))
}

/// Asserts a spec error: status, JSON body with this code, API version header.
#[track_caller]
pub(crate) fn assert_error(
    status: StatusCode,
    headers: &reqwest::header::HeaderMap,
    body: &str,
    expected: StatusCode,
    code: &str,
) {
    assert_eq!(status, expected, "{body}");
    assert_eq!(
        headers.get("docker-distribution-api-version").unwrap(),
        "registry/2.0"
    );
    let v: serde_json::Value =
        serde_json::from_str(body).unwrap_or_else(|_| panic!("not json: {body}"));
    assert_eq!(v["errors"][0]["code"], code, "{body}");
}

pub(crate) async fn expect_error(r: Response, expected: StatusCode, code: &str) {
    let status = r.status();
    let headers = r.headers().clone();
    let body = r.text().await.unwrap();
    assert_error(status, &headers, &body, expected, code);
}

/// Deterministic pseudo-random bytes.
pub(crate) fn bytes(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// `r`, after checking its status is `want` (else a panic with its body).
pub(crate) async fn expect_status(r: reqwest::Response, want: StatusCode) -> reqwest::Response {
    let status = r.status();
    if status != want {
        panic!(
            "{status}, not {want}: {}",
            r.text().await.unwrap_or_default()
        );
    }
    r
}
