//! `dlgrab --to DEST IMAGE…`: copies images to another Docker daemon,
//! sending only the layers it lacks, with nothing on DEST but Docker.
//!
//! For each image, in the order given:
//!
//! 1. DEST is asked which of the image's layers it holds: the longest
//!    prefix of the image's diff IDs that some image on DEST has (one
//!    image list and one inspect per image on DEST, eight at a time, one
//!    at a time over ssh where each connection costs; read once per run and
//!    kept up to date as images arrive, so layers shared by several images
//!    of one call are sent once).
//! 2. When DEST already has the very image (same ID), it only gets the tags.
//! 3. When DEST has none of the layers, the source's `docker save` stream is
//!    piped into DEST's `POST /images/load` as it comes: one stream, nothing
//!    on disk.
//! 4. Otherwise the layers beyond the prefix are exported by dlgrab's
//!    cheapest route (from a source on another machine, the archive route:
//!    only those layers leave it) into a scratch folder (the `--since` layout: its
//!    `manifest.json` and OCI `index.json` name the absent layers as the
//!    source knows them), and a tar of that folder is streamed into DEST's
//!    load API through a small bounded channel (memory flat, no archive
//!    file). When DEST holds every layer but not the image (another config
//!    over the same layers), the top layer is sent again with the config.
//!    A containerd-store DEST must find the layers left out named by the
//!    blobs it keeps: the OCI manifest is rewritten with the descriptors
//!    of DEST's own image manifest, read from its content store, or where
//!    that cannot be read pushed by DEST to dlgrab's registry ([`pushed`]);
//!    a DEST on another machine by `tcp://` gets whole images.
//!
//! A load that fails leaves no tag behind that was not on DEST before; the
//! scratch folder and the source's temporary tags go on every path
//! ([`Cleanup`]), Ctrl-C included.

use std::collections::HashSet;
use std::io::{self, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

use anyhow::{Context, bail};
use bytes::Bytes;
use docker_driver::reference::split_tag;
use docker_driver::{
    BollardDriver, BoxStream, ContentStore, DaemonSelection, DockerDriver, ImageDetails,
};
use futures::{StreamExt, TryStreamExt};
use layer_writer::manifest::{self, ManifestKind};
use layer_writer::oci_spec::image::{Descriptor, Digest, DigestAlgorithm};
use serde::Serialize;
use tokio::sync::{mpsc, oneshot};

use crate::cleanup::Cleanup;
use crate::export::{ExportOptions, Exporter};
use crate::failure::Failure;
use crate::interrupt;
use crate::report::{Progress, Reporter};

mod pushed;

/// How one image reached DEST.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum How {
    /// DEST had the image: only its tags were set.
    TagsOnly,
    /// DEST had none of its layers: the whole save stream went.
    Whole,
    /// Only the layers beyond DEST's prefix went.
    Delta,
}

/// One image copied, as `--json` reports it (in an item, which carries
/// the name typed and the seconds).
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Copied {
    /// The image as named on the command line.
    #[serde(skip)]
    pub(crate) image: String,
    /// Its ID on the source.
    pub(crate) image_id: String,
    /// Its ID on DEST (the same where both stores are classic).
    pub(crate) dest_image_id: String,
    pub(crate) tags: Vec<String>,
    pub(crate) how: How,
    pub(crate) layers: usize,
    /// Layers DEST already held (not sent).
    pub(crate) layers_skipped: usize,
    pub(crate) layers_sent: usize,
    /// Bytes of the archive streamed into DEST's load API.
    pub(crate) bytes_sent: u64,
    /// How the sent layers were got out of the source.
    pub(crate) routes: Vec<&'static str>,
    #[serde(skip)]
    pub(crate) seconds: f64,
}

/// The totals of a `--to` run.
#[derive(Debug, Clone, Default, Serialize)]
pub(crate) struct CopyTotals {
    pub(crate) destination: String,
    pub(crate) layers_skipped: usize,
    pub(crate) layers_sent: usize,
    pub(crate) bytes_sent: u64,
    /// Bytes per second over the whole run.
    pub(crate) rate: f64,
}

/// What a `--to` run did: per image as typed, what was copied or why not.
#[derive(Debug)]
pub(crate) struct Report {
    pub(crate) images: Vec<(String, Result<Copied, Failure>)>,
    pub(crate) totals: CopyTotals,
    pub(crate) seconds: f64,
}

/// Runs `dlgrab --to DEST IMAGE…` to the end: the copy raced against
/// Ctrl-C, then cleanup; `None` when interrupted (said on stderr).
pub(crate) async fn main(
    dest: &str,
    source: Arc<dyn DockerDriver>,
    cleanup: Arc<Cleanup>,
    reporter: Arc<Reporter>,
    options: ExportOptions,
    images: &[String],
) -> anyhow::Result<Option<Report>> {
    let copy = run(
        dest,
        source,
        cleanup.clone(),
        reporter.clone(),
        options,
        images,
    );
    match interrupt::run_to_end(copy, &cleanup, &reporter).await {
        None => {
            interrupt::exit(
                &format!(
                    "copy stopped, nothing loaded on {dest}, temporary tags and files removed"
                ),
                None,
                &cleanup,
            );
            Ok(None)
        }
        Some(Err(e)) => Err(e),
        Some(Ok(report)) => {
            let totals = &report.totals;
            let copied = report.images.iter().filter(|(_, c)| c.is_ok()).count();
            let verb = if copied == report.images.len() {
                "Copy complete"
            } else {
                "Copy finished"
            };
            reporter.message(format!(
                "{verb}: {copied} image(s) of {} to {}, {} layer(s) skipped, {} sent, {} in {:.1}s ({}/s)",
                report.images.len(),
                totals.destination,
                totals.layers_skipped,
                totals.layers_sent,
                human(totals.bytes_sent),
                report.seconds,
                human(totals.rate as u64),
            ));
            Ok(Some(report))
        }
    }
}

