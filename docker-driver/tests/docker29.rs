//! `BollardDriver` against daemons answering as Docker 29 does (API 1.52,
//! minimum 1.44; inspect without `GraphDriver` on the containerd store and
//! without `Parent`, `Comment`, `DockerVersion` and `Author` when empty),
//! and as Docker 20.10 and Podman 4.3 do (API 1.41).
//!
//! The fake daemon refuses API versions outside its range with the 400 the
//! daemon sends (moby `daemon/server/middleware/version.go`), so a driver
//! that pins a version the daemon does not speak fails these tests. The
//! bodies follow moby's `api/swagger.yaml` and `api/types` at
//! `docker-v29.0.0` and what the image routes add for older API versions
//! (`daemon/server/router/image/image_routes.go`).

#![recursion_limit = "256"]

use std::collections::HashMap;
use std::sync::Arc;

use docker_driver::{BollardDriver, DockerDriver, DriverError, ImageStore, LayerSelector};
use serde_json::{Value, json};
use wiremock::matchers::any;
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

/// `sha256:` and 64 times `c`.
fn digest(c: char) -> String {
    format!("sha256:{}", c.to_string().repeat(64))
}

type Api = (u32, u32);

fn api(text: &str) -> Option<Api> {
    let (major, minor) = text.split_once('.')?;
    Some((major.parse().ok()?, minor.parse().ok()?))
}

/// A daemon speaking the API versions `oldest..=newest`.
#[derive(Clone)]
struct Daemon {
    newest: Api,
    oldest: Api,
    version: Value,
    info: Value,
    /// Unversioned path (`/images/x/json`) to answer body.
    routes: Arc<HashMap<String, Value>>,
}

impl Respond for Daemon {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let path = request.url.path();
        let (asked, rest) = match path
            .strip_prefix("/v")
            .and_then(|r| r.split_once('/'))
            .and_then(|(v, rest)| Some((api(v)?, rest)))
        {
            Some((v, rest)) => (Some(v), format!("/{rest}")),
            None => (None, path.to_owned()),
        };
        let show = |(a, b): Api| format!("{a}.{b}");
        let answer = |status: u16| {
            ResponseTemplate::new(status).insert_header("Api-Version", show(self.newest).as_str())
        };
        if let Some(v) = asked {
            if v < self.oldest {
                return answer(400).set_body_json(json!({"message": format!(
                    "client version {} is too old. Minimum supported API version is {}, please upgrade your client to a newer version",
                    show(v), show(self.oldest))}));
            }
            if v > self.newest {
                return answer(400).set_body_json(json!({"message": format!(
                    "client version {} is too new. Maximum supported API version is {}",
                    show(v), show(self.newest))}));
            }
        }
        match rest.as_str() {
            "/_ping" => answer(200).set_body_string("OK"),
            "/version" => answer(200).set_body_json(&self.version),
            "/info" => answer(200).set_body_json(&self.info),
            other => match self.routes.get(other) {
                Some(body) => answer(200).set_body_json(body),
                None => {
                    answer(404).set_body_json(json!({"message": format!("No such image: {other}")}))
                }
            },
        }
    }
}

impl Daemon {
    async fn serve(self) -> MockServer {
        let server = MockServer::start().await;
        Mock::given(any()).respond_with(self).mount(&server).await;
        server
    }
}

async fn connect(server: &MockServer) -> BollardDriver {
    BollardDriver::connect_with(&format!("tcp://{}", server.address()))
        .await
        .unwrap()
}

/// Every versioned request was made at `/v{version}`, and some were.
async fn all_at(server: &MockServer, version: &str) {
    let requests = server.received_requests().await.unwrap();
    let versioned: Vec<&str> = requests
        .iter()
        .map(|r| r.url.path())
        .filter(|p| p.starts_with("/v1."))
        .collect();
    assert!(!versioned.is_empty());
    let prefix = format!("/v{version}/");
    assert!(
        versioned.iter().all(|p| p.starts_with(&prefix)),
        "{versioned:?}"
    );
}

