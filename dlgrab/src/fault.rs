//! Faults named by their cause. When the temporary registry's own storage
//! fails (a full disk, a read-only or vanished scratch folder), the daemon
//! only sees a 5xx or, on its retry, "blob upload unknown to registry"; the
//! registry reports the real cause as a
//! [`RegistryEvent::StorageFailed`](shim_registry::RegistryEvent), which
//! [`StorageFaults`] keeps so that the push's error can lead with it; so
//! is an upload past the registry's budget (`UploadBudgetSpent`).

use std::sync::{Arc, Mutex};

use shim_registry::{EventSink, RegistryEvent};

/// Storage failures of one temporary registry.
#[derive(Debug, Clone, Default)]
pub(crate) struct StorageFaults(Arc<Mutex<Vec<String>>>, Arc<tokio::sync::Notify>);

impl StorageFaults {
    /// `inner`, with the storage failures it sees recorded here.
    pub(crate) fn wrap(&self, inner: impl EventSink + 'static) -> Arc<dyn EventSink> {
        Arc::new(Tee {
            inner: Box::new(inner),
            faults: self.clone(),
        })
    }

    /// Runs `push` until it ends or the storage fails: a daemon retries a
    /// failed upload for a minute before giving up, and a full disk does
    /// not empty itself meanwhile. Dropping the push cancels it.
    pub(crate) async fn abort_on_failure<T>(
        &self,
        push: impl std::future::Future<Output = anyhow::Result<T>>,
    ) -> anyhow::Result<T> {
        let failed = self.1.notified();
        tokio::pin!(failed);
        failed.as_mut().enable();
        if self.first().is_some() {
            anyhow::bail!("the push was stopped");
        }
        tokio::select! {
            result = push => result,
            () = failed => Err(anyhow::anyhow!("the push was stopped")),
        }
    }

    pub(crate) fn first(&self) -> Option<String> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .first()
            .cloned()
    }

    /// `error`, led by the first storage failure when there was one.
    pub(crate) fn explain(&self, error: anyhow::Error) -> anyhow::Error {
        match self.first() {
            Some(message) => error.context(format!(
                "the temporary registry could not store what the daemon pushed: {message}"
            )),
            None => error,
        }
    }
}

struct Tee {
    inner: Box<dyn EventSink>,
    faults: StorageFaults,
}

impl EventSink for Tee {
    fn event(&self, event: &RegistryEvent) {
        let failure = match event {
            RegistryEvent::StorageFailed { message, .. } => {
                tracing::warn!(message, "the temporary registry's storage failed");
                Some(message.clone())
            }
            RegistryEvent::UploadBudgetSpent { .. } => {
                tracing::warn!("the daemon pushed more than the export needs");
                Some(
                    "its upload budget is spent (the daemon pushed more than the export needs)"
                        .to_owned(),
                )
            }
            _ => None,
        };
        if let Some(message) = failure {
            self.faults
                .0
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(message);
            self.faults.1.notify_waiters();
        }
        self.inner.event(event);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shim_registry::ChannelSink;

    #[test]
    fn a_storage_failure_leads_the_error_and_events_still_flow() {
        let faults = StorageFaults::default();
        let (sink, mut rx) = ChannelSink::new();
        let tee = faults.wrap(sink);
        let plain = faults.explain(anyhow::anyhow!("blob upload unknown to registry"));
        assert_eq!(format!("{plain:#}"), "blob upload unknown to registry");
        tee.event(&RegistryEvent::StorageFailed {
            repository: "r".into(),
            upload_id: Some("u".into()),
            message: "storage i/o failed on /x: No space left on device (os error 28)".into(),
        });
        assert!(rx.try_recv().is_ok());
        let explained = faults.explain(anyhow::anyhow!("blob upload unknown to registry"));
        let text = format!("{explained:#}");
        assert!(
            text.starts_with("the temporary registry could not store what the daemon pushed: storage i/o failed on /x: No space left on device"),
            "{text}"
        );
        assert!(text.ends_with("blob upload unknown to registry"), "{text}");
    }

    #[tokio::test]
    async fn a_storage_failure_stops_the_push() {
        let faults = StorageFaults::default();
        let (sink, _rx) = ChannelSink::new();
        let tee = faults.wrap(sink);
        let push = faults.abort_on_failure(async {
            std::future::pending::<()>().await;
            Ok(())
        });
        let fail = async {
            tokio::task::yield_now().await;
            tee.event(&RegistryEvent::StorageFailed {
                repository: "r".into(),
                upload_id: None,
                message: "disk full".into(),
            });
        };
        let (result, ()) = tokio::join!(push, fail);
        let text = format!("{:#}", faults.explain(result.expect_err("stopped")));
        assert!(
            text.contains("disk full") && text.contains("stopped"),
            "{text}"
        );
        let ok = faults.abort_on_failure(async { Ok(1) }).await;
        assert!(ok.is_err(), "a failed storage stops later pushes at once");
    }

    #[test]
    fn a_spent_upload_budget_leads_the_error() {
        let faults = StorageFaults::default();
        let (sink, _rx) = ChannelSink::new();
        let tee = faults.wrap(sink);
        tee.event(&RegistryEvent::UploadBudgetSpent {
            repository: "r".into(),
            upload_id: Some("u".into()),
        });
        let text = format!("{:#}", faults.explain(anyhow::anyhow!("push failed")));
        assert!(text.contains("upload budget is spent"), "{text}");
    }
}