/// Connects to DEST: a host URL (`unix://`, `tcp://` with the Docker CLI's
/// `DOCKER_TLS_VERIFY`/`DOCKER_CERT_PATH` rules, `ssh://`) or a context name.
pub(crate) async fn connect(dest: &str) -> anyhow::Result<BollardDriver> {
    let selection = if dest.contains("://") {
        DaemonSelection {
            host: Some(dest.to_owned()),
            ..DaemonSelection::default()
        }
    } else {
        DaemonSelection {
            context: Some(dest.to_owned()),
            ..DaemonSelection::default()
        }
    };
    let daemon = selection
        .resolve()
        .with_context(|| format!("cannot tell which Docker daemon --to {dest} means"))?;
    tracing::debug!(context = %daemon.context, host = %daemon.host, "destination daemon");
    BollardDriver::connect_to(&daemon).await.map_err(|e| {
        use docker_driver::DriverError;
        let host = &daemon.host;
        let given = if dest.contains("://") {
            format!("--to {dest}")
        } else {
            format!("--to {dest}, a context")
        };
        let try_this = "Check the address or context given to --to (`docker context ls` lists \
                        the contexts).";
        match e {
            DriverError::Unreachable { source, .. } => anyhow::anyhow!(
                "cannot connect to the destination daemon at {host} ({given}): {}.\nIs dockerd \
                 running there? {try_this}",
                crate::failure::connection_cause(&*source)
            ),
            DriverError::PermissionDenied { .. } => anyhow::anyhow!(
                "permission denied on the destination daemon's socket {host} ({given}).\nRun \
                 dlgrab as root, or as a member of the socket's group (often `docker`)."
            ),
            other => anyhow::Error::new(other).context(format!(
                "cannot use the destination daemon at {host} ({given})"
            )),
        }
    })
}

/// Copies `images` from `source` to DEST.
pub(crate) async fn run(
    dest_name: &str,
    source: Arc<dyn DockerDriver>,
    cleanup: Arc<Cleanup>,
    reporter: Arc<Reporter>,
    options: ExportOptions,
    images: &[String],
) -> anyhow::Result<Report> {
    if images.is_empty() {
        bail!("--to DEST needs at least one IMAGE");
    }
    let started = Instant::now();
    let dest = connect(dest_name).await?;
    // Over ssh every new connection is an ssh process and a remote docker
    // CLI (most of a second): ask one question at a time on one connection.
    let at_once = if dest.host().starts_with("ssh://") {
        1
    } else {
        8
    };
    let dest: Arc<dyn DockerDriver> = Arc::new(dest);
    source
        .info()
        .await
        .context("cannot talk to the source Docker daemon")?;
    let dest_info = dest
        .info()
        .await
        .with_context(|| format!("cannot talk to the destination daemon {dest_name}"))?;
    // A containerd-store DEST takes an archive that leaves layers out only
    // if it names them by the blobs DEST keeps: read from its content store.
    let dest_blobs = DestBlobs::of(&dest_info);
    if let DestBlobs::Unreadable(why) = &dest_blobs {
        reporter.message(format!(
            "{dest_name} keeps images in the containerd store and dlgrab cannot read its \
             blobs ({why}): whole images go"
        ));
    }
    reporter.phase(format!("asking {dest_name} which layers it holds"));
    // The registry DEST pushes to (and the tunnel to it) starts while
    // DEST's images are listed.
    let listing = async {
        if matches!(dest_blobs, DestBlobs::Unreadable(_)) {
            return Ok(Vec::new());
        }
        held_chains(dest.as_ref(), at_once)
            .await
            .with_context(|| format!("cannot list the images on {dest_name}"))
    };
    let starting = async {
        match &dest_blobs {
            DestBlobs::ByPush { tunnel } => Some(
                pushed::Surveyor::start(tunnel.as_deref())
                    .await
                    .map_err(|e| format!("{e:#}")),
            ),
            _ => None,
        }
    };
    let (held, surveyor) = tokio::join!(listing, starting);
    let mut held = held?;

    let mut copied = Vec::new();
    for image in images {
        let to = Dest {
            name: dest_name,
            surveyor: surveyor.as_ref(),
            driver: &dest,
            blobs: &dest_blobs,
            held: &held,
        };
        // An image that cannot be copied leaves nothing on DEST (a failed
        // load tags nothing): the next ones go on.
        let one = copy_one(image, &to, &source, &cleanup, &reporter, &options)
            .await
            .with_context(|| format!("cannot copy {image} to {dest_name}"));
        match one {
            Ok((one, diff_ids)) => {
                if !matches!(dest_blobs, DestBlobs::Unreadable(_)) {
                    held.push(Held {
                        id: one.dest_image_id.clone(),
                        diff_ids,
                    });
                }
                copied.push((image.clone(), Ok(one)));
            }
            Err(e) => copied.push((image.clone(), Err(Failure::of(&e)))),
        }
    }
    if let Some(Ok(surveyor)) = surveyor {
        surveyor.shutdown().await;
    }
    let seconds = started.elapsed().as_secs_f64();
    let done = || copied.iter().filter_map(|(_, c)| c.as_ref().ok());
    let bytes_sent = done().map(|c| c.bytes_sent).sum();
    let totals = CopyTotals {
        destination: dest_name.to_owned(),
        layers_skipped: done().map(|c| c.layers_skipped).sum(),
        layers_sent: done().map(|c| c.layers_sent).sum(),
        bytes_sent,
        rate: bytes_sent as f64 / seconds.max(1e-3),
    };
    Ok(Report {
        images: copied,
        totals,
        seconds,
    })
}

/// An image on DEST and its layers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Held {
    /// Its ID on DEST.
    pub(crate) id: String,
    /// Its diff IDs, base first.
    pub(crate) diff_ids: Vec<String>,
}

/// Whether DEST's layers can be named by the blobs it keeps.
pub(crate) enum DestBlobs {
    /// A classic store: an archive names absent layers by diff ID.
    NotNeeded,
    /// A containerd store whose content store this process can read (DEST
    /// runs on this machine, with its data root at this path).
    Readable(PathBuf),
    /// A containerd store whose content store this process cannot read
    /// (a `docker` group member; DEST behind ssh): DEST pushes the holding
    /// image's manifest to dlgrab's registry on 127.0.0.1 ([`pushed`]),
    /// through a reverse tunnel from `tunnel` (an `ssh://` host) when DEST
    /// runs there.
    ByPush { tunnel: Option<String> },
    /// A containerd store whose blobs cannot be learnt from here: only
    /// whole images can go.
    Unreadable(String),
}

