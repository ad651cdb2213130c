//! The push route: the daemon pushes the image into a temporary registry
//! on 127.0.0.1. A survey push, in which every blob is claimed present,
//! learns each layer's blob digest and shows what the daemon does per
//! layer: ask first (`HEAD`; nothing crosses) or upload unasked (the survey
//! keeps those: it is their capture). The survey is dropped as soon as the
//! wanted layers are in when the config is at hand (capture and cancel),
//! or given up for `docker save` when it would cost more; a capture push
//! then uploads only the wanted layers still missing (and the config).

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use bytes::Bytes;
use docker_driver::{DaemonInfo, ImageDetails, ImageStore, PushEvent, RegistryCredentials};
use futures::StreamExt;
use layer_writer::manifest::{ManifestBlobs, digest_of};
use layer_writer::run::TempKind;
use shim_registry::auth::Auth;
use shim_registry::oci_spec::image::Digest;
use shim_registry::storage::{FsStorage, Storage};
use shim_registry::{ChannelSink, Registry, RegistryEvent, UploadHold};
use tokio::sync::mpsc::UnboundedReceiver;

use super::store::Store;
use super::{Job, Outcome, Source, output_already_there};
use crate::plan::{GaveWay, Via, Wanted};

mod manifests;
mod policy;
mod survey;

use manifests::PushedManifests;
use policy::CapturePolicy;
use survey::{AskedBlobs, Survey, SurveyStep};

/// The daemon's message, when `error` is its refusal of a push.
fn refusal(error: &anyhow::Error) -> Option<String> {
    error.chain().find_map(|cause| match cause.downcast_ref() {
        Some(docker_driver::DriverError::PushRefused { message, .. }) => Some(message.clone()),
        _ => None,
    })
}

/// How the survey push ended.
struct SurveyEnd {
    /// The manifests the daemon put (all of them when the push ran to its end).
    manifests: PushedManifests,
    /// True when it was dropped because the wanted layers were in.
    cancelled: bool,
    /// The blob each layer uploaded unasked was stored as, where known.
    uploaded: HashMap<usize, Digest>,
    /// Blobs stored but not yet matched to a layer.
    unmatched: Vec<Digest>,
    /// The blobs each layer asked about may have been asked for.
    asked: AskedBlobs,
    /// True when the wanted layers asked about are still to be captured.
    capture_asked: bool,
    /// Why the survey was given up for `docker save`, when it was.
    gave_up: Option<String>,
    /// The blob each wanted layer was found in by its diff ID.
    identified: HashMap<usize, Digest>,
}

/// The push route (see [`Job::by_push`]). When the classic layer store is
/// readable, the image config is taken from it, else (a `docker` group
/// member) through a reader container as the archive route reads it, so
/// that the push can be dropped as soon as the wanted layers are in.
pub(crate) async fn run(
    job: &Job,
    source: &Source<'_>,
    wanted: &[Wanted],
) -> anyhow::Result<Outcome> {
    let config = match source.store {
        Some(Store::Layers(store)) => store.image_config(&source.image.id).ok(),
        Some(Store::Containers(store)) => store.image_config(&source.image.id).ok(),
        Some(Store::Content(_)) => None,
        // Not readable here (a `docker` group member): through a reader
        // container, as the archive route reads it.
        None if crate::plan::archive_possible(source.info, &[]).is_ok() => {
            super::archive::image_config(job, source).await
        }
        None => None,
    };
    job.by_push(source.info, source.image, wanted, config).await
}