fn docker29_version() -> Value {
    json!({
        "Platform": {"Name": "Docker Engine - Community"},
        "Components": [
            {"Name": "Engine", "Version": "29.0.0", "Details": {
                "ApiVersion": "1.52", "Arch": "amd64", "BuildTime": "2025-11-10T17:01:17.000000000+00:00",
                "Experimental": "false", "GitCommit": "d105562", "GoVersion": "go1.25.4",
                "KernelVersion": "6.8.0-87-generic", "MinAPIVersion": "1.44", "Os": "linux"}},
            {"Name": "containerd", "Version": "v2.1.5", "Details": {"GitCommit": "fcd43222d6b07379a4be9786bda52438f0dd16a1"}},
            {"Name": "runc", "Version": "1.3.3", "Details": {"GitCommit": "v1.3.3-0-gd842d771"}},
            {"Name": "docker-init", "Version": "0.19.0", "Details": {"GitCommit": "de40ad0"}}
        ],
        "Version": "29.0.0",
        "ApiVersion": "1.52",
        "MinAPIVersion": "1.44",
        "GitCommit": "d105562",
        "GoVersion": "go1.25.4",
        "Os": "linux",
        "Arch": "amd64",
        "KernelVersion": "6.8.0-87-generic",
        "BuildTime": "2025-11-10T17:01:17.000000000+00:00"
    })
}

/// `/info` of Docker 29; `containerd`: the containerd image store (the
/// default for new installs), else overlay2.
fn docker29_info(containerd: bool) -> Value {
    let (driver, status) = if containerd {
        (
            "overlayfs",
            json!([["driver-type", "io.containerd.snapshotter.v1"]]),
        )
    } else {
        (
            "overlay2",
            json!([
                ["Backing Filesystem", "extfs"],
                ["Supports d_type", "true"],
                ["Using metacopy", "false"],
                ["Native Overlay Diff", "true"],
                ["userxattr", "false"]
            ]),
        )
    };
    json!({
        "ID": "2b9f2c1e-0c1a-4c8e-9d0b-5a6f7e8d9c0b",
        "Containers": 0, "ContainersRunning": 0, "ContainersPaused": 0, "ContainersStopped": 0,
        "Images": 2,
        "Driver": driver,
        "DriverStatus": status,
        "Plugins": {"Volume": ["local"], "Network": ["bridge", "host", "ipvlan", "macvlan", "null", "overlay"],
                    "Authorization": null, "Log": ["awslogs", "fluentd", "json-file", "local", "syslog"]},
        "MemoryLimit": true, "SwapLimit": true, "CpuCfsPeriod": true, "CpuCfsQuota": true,
        "CPUShares": true, "CPUSet": true, "PidsLimit": true, "IPv4Forwarding": true, "Debug": false,
        "NFd": 24, "OomKillDisable": false, "NGoroutines": 44, "SystemTime": "2025-11-12T10:00:00.000000000Z",
        "LoggingDriver": "json-file", "CgroupDriver": "systemd", "CgroupVersion": "2",
        "NEventsListener": 0, "KernelVersion": "6.8.0-87-generic", "OperatingSystem": "Ubuntu 24.04.3 LTS",
        "OSVersion": "24.04", "OSType": "linux", "Architecture": "x86_64",
        "IndexServerAddress": "https://index.docker.io/v1/",
        "RegistryConfig": {"IndexConfigs": {"docker.io": {"Mirrors": [], "Name": "docker.io", "Official": true, "Secure": true}},
                           "InsecureRegistryCIDRs": ["::1/128", "127.0.0.0/8"], "Mirrors": null},
        "NCPU": 2, "MemTotal": 8_000_000_000_i64, "GenericResources": null, "DockerRootDir": "/var/lib/docker",
        "HttpProxy": "", "HttpsProxy": "", "NoProxy": "", "Name": "host", "Labels": [],
        "ExperimentalBuild": false, "ServerVersion": "29.0.0",
        "Runtimes": {"io.containerd.runc.v2": {"path": "runc", "status": {"org.opencontainers.runtime-spec.features": "{}"}},
                     "runc": {"path": "runc", "status": {"org.opencontainers.runtime-spec.features": "{}"}}},
        "DefaultRuntime": "runc",
        "Swarm": {"NodeID": "", "NodeAddr": "", "LocalNodeState": "inactive", "ControlAvailable": false,
                  "Error": "", "RemoteManagers": null},
        "LiveRestoreEnabled": false, "Isolation": "", "InitBinary": "docker-init",
        "ContainerdCommit": {"ID": "fcd43222d6b07379a4be9786bda52438f0dd16a1"},
        "RuncCommit": {"ID": "v1.3.3-0-gd842d771"}, "InitCommit": {"ID": "de40ad0"},
        "SecurityOptions": ["name=apparmor", "name=seccomp,profile=builtin", "name=cgroupns"],
        "FirewallBackend": {"Driver": "iptables"},
        "CDISpecDirs": ["/etc/cdi", "/var/run/cdi"],
        "Containerd": {"Address": "/run/containerd/containerd.sock",
                       "Namespaces": {"Containers": "moby", "Plugins": "plugins.moby"}},
        "Warnings": null
    })
}

