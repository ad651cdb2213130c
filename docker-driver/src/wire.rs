//! The Engine API's JSON, for the answers read without bollard's models:
//! `/version`, `/info`, image inspect (bollard's model has no `Parent`),
//! image history and push progress (bollard's has no layer `id` and no
//! `aux`).
//!
//! Each struct holds only the fields dlgrab reads, and every field but an
//! image's `Id` may be absent or `null`: daemons leave fields out as the API
//! moves on. API 1.45 (Docker 26) dropped `Container` and `ContainerConfig`
//! from image inspect; 1.52 (Docker 29) leaves `Parent`, `Comment`,
//! `DockerVersion` and `Author` out when they are empty, and no longer
//! restores `GraphDriver` on the containerd store; 1.48 added `Descriptor`
//! (and `Manifests` with `?manifests=1`), which are not read. Unknown fields
//! are ignored.

use serde::Deserialize;

use crate::error::DriverError;
use crate::model::PushEvent;

/// `GET /version`, the fields used (also read unversioned, to negotiate).
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct Version {
    /// The engine version, e.g. `29.0.0`.
    #[serde(default, deserialize_with = "null_as_default")]
    pub(crate) version: String,
    /// The newest API version the daemon speaks, e.g. `1.52`.
    #[serde(default, deserialize_with = "null_as_default")]
    pub(crate) api_version: String,
    /// The oldest API version it accepts, e.g. `1.44` (Docker 29); absent
    /// on some daemons.
    #[serde(
        rename = "MinAPIVersion",
        default,
        deserialize_with = "null_as_default"
    )]
    pub(crate) min_api_version: String,
    #[serde(default, deserialize_with = "null_as_default")]
    pub(crate) os: String,
    #[serde(default, deserialize_with = "null_as_default")]
    pub(crate) arch: String,
    #[serde(default, deserialize_with = "null_as_default")]
    pub(crate) components: Vec<Component>,
}

/// One of `/version`'s `Components`.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct Component {
    /// `Engine`, `containerd`, `Podman Engine`, …
    #[serde(default, deserialize_with = "null_as_default")]
    pub(crate) name: String,
}

/// `GET /info`, the fields used.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct Info {
    /// The graph driver (`overlay2`, …) or, on the containerd store, the
    /// snapshotter (`overlayfs`).
    #[serde(default, deserialize_with = "null_as_default")]
    pub(crate) driver: String,
    /// Pairs such as `["driver-type", "io.containerd.snapshotter.v1"]`.
    #[serde(default, deserialize_with = "null_as_default")]
    pub(crate) driver_status: Vec<Vec<String>>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub(crate) docker_root_dir: String,
}

impl Info {
    /// Whether the daemon keeps images in containerd (`DriverStatus` has
    /// `driver-type` `io.containerd.snapshotter.v1`).
    pub(crate) fn containerd_store(&self) -> bool {
        self.driver_status.iter().any(|pair| {
            pair.first().is_some_and(|k| k == "driver-type")
                && pair
                    .get(1)
                    .is_some_and(|v| v == "io.containerd.snapshotter.v1")
        })
    }
}

/// One row of `GET /images/{name}/history` (newest first).
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct HistoryItem {
    /// `sha256:…`, or `<missing>` for a row without an image of its own.
    #[serde(default, deserialize_with = "null_as_default")]
    pub(crate) id: String,
    #[serde(default, deserialize_with = "null_as_default")]
    pub(crate) created: i64,
    #[serde(default, deserialize_with = "null_as_default")]
    pub(crate) created_by: String,
    #[serde(default, deserialize_with = "null_as_default")]
    pub(crate) size: i64,
    #[serde(default, deserialize_with = "null_as_default")]
    pub(crate) comment: String,
}

/// `GET /images/{name}/json`, the fields used.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct Inspect {
    pub(crate) id: String,
    #[serde(default, deserialize_with = "null_as_default")]
    pub(crate) repo_tags: Vec<String>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub(crate) repo_digests: Vec<String>,
    #[serde(default)]
    pub(crate) parent: Option<String>,
    #[serde(default)]
    pub(crate) created: Option<String>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub(crate) os: String,
    #[serde(default, deserialize_with = "null_as_default")]
    pub(crate) architecture: String,
    #[serde(default)]
    pub(crate) variant: Option<String>,
    /// With `manifests=1` (API 1.48+, containerd store): the manifests
    /// of the image's index, each with its platform and whether its
    /// content is local.
    #[serde(default, deserialize_with = "null_as_default")]
    pub(crate) manifests: Vec<ManifestSummary>,
    #[serde(rename = "RootFS", default)]
    pub(crate) root_fs: Option<RootFs>,
}

