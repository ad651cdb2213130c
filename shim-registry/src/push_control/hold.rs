//! Holding uploads that grow past a size ([push control](super)).

use std::sync::Arc;

use tokio::sync::watch;

/// A size past which upload sessions stop being read, until the size is
/// raised or the hold released.
///
/// While a session is held its request body is not read: the client's
/// sends block once the connection's buffers are full, so a client that
/// produces its upload on the fly (a daemon compressing a layer) stops
/// spending work on it. Nothing fails: reading resumes where it stopped
/// when the hold is raised or released, or ends with the connection when
/// the client gives up. When a registry shuts down, its held requests end
/// (answered with an error, their data discarded) instead of keeping the
/// shutdown waiting; the hold itself is left as it is.
///
/// The size counts a session's bytes over all its requests (`PATCH`es and
/// the final `PUT`). Clones share the same hold; one hold may serve several
/// registries. A new hold holds nothing.
///
/// ```
/// use shim_registry::Registry;
/// use shim_registry::push_control::UploadHold;
///
/// let hold = UploadHold::new();
/// let registry = Registry::builder().upload_hold(hold.clone()).build().unwrap();
/// hold.hold_beyond(4 << 20); // sessions past 4 MiB wait...
/// hold.release(); // ...until now
/// # drop(registry);
/// ```
#[derive(Debug, Clone)]
pub struct UploadHold {
    limit: Arc<watch::Sender<u64>>,
}

impl Default for UploadHold {
    fn default() -> Self {
        Self::new()
    }
}

impl UploadHold {
    /// A hold that holds nothing yet.
    pub fn new() -> Self {
        Self {
            limit: Arc::new(watch::Sender::new(u64::MAX)),
        }
    }

    /// Sessions stop being read once they would grow past `bytes` (a
    /// session already past it stops at its next chunk).
    pub fn hold_beyond(&self, bytes: u64) {
        self.limit.send_replace(bytes);
    }

    /// No session is held any more; the held ones go on.
    pub fn release(&self) {
        self.limit.send_replace(u64::MAX);
    }

    /// The size past which sessions are held, if any.
    pub fn limit(&self) -> Option<u64> {
        Some(*self.limit.borrow()).filter(|l| *l != u64::MAX)
    }

    /// Waits until a session may hold `size` bytes.
    pub(crate) async fn admit(&self, size: u64) {
        // The sender lives as long as `self`: `wait_for` cannot fail here.
        let _ = self
            .limit
            .subscribe()
            .wait_for(|limit| *limit >= size)
            .await;
    }

    /// True when a session of `size` bytes is past the limit.
    pub(crate) fn holds(&self, size: u64) -> bool {
        *self.limit.borrow() < size
    }
}
