//! The decisions of an export, kept free of I/O so they can be tested alone:
//! which way to get a layer out, which blobs to claim present, how pushed
//! manifests map to layers, and what each layer's folder is called.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use anyhow::{Context, bail};
use docker_driver::{DaemonInfo, ImageDetails, ImageStore};
use layer_writer::BlobRef;
use shim_registry::oci_spec::image::Digest;
use shim_registry::{Presence, PresencePolicy};

/// Which way the user asked layers to leave the daemon (`--via`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Via {
    /// The cheapest for this daemon and image; a route that gives way
    /// hands the layers it did not write to the next cheapest.
    Auto,
    /// A push into the temporary registry.
    Push,
    /// A `docker save` stream.
    Save,
    /// The daemon's own storage read from disk.
    Store,
}

/// A layer to export: its index in the image and the ID the user typed for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Wanted {
    pub(crate) index: usize,
    pub(crate) requested_id: Option<String>,
}

/// Why a route gave way to another, for the next [`choose_route`]. Only an
/// automatic choice gives way (`--via` names the one route to take).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum GaveWay {
    /// The store route failed on its own input (a file missing or changed,
    /// a diff-ID mismatch), not on the output.
    Store(String),
    /// The survey push showed that pushing would cost more than `docker
    /// save`: what it saw.
    Survey(String),
    /// The daemon refused the push or failed it on its side: its message.
    Refused(String),
}

/// How a layer leaves the daemon.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Route {
    /// Two pushes into the temporary registry: a survey in which every layer
    /// is claimed present (only the config and the manifest cross), then a
    /// capture in which only the wanted layers are absent.
    Push,
    /// A `docker save` stream, read through once, keeping the wanted layers.
    Save,
    /// The layer's tar rebuilt from the classic layer store's files
    /// (tar-split metadata and the layer folder), read-only.
    Store,
}

impl Route {
    /// The route's name in `--json` and messages.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Route::Push => "push",
            Route::Save => "save",
            Route::Store => "store",
        }
    }
}

/// Whether the store route can read the daemon's layer store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum StoreAccess {
    /// The data root's classic layer store can be read.
    Readable,
    /// It cannot, for this reason.
    Unavailable(String),
}

/// Picks the route by expected cost, with the reason for `--debug` and
/// `--json`; fails only when the route asked for cannot be taken at all.
///
/// - The store route costs the layer's own bytes (read from disk, hashed,
///   written): it wins wherever the daemon's storage is readable.
/// - The push route pays only for the layers the daemon uploads: the
///   containerd image store asks (HEAD) before every upload; a classic store
///   asks only about layers it recorded a digest for (pulled or pushed
///   before, to any registry) and uploads the others unasked, compressing
///   each on the fly. Which is which only the daemon knows, so the push
///   starts with a survey that watches it (`route::push::survey`).
/// - An image with no name at all is never pushed: the temporary tag would
///   be its only reference, and removing it could delete the image.
///
/// `gave_way` lists why the routes tried before for these layers gave way:
/// none of them is chosen again (each route gives way at most once, and
/// save never does, so an export takes three routes at most).
pub(crate) fn choose_route(
    info: &DaemonInfo,
    image: &ImageDetails,
    via: Via,
    store: &StoreAccess,
    gave_way: &[GaveWay],
) -> anyhow::Result<(Route, String)> {
    let named = !image.repo_tags.is_empty() || !image.repo_digests.is_empty();
    let unnamed = "the image has no name, so it is never tagged and pushed";
    let classic = matches!(info.image_store, ImageStore::Classic { .. });
    if let Some(host) = &info.elsewhere {
        // Its 127.0.0.1 is not ours, nor its data root a path here.
        return match via {
            Via::Push | Via::Store => bail!(
                "--via {}: the daemon at {host} runs on another machine, which cannot reach \
                 dlgrab's registry on this machine's loopback nor share its layer store; \
                 use --via save",
                if via == Via::Push { "push" } else { "store" }
            ),
            Via::Auto | Via::Save => Ok((
                Route::Save,
                format!(
                    "the daemon at {host} runs on another machine: only docker save reaches here"
                ),
            )),
        };
    }
    let store_failed = gave_way.iter().find_map(|g| match g {
        GaveWay::Store(why) => Some(why.as_str()),
        _ => None,
    });
    let push_gave_way = gave_way.iter().find_map(|g| match g {
        GaveWay::Survey(saw) => Some(format!(
            "the survey push showed {saw}, which costs more than docker save"
        )),
        GaveWay::Refused(message) => Some(format!(
            "the daemon's push to dlgrab's registry failed ({message}): docker save reads the \
             layers instead"
        )),
        GaveWay::Store(_) => None,
    });
    let store = match store_failed {
        Some(why) => &StoreAccess::Unavailable(format!("the store route failed: {why}")),
        None => store,
    };
    let (route, why) = match (via, store) {
        (Via::Store, StoreAccess::Unavailable(why)) if classic => {
            bail!("--via store: the layer store cannot be read: {why}")
        }
        (Via::Store, StoreAccess::Unavailable(why)) => {
            bail!("--via store: the containerd image store's content store cannot be read: {why}")
        }
        (Via::Store, StoreAccess::Readable) => (Route::Store, "asked for with --via store".into()),
        (Via::Push, _) if named => (Route::Push, "asked for with --via push".into()),
        (Via::Push, _) => (Route::Save, unnamed.into()),
        (Via::Save, _) => (Route::Save, "asked for with --via save".into()),
        (Via::Auto, StoreAccess::Readable) if classic => (
            Route::Store,
            "the classic layer store is readable: the layer is rebuilt from its own files".into(),
        ),
        (Via::Auto, StoreAccess::Readable) => (
            Route::Store,
            "the containerd content store is readable: the layer's blob is read as stored".into(),
        ),
        (Via::Auto, StoreAccess::Unavailable(_)) if !named => (Route::Save, unnamed.into()),
        (Via::Auto, StoreAccess::Unavailable(_)) if push_gave_way.is_some() => {
            (Route::Save, push_gave_way.unwrap_or_default())
        }
        (Via::Auto, StoreAccess::Unavailable(why)) if classic => (
            Route::Push,
            format!(
                "a survey push shows which layers the classic store asks about and which it \
                 uploads unasked; it gives way to docker save if those cost more \
                 (layer store: {why})"
            ),
        ),
        (Via::Auto, StoreAccess::Unavailable(_)) => (
            Route::Push,
            "the containerd store asks before every upload".into(),
        ),
    };
    Ok((route, why))
}