impl Job {
    /// The push route: a survey push in which every blob is claimed present
    /// shows which layers the daemon asks about and which it uploads
    /// unasked (those are kept: the survey is their capture). When the
    /// wanted layers are all uploaded unasked and the image config is at
    /// hand (`config`, from the layer store), the push is dropped as soon as
    /// they are in (capture and cancel). Otherwise the survey runs to its
    /// end and, when a wanted layer or the config is still missing, a
    /// capture push uploads only those. Unless forced (`--via push`), the
    /// survey gives way to `docker save` as soon as it would cost more
    /// ([`survey::survey_step`]); the route also gives way when the daemon
    /// refuses the push on its side. Nothing is written then.
    async fn by_push(
        &self,
        info: &DaemonInfo,
        image: &ImageDetails,
        wanted: &[Wanted],
        config: Option<Vec<u8>>,
    ) -> anyhow::Result<Outcome> {
        let scratch = crate::temp_names::scratch_in(&self.options.outdir, TempKind::Scratch);
        self.cleanup.add_dir(scratch.clone());
        let storage =
            Arc::new(FsStorage::new(&scratch).with_context(|| {
                format!("cannot create the scratch folder {}", scratch.display())
            })?);
        let name = crate::temp_names::repository();
        let tag = "export";
        let mut policy = CapturePolicy::new(name.clone());
        if matches!(info.image_store, ImageStore::Containerd) {
            // Its push labels the user's content with our registry's name
            // only when it succeeds: the last step is refused. Docker 26.1
            // (API 1.45) puts an index's manifests under the tag first.
            let image_manifests = policy::api_at_least(&info.api_version, 1, 46);
            policy = policy.refusing_tag(tag, image.id.parse().ok(), image_manifests);
        }
        if matches!(info.image_store, ImageStore::Classic { .. }) && !info.podman {
            // A classic store's "Layer already exists" names the layer:
            // answered one at a time, each `HEAD` is matched to its layer.
            // (Podman asks about every layer and says nothing of the sort.)
            policy = policy.paced(image.id.parse().ok());
        }
        let policy = Arc::new(policy);
        let (sink, mut events) = ChannelSink::new();
        let faults = crate::fault::StorageFaults::default();
        // Uploads that cannot be a wanted layer stop being read while a
        // push that will be dropped goes on: the daemon stops compressing
        // them and its time goes to the wanted ones.
        let hold = UploadHold::new();
        // The registry serves only this run: the daemon gets per-run
        // credentials in X-Registry-Auth; every other request gets a 401.
        let (user, password) = run_credentials();
        let registry = Registry::builder()
            .storage(storage.clone())
            .presence(policy.clone())
            .event_sink(faults.wrap(sink))
            .auth(Auth::basic().user(user.clone(), password.clone()))
            .max_manifest_size(MAX_MANIFEST)
            .upload_budget(upload_budget(image))
            .upload_hold(hold.clone())
            .build()
            .context("cannot set up the temporary registry")?;
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, self.options.port));
        let handle = registry.spawn(addr).await.with_context(|| {
            format!("cannot start the temporary registry on {addr} (is the port taken?)")
        })?;
        let repo = format!("127.0.0.1:{}/{name}", handle.addr().port());
        let reference = format!("{repo}:{tag}");
        tracing::debug!(registry = %handle.url(), reference, "temporary registry up");
        let credentials = RegistryCredentials {
            username: user,
            password,
            server_address: format!("127.0.0.1:{}", handle.addr().port()),
        };

        let indexes: Vec<usize> = wanted.iter().map(|w| w.index).collect();
        let pushed = faults
            .abort_on_failure(async {
                self.cleanup
                    .tag(&image.id, &repo, tag)
                    .await
                    .context("cannot tag the image for the push")?;
                self.reporter
                    .phase("survey push: which layers does the daemon ask about?");
                let forced = self.options.via == Via::Push;
                let mut end = self
                    .survey(
                        image,
                        &indexes,
                        config.is_some(),
                        forced,
                        info,
                        &repo,
                        tag,
                        &credentials,
                        &mut events,
                        &hold,
                        &policy,
                    )
                    .await
                    .context("survey push")?;
                if let Some(why) = end.gave_up.take() {
                    return Ok(Found::GaveUp(why));
                }
                if end.cancelled && end.capture_asked {
                    let mut asked: Vec<Digest> = Vec::new();
                    for digest in indexes
                        .iter()
                        .filter_map(|&i| end.asked.candidates(i))
                        .flatten()
                    {
                        if !asked.contains(digest) {
                            asked.push(digest.clone());
                        }
                    }
                    policy.capture(asked.clone());
                    self.reporter
                        .phase("capture push: uploading the wanted layers");
                    // Each committed blob is told by its diff ID: the
                    // group mates' blobs are not needed, and a bigger one
                    // waits.
                    hold.hold_beyond(wanted_bound(image, &indexes));
                    let capture = Capture {
                        blobs: &asked,
                        layers: wanted_diff_ids(image, &indexes),
                        storage: storage.as_ref(),
                        hold: &hold,
                    };
                    let (committed, identified) = self
                        .push_until(&repo, tag, &credentials, &mut events, capture)
                        .await
                        .context("capture push")?;
                    // A pulled layer is compressed anew: its blob is not the
                    // one asked about; the writer finds it by its diff ID.
                    end.unmatched.extend(committed);
                    end.identified.extend(identified);
                }
                if end.cancelled {
                    return Ok(Found::Cancelled(Box::new(end)));
                }
                let (media_type, body) = end.manifests.image_manifest(image)?.context(
                    "the survey push ended without a manifest reaching the temporary registry",
                )?;
                let survey = ManifestBlobs::parse(&media_type, &body)
                    .context("cannot read the pushed manifest")?;
                if survey.layers.len() != image.diff_ids.len() {
                    bail!(
                        "the daemon pushed a manifest of {} layers for an image of {}",
                        survey.layers.len(),
                        image.diff_ids.len()
                    );
                }
                let mut missing = Vec::new();
                for &i in &indexes {
                    let digest = &survey.layers[i].digest;
                    if storage.stat_blob(digest).await.ok().flatten().is_none() {
                        missing.push(digest.clone());
                    }
                }
                if missing.is_empty() && config.is_some() {
                    tracing::debug!("the survey uploaded every wanted layer: no capture push");
                    let index = end.manifests.index_of(&body);
                    return Ok(Found::Manifest(media_type, body, index));
                }
                missing.push(survey.config.digest.clone());
                policy.capture(missing);
                // This push runs to its end: nothing may wait.
                hold.release();
                self.reporter
                    .phase("capture push: uploading the wanted layers");
                // The containerd store finds the survey's manifest already there
                // and does not put it again: the survey's then stands.
                let captured = self
                    .push(&repo, tag, &credentials, &mut events)
                    .await
                    .context("capture push")?;
                // An index may name a manifest only the survey put.
                let mut manifests = end.manifests.clone();
                manifests.extend(captured);
                let (media_type, body) = manifests
                    .image_manifest(image)?
                    .unwrap_or((media_type, body));
                let index = manifests.index_of(&body);
                Ok(Found::Manifest(media_type, body, index))
            })
            .await;
        let untagged = self.cleanup.remove_tag(&reference).await;
        // Anything the daemon still sends after a cancel is counted, to
        // show the cancel held.
        let late = std::iter::from_fn(|| events.try_recv().ok())
            .filter(|e| matches!(e, RegistryEvent::UploadStarted { .. }))
            .count();
        handle.shutdown().await;
        let found = match pushed {
            Ok(found) => found,
            Err(e) => {
                drop(storage);
                let _ = tokio::fs::remove_dir_all(&scratch).await;
                // The daemon itself refused (it cannot reach the registry,
                // or lacks content an index names), not our storage.
                if faults.first().is_none()
                    && let Some(message) = refusal(&e)
                {
                    // The daemon's own words, once: the driver's chain repeats them.
                    let hint = if message.contains("connection refused") {
                        " (a daemon that does not share this machine's 127.0.0.1 cannot take \
                         the push route; --via archive or --via save reads the layers instead)"
                    } else {
                        ""
                    };
                    let error = anyhow::anyhow!(
                        "the daemon's push to dlgrab's registry failed: {message}{hint}"
                    );
                    drop(e);
                    return Ok(Outcome::GaveWay {
                        written: Vec::new(),
                        because: GaveWay::Refused(message),
                        error,
                    });
                }
                return Err(faults.explain(e));
            }
        };
        untagged.with_context(|| format!("cannot remove the temporary tag {reference}"))?;

        let (context, blobs) = match found {
            Found::GaveUp(why) => {
                drop(storage);
                let _ = tokio::fs::remove_dir_all(&scratch).await;
                return Ok(Outcome::GaveWay {
                    written: Vec::new(),
                    error: anyhow::anyhow!("the survey push was given up: {why}"),
                    because: GaveWay::Survey(why),
                });
            }
            Found::Cancelled(end) => {
                tracing::debug!(
                    uploads_started_after_cancel = late,
                    "push cancelled, temporary tag removed"
                );
                let config = config.context("the push was cancelled without the image config")?;
                let blobs = upload_candidates(&indexes, &end);
                (self.context(image, wanted, config, None)?, blobs)
            }
            Found::Manifest(media_type, body, index) => {
                let manifest = ManifestBlobs::parse(&media_type, &body)
                    .context("cannot read the pushed manifest")?;
                let config_json = match config {
                    Some(config) => config,
                    None => read_blob(storage.as_ref(), &manifest.config.digest).await?,
                };
                let blobs = indexes
                    .iter()
                    .map(|&i| vec![manifest.layers[i].digest.clone()])
                    .collect();
                let mut context = self.context(
                    image,
                    wanted,
                    config_json,
                    Some((&manifest, media_type, body)),
                )?;
                // The index the image ID names, so that a loaded folder
                // comes back under that ID.
                context.index = index
                    .filter(|(_, bytes)| digest_of(bytes).to_string() == image.id)
                    .map(|(media_type, bytes)| (media_type, bytes.to_vec()));
                (context, blobs)
            }
        };
        let writer = self.writer();
        let mut written = Vec::new();
        for (w, candidates) in wanted.iter().zip(&blobs) {
            self.reporter.phase(format!("writing layer {}", w.index));
            let mut outcome = None;
            for blob in candidates {
                let reader = match storage
                    .open_blob(blob)
                    .await
                    .context("cannot read a captured layer")?
                {
                    Some(reader) => reader,
                    None if candidates.len() > 1 => continue,
                    None => bail!("the daemon did not upload layer {} ({blob})", w.index),
                };
                match writer.write_layer(&context, w.index, reader).await {
                    Err(layer_writer::WriteError::DiffIdMismatch { .. })
                        if candidates.len() > 1 =>
                    {
                        tracing::debug!(%blob, layer = w.index, "not this layer's blob");
                    }
                    result => {
                        outcome = Some(result);
                        break;
                    }
                }
            }
            let layer = outcome
                .with_context(|| format!("no blob the daemon uploaded is layer {}", w.index))?
                .map_err(|e| match e {
                    layer_writer::WriteError::TargetExists { path } => output_already_there(&path),
                    e => anyhow::Error::new(e).context(format!("cannot write layer {}", w.index)),
                })?;
            self.announce(&layer);
            written.push(layer);
        }
        drop(storage);
        let _ = tokio::fs::remove_dir_all(&scratch).await;
        Ok(Outcome::Written(written))
    }

    /// The survey push: every blob claimed present; follows the daemon's
    /// progress per layer and the blobs it stores, and drops the push when
    /// [`survey::survey_step`] says so. While the push may still be dropped
    /// early, uploads bigger than any wanted layer's blob are held.
    #[allow(clippy::too_many_arguments)]
    async fn survey(
        &self,
        image: &ImageDetails,
        wanted: &[usize],
        config_at_hand: bool,
        forced: bool,
        info: &DaemonInfo,
        repo: &str,
        tag: &str,
        credentials: &RegistryCredentials,
        events: &mut UnboundedReceiver<RegistryEvent>,
        hold: &UploadHold,
        policy: &CapturePolicy,
    ) -> anyhow::Result<SurveyEnd> {
        let share = survey::unasked_share(info);
        let mut survey = Survey::new(image);
        let mut end = SurveyEnd {
            manifests: PushedManifests::default(),
            cancelled: false,
            uploaded: HashMap::new(),
            unmatched: Vec::new(),
            asked: AskedBlobs::default(),
            capture_asked: false,
            identified: HashMap::new(),
            gave_up: None,
        };
        if config_at_hand {
            hold.hold_beyond(wanted_bound(image, wanted));
        }
        let mut idle = Idle::new(hold);
        let mut stream = self.driver.push(repo, tag, Some(credentials.clone()));
        let on_event = |end: &mut SurveyEnd, survey: &mut Survey, event: RegistryEvent| match event
        {
            RegistryEvent::ManifestPut {
                digest,
                media_type,
                body,
                ..
            } => end.manifests.record(digest, media_type, body),
            RegistryEvent::ManifestRefused {
                digest,
                media_type,
                body,
                ..
            } => end.manifests.record_refused(digest, media_type, body),
            RegistryEvent::BlobCommitted { digest, size, .. } => {
                tracing::debug!(%digest, size, "blob received");
                end.unmatched.push(digest);
            }
            RegistryEvent::BlobHeadAnswered {
                digest,
                present: true,
                ..
            } => end.asked.head(digest),
            RegistryEvent::UploadStarted { .. } => survey.upload_started(),
            other => tracing::trace!(?other, "registry event"),
        };
        loop {
            tokio::select! {
                item = stream.next() => match item {
                    None => break,
                    Some(Err(e)) => {
                        while let Ok(event) = events.try_recv() {
                            on_event(&mut end, &mut survey, event);
                        }
                        if end.manifests.refused() {
                            tracing::debug!(error = %e, "the push failed on the refused manifest, as planned");
                            break;
                        }
                        return Err(e).context("the daemon's push failed");
                    }
                    Some(Ok(PushEvent::Layer { id, status, total, .. })) => {
                        idle.touch();
                        // Its blob's commit came before the daemon said so.
                        while let Ok(event) = events.try_recv() {
                            on_event(&mut end, &mut survey, event);
                        }
                        tracing::debug!(id, status, "push progress");
                        let layers = survey.progress(&id, &status, total);
                        if status == "Pushed" && end.unmatched.len() == 1 {
                            let digest = end.unmatched.remove(0);
                            for &i in &layers {
                                end.uploaded.insert(i, digest.clone());
                            }
                        }
                        // Its HEAD came before the daemon said so.
                        if status == "Layer already exists" {
                            end.asked.exists(layers.clone());
                            policy.layer_reported();
                        }
                    }
                    Some(Ok(event)) => {
                        tracing::debug!(?event, "push progress");
                        continue;
                    }
                },
                Some(event) = events.recv() => {
                    idle.saw(&event);
                    let decide = matches!(event, RegistryEvent::UploadStarted { .. });
                    on_event(&mut end, &mut survey, event);
                    if !decide {
                        continue;
                    }
                }
                () = idle.expired() => {
                    idle.release("the survey push");
                    continue;
                }
            }
            let known = capturable(&survey, &end.asked, forced, share);
            match survey::survey_step(&survey, wanted, &known, config_at_hand, forced, share) {
                SurveyStep::Continue => {
                    if hold.limit().is_some()
                        && !survey::survey_may_cancel(&survey, wanted, &end.asked, config_at_hand)
                    {
                        tracing::debug!(
                            "the survey push must run to its end: held uploads released"
                        );
                        hold.release();
                    }
                }
                SurveyStep::CancelThenCapture => {
                    tracing::debug!(
                        "the wanted layers were asked about while others are uploaded unasked: the push is dropped"
                    );
                    end.cancelled = true;
                    end.capture_asked = true;
                    break;
                }
                SurveyStep::Cancel => {
                    tracing::debug!("every wanted layer is in: the push is dropped");
                    end.cancelled = true;
                    break;
                }
                SurveyStep::GiveUp(why) => {
                    tracing::debug!(why, "the survey push is given up");
                    end.gave_up = Some(why);
                    break;
                }
            }
        }
        drop(stream);
        while let Ok(event) = events.try_recv() {
            on_event(&mut end, &mut survey, event);
        }
        Ok(end)
    }

    /// Pushes `repo:tag` until every wanted layer is stored (found by its
    /// diff ID in a committed blob), or else every blob asked for, then
    /// drops the push (the daemon cancels the rest). Returns the blobs
    /// committed and the ones found to be the wanted layers.
    async fn push_until(
        &self,
        repo: &str,
        tag: &str,
        credentials: &RegistryCredentials,
        events: &mut UnboundedReceiver<RegistryEvent>,
        capture: Capture<'_>,
    ) -> anyhow::Result<(Vec<Digest>, HashMap<usize, Digest>)> {
        let mut stream = self.driver.push(repo, tag, Some(credentials.clone()));
        let mut left: Vec<Digest> = capture.blobs.to_vec();
        let mut committed = Vec::new();
        let mut identified = HashMap::new();
        let mut idle = Idle::new(capture.hold);
        while !left.is_empty() && identified.len() < capture.layers.len() {
            tokio::select! {
                item = stream.next() => match item {
                    None => break,
                    Some(Err(e)) => return Err(e).context("the daemon's push failed"),
                    Some(Ok(event)) => {
                        idle.touch();
                        tracing::debug!(?event, "push progress");
                    }
                },
                Some(event) = events.recv() => {
                    idle.saw(&event);
                    if let RegistryEvent::BlobCommitted { digest, size, .. } = event {
                        left.retain(|d| *d != digest);
                        if size <= PROBE_MAX
                            && let Some(index) = capture.identify(&digest).await
                        {
                            tracing::debug!(%digest, layer = index, "a wanted layer is in");
                            identified.insert(index, digest.clone());
                        }
                        committed.push(digest);
                    }
                }
                () = idle.expired() => idle.release("the capture push"),
            }
        }
        tracing::debug!("the wanted layers are in: the capture push is dropped");
        Ok((committed, identified))
    }

    /// Pushes `repo:tag`, following the registry's events, and returns the
    /// manifests the daemon put.
    async fn push(
        &self,
        repo: &str,
        tag: &str,
        credentials: &RegistryCredentials,
        events: &mut UnboundedReceiver<RegistryEvent>,
    ) -> anyhow::Result<PushedManifests> {
        let mut stream = self.driver.push(repo, tag, Some(credentials.clone()));
        let mut manifests = PushedManifests::default();
        let mut bars = HashMap::new();
        let mut on_event = |manifests: &mut PushedManifests, event: RegistryEvent| match event {
            RegistryEvent::ManifestPut {
                digest,
                media_type,
                body,
                reference,
                ..
            } => {
                tracing::debug!(reference, media_type, "manifest put");
                manifests.record(digest, media_type, body);
            }
            RegistryEvent::ManifestRefused {
                digest,
                media_type,
                body,
                reference,
                ..
            } => {
                tracing::debug!(reference, media_type, "manifest refused: the push ends");
                manifests.record_refused(digest, media_type, body);
            }
            RegistryEvent::UploadStarted { upload_id, .. } => {
                bars.insert(upload_id, self.reporter.progress("receiving a layer", None));
            }
            RegistryEvent::BytesReceived {
                upload_id, total, ..
            } => {
                if let Some(bar) = bars.get(&upload_id) {
                    bar.set_position(total);
                }
            }
            RegistryEvent::BlobCommitted { digest, size, .. } => {
                tracing::debug!(%digest, size, "blob received");
            }
            other => tracing::trace!(?other, "registry event"),
        };
        loop {
            tokio::select! {
                item = stream.next() => match item {
                    None => break,
                    Some(Ok(event)) => tracing::debug!(?event, "push progress"),
                    Some(Err(e)) => {
                        while let Ok(event) = events.try_recv() {
                            on_event(&mut manifests, event);
                        }
                        if manifests.refused() {
                            tracing::debug!(error = %e, "the push failed on the refused manifest, as planned");
                            break;
                        }
                        return Err(e).context("the daemon's push failed");
                    }
                },
                Some(event) = events.recv() => on_event(&mut manifests, event),
            }
        }
        while let Ok(event) = events.try_recv() {
            on_event(&mut manifests, event);
        }
        for bar in bars.values() {
            bar.finish();
        }
        Ok(manifests)
    }
}