impl DestBlobs {
    fn of(info: &docker_driver::DaemonInfo) -> Self {
        if !matches!(info.image_store, docker_driver::ImageStore::Containerd) {
            return Self::NotNeeded;
        }
        if let Some(host) = &info.elsewhere {
            if host.starts_with("ssh://") {
                return Self::ByPush {
                    tunnel: Some(host.clone()),
                };
            }
            return Self::Unreadable(format!(
                "it runs on another machine, {host}, and cannot reach a registry on this one"
            ));
        }
        match &info.root_dir {
            None => Self::ByPush { tunnel: None },
            Some(root) => {
                let readable = ContentStore::candidates(root)
                    .iter()
                    .any(|dir| std::fs::read_dir(dir).is_ok());
                if readable {
                    Self::Readable(root.clone())
                } else {
                    Self::ByPush { tunnel: None }
                }
            }
        }
    }
}

/// DEST as [`copy_one`] needs it.
struct Dest<'a> {
    name: &'a str,
    /// dlgrab's registry for DEST's pushes, where they are how DEST's blobs
    /// are learnt (or why it could not be started).
    surveyor: Option<&'a Result<pushed::Surveyor, String>>,
    driver: &'a Arc<dyn DockerDriver>,
    blobs: &'a DestBlobs,
    held: &'a [Held],
}

/// Every image on `dest` with its diff IDs (each distinct list once),
/// asking `at_once` inspects at a time.
async fn held_chains(dest: &dyn DockerDriver, at_once: usize) -> anyhow::Result<Vec<Held>> {
    let ids: Vec<String> = {
        let mut seen = HashSet::new();
        dest.list_images()
            .await?
            .into_iter()
            .filter_map(|i| seen.insert(i.id.clone()).then_some(i.id))
            .collect()
    };
    let lists: Vec<Held> = futures::stream::iter(ids)
        .map(|id| async move {
            match dest.image_diff_ids(&id).await {
                Ok((_, diff_ids)) => Some(Held { id, diff_ids }),
                // Removed meanwhile: it holds nothing any more.
                Err(e) => {
                    tracing::debug!(%id, "not inspected: {e}");
                    None
                }
            }
        })
        .buffer_unordered(at_once)
        .filter_map(|l| async move { l.filter(|l| !l.diff_ids.is_empty()) })
        .collect()
        .await;
    let mut distinct: Vec<Held> = Vec::new();
    for held in lists {
        if !distinct.iter().any(|d| d.diff_ids == held.diff_ids) {
            distinct.push(held);
        }
    }
    Ok(distinct)
}

/// How many of `wanted`'s layers, from the base, some image in `held`
/// has, and the first image that has that many.
pub(crate) fn held_prefix<'a>(held: &'a [Held], wanted: &[String]) -> (usize, Option<&'a Held>) {
    let mut best = (0, None);
    for h in held {
        let n = h
            .diff_ids
            .iter()
            .zip(wanted)
            .take_while(|(a, b)| a == b)
            .count();
        if n > best.0 {
            best = (n, Some(h));
        }
    }
    best
}

/// The descriptors (media type, digest, size) under which the containerd
/// store of DEST keeps the first `count` layers of image `holder`: from its
/// image manifest for its own platform, read from the content store under
/// data root `root` (each blob checked there, with the size the manifest
/// gives), or pushed by DEST to dlgrab's registry ([`pushed`]).
async fn held_descriptors(
    to: &Dest<'_>,
    cleanup: &Cleanup,
    holder: &Held,
    count: usize,
) -> anyhow::Result<Vec<Descriptor>> {
    let (bytes, store) = match to.blobs {
        DestBlobs::Readable(root) => {
            let details = to
                .driver
                .inspect_image(&holder.id)
                .await
                .context("cannot inspect the image holding the layers")?;
            let store = ContentStore::open(root, &holder.id)?;
            let platform = docker_driver::manifest::Platform::new(
                &details.os,
                &details.architecture,
                details.variant.as_deref(),
            );
            let docs = store.image_documents(&holder.id, &platform)?;
            (docs.manifest.1, Some(store))
        }
        DestBlobs::ByPush { .. } => match to.surveyor {
            Some(Ok(surveyor)) => (
                surveyor.held_manifest(to.driver, cleanup, holder).await?,
                None,
            ),
            Some(Err(why)) => bail!("{why}"),
            None => bail!("dlgrab's registry for DEST's pushes is not running"),
        },
        DestBlobs::NotNeeded | DestBlobs::Unreadable(_) => {
            bail!("DEST's blobs are not needed or cannot be learnt")
        }
    };
    let manifest = manifest::image_manifest(&bytes).context("cannot read its image manifest")?;
    let layers = manifest.layers();
    if layers.len() != holder.diff_ids.len() {
        bail!(
            "its manifest lists {} layers for {} diff IDs",
            layers.len(),
            holder.diff_ids.len()
        );
    }
    let mut descriptors = Vec::new();
    for layer in layers.iter().take(count) {
        let (digest, size) = (layer.digest(), layer.size());
        if let Some(store) = &store {
            let kept = std::fs::metadata(store.path(digest.as_ref())?)
                .with_context(|| format!("it does not keep blob {digest}"))?
                .len();
            if kept != size {
                bail!("its blob {digest} has {kept} bytes, not {size}");
            }
        }
        descriptors.push(Descriptor::new(
            layer.media_type().clone(),
            size,
            digest.clone(),
        ));
    }
    Ok(descriptors)
}