/// The image config part of an inspect at 1.52 (unset fields omitted).
fn config_1_52() -> Value {
    json!({"Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"], "Cmd": ["sh"]})
}

/// Docker 29, containerd store: `app:1` built with BuildKit on a pulled
/// base. The image ID is the index digest (`i`); history rows other than
/// the top one are `<missing>`.
fn docker29_containerd() -> Daemon {
    let id = digest('i');
    let layers = [digest('1'), digest('2')];
    // 1.52: no Parent, Comment, DockerVersion, Author (empty), no
    // GraphDriver (snapshotter), no Container/ContainerConfig (gone since
    // 1.45), no VirtualSize (gone since 1.44); Descriptor since 1.48.
    let inspect = json!({
        "Id": id,
        "RepoTags": ["app:1"],
        "RepoDigests": [],
        "Created": "2025-11-12T10:00:00.123456789Z",
        "Config": config_1_52(),
        "Architecture": "amd64",
        "Os": "linux",
        "Size": 8_712_192,
        "RootFS": {"Type": "layers", "Layers": layers},
        "Metadata": {"LastTagTime": "2025-11-12T10:00:01.000000000Z"},
        "Descriptor": {"mediaType": "application/vnd.oci.image.index.v1+json", "digest": id, "size": 856}
    });
    let history = json!([
        {"Comment": "buildkit.dockerfile.v0", "Created": 1_762_941_600, "CreatedBy": "CMD [\"sh\"]",
         "Id": id, "Size": 0, "Tags": ["app:1"]},
        {"Comment": "buildkit.dockerfile.v0", "Created": 1_762_941_600, "CreatedBy": "RUN /bin/sh -c echo hi > /x # buildkit",
         "Id": "<missing>", "Size": 4096, "Tags": null},
        {"Comment": "", "Created": 1_760_000_000, "CreatedBy": "ADD alpine-minirootfs-3.22.2-x86_64.tar.gz / # buildkit",
         "Id": "<missing>", "Size": 8_708_096, "Tags": null}
    ]);
    // A pulled base, listed too: one layer, Manifests answered although
    // not asked for (a daemon may add fields; they must be ignored).
    let base = digest('b');
    let base_inspect = json!({
        "Id": base,
        "RepoTags": ["alpine:3.22"],
        "RepoDigests": [format!("alpine@{base}")],
        "Created": "2025-10-08T11:04:00Z",
        "Config": {"Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"], "Cmd": ["/bin/sh"]},
        "Architecture": "amd64",
        "Os": "linux",
        "Size": 8_708_096,
        "RootFS": {"Type": "layers", "Layers": [layers[0]]},
        "Metadata": {"LastTagTime": "0001-01-01T00:00:00Z"},
        "Descriptor": {"mediaType": "application/vnd.oci.image.index.v1+json", "digest": base, "size": 9218},
        "Manifests": [{
            "ID": digest('m'),
            "Descriptor": {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": digest('m'),
                           "size": 1022, "platform": {"architecture": "amd64", "os": "linux"}},
            "Available": true,
            "Size": {"Total": 8_709_118, "Content": 3_802_452},
            "Kind": "image",
            "ImageData": {"Platform": {"architecture": "amd64", "os": "linux"}, "Containers": [],
                          "Size": {"Unpacked": 8_708_096}}
        }]
    });
    let base_history = json!([
        {"Comment": "", "Created": 1_760_000_001, "CreatedBy": "CMD [\"/bin/sh\"]",
         "Id": base, "Size": 0, "Tags": ["alpine:3.22"]},
        {"Comment": "", "Created": 1_760_000_000, "CreatedBy": "ADD alpine-minirootfs-3.22.2-x86_64.tar.gz / # buildkit",
         "Id": "<missing>", "Size": 8_708_096, "Tags": null}
    ]);
    let list = json!([
        {"Containers": 0, "Created": 1_762_941_600, "Id": id, "Labels": null, "ParentId": "",
         "Descriptor": {"mediaType": "application/vnd.oci.image.index.v1+json", "digest": id, "size": 856},
         "RepoDigests": [], "RepoTags": ["app:1"], "SharedSize": -1, "Size": 8_712_192},
        {"Containers": 0, "Created": 1_760_000_001, "Id": base, "Labels": {}, "ParentId": "",
         "Descriptor": {"mediaType": "application/vnd.oci.image.index.v1+json", "digest": base, "size": 9218},
         "RepoDigests": [format!("alpine@{base}")], "RepoTags": ["alpine:3.22"], "SharedSize": -1, "Size": 8_708_096}
    ]);
    let mut routes = HashMap::new();
    for name in [id.as_str(), "app:1"] {
        routes.insert(format!("/images/{name}/json"), inspect.clone());
    }
    for name in [base.as_str(), "alpine:3.22"] {
        routes.insert(format!("/images/{name}/json"), base_inspect.clone());
    }
    routes.insert(format!("/images/{id}/history"), history);
    routes.insert(format!("/images/{base}/history"), base_history);
    routes.insert("/images/json".into(), list);
    Daemon {
        newest: (1, 52),
        oldest: (1, 44),
        version: docker29_version(),
        info: docker29_info(true),
        routes: Arc::new(routes),
    }
}

