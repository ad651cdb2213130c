//! Deciding whether a blob is present.

use oci_spec::image::Digest;

use crate::push_control::HeadPace;

/// Decides how the registry answers "is this blob present?" — blob `HEAD`
/// and `GET`, cross-repository mounts, and the blob check of a manifest
/// `PUT`.
///
/// Called synchronously for each such request: must not block.
///
/// Only [`blob`](Self::blob) is required. The two other methods are [push
/// control](crate::push_control) (pacing blob `HEAD`s, refusing manifests);
/// their defaults do nothing.
pub trait PresencePolicy: Send + Sync {
    /// The answer for `digest` in `repository`.
    fn blob(&self, repository: &str, digest: &Digest) -> Presence;

    /// [Push control](crate::push_control): lets the answer to a blob
    /// `HEAD` wait: when this returns a future, the registry awaits it
    /// before asking [`blob`](Self::blob) and answering (default: none,
    /// answered at once). For pacing a client's questions, e.g. answering
    /// one at a time to see what it does with each answer. The future
    /// should end by itself (a client waits for it).
    fn pace_head(&self, _repository: &str, _digest: &Digest) -> Option<HeadPace> {
        None
    }

    /// [Push control](crate::push_control): refuses a well-formed manifest
    /// `PUT` to `repository` by `reference` (a tag or a digest) of `body`,
    /// sent as `media_type`: when this returns a message, the registry
    /// checks the manifest as usual, reports it in
    /// [`RegistryEvent::ManifestRefused`](crate::RegistryEvent::ManifestRefused)
    /// and answers `403 DENIED` with that message, storing nothing (default:
    /// every manifest accepted). For a client whose push must not end in
    /// success, e.g. so that it marks nothing as pushed, while its manifest
    /// is still seen.
    fn refuse_manifest(
        &self,
        _repository: &str,
        _reference: &str,
        _media_type: &str,
        _body: &[u8],
    ) -> Option<String> {
        None
    }
}

/// An answer of a [`PresencePolicy`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Presence {
    /// Answer from storage (present exactly when stored).
    Stored,
    /// Claim the blob is present with this size, though it may not be stored.
    /// A `GET` of a blob claimed present but not stored answers 404.
    Present {
        /// The size to announce in `Content-Length`.
        size: u64,
    },
    /// Claim the blob is absent, even if it is stored.
    Absent,
}

/// The default policy: always [`Presence::Stored`].
pub(crate) struct StoredPolicy;

impl PresencePolicy for StoredPolicy {
    fn blob(&self, _repository: &str, _digest: &Digest) -> Presence {
        Presence::Stored
    }
}
