//! The temporary registry's presence policy during an export: which blobs
//! are claimed present in the survey and the capture, which manifests are
//! refused, and the pacing of a classic store's `HEAD`s.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use shim_registry::oci_spec::image::Digest;
use shim_registry::{Presence, PresencePolicy};

use crate::manifest::digest_of;

/// The presence policy of an export: the survey claims every blob present,
/// so only the manifest crosses (it names each layer's blob and the config);
/// the capture leaves the wanted layers and the config to the registry's
/// storage (absent until uploaded, then present), so only they cross.
///
/// The config's digest is learnt from the survey too: on the containerd
/// store the image ID is the manifest's digest, not the config's.
///
/// Claims hold in the run's own repository only. A daemon that remembers
/// pushing a layer to an earlier run's repository on the same port asks
/// there (Podman: `HEAD` then a mount; dockerd: a mount) when the capture
/// says the layer's blob is absent: a claim there would let it name a blob
/// nobody uploaded.
#[derive(Debug)]
pub(crate) struct CapturePolicy {
    repository: String,
    claimed_size: u64,
    capture: Mutex<Option<HashSet<Digest>>>,
    pace: Option<HeadPacer>,
    refused: Option<Refusal>,
}

/// Which manifests the capture policy refuses under the run's tag.
#[derive(Debug)]
struct Refusal {
    tag: String,
    /// The image's own (root) manifest or index: the image ID.
    root: Option<Digest>,
    /// Also any other image manifest but attestations (a daemon that puts
    /// a platform's manifest instead of an index it cannot push whole).
    image_manifests: bool,
}

impl CapturePolicy {
    /// A policy in survey mode for the run's `repository` (its path in the
    /// temporary registry, without host).
    pub(crate) fn new(repository: impl Into<String>) -> Self {
        Self {
            repository: repository.into(),
            claimed_size: 1,
            capture: Mutex::new(None),
            pace: None,
            refused: None,
        }
    }

    /// In survey mode, answers the `HEAD`s one at a time: each waits until
    /// the daemon has said what it made of the answers before it (one
    /// "Layer already exists" each, see [`Self::layer_reported`]), or for
    /// [`PACE_WAIT`] at most. Each message then matches one `HEAD`, so the
    /// capture asks for the wanted layers' blobs only, not for the blobs of
    /// layers asked about at the same moment. `not_paced` (the image
    /// config, asked about after the layers) is answered at once.
    pub(crate) fn paced(mut self, not_paced: Option<Digest>) -> Self {
        self.pace = Some(HeadPacer {
            tickets: std::sync::atomic::AtomicU64::new(0),
            reported: Arc::new(tokio::sync::watch::Sender::new(0)),
            not_paced,
        });
        self
    }

    /// Refuses the last manifest the daemon puts under `tag` in the run's
    /// repository (it is still seen, as
    /// [`RegistryEvent::ManifestRefused`](shim_registry::RegistryEvent)): a
    /// containerd store labels what it pushed with the registry's name only
    /// after a push that succeeded, so the user's content is left unmarked.
    /// That is the image's `root` (its ID: a manifest or an index), an
    /// index, and with `image_manifests` any image manifest but an
    /// attestation. Without it (Docker 26.1, which puts an index's
    /// manifests under the tag before the index) the others are taken.
    pub(crate) fn refusing_tag(
        mut self,
        tag: &str,
        root: Option<Digest>,
        image_manifests: bool,
    ) -> Self {
        self.refused = Some(Refusal {
            tag: tag.to_owned(),
            root,
            image_manifests,
        });
        self
    }

    /// The daemon reported a layer it asked about ("Layer already
    /// exists"): the next paced `HEAD` may be answered.
    pub(crate) fn layer_reported(&self) {
        if let Some(pace) = &self.pace {
            pace.reported.send_modify(|n| *n += 1);
        }
    }

    fn surveying(&self) -> bool {
        self.capture
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_none()
    }

    /// Switches to capture mode: only `wanted` may be uploaded.
    pub(crate) fn capture(&self, wanted: impl IntoIterator<Item = Digest>) {
        *self.capture.lock().unwrap_or_else(|e| e.into_inner()) =
            Some(wanted.into_iter().collect());
    }
}