/// Rewrites the OCI manifest of the `--since` folder `folder` so that its
/// first layers are named by `descriptors` (the blobs DEST keeps) instead
/// of the source's diff IDs and no size; the folder's `index.json` (and the
/// image's index, where the folder keeps one) then name the new manifest.
///
/// A document that changes is written anew (its new digest over the bytes
/// written, the old blob removed); one that does not keeps its bytes, so
/// the image keeps its ID. The documents are read with oci-spec's types:
/// a field those types do not know is not kept in a rewritten document.
pub(crate) fn name_held_blobs(
    folder: &std::path::Path,
    descriptors: &[Descriptor],
) -> anyhow::Result<()> {
    let index_path = folder.join("index.json");
    let mut index = manifest::image_index(&read(&index_path)?)
        .with_context(|| format!("cannot read {}", index_path.display()))?;
    // (oci-spec's index has no mutable getter: its entries are set back.)
    let mut entries = index.manifests().clone();
    let [entry] = entries.as_mut_slice() else {
        bail!("the folder's index.json does not name one manifest");
    };
    let Some((digest, size)) = rename_in(folder, entry, descriptors)? else {
        return Ok(());
    };
    entry.set_digest(digest);
    entry.set_size(size);
    index.set_manifests(entries);
    std::fs::write(&index_path, json_bytes(&index)?).context("cannot write index.json")
}

fn read(path: &std::path::Path) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))
}

/// `document` as JSON with its keys sorted (by way of `serde_json::Value`,
/// whose maps are ordered): the same document gives the same bytes, and so
/// the same digest, though oci-spec keeps annotations in a `HashMap`.
fn json_bytes(document: &impl Serialize) -> anyhow::Result<Vec<u8>> {
    Ok(serde_json::to_vec(&serde_json::to_value(document)?)?)
}

fn blob_in(folder: &std::path::Path, digest: &Digest) -> anyhow::Result<PathBuf> {
    if *digest.algorithm() != DigestAlgorithm::Sha256 {
        bail!("not a sha256 digest: {digest}");
    }
    Ok(folder.join("blobs/sha256").join(digest.digest()))
}

/// Renames the held layers in the document `entry` names in `folder` (in
/// the image manifest an index names, for an index: attestations left
/// alone); the new document's digest and size, `None` when nothing changed.
fn rename_in(
    folder: &std::path::Path,
    entry: &Descriptor,
    descriptors: &[Descriptor],
) -> anyhow::Result<Option<(Digest, u64)>> {
    let digest = entry.digest();
    let path = blob_in(folder, digest)?;
    let bytes = read(&path)?;
    let rewritten = match manifest::kind_of(entry.media_type().as_ref(), &bytes) {
        ManifestKind::Image => {
            let mut document = manifest::image_manifest(&bytes)
                .with_context(|| format!("cannot read the manifest {digest}"))?;
            let layers = document.layers_mut();
            if layers.len() < descriptors.len() {
                bail!("the folder's manifest has fewer layers than DEST holds");
            }
            let mut changed = false;
            for (layer, held) in layers.iter_mut().zip(descriptors) {
                if blob_in(folder, layer.digest())?.exists() {
                    bail!(
                        "layer {} is in the folder: it is not one DEST holds",
                        layer.digest()
                    );
                }
                changed |= layer != held;
                *layer = held.clone();
            }
            changed.then(|| json_bytes(&document)).transpose()?
        }
        ManifestKind::Index => {
            let mut document = manifest::image_index(&bytes)
                .with_context(|| format!("cannot read the index {digest}"))?;
            let (mut renamed, mut changed) = (0, false);
            let mut entries = document.manifests().clone();
            for child in &mut entries {
                if manifest::is_attestation(child) || !blob_in(folder, child.digest())?.exists() {
                    continue;
                }
                if let Some((digest, size)) = rename_in(folder, child, descriptors)? {
                    child.set_digest(digest);
                    child.set_size(size);
                    changed = true;
                }
                renamed += 1;
            }
            if renamed != 1 {
                bail!("the folder's index names {renamed} image manifests in the folder, not one");
            }
            document.set_manifests(entries);
            changed.then(|| json_bytes(&document)).transpose()?
        }
        ManifestKind::Other => bail!("{digest} is neither an image manifest nor an index"),
    };
    // Unchanged (a containerd-store source named them so already): the
    // document keeps its bytes, and the image its ID.
    let Some(bytes) = rewritten else {
        return Ok(None);
    };
    let new = manifest::digest_of(&bytes);
    std::fs::write(blob_in(folder, &new)?, &bytes).context("cannot write the manifest")?;
    std::fs::remove_file(&path).context("cannot remove the old manifest")?;
    Ok(Some((new, bytes.len() as u64)))
}

/// Which layers to send: those from the returned index on; the image's
/// config always goes with them, so at least the top layer is sent when
/// DEST holds every layer but not this image.
pub(crate) fn first_sent(prefix: usize, layers: usize) -> usize {
    prefix.min(layers.saturating_sub(1))
}

