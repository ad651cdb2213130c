//! The upload budget: blob bytes the registry still takes in, over all
//! uploads.

use std::sync::atomic::{AtomicU64, Ordering};

/// Blob bytes the registry still takes in (see
/// [`RegistryBuilder::upload_budget`](crate::RegistryBuilder::upload_budget)).
#[derive(Debug)]
pub(crate) struct UploadBudget {
    left: AtomicU64,
}

impl UploadBudget {
    pub(crate) fn new(bytes: u64) -> Self {
        Self {
            left: AtomicU64::new(bytes),
        }
    }

    /// Takes `n` bytes from the budget; `false` (and nothing taken) when
    /// fewer are left.
    pub(crate) fn take(&self, n: u64) -> bool {
        self.left
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |left| {
                left.checked_sub(n)
            })
            .is_ok()
    }
}

/// The error an upload stream ends with when the budget is spent.
#[derive(Debug, thiserror::Error)]
#[error("the registry's upload budget is spent")]
pub(crate) struct BudgetExhausted;