#[tokio::test]
async fn the_fake_refuses_what_docker_29_refuses() {
    // The guard the other tests rely on: a request under /v1.44 or over
    // /v1.52 gets Docker 29's 400.
    let server = docker29_containerd().serve().await;
    for (version, message) in [
        (
            "1.41",
            "client version 1.41 is too old. Minimum supported API version is 1.44, please upgrade your client to a newer version",
        ),
        (
            "1.53",
            "client version 1.53 is too new. Maximum supported API version is 1.52",
        ),
    ] {
        let url = format!("{}/v{version}/info", server.uri());
        let (status, body) = raw_get(&url).await;
        assert_eq!(status, 400, "{url}");
        assert_eq!(body["message"], message);
    }
    let (status, _) = raw_get(&format!("{}/v1.44/info", server.uri())).await;
    assert_eq!(status, 200);
}

/// A plain HTTP/1.1 GET: status and JSON body.
async fn raw_get(url: &str) -> (u16, Value) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let url = url.strip_prefix("http://").unwrap();
    let (authority, path) = url.split_at(url.find('/').unwrap());
    let mut stream = tokio::net::TcpStream::connect(authority).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await.unwrap();
    let answer = String::from_utf8(answer).unwrap();
    let status = answer[9..12].parse().unwrap();
    let body = answer.split_once("\r\n\r\n").unwrap().1;
    (status, serde_json::from_str(body).unwrap_or(Value::Null))
}

#[tokio::test]
async fn docker_29_containerd_store() {
    let server = docker29_containerd().serve().await;
    let driver = connect(&server).await;
    assert_eq!(driver.api_version(), "1.52");

    let info = driver.info().await.unwrap();
    assert_eq!(info.server_version, "29.0.0");
    assert_eq!(info.api_version, "1.52");
    assert_eq!(info.image_store, ImageStore::Containerd);
    assert_eq!(info.root_dir.as_deref(), Some("/var/lib/docker".as_ref()));
    assert_eq!((info.os.as_str(), info.arch.as_str()), ("linux", "amd64"));
    assert!(!info.podman);

    let image = driver.inspect_image("app:1").await.unwrap();
    assert_eq!(image.id, digest('i'));
    assert_eq!(image.parent, None);
    assert_eq!(image.repo_tags, ["app:1"]);
    assert!(image.repo_digests.is_empty());
    assert_eq!(
        image.created.as_deref(),
        Some("2025-11-12T10:00:00.123456789Z")
    );
    assert_eq!(image.diff_ids, [digest('1'), digest('2')]);
    let rows: Vec<_> = image
        .history
        .iter()
        .map(|r| {
            (
                r.id.clone(),
                r.layer_index,
                r.empty_layer,
                r.comment.as_str(),
            )
        })
        .collect();
    assert_eq!(
        rows,
        [
            (None, Some(0), false, ""),
            (None, Some(1), false, "buildkit.dockerfile.v0"),
            (Some(digest('i')), None, true, "buildkit.dockerfile.v0"),
        ]
    );

    let top = driver.resolve("app:1", LayerSelector::Top).await.unwrap();
    assert_eq!((top.layer_index, top.diff_id()), (1, digest('2').as_str()));
    // A diff ID: the tagged image with the fewest layers holding it.
    let base = driver
        .resolve(&digest('1'), LayerSelector::Top)
        .await
        .unwrap();
    assert_eq!(
        (base.image.id.as_str(), base.layer_index, base.requested_id),
        (digest('b').as_str(), 0, None)
    );
    assert_eq!(
        driver.image_diff_ids("alpine:3.22").await.unwrap(),
        (digest('b'), vec![digest('1')])
    );
    let listed = driver.list_images().await.unwrap();
    assert_eq!(listed.len(), 2);
    assert!(listed.iter().all(|i| i.parent_id.is_none()));

    assert!(matches!(
        driver.inspect_image("nope:1").await,
        Err(DriverError::NoSuchImage { reference }) if reference == "nope:1"
    ));
    all_at(&server, "1.52").await;
}

