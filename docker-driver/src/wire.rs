//! The Engine API's JSON, for the answers read without bollard's models:
//! image inspect (bollard's model has no `Parent`) and push progress
//! (bollard's has no layer `id` and no `aux`).

use serde::Deserialize;

use crate::error::DriverError;
use crate::model::PushEvent;

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
    #[serde(rename = "RootFS", default)]
    pub(crate) root_fs: Option<RootFs>,
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