#[allow(clippy::too_many_arguments)]
async fn copy_one(
    image: &str,
    to: &Dest<'_>,
    source: &Arc<dyn DockerDriver>,
    cleanup: &Arc<Cleanup>,
    reporter: &Arc<Reporter>,
    options: &ExportOptions,
) -> anyhow::Result<(Copied, Vec<String>)> {
    let (dest_name, dest) = (to.name, to.driver);
    let started = Instant::now();
    let details = source
        .inspect_image(image)
        .await
        .with_context(|| format!("cannot find {image} on the source daemon"))?;
    let layers = details.diff_ids.len();
    let tags = crate::temp_names::user_tags(&details.repo_tags);
    let done = |how, dest_image_id: String, skipped, sent, bytes_sent, routes| Copied {
        image: image.to_owned(),
        image_id: details.id.clone(),
        dest_image_id,
        tags: tags.clone(),
        how,
        layers,
        layers_skipped: skipped,
        layers_sent: sent,
        bytes_sent,
        routes,
        seconds: started.elapsed().as_secs_f64(),
    };

    // DEST has the very image: the tags are all it needs. Across stores
    // its ID differs (a config digest on a classic store, a manifest or
    // index digest on the containerd store): it is found under the tags.
    if let Some(dest_id) = held_image(dest.as_ref(), &details, &tags).await {
        for tag in &tags {
            let (repo, t) = split_tag(tag).with_context(|| format!("cannot read the tag {tag}"))?;
            let names = crate::names_lock::hold().await;
            let tagged = dest.tag(&dest_id, repo, t).await;
            drop(names);
            tagged.with_context(|| format!("cannot tag {tag} on {dest_name}"))?;
        }
        reporter.message(format!(
            "{image}: {dest_name} already has image {} ({layers} layers): tagged, nothing sent",
            short(&dest_id)
        ));
        return Ok((
            done(How::TagsOnly, dest_id, layers, 0, 0, Vec::new()),
            details.diff_ids.clone(),
        ));
    }

    let (mut prefix, holder) = held_prefix(to.held, &details.diff_ids);
    let mut first = first_sent(prefix, layers);
    // A containerd store must be told its own blobs for the layers left out.
    let mut held_blobs = Vec::new();
    let needed = matches!(to.blobs, DestBlobs::Readable(_) | DestBlobs::ByPush { .. });
    if let (true, Some(holder), true) = (needed, holder, first > 0) {
        match held_descriptors(to, cleanup, holder, first).await {
            Ok(descriptors) => held_blobs = descriptors,
            Err(e) => {
                reporter.message(format!(
                    "{image}: {dest_name} holds {prefix} of its layers, but dlgrab cannot name \
                     them by the blobs {dest_name} keeps ({e:#}): the whole image goes"
                ));
                (prefix, first) = (0, 0);
            }
        }
    }
    let before = tags_before(dest.as_ref(), &tags).await;
    let sent_layers = layers - first;
    reporter.message(format!(
        "{image}: {dest_name} holds {prefix} of its {layers} layers; sending {sent_layers}"
    ));
    let counter = Arc::new(AtomicU64::new(0));
    // What goes: the sent layers' sizes as the source reports them (the
    // whole image's when all go); the total grows if more comes.
    let expected: u64 = details
        .history
        .iter()
        .filter(|row| row.layer_index.is_some_and(|i| i >= first))
        .map(|row| u64::try_from(row.size).unwrap_or(0))
        .sum();
    reporter.phase(format!(
        "{image}: sending {sent_layers} of {layers} layers to {dest_name}"
    ));
    let bar = reporter.progress(
        format!("{image} → {dest_name}"),
        (expected > 0).then_some(expected),
    );
    let (how, routes, result) = if first == 0 {
        let result = load_whole(source, dest, &details, counter.clone(), bar.clone()).await;
        (How::Whole, vec!["save"], result)
    } else {
        let indexes: Vec<usize> = (first..layers).collect();
        match export_layers(source, cleanup, options, &details, &indexes).await {
            Ok((scratch, routes)) => {
                let folder = scratch.join("layers");
                let result = if held_blobs.is_empty() {
                    Ok(())
                } else {
                    name_held_blobs(&folder, &held_blobs)
                };
                let result = match result {
                    Ok(()) => load_folder(dest, folder, counter.clone(), bar.clone()).await,
                    Err(e) => Err(e),
                };
                crate::temp_names::remove(&scratch).await;
                (How::Delta, routes, result)
            }
            Err(e) => return Err(e),
        }
    };
    bar.finish();
    if let Err(e) = result {
        forget_new_tags(dest.as_ref(), &before, reporter).await;
        return Err(e);
    }
    let bytes = counter.load(Ordering::SeqCst);

    // What DEST says now: the image under its tags, the same layers.
    let probe = tags.first().map_or(details.id.as_str(), String::as_str);
    let (dest_id, dest_diff_ids) = dest
        .image_diff_ids(probe)
        .await
        .with_context(|| format!("{dest_name} loaded the archive but has no {probe}"))?;
    if dest_diff_ids != details.diff_ids {
        forget_new_tags(dest.as_ref(), &before, reporter).await;
        bail!(
            "{dest_name} loaded {probe} with other layers than the source's ({} vs {})",
            dest_diff_ids.len(),
            layers
        );
    }
    reporter.message(format!(
        "{image}: copied as {} ({} layers skipped, {} sent, {} in {:.1}s)",
        short(&dest_id),
        first,
        sent_layers,
        human(bytes),
        started.elapsed().as_secs_f64()
    ));
    Ok((
        done(how, dest_id, first, sent_layers, bytes, routes),
        details.diff_ids.clone(),
    ))
}

/// The ID under which DEST holds `image` itself: by the source's image ID,
/// else under one of its `tags` an image that is the same one
/// ([`same_image`]).
async fn held_image(
    dest: &dyn DockerDriver,
    image: &ImageDetails,
    tags: &[String],
) -> Option<String> {
    if let Ok((id, _)) = dest.image_diff_ids(&image.id).await
        && id == image.id
    {
        return Some(id);
    }
    for tag in tags {
        match dest.inspect_image(tag).await {
            Ok(held) if same_image(image, &held) => return Some(held.id),
            Ok(held) => tracing::debug!(tag, held = %held.id, "another image under the tag"),
            Err(e) => tracing::debug!(tag, "not on the destination: {e}"),
        }
    }
    None
}

/// Whether two daemons' descriptions are of one image, whichever store
/// keeps it: the same layers, creation time, platform and history (what
/// the config holds beside its runtime settings, which come from the same
/// history rows).
pub(crate) fn same_image(a: &ImageDetails, b: &ImageDetails) -> bool {
    let rows = |i: &ImageDetails| -> Vec<(Option<i64>, String, bool, String)> {
        i.history
            .iter()
            .map(|r| {
                (
                    r.created,
                    r.created_by.clone(),
                    r.empty_layer,
                    r.comment.clone(),
                )
            })
            .collect()
    };
    a.diff_ids == b.diff_ids
        && a.created == b.created
        && a.os == b.os
        && a.architecture == b.architecture
        && rows(a) == rows(b)
}