/// What the daemon did with one layer in the survey push, from its
/// progress messages (a classic store names each layer by its diff ID's
/// first 12 hex digits).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Seen {
    /// Nothing said yet (`Preparing`, `Waiting`), or a store whose progress
    /// names layers otherwise (the containerd store names blobs).
    Unknown,
    /// Asked before uploading and told it is there (`Layer already exists`,
    /// `Mounted from …`).
    Asked,
    /// Uploading unasked (`Pushing`).
    Uploading,
    /// Uploaded unasked, the blob stored (`Pushed`).
    Uploaded,
}

/// The survey push as watched so far: per layer what the daemon did, and
/// the layers' sizes (uncompressed, as the daemon reports them).
#[derive(Debug, Clone)]
pub(crate) struct Survey {
    short_ids: Vec<String>,
    seen: Vec<Seen>,
    sizes: Vec<u64>,
    /// The registry saw an upload start: some layer is uploaded unasked
    /// (the daemon's own `Pushing` message may come some time later).
    upload_started: bool,
}

impl Survey {
    /// A survey of `image`, nothing seen yet.
    pub(crate) fn new(image: &ImageDetails) -> Self {
        let mut sizes = vec![0; image.diff_ids.len()];
        for row in &image.history {
            if let Some(slot) = row.layer_index.and_then(|i| sizes.get_mut(i)) {
                *slot = u64::try_from(row.size).unwrap_or(0);
            }
        }
        Self {
            short_ids: image
                .diff_ids
                .iter()
                .map(|d| strip_algorithm(d).chars().take(12).collect())
                .collect(),
            seen: vec![Seen::Unknown; image.diff_ids.len()],
            sizes,
            upload_started: false,
        }
    }

    /// The registry saw an upload session open.
    pub(crate) fn upload_started(&mut self) {
        self.upload_started = true;
    }

    /// One progress message of the push; returns the layers it is about
    /// (an image may hold the same layer twice).
    pub(crate) fn progress(&mut self, id: &str, status: &str, total: Option<u64>) -> Vec<usize> {
        let layers: Vec<usize> = (0..self.short_ids.len())
            .filter(|&i| self.short_ids[i].len() == 12 && self.short_ids[i] == id)
            .collect();
        for &i in &layers {
            let next = match status {
                "Layer already exists" => Seen::Asked,
                s if s.starts_with("Mounted from") => Seen::Asked,
                "Pushing" if self.seen[i] != Seen::Uploaded => Seen::Uploading,
                "Pushed" => Seen::Uploaded,
                _ => self.seen[i],
            };
            self.seen[i] = next;
            if status == "Pushing"
                && let Some(total) = total
            {
                self.sizes[i] = self.sizes[i].max(total);
            }
        }
        layers
    }

    /// What the daemon did with layer `index`.
    pub(crate) fn seen(&self, index: usize) -> Seen {
        self.seen.get(index).copied().unwrap_or(Seen::Unknown)
    }

    pub(crate) fn image_bytes(&self) -> u64 {
        self.sizes.iter().sum()
    }

    /// Layer `index`'s size as far as known (history, then the push's progress).
    pub(crate) fn size(&self, index: usize) -> u64 {
        self.sizes.get(index).copied().unwrap_or(0)
    }
}

/// Matches the blobs a survey push asked about (a `HEAD` the registry
/// answered "present") to the layers the daemon then reported as "Layer
/// already exists".
///
/// A classic daemon asks about several layers at once, so the answers and
/// its messages interleave. Each message comes after its own `HEAD`, so
/// whenever as many messages are pending as `HEAD`s, those messages' layers
/// and those blobs are the same set: one of each is an exact match; more
/// make a group in which each layer may be any of the group's blobs (the
/// capture then asks for them all and the writer keeps the one whose diff
/// ID matches).
#[derive(Debug, Default)]
pub(crate) struct AskedBlobs {
    heads: Vec<Digest>,
    messages: Vec<Vec<usize>>,
    candidates: HashMap<usize, Vec<Digest>>,
}

impl AskedBlobs {
    /// The registry answered a `HEAD` of `digest` with "present".
    pub(crate) fn head(&mut self, digest: Digest) {
        if !self.heads.contains(&digest) {
            self.heads.push(digest);
            self.settle();
        }
    }

    /// The daemon said "Layer already exists" for `layers` (one layer, or
    /// the same layer held twice by the image).
    pub(crate) fn exists(&mut self, layers: Vec<usize>) {
        if !layers.is_empty() {
            self.messages.push(layers);
            self.settle();
        }
    }

    /// True while `HEAD`s or "Layer already exists" messages wait for
    /// their counterparts: layers asked about may still be matched.
    pub(crate) fn settling(&self) -> bool {
        !self.heads.is_empty() || !self.messages.is_empty()
    }

    fn settle(&mut self) {
        if self.messages.is_empty() || self.messages.len() != self.heads.len() {
            return;
        }
        let heads = std::mem::take(&mut self.heads);
        for layers in self.messages.drain(..) {
            for i in layers {
                self.candidates.insert(i, heads.clone());
            }
        }
    }

    /// The blobs layer `index` may have been asked for; one when exact.
    pub(crate) fn candidates(&self, index: usize) -> Option<&[Digest]> {
        self.candidates.get(&index).map(Vec::as_slice)
    }

    /// The layers matched so far.
    pub(crate) fn known(&self) -> Vec<usize> {
        self.candidates.keys().copied().collect()
    }

    /// The other layers of `index`'s group: capturing its blobs uploads theirs too.
    pub(crate) fn group_mates(&self, index: usize) -> Vec<usize> {
        let Some(mine) = self.candidates.get(&index) else {
            return Vec::new();
        };
        let mut mates: Vec<usize> = self
            .candidates
            .iter()
            .filter(|(i, c)| **i != index && *c == mine)
            .map(|(i, _)| *i)
            .collect();
        mates.sort_unstable();
        mates
    }
}