/// Docker 29 on the classic store (overlay2): `app:1` built with the
/// legacy builder has a `Parent` (an intermediate image) and a
/// `DockerVersion`; the pulled base has neither, so 1.52 leaves them out.
fn docker29_classic() -> Daemon {
    let (base, mid, app) = (digest('b'), digest('c'), digest('a'));
    let graph_driver = |dir: &str| {
        json!({"Name": "overlay2", "Data": {
            "LowerDir": "/var/lib/docker/overlay2/l1/diff",
            "MergedDir": format!("/var/lib/docker/overlay2/{dir}/merged"),
            "UpperDir": format!("/var/lib/docker/overlay2/{dir}/diff"),
            "WorkDir": format!("/var/lib/docker/overlay2/{dir}/work")}})
    };
    let inspect = |id: &str, tags: Value, parent: Option<&str>, layers: &[String]| {
        let mut v = json!({
            "Id": id, "RepoTags": tags, "RepoDigests": [], "Created": "2025-11-12T10:00:00Z",
            "Config": config_1_52(), "Architecture": "amd64", "Os": "linux", "Size": 8_712_192,
            "GraphDriver": graph_driver(&id[7..19]),
            "RootFS": {"Type": "layers", "Layers": layers},
            "Metadata": {"LastTagTime": "0001-01-01T00:00:00Z"}
        });
        if let Some(parent) = parent {
            v["Parent"] = json!(parent);
            v["DockerVersion"] = json!("29.0.0");
        }
        v
    };
    let layers = [digest('1'), digest('2')];
    let mut routes = HashMap::new();
    let base_inspect = inspect(&base, json!(["alpine:3.22"]), None, &layers[..1]);
    let mid_inspect = inspect(&mid, json!([]), Some(&base), &layers);
    let app_inspect = inspect(&app, json!(["app:1"]), Some(&mid), &layers);
    for (names, body) in [
        (vec![base.as_str(), "alpine:3.22"], &base_inspect),
        (vec![mid.as_str()], &mid_inspect),
        (vec![app.as_str(), "app:1"], &app_inspect),
    ] {
        for name in names {
            routes.insert(format!("/images/{name}/json"), body.clone());
        }
    }
    let row = |id: &str, created_by: &str, size: i64, tags: Value| {
        json!({"Comment": "", "Created": 1_762_941_600, "CreatedBy": created_by, "Id": id,
               "Size": size, "Tags": tags})
    };
    let base_rows = [
        row(
            &base,
            "/bin/sh -c #(nop)  CMD [\"/bin/sh\"]",
            0,
            json!(["alpine:3.22"]),
        ),
        row(
            "<missing>",
            "/bin/sh -c #(nop) ADD file:5e9a7f0e in / ",
            8_708_096,
            json!(null),
        ),
    ];
    let mut mid_rows = vec![row(&mid, "/bin/sh -c echo hi > /x", 4096, json!(null))];
    mid_rows.extend(base_rows.iter().cloned());
    let mut app_rows = vec![row(
        &app,
        "/bin/sh -c #(nop)  CMD [\"sh\"]",
        0,
        json!(["app:1"]),
    )];
    app_rows.extend(mid_rows.iter().cloned());
    routes.insert(format!("/images/{base}/history"), json!(base_rows));
    routes.insert(format!("/images/{mid}/history"), json!(mid_rows));
    routes.insert(format!("/images/{app}/history"), json!(app_rows));
    let summary = |id: &str, parent: &str, tags: Value| {
        json!({"Containers": 0, "Created": 1_762_941_600, "Id": id, "Labels": null, "ParentId": parent,
               "RepoDigests": [], "RepoTags": tags, "SharedSize": -1, "Size": 8_712_192})
    };
    routes.insert(
        "/images/json".into(),
        json!([
            summary(&app, &mid, json!(["app:1"])),
            summary(&mid, &base, json!([])),
            summary(&base, "", json!(["alpine:3.22"])),
        ]),
    );
    Daemon {
        newest: (1, 52),
        oldest: (1, 44),
        version: docker29_version(),
        info: docker29_info(false),
        routes: Arc::new(routes),
    }
}