/// Which of `tags` DEST has before the load, and as which image.
async fn tags_before(dest: &dyn DockerDriver, tags: &[String]) -> Vec<(String, Option<String>)> {
    let mut out = Vec::new();
    for tag in tags {
        let id = dest.image_diff_ids(tag).await.ok().map(|(id, _)| id);
        out.push((tag.clone(), id));
    }
    out
}

/// After a failed load: removes the tags DEST did not have before (a
/// containerd store registers an image before unpacking it); the images
/// were the run's own.
async fn forget_new_tags(
    dest: &dyn DockerDriver,
    before: &[(String, Option<String>)],
    reporter: &Reporter,
) {
    for (tag, was) in before {
        if was.is_some() {
            continue;
        }
        if dest.image_diff_ids(tag).await.is_ok() {
            match dest.remove_image(tag).await {
                Ok(()) => tracing::debug!(%tag, "half-loaded image removed from the destination"),
                Err(e) => reporter.message(format!(
                    "dlgrab: warning: the destination keeps a half-loaded {tag}: {e}"
                )),
            }
        }
    }
}

/// Exports `indexes` of `details` into a new scratch folder (seed format
/// under `layers/`); returns the folder and the routes taken.
async fn export_layers(
    source: &Arc<dyn DockerDriver>,
    cleanup: &Arc<Cleanup>,
    options: &ExportOptions,
    details: &ImageDetails,
    indexes: &[usize],
) -> anyhow::Result<(PathBuf, Vec<&'static str>)> {
    let scratch = crate::temp_names::scratch_in_temp(layer_writer::run::TempKind::Copy);
    cleanup.add_dir(scratch.clone());
    let mut options = options.clone();
    options.outdir = scratch.join("layers");
    options.format = layer_writer::Format::Seed;
    options.replace = false;
    // The exporter's own messages name the scratch folder: not for the user.
    let quiet = Arc::new(Reporter::new(true, true));
    let exported = Exporter::new(source.clone(), cleanup.clone(), quiet, options)
        .run_indexes(details, indexes)
        .await;
    match exported {
        Ok(exported) => {
            let mut routes: Vec<&'static str> = exported.iter().map(|e| e.route).collect();
            routes.dedup();
            Ok((scratch, routes))
        }
        Err(e) => {
            crate::temp_names::remove(&scratch).await;
            Err(e)
        }
    }
}

/// The channel's depth in 256 KiB chunks: what is in flight at most.
const DEPTH: usize = 8;
const CHUNK: usize = 256 << 10;

/// Pipes the source's `docker save` of the image into DEST's load.
async fn load_whole(
    source: &Arc<dyn DockerDriver>,
    dest: &Arc<dyn DockerDriver>,
    details: &ImageDetails,
    counter: Arc<AtomicU64>,
    bar: Progress,
) -> anyhow::Result<()> {
    let tags = crate::temp_names::user_tags(&details.repo_tags);
    let names = if tags.is_empty() {
        vec![details.id.clone()]
    } else {
        tags
    };
    let mut save = source.export_images(&names);
    let (tx, rx) = mpsc::channel::<Bytes>(DEPTH);
    let (failed_tx, failed_rx) = oneshot::channel::<anyhow::Error>();
    let ok = Arc::new(AtomicBool::new(false));
    let ok_feeder = ok.clone();
    let feeder = tokio::spawn(async move {
        loop {
            match save.try_next().await {
                Ok(Some(chunk)) => {
                    if tx.send(chunk).await.is_err() {
                        return;
                    }
                }
                Ok(None) => {
                    ok_feeder.store(true, Ordering::SeqCst);
                    return;
                }
                Err(e) => {
                    let _ = failed_tx
                        .send(anyhow::Error::new(e).context("the source's save stream failed"));
                    return;
                }
            }
        }
    });
    let result = load(dest, rx, ok, failed_rx, counter, bar).await;
    feeder.abort();
    result
}

/// Streams a tar of `folder` into DEST's load.
async fn load_folder(
    dest: &Arc<dyn DockerDriver>,
    folder: PathBuf,
    counter: Arc<AtomicU64>,
    bar: Progress,
) -> anyhow::Result<()> {
    let (tx, rx) = mpsc::channel::<Bytes>(DEPTH);
    let (failed_tx, failed_rx) = oneshot::channel::<anyhow::Error>();
    let ok = Arc::new(AtomicBool::new(false));
    let ok_writer = ok.clone();
    let cancel = Arc::new(AtomicBool::new(false));
    let cancel_writer = cancel.clone();
    let writer = tokio::task::spawn_blocking(move || {
        let out = ChannelWriter {
            tx,
            buf: Vec::with_capacity(CHUNK),
        };
        match crate::delta::write_tar(&folder, out, &cancel_writer).and_then(|mut out| {
            out.flush()?;
            Ok(out)
        }) {
            Ok(out) => {
                ok_writer.store(true, Ordering::SeqCst);
                drop(out);
            }
            Err(e) => {
                let _ = failed_tx.send(anyhow::Error::new(e).context("cannot write the archive"));
            }
        }
    });
    let result = load(dest, rx, ok, failed_rx, counter, bar).await;
    cancel.store(true, Ordering::SeqCst);
    let _ = writer.await;
    result
}

/// Feeds `rx` to DEST's load API. The body ends only when the producer
/// set `ok`; if it failed instead, the request is dropped mid-body so that
/// DEST never sees a complete archive.
async fn load(
    dest: &Arc<dyn DockerDriver>,
    rx: mpsc::Receiver<Bytes>,
    ok: Arc<AtomicBool>,
    failed: oneshot::Receiver<anyhow::Error>,
    counter: Arc<AtomicU64>,
    bar: Progress,
) -> anyhow::Result<()> {
    let body = futures::stream::unfold(rx, move |mut rx| {
        let ok = ok.clone();
        let counter = counter.clone();
        let bar = bar.clone();
        async move {
            match rx.recv().await {
                Some(chunk) => {
                    counter.fetch_add(chunk.len() as u64, Ordering::SeqCst);
                    bar.inc(chunk.len() as u64);
                    Some((chunk, rx))
                }
                None if ok.load(Ordering::SeqCst) => None,
                // The producer failed: never end the body.
                None => std::future::pending().await,
            }
        }
    });
    let body: BoxStream<Bytes> = Box::pin(body);
    let failed = async {
        match failed.await {
            Ok(e) => e,
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! {
        loaded = dest.load(body) => {
            let lines = loaded.context("loading the archive into the destination failed")?;
            for line in lines {
                tracing::debug!(%line, "destination");
            }
            Ok(())
        }
        e = failed => Err(e),
    }
}

/// A blocking writer into a bounded channel, in `CHUNK`-sized pieces.
struct ChannelWriter {
    tx: mpsc::Sender<Bytes>,
    buf: Vec<u8>,
}

impl Write for ChannelWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let room = CHUNK - self.buf.len();
        let n = room.min(data.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() == CHUNK {
            self.flush()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = Bytes::from(std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK)));
        self.tx
            .blocking_send(chunk)
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the load request ended"))
    }
}