/// What to do with the survey push after a progress message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum SurveyStep {
    /// Let it go on.
    Continue,
    /// Every wanted layer is in and the config is at hand: drop the push
    /// (the daemon cancels the uploads still running).
    Cancel,
    /// Some wanted layers were asked about (their blobs known), the others
    /// are in, the config is at hand, and the daemon is uploading other
    /// layers unasked: drop the push and capture the asked ones in a second
    /// push, itself dropped once they are in.
    CancelThenCapture,
    /// The push would cost more than `docker save`: drop it, for this reason.
    GiveUp(String),
}

/// The share of an image a classic daemon may compress and upload unasked
/// before `docker save` of the whole image is the cheaper way: its
/// on-the-fly gzip against the save stream (a temporary copy of the image,
/// then a tar of it). Measured side by side on this project's daemons (see
/// ARCHITECTURE "Routes"): 20.10 compresses about 26 MB/s, 26.1 and 28.5
/// several times faster.
pub(crate) fn unasked_share(info: &DaemonInfo) -> f64 {
    let major: u32 = info
        .server_version
        .split('.')
        .next()
        .and_then(|m| m.parse().ok())
        .unwrap_or(0);
    if major >= 25 { 0.5 } else { 0.15 }
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

/// Decides, after each progress message of the survey push, whether to go
/// on, to cancel (the wanted layers were uploaded unasked and are in, and
/// the image config is at hand without the push), or to give up for
/// `docker save` (not when the push was forced with `--via push`).
///
/// The cost counted is what the daemon compresses: when the wanted layers
/// are all uploaded unasked and the config is at hand, only they (the push
/// is cancelled once they are in); otherwise the push must run to its end
/// (the manifest names the asked layers' blobs, and a classic daemon sends
/// the config last), so every layer seen uploading counts.
pub(crate) fn survey_step(
    survey: &Survey,
    wanted: &[usize],
    asked_blob_known: &[usize],
    config_at_hand: bool,
    forced: bool,
    share: f64,
) -> SurveyStep {
    let unasked = |i: &usize| matches!(survey.seen(*i), Seen::Uploading | Seen::Uploaded);
    let uploading =
        survey.upload_started || (0..survey.seen.len()).any(|i| survey.seen(i) == Seen::Uploading);
    if config_at_hand
        && uploading
        && wanted.iter().any(|&i| survey.seen(i) == Seen::Asked)
        && wanted.iter().all(|&i| {
            survey.seen(i) == Seen::Uploaded
                || (survey.seen(i) == Seen::Asked && asked_blob_known.contains(&i))
        })
    {
        return SurveyStep::CancelThenCapture;
    }
    let cancellable = config_at_hand && wanted.iter().all(unasked);
    if cancellable
        && wanted.iter().all(|&i| survey.seen(i) == Seen::Uploaded)
        && (0..survey.seen.len()).any(|i| matches!(survey.seen(i), Seen::Unknown | Seen::Uploading))
    {
        return SurveyStep::Cancel;
    }
    if forced {
        return SurveyStep::Continue;
    }
    let counted: Vec<usize> = if cancellable {
        wanted.to_vec()
    } else {
        (0..survey.seen.len()).filter(unasked).collect()
    };
    let cost: u64 = counted.iter().map(|&i| survey.sizes[i]).sum();
    let budget = (survey.image_bytes() as f64 * share) as u64;
    if cost > budget {
        let layers: Vec<String> = counted.iter().map(usize::to_string).collect();
        return SurveyStep::GiveUp(format!(
            "the daemon uploading layer(s) {} unasked ({cost} of the image's {} bytes to \
             compress; more than {:.0}%)",
            layers.join(", "),
            survey.image_bytes(),
            share * 100.0
        ));
    }
    SurveyStep::Continue
}

/// Whether the survey push may still be dropped before its end (by
/// [`SurveyStep::Cancel`] or [`SurveyStep::CancelThenCapture`]): the config
/// is at hand and no wanted layer was asked about without its blob known
/// or still to be matched. Otherwise the push must run to its end (its
/// manifest names the asked layers' blobs), so no upload may be held.
pub(crate) fn survey_may_cancel(
    survey: &Survey,
    wanted: &[usize],
    asked: &AskedBlobs,
    config_at_hand: bool,
) -> bool {
    config_at_hand
        && wanted.iter().all(|&i| {
            survey.seen(i) != Seen::Asked || asked.candidates(i).is_some() || asked.settling()
        })
}

/// The folder name (64 hex digits) of each layer of `image`, base first.
///
/// A layer whose history row has an image ID (the top layer always does;
/// the classic builder's intermediate images too) is named after it, as
/// `docker history` shows it; the others get the stable v1-style IDs
/// `docker save` gives them (`stable_ids`). The ID the user typed names its layer.
pub(crate) fn layer_ids(
    image: &ImageDetails,
    stable_ids: &[String],
    requested: Option<(usize, &str)>,
) -> anyhow::Result<Vec<String>> {
    if stable_ids.len() != image.diff_ids.len() {
        bail!(
            "image {} has {} layers but its config describes {}",
            image.id,
            image.diff_ids.len(),
            stable_ids.len()
        );
    }
    let mut ids = stable_ids.to_vec();
    for row in &image.history {
        if let (Some(index), Some(id)) = (row.layer_index, &row.id)
            && let Some(slot) = ids.get_mut(index)
        {
            *slot = strip_algorithm(id).to_owned();
        }
    }
    if let Some((index, id)) = requested
        && let Some(slot) = ids.get_mut(index)
    {
        *slot = strip_algorithm(id).to_owned();
    }
    Ok(ids)
}

/// Refuses an image that is not of `--platform`'s platform (a driver that
/// cannot select one, such as a data root, shows the image as it is).
pub(crate) fn check_platform(
    what: &str,
    image: &ImageDetails,
    platform: &docker_driver::manifest::Platform,
) -> anyhow::Result<()> {
    let variant = image.variant.as_deref();
    if platform.matches(&image.os, &image.architecture, variant) {
        return Ok(());
    }
    let has = docker_driver::manifest::Platform::new(&image.os, &image.architecture, variant);
    Err(docker_driver::DriverError::NoSuchPlatform {
        reference: what.to_owned(),
        wanted: platform.to_string(),
        present: vec![has.to_string()],
    }
    .into())
}

/// `sha256:abc` → `abc`.
pub(crate) fn strip_algorithm(id: &str) -> &str {
    id.split_once(':').map_or(id, |(_, hex)| hex)
}

/// Every manifest a push put, in order: on the containerd store an image
/// as BuildKit makes it is an index (the image manifest, an attestation
/// manifest, then the index under the tag), as is a multi-platform image.
#[derive(Debug, Clone, Default)]
pub(crate) struct PushedManifests {
    put: Vec<(Digest, String, bytes::Bytes)>,
    refused: bool,
}

impl PushedManifests {
    /// Records a manifest put: its digest, media type and bytes.
    pub(crate) fn record(&mut self, digest: Digest, media_type: String, body: bytes::Bytes) {
        self.put.push((digest, media_type, body));
    }

    /// Records the manifest refused under the run's tag: the push's last
    /// step, after which the daemon fails the push.
    pub(crate) fn record_refused(
        &mut self,
        digest: Digest,
        media_type: String,
        body: bytes::Bytes,
    ) {
        self.put.push((digest, media_type, body));
        self.refused = true;
    }

    /// True once the manifest under the run's tag was refused: a push
    /// failing after it has ended as planned.
    pub(crate) fn refused(&self) -> bool {
        self.refused
    }

    /// The last index put that names `manifest` (media type and bytes).
    pub(crate) fn index_of(&self, manifest: &[u8]) -> Option<(String, bytes::Bytes)> {
        use docker_driver::manifest::{self, ManifestKind};
        let digest = digest_of(manifest).to_string();
        self.put
            .iter()
            .rev()
            .filter(|(_, mt, body)| manifest::kind_of(mt, body) == ManifestKind::Index)
            .find(|(_, _, body)| {
                manifest::index_entries(body)
                    .is_ok_and(|entries| entries.iter().any(|e| e.digest == digest))
            })
            .map(|(_, mt, body)| (mt.clone(), body.clone()))
    }

    /// Adds what a later push put.
    pub(crate) fn extend(&mut self, other: PushedManifests) {
        self.put.extend(other.put);
        self.refused |= other.refused;
    }

    /// The image manifest of `image` (media type and bytes), `None` when
    /// nothing was put: the last manifest put when it is an image manifest;
    /// when it is an index, its manifest for the image's platform, which the
    /// daemon put before it.
    pub(crate) fn image_manifest(
        &self,
        image: &ImageDetails,
    ) -> anyhow::Result<Option<(String, bytes::Bytes)>> {
        use docker_driver::manifest::{self, ManifestKind};
        // The index when one came (it names the rest), else the last image
        // manifest that is not an attestation.
        let last = self
            .put
            .iter()
            .rev()
            .find(|(_, mt, body)| manifest::kind_of(mt, body) == ManifestKind::Index)
            .or_else(|| {
                self.put.iter().rev().find(|(_, mt, body)| {
                    manifest::kind_of(mt, body) == ManifestKind::Image
                        && !manifest::is_attestation_manifest(body)
                })
            })
            .or(self.put.last());
        let Some((_, media_type, body)) = last else {
            return Ok(None);
        };
        match manifest::kind_of(media_type, body) {
            ManifestKind::Image => Ok(Some((media_type.clone(), body.clone()))),
            ManifestKind::Index => {
                let variant = image.variant.as_deref();
                let entry = manifest::manifest_for(body, &image.os, &image.architecture, variant)
                    .context("the daemon pushed an image index")?;
                let (_, media_type, body) = self
                    .put
                    .iter()
                    .rev()
                    .find(|(digest, _, _)| digest.to_string() == entry.digest)
                    .with_context(|| {
                        format!(
                            "the daemon pushed an image index whose manifest for {}/{} ({}) did not reach the temporary registry",
                            image.os, image.architecture, entry.digest
                        )
                    })?;
                if manifest::kind_of(media_type, body) != ManifestKind::Image {
                    bail!(
                        "the image index's manifest for {}/{} ({}) is not an image manifest",
                        image.os,
                        image.architecture,
                        entry.digest
                    );
                }
                Ok(Some((media_type.clone(), body.clone())))
            }
            ManifestKind::Other => bail!(
                "the daemon pushed a manifest that is neither an image manifest nor an index ({media_type})"
            ),
        }
    }
}

/// `sha256:` of `bytes`.
pub(crate) fn digest_of(bytes: &[u8]) -> Digest {
    use sha2::Digest as _;
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(bytes)))
        .parse()
        .expect("a sha256 digest is valid")
}