#[tokio::test]
async fn docker_29_classic_store() {
    let server = docker29_classic().serve().await;
    let driver = connect(&server).await;
    assert_eq!(driver.api_version(), "1.52");
    let info = driver.info().await.unwrap();
    assert_eq!(
        info.image_store,
        ImageStore::Classic {
            driver: "overlay2".into()
        }
    );

    let app = driver.inspect_image("app:1").await.unwrap();
    assert_eq!(app.parent, Some(digest('c')));
    let base = driver.inspect_image("alpine:3.22").await.unwrap();
    assert_eq!(base.parent, None);
    assert_eq!(base.diff_ids, [digest('1')]);

    // The intermediate image of `docker history`, by a short ID.
    let mid = driver
        .resolve("cccccccccccc", LayerSelector::Top)
        .await
        .unwrap();
    assert_eq!(mid.requested_id, Some(digest('c')));
    assert_eq!((mid.layer_index, mid.diff_id()), (1, digest('2').as_str()));
    let rows: Vec<_> = app
        .history
        .iter()
        .map(|r| (r.id.clone(), r.layer_index))
        .collect();
    assert_eq!(
        rows,
        [
            (None, Some(0)),
            (Some(digest('b')), None),
            (Some(digest('c')), Some(1)),
            (Some(digest('a')), None),
        ]
    );
    let listed = driver.list_images().await.unwrap();
    assert_eq!(listed[0].parent_id, Some(digest('c')));
    all_at(&server, "1.52").await;
}

#[tokio::test]
async fn a_daemon_whose_minimum_is_above_ours_gets_its_minimum() {
    // Newer than the bollard this is built with (1.53), refusing it: the
    // driver pins the daemon's minimum rather than a version it refuses.
    let mut daemon = docker29_containerd();
    daemon.newest = (1, 60);
    daemon.oldest = (1, 55);
    daemon.version["ApiVersion"] = json!("1.60");
    daemon.version["MinAPIVersion"] = json!("1.55");
    let server = daemon.serve().await;
    let driver = connect(&server).await;
    assert_eq!(driver.api_version(), "1.55");
    let info = driver.info().await.unwrap();
    assert_eq!(info.api_version, "1.60");
    let (id, _) = driver.image_diff_ids("app:1").await.unwrap();
    assert_eq!(id, digest('i'));
    all_at(&server, "1.55").await;
}