/// What the pushes brought.
enum Found {
    /// The survey was given up for `docker save`, for this reason.
    GaveUp(String),
    /// The survey was dropped once the wanted layers were in.
    Cancelled(Box<SurveyEnd>),
    /// A push ran to its end and put this manifest (and the index naming
    /// it, when there was one).
    Manifest(String, Bytes, Option<(String, Bytes)>),
}

/// What a capture push waits for.
struct Capture<'a> {
    /// The blobs asked for (absent from the registry, so uploaded).
    blobs: &'a [Digest],
    /// The wanted layers: index and diff ID.
    layers: Vec<(usize, Digest)>,
    storage: &'a dyn Storage,
    hold: &'a UploadHold,
}

impl Capture<'_> {
    /// The wanted layer the stored blob `digest` holds, if any (read and
    /// hashed once decompressed; a blob that cannot be read is none).
    async fn identify(&self, digest: &Digest) -> Option<usize> {
        let reader = self.storage.open_blob(digest).await.ok().flatten()?;
        let bridge = tokio_util::io::SyncIoBridge::new(reader);
        let diff_id = tokio::task::spawn_blocking(move || layer_writer::diff_id_of(bridge))
            .await
            .ok()?
            .ok()?;
        self.layers
            .iter()
            .find(|(_, d)| *d == diff_id)
            .map(|(i, _)| *i)
    }
}

