//! Names unique per test run.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// A repository name `<prefix>-<pid>-<n>-<time>` that no other call in any
/// run returns: process ID, a per-process counter and the start time in
/// hexadecimal. `prefix` must itself be a valid lowercase repository name,
/// e.g. `dlgrab-test/export`. Images tagged under it (or under
/// `<name>-…`) on the daemon under test are removed when the test ends.
pub fn unique_name(prefix: &str) -> String {
    let name = unique_scratch_name(prefix);
    crate::cleanup::note_repository(&name);
    name
}

/// A name unique like [`unique_name`]'s, for things other than images
/// (scratch folders): nothing is removed from the daemon under it.
pub(crate) fn unique_scratch_name(prefix: &str) -> String {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let t = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0);
    format!("{prefix}-{}-{n}-{t:x}", std::process::id())
}

#[cfg(test)]
mod tests {
    use super::unique_name;

    #[test]
    fn names_differ_and_are_lowercase() {
        let a = unique_name("dlgrab-test/x");
        let b = unique_name("dlgrab-test/x");
        assert_ne!(a, b);
        assert!(a.starts_with("dlgrab-test/x-"));
        assert!(
            a.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "-/".contains(c))
        );
    }
}