/// Docker 20.10 (API 1.41, minimum 1.12) on overlay2: every inspect field
/// present, empty ones as `""`, `Container`/`ContainerConfig`/
/// `VirtualSize` still there, untagged images listed as `<none>:<none>`.
fn docker20_10() -> Daemon {
    let (base, app) = (digest('b'), digest('a'));
    let inspect = |id: &str, tags: Value, parent: &str, layers: &[String]| {
        json!({
            "Id": id, "RepoTags": tags, "RepoDigests": [], "Parent": parent, "Comment": "",
            "Created": "2025-11-12T10:00:00.000000000Z", "Container": "",
            "ContainerConfig": {"Hostname": "", "Domainname": "", "User": "", "AttachStdin": false,
                                "Env": null, "Cmd": null, "Image": "", "Volumes": null, "WorkingDir": "",
                                "Entrypoint": null, "OnBuild": null, "Labels": null},
            "DockerVersion": "20.10.24", "Author": "",
            "Config": {"Hostname": "", "User": "", "Env": ["PATH=/bin"], "Cmd": ["sh"], "Image": parent,
                       "Volumes": null, "WorkingDir": "", "Entrypoint": null, "OnBuild": null, "Labels": null},
            "Architecture": "amd64", "Os": "linux", "Size": 8_712_192, "VirtualSize": 8_712_192,
            "GraphDriver": {"Data": {"MergedDir": "/var/lib/docker/overlay2/x/merged"}, "Name": "overlay2"},
            "RootFS": {"Type": "layers", "Layers": layers},
            "Metadata": {"LastTagTime": "0001-01-01T00:00:00Z"}
        })
    };
    let layers = [digest('1'), digest('2')];
    let mut routes = HashMap::new();
    let base_inspect = inspect(&base, json!(["alpine:3.22"]), "", &layers[..1]);
    let app_inspect = inspect(&app, json!(["app:1"]), &base, &layers);
    for name in [base.as_str(), "alpine:3.22"] {
        routes.insert(format!("/images/{name}/json"), base_inspect.clone());
    }
    for name in [app.as_str(), "app:1"] {
        routes.insert(format!("/images/{name}/json"), app_inspect.clone());
    }
    routes.insert(
        format!("/images/{base}/history"),
        json!([
            {"Id": base, "Created": 1_760_000_000, "CreatedBy": "/bin/sh -c #(nop)  CMD [\"/bin/sh\"]",
             "Tags": ["alpine:3.22"], "Size": 0, "Comment": ""},
            {"Id": "<missing>", "Created": 1_760_000_000, "CreatedBy": "/bin/sh -c #(nop) ADD file:5e9a7f0e in / ",
             "Tags": null, "Size": 8_708_096, "Comment": ""}
        ]),
    );
    routes.insert(
        format!("/images/{app}/history"),
        json!([
            {"Id": app, "Created": 1_762_941_600, "CreatedBy": "/bin/sh -c echo hi > /x",
             "Tags": ["app:1"], "Size": 4096, "Comment": ""},
            {"Id": base, "Created": 1_760_000_000, "CreatedBy": "/bin/sh -c #(nop)  CMD [\"/bin/sh\"]",
             "Tags": ["alpine:3.22"], "Size": 0, "Comment": ""},
            {"Id": "<missing>", "Created": 1_760_000_000, "CreatedBy": "/bin/sh -c #(nop) ADD file:5e9a7f0e in / ",
             "Tags": null, "Size": 8_708_096, "Comment": ""}
        ]),
    );
    routes.insert(
        "/images/json".into(),
        json!([
            {"Containers": -1, "Created": 1_762_941_600, "Id": app, "Labels": null, "ParentId": base,
             "RepoDigests": null, "RepoTags": ["app:1"], "SharedSize": -1, "Size": 8_712_192,
             "VirtualSize": 8_712_192},
            {"Containers": -1, "Created": 1_760_000_000, "Id": digest('d'), "Labels": null, "ParentId": "",
             "RepoDigests": ["<none>@<none>"], "RepoTags": ["<none>:<none>"], "SharedSize": -1, "Size": 1,
             "VirtualSize": 1},
            {"Containers": -1, "Created": 1_760_000_000, "Id": base, "Labels": null, "ParentId": "",
             "RepoDigests": [], "RepoTags": ["alpine:3.22"], "SharedSize": -1, "Size": 8_708_096,
             "VirtualSize": 8_708_096}
        ]),
    );
    Daemon {
        newest: (1, 41),
        oldest: (1, 12),
        version: json!({
            "Platform": {"Name": "Docker Engine - Community"},
            "Components": [{"Name": "Engine", "Version": "20.10.24", "Details": {
                "ApiVersion": "1.41", "Arch": "amd64", "MinAPIVersion": "1.12", "Os": "linux"}}],
            "Version": "20.10.24", "ApiVersion": "1.41", "MinAPIVersion": "1.12", "GitCommit": "5d6db84",
            "GoVersion": "go1.19.7", "Os": "linux", "Arch": "amd64", "KernelVersion": "5.10.0-23-amd64",
            "BuildTime": "2023-04-04T10:00:00.000000000+00:00"
        }),
        info: json!({
            "ID": "ABCD:EFGH", "Containers": 0, "Images": 3, "Driver": "overlay2",
            "DriverStatus": [["Backing Filesystem", "extfs"], ["Supports d_type", "true"],
                             ["Native Overlay Diff", "true"], ["userxattr", "false"]],
            "Plugins": {"Volume": ["local"], "Network": ["bridge"], "Authorization": null, "Log": ["json-file"]},
            "MemoryLimit": true, "SwapLimit": false, "KernelMemory": true, "KernelMemoryTCP": true,
            "CgroupDriver": "cgroupfs", "CgroupVersion": "1", "OSType": "linux", "Architecture": "x86_64",
            "DockerRootDir": "/var/lib/docker", "ServerVersion": "20.10.24", "Isolation": "",
            "Swarm": {"NodeID": "", "NodeAddr": "", "LocalNodeState": "inactive", "ControlAvailable": false,
                      "Error": "", "RemoteManagers": null},
            "ContainerdCommit": {"ID": "", "Expected": ""}, "RuncCommit": {"ID": "", "Expected": ""},
            "InitCommit": {"ID": "", "Expected": ""}, "Warnings": null
        }),
        routes: Arc::new(routes),
    }
}