/// The diff IDs of the layers `indexes` of `image`.
fn wanted_diff_ids(image: &ImageDetails, indexes: &[usize]) -> Vec<(usize, Digest)> {
    indexes
        .iter()
        .filter_map(|&i| Some((i, image.diff_ids.get(i)?.parse().ok()?)))
        .collect()
}

/// The most the blob of any of the layers `indexes` of `image` may weigh.
fn wanted_bound(image: &ImageDetails, indexes: &[usize]) -> u64 {
    let survey = Survey::new(image);
    let largest = indexes.iter().map(|&i| survey.size(i)).max().unwrap_or(0);
    blob_bound(largest)
}

/// The most a layer's blob may weigh, from its history size (the bytes of
/// its files): tar headers and padding, and gzip's few bytes per block of
/// data that does not compress. Uploads past it are not this layer.
fn blob_bound(size: u64) -> u64 {
    size.saturating_add(size / 64).saturating_add(HOLD_SLACK)
}

/// The largest blob a capture push reads to tell which layer it is (a
/// bigger one waits for the rest of the blobs asked for, and the writer
/// tells).
const PROBE_MAX: u64 = 32 << 20;

/// Room in [`blob_bound`] for tar headers (about 60 bytes per file once
/// compressed: some 35,000 files).
const HOLD_SLACK: u64 = 2 << 20;