fn short(id: &str) -> &str {
    let hex = id.strip_prefix("sha256:").unwrap_or(id);
    &hex[..hex.len().min(12)]
}

/// Bytes for people: `1.5 MiB`.
fn human(bytes: u64) -> String {
    indicatif::HumanBytes(bytes).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(s: &str) -> Vec<String> {
        s.split_whitespace().map(str::to_owned).collect()
    }

    #[track_caller]
    fn check_prefix(held: &[&str], wanted: &str, expected: usize) {
        let held: Vec<Held> = held
            .iter()
            .enumerate()
            .map(|(i, h)| Held {
                id: format!("sha256:{i}"),
                diff_ids: ids(h),
            })
            .collect();
        let (prefix, holder) = held_prefix(&held, &ids(wanted));
        assert_eq!(prefix, expected);
        // The image named holds that prefix (none when nothing is held).
        match holder {
            Some(h) => assert_eq!(h.diff_ids[..prefix], ids(wanted)[..prefix]),
            None => assert_eq!(prefix, 0),
        }
    }

    #[test]
    fn longest_prefix_any_image_holds() {
        check_prefix(&[], "a b c", 0);
        check_prefix(&["x y"], "a b c", 0);
        check_prefix(&["a x"], "a b c", 1);
        check_prefix(&["a x", "a b", "a"], "a b c", 2);
        check_prefix(&["a b c d"], "a b c", 3);
        check_prefix(&["b c"], "a b c", 0);
    }

    fn details(id: &str, created: &str) -> ImageDetails {
        ImageDetails {
            id: id.into(),
            repo_tags: vec!["app:1".into()],
            repo_digests: Vec::new(),
            parent: None,
            created: Some(created.into()),
            os: "linux".into(),
            architecture: "amd64".into(),
            variant: None,
            diff_ids: ids("a b"),
            history: ["COPY a", "ENV X=1", "COPY b"]
                .iter()
                .enumerate()
                .map(|(i, by)| docker_driver::HistoryRow {
                    id: None,
                    created: Some(1_700_000_000 + i as i64),
                    created_by: (*by).into(),
                    size: 3,
                    comment: "buildkit.dockerfile.v0".into(),
                    empty_layer: by.starts_with("ENV"),
                    layer_index: None,
                })
                .collect(),
        }
    }

    #[test]
    fn one_image_in_either_store_is_the_same_image() {
        // A classic store's ID is the config digest, the containerd
        // store's the manifest's: the rest tells.
        let classic = details("sha256:config", "2026-01-02T03:04:05.123456789Z");
        let mut containerd = details("sha256:index", "2026-01-02T03:04:05.123456789Z");
        containerd.history[0].size = 99; // sizes are reported differently
        assert!(same_image(&classic, &containerd));
        let rebuilt = details("sha256:other", "2026-01-02T03:04:06Z");
        assert!(!same_image(&classic, &rebuilt));
        let mut other_layers = containerd.clone();
        other_layers.diff_ids = ids("a c");
        assert!(!same_image(&classic, &other_layers));
        let mut other_arch = containerd.clone();
        other_arch.architecture = "arm64".into();
        assert!(!same_image(&classic, &other_arch));
        let mut other_history = containerd;
        other_history.history[1].created_by = "ENV X=2".into();
        assert!(!same_image(&classic, &other_history));
    }

    /// The descriptor `value` spells.
    fn descriptor(value: &serde_json::Value) -> Descriptor {
        serde_json::from_value(value.clone()).expect("a descriptor")
    }

    /// A `--since` folder whose manifest names layer `a` by diff ID (absent)
    /// and layer `b` by its blob in the folder.
    fn since_folder() -> (tempfile::TempDir, String) {
        use sha2::{Digest as _, Sha256};
        let dir = tempfile::tempdir().expect("tempdir");
        let blobs = dir.path().join("blobs/sha256");
        std::fs::create_dir_all(&blobs).expect("blobs");
        let absent = format!("sha256:{}", "a".repeat(64));
        let present = format!("sha256:{}", "b".repeat(64));
        std::fs::write(blobs.join("b".repeat(64)), b"layer b").expect("blob");
        let manifest = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                       "digest": format!("sha256:{}", "c".repeat(64)), "size": 9},
            "layers": [
                {"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": absent, "size": 0},
                {"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": present, "size": 7},
            ],
        }))
        .expect("json");
        let digest = format!("sha256:{}", hex::encode(Sha256::digest(&manifest)));
        std::fs::write(blobs.join(&digest[7..]), &manifest).expect("manifest");
        let index = serde_json::json!({
            "schemaVersion": 2,
            "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
                           "digest": digest, "size": manifest.len(),
                           "annotations": {"io.containerd.image.name": "docker.io/library/app:1"}}],
        });
        std::fs::write(dir.path().join("index.json"), index.to_string()).expect("index");
        (dir, digest)
    }

    #[test]
    fn absent_layers_are_named_by_the_blobs_dest_keeps() {
        use sha2::{Digest as _, Sha256};
        let (dir, old) = since_folder();
        let kept = serde_json::json!({
            "mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip",
            "digest": format!("sha256:{}", "d".repeat(64)),
            "size": 1234,
        });
        name_held_blobs(dir.path(), &[descriptor(&kept)]).expect("rewritten");
        let index: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.path().join("index.json")).expect("index"))
                .expect("json");
        let entry = &index["manifests"][0];
        let digest = entry["digest"].as_str().expect("digest");
        assert_ne!(digest, old);
        assert_eq!(
            entry["annotations"]["io.containerd.image.name"],
            "docker.io/library/app:1"
        );
        let bytes = std::fs::read(dir.path().join("blobs/sha256").join(&digest[7..]))
            .expect("the new manifest is in the folder");
        assert_eq!(
            format!("sha256:{}", hex::encode(Sha256::digest(&bytes))),
            digest
        );
        assert_eq!(entry["size"], bytes.len());
        let manifest: serde_json::Value = serde_json::from_slice(&bytes).expect("json");
        assert_eq!(manifest["layers"][0], kept);
        assert_eq!(
            manifest["layers"][1]["digest"],
            format!("sha256:{}", "b".repeat(64))
        );
        assert!(
            !dir.path().join("blobs/sha256").join(&old[7..]).exists(),
            "the old manifest stays in the archive"
        );
    }

    #[test]
    fn a_manifest_naming_the_held_blobs_already_stays() {
        let (dir, old) = since_folder();
        let blobs = dir.path().join("blobs/sha256");
        let manifest: serde_json::Value =
            serde_json::from_slice(&std::fs::read(blobs.join(&old[7..])).expect("manifest"))
                .expect("json");
        let same = manifest["layers"][0].clone();
        name_held_blobs(dir.path(), &[descriptor(&same)]).expect("nothing to do");
        assert!(
            blobs.join(&old[7..]).exists(),
            "the manifest left the archive"
        );
        let index = std::fs::read_to_string(dir.path().join("index.json")).expect("index");
        assert!(index.contains(&old), "{index}");
    }

    #[test]
    fn in_an_index_the_image_manifest_is_renamed_and_attestations_left() {
        use sha2::{Digest as _, Sha256};
        let (dir, manifest) = since_folder();
        let blobs = dir.path().join("blobs/sha256");
        let write = |value: &serde_json::Value| {
            let bytes = serde_json::to_vec(value).expect("json");
            let digest = format!("sha256:{}", hex::encode(Sha256::digest(&bytes)));
            std::fs::write(blobs.join(&digest[7..]), &bytes).expect("blob");
            (digest, bytes.len())
        };
        let attestation = write(&serde_json::json!({
            "schemaVersion": 2, "layers": [{"mediaType": "application/vnd.in-toto+json",
            "digest": format!("sha256:{}", "e".repeat(64)), "size": 5}]}));
        let size = std::fs::metadata(blobs.join(&manifest[7..]))
            .expect("manifest")
            .len();
        let (index, _) = write(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": [
                {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": manifest,
                 "size": size, "platform": {"os": "linux", "architecture": "amd64"}},
                {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": attestation.0,
                 "size": attestation.1,
                 "annotations": {"vnd.docker.reference.type": "attestation-manifest"}},
            ],
        }));
        let top = serde_json::json!({"schemaVersion": 2, "manifests": [
            {"mediaType": "application/vnd.oci.image.index.v1+json", "digest": index, "size": 1}]});
        std::fs::write(dir.path().join("index.json"), top.to_string()).expect("index.json");

        let kept = serde_json::json!({"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
            "digest": format!("sha256:{}", "d".repeat(64)), "size": 77});
        name_held_blobs(dir.path(), &[descriptor(&kept)]).expect("rewritten");
        let top: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.path().join("index.json")).expect("read"))
                .expect("json");
        let new_index = top["manifests"][0]["digest"].as_str().expect("digest");
        assert_ne!(new_index, index);
        let new_index: serde_json::Value =
            serde_json::from_slice(&std::fs::read(blobs.join(&new_index[7..])).expect("index"))
                .expect("json");
        let image = new_index["manifests"][0]["digest"]
            .as_str()
            .expect("digest");
        assert_ne!(image, manifest);
        let image: serde_json::Value =
            serde_json::from_slice(&std::fs::read(blobs.join(&image[7..])).expect("manifest"))
                .expect("json");
        assert_eq!(image["layers"][0], kept);
        assert_eq!(new_index["manifests"][1]["digest"], attestation.0.as_str());
        assert!(new_index.get("layers").is_none(), "{new_index}");
        assert!(blobs.join(&attestation.0[7..]).exists());
        assert!(!blobs.join(&index[7..]).exists() && !blobs.join(&manifest[7..]).exists());
    }

    #[test]
    fn a_layer_in_the_folder_is_never_renamed() {
        let (dir, old) = since_folder();
        let kept = serde_json::json!({"mediaType": "x", "digest": format!("sha256:{}", "d".repeat(64)), "size": 1});
        let err = name_held_blobs(dir.path(), &[descriptor(&kept), descriptor(&kept)])
            .expect_err("layer b is sent");
        assert!(format!("{err:#}").contains("is in the folder"), "{err:#}");
        let index = std::fs::read_to_string(dir.path().join("index.json")).expect("index");
        assert!(
            index.contains(&old),
            "index.json changed on a refusal: {index}"
        );
    }

    #[test]
    fn the_config_always_goes_with_a_layer() {
        assert_eq!(first_sent(0, 3), 0);
        assert_eq!(first_sent(2, 3), 2);
        assert_eq!(first_sent(3, 3), 2);
        assert_eq!(first_sent(0, 0), 0);
    }

    #[test]
    fn the_channel_writer_sends_whole_chunks() {
        let (tx, mut rx) = mpsc::channel(64);
        let data = vec![7u8; CHUNK * 2 + 10];
        let mut w = ChannelWriter {
            tx,
            buf: Vec::new(),
        };
        w.write_all(&data).unwrap();
        w.flush().unwrap();
        drop(w);
        let mut sizes = Vec::new();
        while let Ok(chunk) = rx.try_recv() {
            sizes.push(chunk.len());
        }
        assert_eq!(sizes, [CHUNK, CHUNK, 10]);
    }
}