/// One of `Manifests` in an inspect answer (`manifests=1`).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct ManifestSummary {
    #[serde(default)]
    pub(crate) descriptor: Option<ManifestDescriptor>,
    #[serde(default)]
    pub(crate) available: bool,
    /// `image`, `attestation` or `unknown`.
    #[serde(default, deserialize_with = "null_as_default")]
    pub(crate) kind: String,
}

/// The OCI descriptor of a [`ManifestSummary`].
#[derive(Debug, Deserialize)]
pub(crate) struct ManifestDescriptor {
    #[serde(default)]
    pub(crate) platform: Option<crate::manifest::Platform>,
}

/// `RootFS` of an inspect answer.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct RootFs {
    #[serde(default, deserialize_with = "null_as_default")]
    pub(crate) layers: Vec<String>,
}

impl Inspect {
    pub(crate) fn diff_ids(&self) -> Vec<String> {
        self.root_fs
            .as_ref()
            .map(|r| r.layers.clone())
            .unwrap_or_default()
    }

    pub(crate) fn parent(&self) -> Option<String> {
        self.parent.clone().filter(|p| !p.is_empty())
    }
}

/// One JSON message of a progress stream (push).
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ProgressMessage {
    #[serde(default)]
    pub(crate) id: Option<String>,
    #[serde(default)]
    pub(crate) status: Option<String>,
    #[serde(default)]
    pub(crate) progress_detail: Option<ProgressDetail>,
    #[serde(default)]
    pub(crate) error: Option<String>,
    #[serde(default)]
    pub(crate) error_detail: Option<ErrorDetail>,
    #[serde(default)]
    pub(crate) aux: Option<PushAux>,
}

/// `progressDetail`.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct ProgressDetail {
    #[serde(default)]
    pub(crate) current: Option<u64>,
    #[serde(default)]
    pub(crate) total: Option<u64>,
}

/// `errorDetail`.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct ErrorDetail {
    #[serde(default)]
    pub(crate) message: Option<String>,
}

/// The `aux` object at the end of a push.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct PushAux {
    #[serde(default)]
    pub(crate) tag: Option<String>,
    #[serde(default)]
    pub(crate) digest: Option<String>,
    #[serde(default)]
    pub(crate) size: Option<u64>,
}

impl ProgressMessage {
    /// The error the message reports, if any.
    pub(crate) fn error_message(&self) -> Option<String> {
        self.error_detail
            .as_ref()
            .and_then(|d| d.message.clone())
            .or_else(|| self.error.clone())
    }

    /// The push event this message is; `None` for messages without content.
    pub(crate) fn into_push_event(self, reference: &str) -> Option<Result<PushEvent, DriverError>> {
        if let Some(message) = self.error_message() {
            return Some(Err(DriverError::PushRefused {
                reference: reference.to_owned(),
                message,
            }));
        }
        if let Some(PushAux {
            tag,
            digest: Some(digest),
            size,
        }) = self.aux
        {
            return Some(Ok(PushEvent::Pushed {
                tag: tag.unwrap_or_default(),
                digest,
                size,
            }));
        }
        let status = self.status?;
        Some(Ok(match self.id {
            Some(id) if !id.is_empty() => {
                let detail = self.progress_detail.unwrap_or_default();
                PushEvent::Layer {
                    id,
                    status,
                    current: detail.current,
                    total: detail.total,
                }
            }
            _ => PushEvent::Status(status),
        }))
    }
}