/// How long a push may show no progress at all while uploads are held
/// before the hold is released (a wanted layer bigger than its bound
/// would otherwise wait for ever).
const HOLD_IDLE: Duration = Duration::from_secs(5);

/// Releases the upload hold when a push shows no progress for [`HOLD_IDLE`].
struct Idle<'a> {
    hold: &'a UploadHold,
    since: tokio::time::Instant,
}

impl<'a> Idle<'a> {
    fn new(hold: &'a UploadHold) -> Self {
        Self {
            hold,
            since: tokio::time::Instant::now(),
        }
    }

    /// Something moved.
    fn touch(&mut self) {
        self.since = tokio::time::Instant::now();
    }

    /// The registry reported `event`: progress, unless it is a hold.
    fn saw(&mut self, event: &RegistryEvent) {
        if !matches!(event, RegistryEvent::UploadHeld { .. }) {
            self.touch();
        }
    }

    /// Resolves once nothing moved for [`HOLD_IDLE`] while uploads are
    /// held; never while nothing is.
    async fn expired(&self) {
        if self.hold.limit().is_none() {
            std::future::pending::<()>().await;
        }
        tokio::time::sleep_until(self.since + HOLD_IDLE).await;
    }

    fn release(&mut self, push: &str) {
        tracing::debug!(
            push,
            "no progress while uploads are held: the hold is released"
        );
        self.hold.release();
        self.touch();
    }
}