/// Paces the survey's `HEAD` answers (see [`CapturePolicy::paced`]).
#[derive(Debug)]
struct HeadPacer {
    /// Handed out to `HEAD`s in order of arrival.
    tickets: std::sync::atomic::AtomicU64,
    /// How many answered `HEAD`s the daemon has reported on (or been
    /// waited for in vain): ticket `n` is answered once it reaches `n`.
    reported: Arc<tokio::sync::watch::Sender<u64>>,
    not_paced: Option<Digest>,
}

/// The longest a paced `HEAD` waits for the daemon to report on the one
/// before it (it answers in about a millisecond; a daemon that says
/// nothing, e.g. of a `HEAD` it makes for another reason, costs this).
pub(crate) const PACE_WAIT: std::time::Duration = std::time::Duration::from_millis(50);

impl PresencePolicy for CapturePolicy {
    fn pace_head(&self, repository: &str, digest: &Digest) -> Option<shim_registry::HeadPace> {
        let pace = self.pace.as_ref()?;
        if repository != self.repository
            || pace.not_paced.as_ref() == Some(digest)
            || !self.surveying()
        {
            return None;
        }
        let ticket = pace
            .tickets
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let reported = pace.reported.clone();
        Some(Box::pin(async move {
            let mut rx = reported.subscribe();
            let waited = tokio::time::timeout(PACE_WAIT, rx.wait_for(|n| *n >= ticket)).await;
            if waited.is_err() {
                // Later `HEAD`s do not wait for this report either.
                reported.send_modify(|n| *n = (*n).max(ticket));
                tracing::debug!(ticket, "no report on the previous HEAD: answering");
            }
        }))
    }

    fn refuse_manifest(
        &self,
        repository: &str,
        reference: &str,
        media_type: &str,
        body: &[u8],
    ) -> Option<String> {
        use docker_driver::manifest::{self, ManifestKind};
        let Some(refusal) = &self.refused else {
            return None;
        };
        if repository != self.repository
            || refusal.tag != reference
            || manifest::is_attestation_manifest(body)
        {
            return None;
        }
        let refused = refusal.root.as_ref() == Some(&digest_of(body))
            || match manifest::kind_of(media_type, body) {
                ManifestKind::Index => true,
                ManifestKind::Image => refusal.image_manifests,
                ManifestKind::Other => false,
            };
        refused.then(|| {
            "dlgrab keeps the manifest and ends the push here, so the daemon marks nothing as pushed"
                .to_owned()
        })
    }

    fn blob(&self, repository: &str, digest: &Digest) -> Presence {
        if repository != self.repository {
            return Presence::Stored;
        }
        match &*self.capture.lock().unwrap_or_else(|e| e.into_inner()) {
            Some(wanted) if wanted.contains(digest) => Presence::Stored,
            _ => Presence::Present {
                size: self.claimed_size,
            },
        }
    }
}