fn null_as_default<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(deserializer)?.unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn check(json: &str, expected: Option<Result<PushEvent, &str>>) {
        let message: ProgressMessage = serde_json::from_str(json).unwrap();
        let got = message
            .into_push_event("r:t")
            .map(|r| r.map_err(|e| e.to_string()));
        let expected = expected.map(|r| r.map_err(str::to_owned));
        assert_eq!(got, expected, "{json}");
    }

    #[test]
    fn push_messages() {
        check(
            r#"{"status":"The push refers to repository [127.0.0.1:5000/x]"}"#,
            Some(Ok(PushEvent::Status(
                "The push refers to repository [127.0.0.1:5000/x]".into(),
            ))),
        );
        check(
            r#"{"status":"Preparing","progressDetail":{},"id":"5f70bf18a086"}"#,
            Some(Ok(PushEvent::Layer {
                id: "5f70bf18a086".into(),
                status: "Preparing".into(),
                current: None,
                total: None,
            })),
        );
        check(
            r#"{"status":"Pushing","progressDetail":{"current":512,"total":1024},"progress":"[==>  ]","id":"ab"}"#,
            Some(Ok(PushEvent::Layer {
                id: "ab".into(),
                status: "Pushing".into(),
                current: Some(512),
                total: Some(1024),
            })),
        );
        check(
            r#"{"progressDetail":{},"aux":{"Tag":"t","Digest":"sha256:00","Size":528}}"#,
            Some(Ok(PushEvent::Pushed {
                tag: "t".into(),
                digest: "sha256:00".into(),
                size: Some(528),
            })),
        );
        check(
            r#"{"errorDetail":{"message":"denied"},"error":"denied"}"#,
            Some(Err("pushing r:t failed: denied")),
        );
        check(
            r#"{"error":"only error"}"#,
            Some(Err("pushing r:t failed: only error")),
        );
        check(r#"{"progressDetail":{}}"#, None);
    }

    #[test]
    fn fields_left_out_are_defaults() {
        // Docker 29 (API 1.52) on the containerd store: no Parent, Comment,
        // DockerVersion, Author, GraphDriver; a Descriptor.
        let inspect: Inspect = serde_json::from_str(
            r#"{"Id":"sha256:aa","RepoTags":["a:1"],"RepoDigests":[],"Os":"linux",
                "Architecture":"amd64","Size":1,"RootFS":{"Type":"layers","Layers":["sha256:01"]},
                "Metadata":{},"Descriptor":{"mediaType":"application/vnd.oci.image.index.v1+json",
                "digest":"sha256:aa","size":856}}"#,
        )
        .unwrap();
        assert_eq!((inspect.parent(), inspect.created.as_deref()), (None, None));
        assert_eq!(inspect.diff_ids(), ["sha256:01"]);
        let inspect: Inspect = serde_json::from_str(r#"{"Id":"sha256:aa"}"#).unwrap();
        assert!(inspect.diff_ids().is_empty() && inspect.os.is_empty());

        let version: Version = serde_json::from_str(r#"{"ApiVersion":"1.41"}"#).unwrap();
        assert_eq!(
            (
                version.api_version.as_str(),
                version.min_api_version.as_str()
            ),
            ("1.41", "")
        );
        assert!(version.components.is_empty());
        let version: Version =
            serde_json::from_str(r#"{"ApiVersion":"1.52","Components":null,"Os":null}"#).unwrap();
        assert!(version.components.is_empty() && version.os.is_empty());

        let info: Info = serde_json::from_str(r#"{"Driver":"overlayfs","DriverStatus":[["driver-type","io.containerd.snapshotter.v1"]]}"#).unwrap();
        assert!(info.containerd_store());
        let info: Info =
            serde_json::from_str(r#"{"DriverStatus":null,"DockerRootDir":null}"#).unwrap();
        assert!(
            !info.containerd_store() && info.driver.is_empty() && info.docker_root_dir.is_empty()
        );

        let row: HistoryItem =
            serde_json::from_str(r#"{"Id":"<missing>","Created":1,"Tags":null}"#).unwrap();
        assert_eq!((row.size, row.comment.as_str()), (0, ""));
    }

    #[test]
    fn inspect_with_nulls() {
        let inspect: Inspect = serde_json::from_str(
            r#"{"Id":"sha256:aa","RepoTags":null,"RepoDigests":[],"Parent":"","Os":"linux",
                "Architecture":"amd64","RootFS":{"Type":"layers","Layers":["sha256:01"]}}"#,
        )
        .unwrap();
        assert!(inspect.repo_tags.is_empty());
        assert_eq!(inspect.parent(), None);
        assert_eq!(inspect.diff_ids(), ["sha256:01"]);
    }
}