/// The stored blobs that may be each wanted layer after a cancelled
/// survey: the one the daemon's `Pushed` message matched when only one
/// blob had just arrived, else every unmatched one (the writer checks each
/// against the diff ID and keeps the one that matches).
fn upload_candidates(wanted: &[usize], end: &SurveyEnd) -> Vec<Vec<Digest>> {
    wanted
        .iter()
        .map(|&i| {
            match (
                end.identified.get(&i).or(end.uploaded.get(&i)),
                end.asked.candidates(i),
            ) {
                (Some(digest), _) => vec![digest.clone()],
                (None, asked) => {
                    let mut candidates: Vec<Digest> = asked.unwrap_or_default().to_vec();
                    for digest in &end.unmatched {
                        if !candidates.contains(digest) {
                            candidates.push(digest.clone());
                        }
                    }
                    candidates
                }
            }
        })
        .collect()
}

/// The layers asked about whose capture is affordable: matched to one blob,
/// or to a group of blobs whose other layers (uploaded with it) stay within
/// the share of the image a push may compress (always, when forced).
fn capturable(survey: &Survey, asked: &AskedBlobs, forced: bool, share: f64) -> Vec<usize> {
    let budget = (survey.image_bytes() as f64 * share) as u64;
    asked
        .known()
        .into_iter()
        .filter(|&i| {
            let mates = asked.group_mates(i);
            let extra: u64 = mates.iter().map(|&m| survey.size(m)).sum();
            let ok = forced || extra <= budget;
            if !mates.is_empty() {
                tracing::debug!(
                    layer = i,
                    ?mates,
                    extra,
                    ok,
                    "asked about together with other layers"
                );
            }
            ok
        })
        .collect()
}