#[tokio::test]
async fn docker_20_10_still_works() {
    let server = docker20_10().serve().await;
    let driver = connect(&server).await;
    assert_eq!(driver.api_version(), "1.41");
    let info = driver.info().await.unwrap();
    assert_eq!(info.server_version, "20.10.24");
    assert_eq!(
        info.image_store,
        ImageStore::Classic {
            driver: "overlay2".into()
        }
    );
    let app = driver.inspect_image("app:1").await.unwrap();
    assert_eq!(app.parent, Some(digest('b')));
    let base = driver.inspect_image("alpine:3.22").await.unwrap();
    assert_eq!(base.parent, None);
    let rows: Vec<_> = app
        .history
        .iter()
        .map(|r| (r.id.clone(), r.layer_index))
        .collect();
    assert_eq!(
        rows,
        [
            (None, Some(0)),
            (Some(digest('b')), None),
            (Some(digest('a')), Some(1)),
        ]
    );
    let resolved = driver
        .resolve(&digest('2'), LayerSelector::Top)
        .await
        .unwrap();
    assert_eq!((resolved.image.id, resolved.layer_index), (digest('a'), 1));
    let listed = driver.list_images().await.unwrap();
    assert!(listed[1].repo_tags.is_empty() && listed[1].repo_digests.is_empty());
    all_at(&server, "1.41").await;
}

#[tokio::test]
async fn podman_4_3_still_works() {
    // Podman's compat API: 1.41 (minimum 1.24), its own component name,
    // bare-hex history IDs.
    let mut daemon = docker20_10();
    daemon.oldest = (1, 24);
    daemon.version = json!({
        "Platform": {"Name": "linux/amd64/debian-12"},
        "Components": [{"Name": "Podman Engine", "Version": "4.3.1", "Details": {
            "APIVersion": "4.3.1", "Arch": "amd64", "BuildTime": "1970-01-01T00:00:00Z",
            "Experimental": "false", "GitCommit": "", "GoVersion": "go1.19.8",
            "KernelVersion": "6.1.0-13-amd64", "MinAPIVersion": "4.0.0", "Os": "linux"}}],
        "Version": "4.3.1", "ApiVersion": "1.41", "MinAPIVersion": "1.24", "GitCommit": "",
        "GoVersion": "go1.19.8", "Os": "linux", "Arch": "amd64", "KernelVersion": "6.1.0-13-amd64",
        "BuildTime": "1970-01-01T00:00:00Z"
    });
    daemon.info = json!({
        "ID": "d7c5b2f0-1a2b-4c3d-8e9f-0a1b2c3d4e5f", "Containers": 0, "Images": 2, "Driver": "overlay",
        "DriverStatus": [["Backing Filesystem", "extfs"], ["Native Overlay Diff", "true"],
                         ["Supports d_type", "true"], ["Using metacopy", "false"]],
        "CgroupDriver": "systemd", "CgroupVersion": "2", "OSType": "linux", "Architecture": "amd64",
        "DockerRootDir": "/home/u/.local/share/containers/storage", "ServerVersion": "4.3.1",
        "Swarm": {"NodeID": "", "NodeAddr": "", "LocalNodeState": "inactive", "ControlAvailable": false,
                  "Error": "", "RemoteManagers": null},
        "Warnings": []
    });
    let mut routes = (*daemon.routes).clone();
    let (app, base) = (digest('a'), digest('b'));
    routes.insert(
        format!("/images/{app}/history"),
        json!([
            {"Id": &app[7..], "Created": 1_762_941_600, "CreatedBy": "/bin/sh -c echo hi > /x",
             "Tags": ["localhost/app:1"], "Size": 4096, "Comment": ""},
            {"Id": &base[7..], "Created": 1_760_000_000, "CreatedBy": "/bin/sh -c #(nop)  CMD [\"/bin/sh\"]",
             "Tags": null, "Size": 0, "Comment": ""},
            {"Id": "<missing>", "Created": 1_760_000_000, "CreatedBy": "/bin/sh -c #(nop) ADD file:5e9a7f0e in / ",
             "Tags": null, "Size": 8_708_096, "Comment": ""}
        ]),
    );
    daemon.routes = Arc::new(routes);
    let server = daemon.serve().await;
    let driver = connect(&server).await;
    assert_eq!(driver.api_version(), "1.41");
    let info = driver.info().await.unwrap();
    assert!(info.podman);
    assert_eq!(info.server_version, "4.3.1");
    // `/version` is asked once, when connecting: Podman takes 0.1-0.3 s
    // to answer it.
    let asked = server.received_requests().await.unwrap();
    let versions = asked
        .iter()
        .filter(|r| r.url.path().ends_with("/version"))
        .count();
    assert_eq!(versions, 1, "{asked:?}");
    assert_eq!(
        info.image_store,
        ImageStore::Classic {
            driver: "overlay".into()
        }
    );
    let app_details = driver.inspect_image("app:1").await.unwrap();
    let ids: Vec<_> = app_details.history.iter().map(|r| r.id.clone()).collect();
    assert_eq!(ids, [None, Some(base), Some(app)]);
    all_at(&server, "1.41").await;
}