/// Whether an API version such as `1.45` is at least `major.minor` (an
/// unreadable one is not).
pub(crate) fn api_at_least(version: &str, major: u32, minor: u32) -> bool {
    let mut parts = version.split('.').map(|p| p.parse::<u32>().ok());
    match (parts.next().flatten(), parts.next().flatten()) {
        (Some(a), Some(b)) => (a, b) >= (major, minor),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::tests::{digest, oci_manifest};

    #[tokio::test(start_paused = true)]
    async fn survey_heads_are_answered_one_at_a_time() {
        use futures::FutureExt as _;
        let policy = CapturePolicy::new("r").paced(Some(digest('c')));
        // The first is answered at once, the second once the daemon has
        // reported on the first.
        let first = policy.pace_head("r", &digest('1')).expect("paced");
        assert!(first.now_or_never().is_some());
        let mut second = policy.pace_head("r", &digest('2')).expect("paced");
        assert!((&mut second).now_or_never().is_none());
        policy.layer_reported();
        assert!(second.now_or_never().is_some());
        // A report that never comes costs PACE_WAIT, once.
        let third = policy.pace_head("r", &digest('3')).expect("paced");
        let fourth = policy.pace_head("r", &digest('4')).expect("paced");
        let started = tokio::time::Instant::now();
        third.await;
        assert!(started.elapsed() >= PACE_WAIT);
        policy.layer_reported();
        assert!(fourth.now_or_never().is_some());
        // Not paced: the config, other repositories, capture mode, or a
        // policy made without pacing.
        assert!(policy.pace_head("r", &digest('c')).is_none());
        assert!(policy.pace_head("other", &digest('5')).is_none());
        policy.capture([digest('2')]);
        assert!(policy.pace_head("r", &digest('6')).is_none());
        assert!(
            CapturePolicy::new("r")
                .pace_head("r", &digest('1'))
                .is_none()
        );
    }

    #[test]
    fn survey_claims_everything_then_capture_leaves_wanted_to_storage() {
        let policy = CapturePolicy::new("r");
        for c in ['c', '1', '2'] {
            assert!(matches!(
                policy.blob("r", &digest(c)),
                Presence::Present { .. }
            ));
        }
        policy.capture([digest('2'), digest('c')]);
        assert_eq!(policy.blob("r", &digest('c')), Presence::Stored);
        assert!(matches!(
            policy.blob("r", &digest('1')),
            Presence::Present { .. }
        ));
        assert_eq!(policy.blob("r", &digest('2')), Presence::Stored);
    }

    #[test]
    fn claims_hold_in_the_runs_repository_only() {
        let policy = CapturePolicy::new("dlgrab-run-now");
        assert_eq!(
            policy.blob("dlgrab-run-earlier", &digest('1')),
            Presence::Stored
        );
        policy.capture([digest('2')]);
        assert_eq!(
            policy.blob("dlgrab-run-earlier", &digest('1')),
            Presence::Stored
        );
        assert!(matches!(
            policy.blob("dlgrab-run-now", &digest('1')),
            Presence::Present { .. }
        ));
    }

    #[test]
    fn the_capture_policy_refuses_the_tag_but_not_attestations_nor_elsewhere() {
        let image_manifest = oci_manifest(2, "image");
        let attestation = oci_manifest(1, "x").replace(
            "application/vnd.oci.image.layer.v1.tar+gzip",
            "application/vnd.in-toto+json",
        );
        let index = r#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[]}"#;
        let mt = "application/vnd.oci.image.manifest.v1+json";
        let refusing = CapturePolicy::new("dlgrab-run-x").refusing_tag("export", None, true);
        assert!(
            refusing
                .refuse_manifest("dlgrab-run-x", "export", mt, image_manifest.as_bytes())
                .is_some()
        );
        assert!(
            refusing
                .refuse_manifest("dlgrab-run-x", "export", "", index.as_bytes())
                .is_some()
        );
        assert!(
            refusing
                .refuse_manifest("dlgrab-run-x", "export", mt, attestation.as_bytes())
                .is_none()
        );
        assert!(
            refusing
                .refuse_manifest("dlgrab-run-x", "sha256:abc", mt, image_manifest.as_bytes())
                .is_none()
        );
        assert!(
            refusing
                .refuse_manifest("dlgrab-run-y", "export", mt, image_manifest.as_bytes())
                .is_none()
        );
        let accepting = CapturePolicy::new("dlgrab-run-x");
        assert!(
            accepting
                .refuse_manifest("dlgrab-run-x", "export", mt, image_manifest.as_bytes())
                .is_none()
        );
    }

    #[test]
    fn docker_26_1_gets_the_root_refused_only() {
        let image_manifest = oci_manifest(2, "image");
        let index = r#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[]}"#;
        let mt = "application/vnd.oci.image.manifest.v1+json";
        let root = digest_of(image_manifest.as_bytes());
        // The root named by the image ID is refused, whatever it is; other
        // image manifests are taken (26.1 puts them under the tag first).
        let old = CapturePolicy::new("r").refusing_tag("export", Some(root), false);
        assert!(
            old.refuse_manifest("r", "export", mt, image_manifest.as_bytes())
                .is_some()
        );
        let other = oci_manifest(3, "other");
        assert!(
            old.refuse_manifest("r", "export", mt, other.as_bytes())
                .is_none()
        );
        assert!(
            old.refuse_manifest("r", "export", "", index.as_bytes())
                .is_some()
        );
        assert!(
            api_at_least("1.46", 1, 46)
                && api_at_least("1.51", 1, 46)
                && api_at_least("2.0", 1, 46)
        );
        assert!(!api_at_least("1.45", 1, 46) && !api_at_least("x", 1, 46));
    }
}