/// The media type an index says it has (OCI's when it says none).
pub(crate) fn index_media_type(bytes: &[u8]) -> String {
    serde_json::from_slice::<serde_json::Value>(bytes)
        .ok()
        .and_then(|v| v["mediaType"].as_str().map(str::to_owned))
        .unwrap_or_else(|| docker_driver::manifest::MT_OCI_INDEX.to_owned())
}

/// The blobs a pushed manifest lists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PushedManifest {
    pub(crate) media_type: String,
    pub(crate) config: BlobRef,
    pub(crate) layers: Vec<BlobRef>,
}

impl PushedManifest {
    /// Reads a Docker schema 2 or OCI image manifest.
    pub(crate) fn parse(media_type: &str, bytes: &[u8]) -> anyhow::Result<Self> {
        let value: serde_json::Value =
            serde_json::from_slice(bytes).context("the pushed manifest is not JSON")?;
        let blob = |v: &serde_json::Value| -> anyhow::Result<BlobRef> {
            let digest: Digest = v["digest"]
                .as_str()
                .context("a descriptor of the pushed manifest has no digest")?
                .parse()
                .context("a descriptor of the pushed manifest has a malformed digest")?;
            Ok(BlobRef {
                digest,
                size: v["size"].as_u64().unwrap_or(0),
                media_type: v["mediaType"].as_str().unwrap_or_default().to_owned(),
            })
        };
        let config = blob(&value["config"])?;
        let layers = value["layers"]
            .as_array()
            .context("the pushed manifest is not an image manifest (no layers)")?
            .iter()
            .map(blob)
            .collect::<anyhow::Result<Vec<_>>>()?;
        let media_type = value["mediaType"].as_str().unwrap_or(media_type).to_owned();
        Ok(Self {
            media_type,
            config,
            layers,
        })
    }
}

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

