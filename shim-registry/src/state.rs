//! What every request handler shares: the registry's configuration, its
//! seams and its running state.

use std::sync::Arc;
use std::time::Duration;

use crate::auth::Authorizer;
use crate::budget::UploadBudget;
use crate::events::EventSink;
use crate::fault::FaultState;
use crate::policy::PresencePolicy;
use crate::push_control::UploadHold;
use crate::storage::Storage;

/// What every request handler shares (one per [`Registry`](crate::Registry),
/// behind an `Arc`).
pub(crate) struct Shared {
    pub(crate) storage: Arc<dyn Storage>,
    pub(crate) presence: Arc<dyn PresencePolicy>,
    pub(crate) events: Arc<dyn EventSink>,
    pub(crate) upload_expiry: Duration,
    pub(crate) auth: Authorizer,
    pub(crate) faults: Option<FaultState>,
    pub(crate) max_manifest: usize,
    /// Blob bytes still allowed in, over all uploads (`None`: no bound).
    pub(crate) upload_budget: Option<Arc<UploadBudget>>,
    /// Where uploads stop being read (`None`: never).
    pub(crate) upload_hold: Option<UploadHold>,
    /// Counts the shutdowns of servers serving this registry: a held
    /// upload ends when it changes.
    pub(crate) shutdowns: tokio::sync::watch::Sender<u64>,
}