/// The most the temporary registry takes in: a survey that uploads every
/// layer unasked, then a capture that uploads the wanted ones again, with
/// room for tar headers and gzip the history's file sizes do not count.
/// Another local client cannot make it store more (the push fails, named).
fn upload_budget(image: &ImageDetails) -> u64 {
    Survey::new(image)
        .image_bytes()
        .saturating_mul(4)
        .saturating_add(256 << 20)
}

/// Reads a small blob (the image config) whole, checking its digest.
async fn read_blob(storage: &dyn Storage, digest: &Digest) -> anyhow::Result<Vec<u8>> {
    use tokio::io::AsyncReadExt;
    let mut reader = storage
        .open_blob(digest)
        .await
        .context("cannot read the image config")?
        .with_context(|| format!("the daemon did not upload the image config {digest}"))?;
    let mut bytes = Vec::new();
    reader
        .read_to_end(&mut bytes)
        .await
        .context("cannot read the image config")?;
    Ok(bytes)
}

/// The largest manifest the temporary registry takes (the spec's 4 MiB; an
/// image manifest of a few hundred layers is tens of KiB).
const MAX_MANIFEST: usize = 4 << 20;

/// A user name and a random password (128 bits) for this run's registry.
pub(crate) fn run_credentials() -> (String, String) {
    (
        "dlgrab".to_owned(),
        format!("{:032x}", rand::random::<u128>()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn the_hold_is_released_after_a_quiet_spell_and_only_while_it_holds() {
        let hold = UploadHold::new();
        let idle = Idle::new(&hold);
        let quiet = tokio::time::timeout(HOLD_IDLE * 5, idle.expired()).await;
        assert!(quiet.is_err(), "expired with nothing held");

        hold.hold_beyond(1);
        let mut idle = Idle::new(&hold);
        tokio::time::advance(HOLD_IDLE / 2).await;
        idle.touch();
        let early = tokio::time::timeout(HOLD_IDLE * 3 / 4, idle.expired()).await;
        assert!(
            early.is_err(),
            "expired before a quiet spell since the touch"
        );
        let late = tokio::time::timeout(HOLD_IDLE, idle.expired()).await;
        assert!(late.is_ok(), "did not expire after a quiet spell");
        idle.release("test");
        assert_eq!(hold.limit(), None);
    }

    #[test]
    fn a_blob_bound_leaves_room_for_tar_headers_and_incompressible_data() {
        assert_eq!(blob_bound(0), HOLD_SLACK);
        let size = 256u64 << 20;
        // gzip adds 5 bytes per 64 KiB stored block; tar pads each file.
        assert!(blob_bound(size) > size + size / 10_000 + (64 << 10));
        assert_eq!(blob_bound(u64::MAX), u64::MAX);
    }
}