/// The repository and tag the registry layout records, from the image's first tag.
pub(crate) fn registry_name(image: &ImageDetails) -> (String, String) {
    let short = strip_algorithm(&image.id)
        .chars()
        .take(12)
        .collect::<String>();
    let tags = crate::sweep::user_tags(&image.repo_tags);
    let Some(tag) = tags.first() else {
        return (format!("dlgrab/{short}"), "latest".to_owned());
    };
    // A tag is NAME[:TAG]; NAME may hold a registry host with a port.
    let (name, tag) = match tag.rsplit_once(':') {
        Some((name, t)) if !t.contains('/') => (name, t),
        _ => (tag.as_str(), "latest"),
    };
    let mut name = name.to_owned();
    if let Some((host, rest)) = name.split_once('/')
        && (host.contains('.') || host.contains(':') || host == "localhost")
    {
        name = rest.to_owned();
    }
    if !name.contains('/') {
        name = format!("library/{name}");
    }
    (name, tag.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use docker_driver::HistoryRow;

    fn image(tags: &[&str], digests: &[&str], layers: usize) -> ImageDetails {
        ImageDetails {
            id: format!("sha256:{}", "a".repeat(64)),
            repo_tags: tags.iter().map(|s| s.to_string()).collect(),
            repo_digests: digests.iter().map(|s| s.to_string()).collect(),
            parent: None,
            created: None,
            os: "linux".into(),
            architecture: "amd64".into(),
            variant: None,
            diff_ids: (0..layers).map(|i| format!("sha256:{i:064}")).collect(),
            history: Vec::new(),
        }
    }

    fn info(store: ImageStore) -> DaemonInfo {
        DaemonInfo {
            server_version: "26.1.5".into(),
            api_version: "1.45".into(),
            image_store: store,
            os: "linux".into(),
            arch: "x86_64".into(),
            root_dir: None,
            elsewhere: None,
            podman: false,
        }
    }

    fn classic() -> ImageStore {
        ImageStore::Classic {
            driver: "overlay2".into(),
        }
    }

    #[track_caller]
    fn check_route(store: ImageStore, tags: &[&str], digests: &[&str], via: Via, expected: Route) {
        let unreadable = StoreAccess::Unavailable("not readable".into());
        let (route, _) = choose_route(
            &info(store),
            &image(tags, digests, 2),
            via,
            &unreadable,
            &[],
        )
        .unwrap();
        assert_eq!(route, expected);
    }

    #[test]
    fn route_choice() {
        check_route(
            ImageStore::Containerd,
            &["x:1"],
            &[],
            Via::Auto,
            Route::Push,
        );
        // A classic store: the survey push tells what the daemon would do.
        check_route(classic(), &["x:1"], &[], Via::Auto, Route::Push);
        check_route(
            classic(),
            &["x:1"],
            &["r/x@sha256:1"],
            Via::Auto,
            Route::Push,
        );
        check_route(classic(), &[], &["r/x@sha256:1"], Via::Auto, Route::Push);
        check_route(ImageStore::Containerd, &[], &[], Via::Auto, Route::Save);
        check_route(classic(), &[], &[], Via::Push, Route::Save);
        check_route(classic(), &["x:1"], &[], Via::Push, Route::Push);
        check_route(
            ImageStore::Containerd,
            &["x:1"],
            &[],
            Via::Save,
            Route::Save,
        );
    }

    #[test]
    fn a_daemon_on_another_machine_is_saved_from() {
        let mut remote = info(classic());
        remote.elsewhere = Some("ssh://me@build".into());
        let img = image(&["x:1"], &[], 2);
        for via in [Via::Auto, Via::Save] {
            let (route, why) =
                choose_route(&remote, &img, via, &StoreAccess::Readable, &[]).unwrap();
            assert_eq!(route, Route::Save);
            assert!(why.contains("another machine"), "{why}");
        }
        for via in [Via::Push, Via::Store] {
            let err = choose_route(&remote, &img, via, &StoreAccess::Readable, &[]).unwrap_err();
            assert!(err.to_string().contains("ssh://me@build"), "{err}");
        }
    }

    #[test]
    fn the_store_route_wins_where_the_layer_store_is_readable() {
        let choose = |store: ImageStore, tags: &[&str], via: Via, access: &StoreAccess| {
            choose_route(&info(store), &image(tags, &[], 2), via, access, &[])
        };
        let readable = StoreAccess::Readable;
        let unreadable = StoreAccess::Unavailable("permission denied".into());
        for tags in [&["x:1"][..], &[]] {
            let (route, why) = choose(classic(), tags, Via::Auto, &readable).unwrap();
            assert_eq!(route, Route::Store);
            assert!(why.contains("layer store"), "{why}");
            let (route, _) = choose(classic(), tags, Via::Store, &readable).unwrap();
            assert_eq!(route, Route::Store);
        }
        let (route, why) = choose(classic(), &["x:1"], Via::Auto, &unreadable).unwrap();
        assert_eq!(route, Route::Push);
        assert!(
            why.contains("survey") && why.contains("permission denied"),
            "{why}"
        );
        // The survey's verdict sends it to save.
        let (route, why) = choose_route(
            &info(classic()),
            &image(&["x:1"], &[], 2),
            Via::Auto,
            &unreadable,
            &[GaveWay::Survey(
                "the daemon uploading layer(s) 1 unasked".into(),
            )],
        )
        .unwrap();
        assert_eq!(route, Route::Save);
        assert!(
            why.contains("survey push showed the daemon uploading"),
            "{why}"
        );
        // Forced routes stay forced.
        let (route, _) = choose(classic(), &["x:1"], Via::Save, &readable).unwrap();
        assert_eq!(route, Route::Save);
        let (route, _) = choose(classic(), &["x:1"], Via::Push, &readable).unwrap();
        assert_eq!(route, Route::Push);
        // The containerd store: its content store when readable, else the
        // push.
        let (route, _) = choose(ImageStore::Containerd, &["x:1"], Via::Auto, &unreadable).unwrap();
        assert_eq!(route, Route::Push);
        for tags in [&["x:1"][..], &[]] {
            let (route, why) = choose(ImageStore::Containerd, tags, Via::Auto, &readable).unwrap();
            assert_eq!(route, Route::Store);
            assert!(why.contains("content store"), "{why}");
        }
        let (route, _) = choose(ImageStore::Containerd, &["x:1"], Via::Store, &readable).unwrap();
        assert_eq!(route, Route::Store);
        let e = choose(ImageStore::Containerd, &["x:1"], Via::Store, &unreadable).unwrap_err();
        assert!(
            e.to_string()
                .contains("containerd image store's content store")
                && e.to_string().contains("permission denied"),
            "{e}"
        );
        let e = choose(classic(), &["x:1"], Via::Store, &unreadable).unwrap_err();
        assert!(e.to_string().contains("permission denied"), "{e}");
    }

    #[test]
    fn a_route_that_gave_way_is_not_chosen_again() {
        let readable = StoreAccess::Readable;
        let img = image(&["x:1"], &[], 2);
        for store in [classic(), ImageStore::Containerd] {
            let failed = [GaveWay::Store("layer 1 changed".into())];
            let (route, why) =
                choose_route(&info(store.clone()), &img, Via::Auto, &readable, &failed).unwrap();
            assert_eq!(route, Route::Push, "{why}");
            // Then the push gives way too: save, whatever the store said.
            for push in [
                GaveWay::Survey("uploads unasked".into()),
                GaveWay::Refused("connection refused".into()),
            ] {
                let gave_way = [failed[0].clone(), push.clone()];
                let (route, why) =
                    choose_route(&info(store.clone()), &img, Via::Auto, &readable, &gave_way)
                        .unwrap();
                assert_eq!(route, Route::Save, "{why}");
                let (route, _) =
                    choose_route(&info(store.clone()), &img, Via::Auto, &readable, &[push])
                        .unwrap();
                assert_eq!(
                    route,
                    Route::Store,
                    "a push giving way leaves the store route"
                );
            }
        }
        let (_, why) = choose_route(
            &info(classic()),
            &img,
            Via::Auto,
            &StoreAccess::Unavailable("x".into()),
            &[GaveWay::Refused("connection refused".into())],
        )
        .unwrap();
        assert!(why.contains("connection refused"), "{why}");
    }

    /// A three-layer image: 1000, 100 and 10 bytes, base first.
    fn surveyed() -> Survey {
        let mut img = image(&["x:1"], &[], 3);
        img.diff_ids = (0..3)
            .map(|i| format!("sha256:{}", i.to_string().repeat(64)))
            .collect();
        img.history = [1000, 100, 10]
            .iter()
            .enumerate()
            .map(|(i, &size)| HistoryRow {
                size,
                ..row(None, Some(i))
            })
            .collect();
        Survey::new(&img)
    }

    fn short(i: usize) -> String {
        i.to_string().repeat(12)
    }

    #[test]
    fn the_survey_reads_the_daemons_progress_per_layer() {
        let mut s = surveyed();
        assert_eq!(s.progress(&short(2), "Preparing", None), [2]);
        assert_eq!(s.seen(2), Seen::Unknown);
        s.progress(&short(2), "Pushing", Some(512));
        assert_eq!(s.seen(2), Seen::Uploading);
        s.progress(&short(2), "Pushed", None);
        s.progress(&short(2), "Pushing", Some(512));
        assert_eq!(s.seen(2), Seen::Uploaded);
        s.progress(&short(0), "Layer already exists", None);
        assert_eq!(s.seen(0), Seen::Asked);
        s.progress(&short(1), "Mounted from library/x", None);
        assert_eq!(s.seen(1), Seen::Asked);
        // Another store's blob IDs match no layer.
        assert!(s.progress("0123456789ab", "Pushed", None).is_empty());
    }

    #[test]
    fn survey_steps_cancel_give_up_or_go_on() {
        let share = 0.15;
        // Top layer uploaded unasked, config at hand: cancel once it is in.
        let mut s = surveyed();
        s.progress(&short(2), "Pushing", None);
        s.progress(&short(0), "Pushing", None);
        assert_eq!(
            survey_step(&s, &[2], &[], true, false, share),
            SurveyStep::Continue
        );
        s.progress(&short(2), "Pushed", None);
        assert_eq!(
            survey_step(&s, &[2], &[], true, false, share),
            SurveyStep::Cancel
        );
        // Without the config the push must run to its end: the base counts.
        assert!(matches!(
            survey_step(&s, &[2], &[], false, false, share),
            SurveyStep::GiveUp(why) if why.contains("layer(s) 0, 2")
        ));
        // Forced, it goes on.
        assert_eq!(
            survey_step(&s, &[2], &[], false, true, share),
            SurveyStep::Continue
        );
        // The wanted base uploaded unasked is too big even alone.
        let mut s = surveyed();
        s.progress(&short(0), "Pushing", None);
        assert!(matches!(
            survey_step(&s, &[0], &[], true, false, share),
            SurveyStep::GiveUp(_)
        ));
        // Every layer asked: the survey costs nothing.
        let mut s = surveyed();
        for i in 0..3 {
            s.progress(&short(i), "Layer already exists", None);
        }
        assert_eq!(
            survey_step(&s, &[1], &[], false, false, share),
            SurveyStep::Continue
        );
        // All settled: nothing left to cancel, the manifest is near.
        let mut s = surveyed();
        s.progress(&short(0), "Layer already exists", None);
        s.progress(&short(1), "Layer already exists", None);
        s.progress(&short(2), "Pushed", None);
        assert_eq!(
            survey_step(&s, &[2], &[], true, false, share),
            SurveyStep::Continue
        );
        // The wanted top was captured before (asked about, its blob known)
        // while the base is uploaded unasked: drop it, capture the top.
        let mut s = surveyed();
        s.progress(&short(2), "Layer already exists", None);
        s.progress(&short(0), "Pushing", None);
        assert_eq!(
            survey_step(&s, &[2], &[2], true, true, share),
            SurveyStep::CancelThenCapture
        );
        assert_ne!(
            survey_step(&s, &[2], &[], true, true, share),
            SurveyStep::CancelThenCapture
        );
        assert_ne!(
            survey_step(&s, &[2], &[2], false, true, share),
            SurveyStep::CancelThenCapture
        );
    }

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
    fn an_upload_seen_by_the_registry_counts_before_the_daemon_says_pushing() {
        // The top was asked about (its blob known); the registry saw an
        // upload start though the daemon has not said which layer yet.
        let mut s = surveyed();
        s.progress(&short(2), "Layer already exists", None);
        assert_eq!(
            survey_step(&s, &[2], &[2], true, false, 0.15),
            SurveyStep::Continue
        );
        s.upload_started();
        assert_eq!(
            survey_step(&s, &[2], &[2], true, false, 0.15),
            SurveyStep::CancelThenCapture
        );
    }

    #[test]
    fn the_survey_may_be_dropped_while_no_wanted_layer_waits_for_the_manifest() {
        let mut s = surveyed();
        let mut asked = AskedBlobs::default();
        assert!(survey_may_cancel(&s, &[2], &asked, true));
        assert!(!survey_may_cancel(&s, &[2], &asked, false));
        // Asked about, its HEAD not matched yet: may still be.
        asked.head(digest('a'));
        s.progress(&short(2), "Layer already exists", None);
        assert!(survey_may_cancel(&s, &[2], &asked, true));
        asked.exists(vec![2]);
        assert!(survey_may_cancel(&s, &[2], &asked, true));
        // Asked about with no HEAD to match (mounted, say): only the
        // manifest will name its blob.
        let mut s = surveyed();
        s.progress(&short(1), "Mounted from library/x", None);
        let asked = AskedBlobs::default();
        assert!(!survey_may_cancel(&s, &[1], &asked, true));
        assert!(survey_may_cancel(&s, &[2], &asked, true));
    }

    fn digest(c: char) -> Digest {
        format!("sha256:{}", c.to_string().repeat(64))
            .parse()
            .unwrap()
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
    fn asked_blobs_match_one_to_one_when_one_head_is_pending() {
        let mut asked = AskedBlobs::default();
        asked.head(digest('a'));
        asked.exists(vec![2]);
        asked.head(digest('b'));
        asked.head(digest('b'));
        asked.exists(vec![0, 3]);
        assert_eq!(asked.candidates(2), Some(&[digest('a')][..]));
        assert_eq!(asked.candidates(0), Some(&[digest('b')][..]));
        assert_eq!(asked.candidates(3), Some(&[digest('b')][..]));
        assert_eq!(asked.group_mates(2), Vec::<usize>::new());
    }

    #[test]
    fn asked_blobs_interleaved_make_a_group_once_the_counts_meet() {
        let mut asked = AskedBlobs::default();
        asked.head(digest('a'));
        asked.head(digest('b'));
        asked.exists(vec![1]);
        assert_eq!(asked.candidates(1), None, "two HEADs, one message: open");
        asked.exists(vec![2]);
        assert_eq!(asked.candidates(1), Some(&[digest('a'), digest('b')][..]));
        assert_eq!(asked.candidates(2), Some(&[digest('a'), digest('b')][..]));
        assert_eq!(asked.group_mates(2), vec![1]);
        // A later exact match is not mixed into the group.
        asked.head(digest('c'));
        asked.exists(vec![0]);
        assert_eq!(asked.candidates(0), Some(&[digest('c')][..]));
        let mut known = asked.known();
        known.sort_unstable();
        assert_eq!(known, vec![0, 1, 2]);
    }

    #[test]
    fn asked_blobs_wait_for_as_many_heads_as_messages() {
        let mut asked = AskedBlobs::default();
        asked.exists(vec![1]);
        asked.head(digest('a'));
        // One each, in either order: matched (it can only be that HEAD).
        assert_eq!(asked.candidates(1), Some(&[digest('a')][..]));
        let mut asked = AskedBlobs::default();
        asked.head(digest('8'));
        asked.head(digest('9'));
        asked.exists(vec![4]);
        assert!(asked.known().is_empty());
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
    fn layer_ids_prefer_history_ids_then_the_requested_id() {
        let mut img = image(&["x:1"], &[], 3);
        img.history = vec![
            row(None, Some(0)),
            row(Some("sha256:1111"), Some(1)),
            row(Some("sha256:env"), None),
            row(Some("sha256:3333"), Some(2)),
        ];
        let v1 = vec!["v0".to_owned(), "v1".to_owned(), "v2".to_owned()];
        assert_eq!(layer_ids(&img, &v1, None).unwrap(), ["v0", "1111", "3333"]);
        assert_eq!(
            layer_ids(&img, &v1, Some((2, "sha256:top"))).unwrap(),
            ["v0", "1111", "top"]
        );
        assert!(layer_ids(&img, &v1[..2], None).is_err());
    }

    fn row(id: Option<&str>, layer_index: Option<usize>) -> HistoryRow {
        HistoryRow {
            id: id.map(str::to_owned),
            created: None,
            created_by: String::new(),
            size: 0,
            comment: String::new(),
            empty_layer: layer_index.is_none(),
            layer_index,
        }
    }

    fn digest_of(bytes: &[u8]) -> Digest {
        use sha2::Digest as _;
        format!("sha256:{}", hex::encode(sha2::Sha256::digest(bytes)))
            .parse()
            .unwrap()
    }

    /// An image manifest of `layers` gzip layers.
    fn oci_manifest(layers: usize, salt: &str) -> String {
        let layers: Vec<String> = (0..layers)
            .map(|i| {
                format!(r#"{{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"sha256:{i:064}","size":{}}}"#, salt.len())
            })
            .collect();
        format!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:{}","size":2}},"layers":[{}]}}"#,
            "c".repeat(64),
            layers.join(",")
        )
    }

    #[test]
    fn an_image_of_another_platform_is_refused_naming_its_own() {
        let amd64 = image(&[], &[], 1);
        let want = |p: &str| p.parse::<docker_driver::manifest::Platform>().unwrap();
        check_platform("app", &amd64, &want("linux/amd64")).unwrap();
        let err = check_platform("app", &amd64, &want("linux/arm64")).unwrap_err();
        assert_eq!(
            format!("{err:#}"),
            "app has no linux/arm64 image here (it has linux/amd64)"
        );
        let mut arm = image(&[], &[], 1);
        arm.architecture = "arm".into();
        arm.variant = Some("v6".into());
        check_platform("app", &arm, &want("linux/arm")).unwrap();
        check_platform("app", &arm, &want("linux/arm/v6")).unwrap();
        let err = check_platform("app", &arm, &want("linux/arm/v7")).unwrap_err();
        assert!(
            format!("{err:#}").contains("(it has linux/arm/v6)"),
            "{err:#}"
        );
    }

    #[test]
    fn an_index_pushed_last_gives_the_platform_manifest_put_before_it() {
        // As the containerd store pushes a BuildKit image: the image
        // manifest, the attestation manifest, then the index under the tag.
        let image_manifest = oci_manifest(2, "image");
        let attestation = oci_manifest(1, "attestation");
        let index = format!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[
            {{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{}","size":1,"platform":{{"architecture":"amd64","os":"linux"}}}},
            {{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{}","size":1,"platform":{{"architecture":"unknown","os":"unknown"}},"annotations":{{"vnd.docker.reference.type":"attestation-manifest"}}}}]}}"#,
            digest_of(image_manifest.as_bytes()),
            digest_of(attestation.as_bytes()),
        );
        let mt = "application/vnd.oci.image.manifest.v1+json".to_owned();
        let mut pushed = PushedManifests::default();
        assert_eq!(pushed.image_manifest(&image(&[], &[], 2)).unwrap(), None);
        for body in [&image_manifest, &attestation] {
            pushed.record(digest_of(body.as_bytes()), mt.clone(), body.clone().into());
        }
        pushed.record(
            digest_of(index.as_bytes()),
            "application/vnd.oci.image.index.v1+json".into(),
            index.clone().into(),
        );
        let (media_type, body) = pushed.image_manifest(&image(&[], &[], 2)).unwrap().unwrap();
        assert_eq!(media_type, mt);
        assert_eq!(body, image_manifest.as_bytes());
        let parsed = PushedManifest::parse(&media_type, &body).unwrap();
        assert_eq!(parsed.layers.len(), 2);

        // Another platform: the error names the ones there.
        let mut arm = image(&[], &[], 2);
        arm.architecture = "arm64".into();
        let err = format!("{:#}", pushed.image_manifest(&arm).unwrap_err());
        assert!(
            err.contains("no manifest for linux/arm64 (it has linux/amd64)"),
            "{err}"
        );

        // The index alone (its manifest put by an earlier push only).
        let mut alone = PushedManifests::default();
        alone.record(digest_of(index.as_bytes()), String::new(), index.into());
        let err = format!(
            "{:#}",
            alone.image_manifest(&image(&[], &[], 2)).unwrap_err()
        );
        assert!(
            err.contains("did not reach the temporary registry"),
            "{err}"
        );
        // …which the survey's manifests supply.
        let mut both = PushedManifests::default();
        both.record(
            digest_of(image_manifest.as_bytes()),
            mt.clone(),
            image_manifest.clone().into(),
        );
        both.extend(alone);
        assert_eq!(
            both.image_manifest(&image(&[], &[], 2)).unwrap().unwrap().1,
            image_manifest.as_bytes()
        );
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

    #[test]
    fn without_an_index_the_image_manifest_is_the_last_that_is_no_attestation() {
        // Docker 26.1 puts an index's manifests under the tag, the first
        // one refused ends the push before the index.
        let image_manifest = oci_manifest(2, "image");
        let attestation = oci_manifest(1, "x").replace(
            "application/vnd.oci.image.layer.v1.tar+gzip",
            "application/vnd.in-toto+json",
        );
        let mt = "application/vnd.oci.image.manifest.v1+json".to_owned();
        let mut pushed = PushedManifests::default();
        pushed.record_refused(
            digest_of(image_manifest.as_bytes()),
            mt.clone(),
            image_manifest.clone().into(),
        );
        pushed.record(
            digest_of(attestation.as_bytes()),
            mt.clone(),
            attestation.into(),
        );
        assert!(pushed.refused());
        assert_eq!(
            pushed
                .image_manifest(&image(&[], &[], 2))
                .unwrap()
                .unwrap()
                .1,
            image_manifest.as_bytes()
        );
    }

    #[test]
    fn a_docker_manifest_list_is_an_index_too() {
        let image_manifest = oci_manifest(1, "x").replace(
            "application/vnd.oci.image.manifest.v1+json",
            "application/vnd.docker.distribution.manifest.v2+json",
        );
        let list = format!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.list.v2+json","manifests":[{{"mediaType":"application/vnd.docker.distribution.manifest.v2+json","digest":"{}","size":1,"platform":{{"architecture":"amd64","os":"linux"}}}}]}}"#,
            digest_of(image_manifest.as_bytes())
        );
        let mut pushed = PushedManifests::default();
        pushed.record(
            digest_of(image_manifest.as_bytes()),
            "application/vnd.docker.distribution.manifest.v2+json".into(),
            image_manifest.clone().into(),
        );
        pushed.record(
            digest_of(list.as_bytes()),
            "application/vnd.docker.distribution.manifest.list.v2+json".into(),
            list.into(),
        );
        assert_eq!(
            pushed
                .image_manifest(&image(&[], &[], 1))
                .unwrap()
                .unwrap()
                .1,
            image_manifest.as_bytes()
        );
    }

    #[test]
    fn manifests_of_both_kinds_parse() {
        let docker = format!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.v2+json",
            "config":{{"mediaType":"application/vnd.docker.container.image.v1+json","size":7,"digest":"{c}"}},
            "layers":[{{"mediaType":"application/vnd.docker.image.rootfs.diff.tar.gzip","size":9,"digest":"{l}"}}]}}"#,
            c = digest('c'),
            l = digest('1')
        );
        let m = PushedManifest::parse("x", docker.as_bytes()).unwrap();
        assert_eq!(
            m.media_type,
            "application/vnd.docker.distribution.manifest.v2+json"
        );
        assert_eq!(m.config.digest, digest('c'));
        assert_eq!(m.layers.len(), 1);
        assert_eq!(m.layers[0].size, 9);
        let oci = format!(
            r#"{{"schemaVersion":2,"config":{{"digest":"{c}","size":1}},"layers":[]}}"#,
            c = digest('c')
        );
        let m = PushedManifest::parse("application/vnd.oci.image.manifest.v1+json", oci.as_bytes())
            .unwrap();
        assert_eq!(m.media_type, "application/vnd.oci.image.manifest.v1+json");
        assert!(PushedManifest::parse("x", br#"{"manifests":[]}"#).is_err());
        assert!(PushedManifest::parse("x", b"not json").is_err());
    }

    #[test]
    fn registry_names() {
        let mut img = image(&["demo:1"], &[], 1);
        assert_eq!(registry_name(&img), ("library/demo".into(), "1".into()));
        img.repo_tags = vec!["localhost:5000/a/b:v2".into()];
        assert_eq!(registry_name(&img), ("a/b".into(), "v2".into()));
        img.repo_tags = vec!["team/app".into()];
        assert_eq!(registry_name(&img), ("team/app".into(), "latest".into()));
        img.repo_tags.clear();
        assert_eq!(
            registry_name(&img),
            (format!("dlgrab/{}", "a".repeat(12)), "latest".into())
        );
    }
}
