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
//!    cheapest route into a scratch folder (the `--since` layout: its
//!    `manifest.json` and OCI `index.json` name the absent layers as the
//!    source knows them), and a tar of that folder is streamed into DEST's
//!    load API through a small bounded channel (memory flat, no archive
//!    file). When DEST holds every layer but not the image (another config
//!    over the same layers), the top layer is sent again with the config.
//!
//! A load that fails leaves no tag behind that was not on DEST before; the
//! scratch folder and the source's temporary tags go on every path
//! ([`Cleanup`]), Ctrl-C included.

use std::collections::HashSet;
use std::io::{self, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

use anyhow::{Context, bail};
use bytes::Bytes;
use docker_driver::{BollardDriver, BoxStream, DaemonSelection, DockerDriver, ImageDetails};
use futures::{StreamExt, TryStreamExt};
use serde::Serialize;
use tokio::sync::{mpsc, oneshot};

use crate::cleanup::Cleanup;
use crate::export::{ExportOptions, Exporter};
use crate::report::Reporter;

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

/// One image copied, as `--json` reports it.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Copied {
    /// The image as named on the command line.
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
    pub(crate) seconds: f64,
}

/// What a `--to` run did, as `--json` reports it.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Report {
    pub(crate) destination: String,
    pub(crate) images: Vec<Copied>,
    pub(crate) layers_skipped: usize,
    pub(crate) layers_sent: usize,
    pub(crate) bytes_sent: u64,
    pub(crate) seconds: f64,
    /// Bytes per second over the whole run.
    pub(crate) rate: f64,
}

/// Runs `dlgrab --to DEST IMAGE…` to the end: the copy raced against
/// Ctrl-C, then cleanup, then the result on stdout with `--json`.
pub(crate) async fn main(
    dest: &str,
    source: Arc<dyn DockerDriver>,
    cleanup: Arc<Cleanup>,
    reporter: Arc<Reporter>,
    options: ExportOptions,
    images: &[String],
    json: bool,
) -> anyhow::Result<ExitCode> {
    let outcome = tokio::select! {
        result = run(dest, source, cleanup.clone(), reporter.clone(), options, images) => Some(result),
        () = crate::interrupted() => None,
    };
    reporter.finish();
    for failure in cleanup.run().await {
        tracing::warn!("{failure}");
        let _ = writeln!(io::stderr(), "dlgrab: warning: {failure}");
    }
    match outcome {
        None => {
            let _ = writeln!(
                io::stderr(),
                "dlgrab: interrupted: copy stopped, nothing loaded on {dest}, temporary tags and files removed"
            );
            Ok(ExitCode::from(crate::INTERRUPTED))
        }
        Some(Err(e)) => Err(e),
        Some(Ok(report)) => {
            if json {
                let mut out = io::stdout().lock();
                serde_json::to_writer_pretty(&mut out, &report)?;
                writeln!(out)?;
            }
            reporter.message(format!(
                "Copy complete: {} image(s) to {}, {} layer(s) skipped, {} sent, {} in {:.1}s ({}/s)",
                report.images.len(),
                report.destination,
                report.layers_skipped,
                report.layers_sent,
                human(report.bytes_sent),
                report.seconds,
                human(report.rate as u64),
            ));
            Ok(ExitCode::SUCCESS)
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
    BollardDriver::connect_to(&daemon)
        .await
        .with_context(|| format!("cannot connect to the destination daemon {dest}"))
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
    let source_info = source
        .info()
        .await
        .context("cannot talk to the source Docker daemon")?;
    let dest_info = dest
        .info()
        .await
        .with_context(|| format!("cannot talk to the destination daemon {dest_name}"))?;
    let whole_only = whole_images_only(&source_info.image_store, &dest_info.image_store);
    reporter.phase(format!("asking {dest_name} which layers it holds"));
    let mut held = if whole_only {
        reporter.message(format!(
            "{dest_name} keeps images in the containerd store: whole images go (the layers \
             left out would have to be blobs it holds, which it cannot be asked)"
        ));
        Vec::new()
    } else {
        held_chains(dest.as_ref(), at_once)
            .await
            .with_context(|| format!("cannot list the images on {dest_name}"))?
    };

    let mut copied = Vec::new();
    for image in images {
        let one = copy_one(
            image, dest_name, &source, &dest, &cleanup, &reporter, &options, &held,
        )
        .await
        .with_context(|| format!("cannot copy {image} to {dest_name}"))?;
        if !whole_only {
            held.push(one.1);
        }
        copied.push(one.0);
    }
    let seconds = started.elapsed().as_secs_f64();
    let bytes_sent = copied.iter().map(|c| c.bytes_sent).sum();
    Ok(Report {
        destination: dest_name.to_owned(),
        layers_skipped: copied.iter().map(|c| c.layers_skipped).sum(),
        layers_sent: copied.iter().map(|c| c.layers_sent).sum(),
        bytes_sent,
        seconds,
        rate: bytes_sent as f64 / seconds.max(1e-3),
        images: copied,
    })
}

/// The diff-ID lists of every image on `dest` (each distinct list once),
/// asking `at_once` inspects at a time.
async fn held_chains(dest: &dyn DockerDriver, at_once: usize) -> anyhow::Result<Vec<Vec<String>>> {
    let ids: Vec<String> = {
        let mut seen = HashSet::new();
        dest.list_images()
            .await?
            .into_iter()
            .filter_map(|i| seen.insert(i.id.clone()).then_some(i.id))
            .collect()
    };
    let lists: Vec<Vec<String>> = futures::stream::iter(ids)
        .map(|id| async move {
            match dest.image_diff_ids(&id).await {
                Ok((_, diff_ids)) => Some(diff_ids),
                // Removed meanwhile: it holds nothing any more.
                Err(e) => {
                    tracing::debug!(%id, "not inspected: {e}");
                    None
                }
            }
        })
        .buffer_unordered(at_once)
        .filter_map(|l| async move { l.filter(|l| !l.is_empty()) })
        .collect()
        .await;
    let mut distinct: Vec<Vec<String>> = Vec::new();
    for list in lists {
        if !distinct.contains(&list) {
            distinct.push(list);
        }
    }
    Ok(distinct)
}

/// Whether only whole images can go: to the containerd store, always.
/// The archive's OCI manifest must describe the layers it leaves out by
/// the blobs the destination holds. A classic source knows them by diff
/// ID only, and a wrong size (0) gives an image that runs but whose
/// `docker save` is cut short (seen on 28.5). A containerd-store source
/// names its own blobs, but the destination may hold the layer as a
/// snapshot of another blob (its own build, another pull): 26.1 then
/// registers an image it cannot inspect by ID (seen copying e → c).
pub(crate) fn whole_images_only(
    _source: &docker_driver::ImageStore,
    dest: &docker_driver::ImageStore,
) -> bool {
    matches!(dest, docker_driver::ImageStore::Containerd)
}

/// How many of `wanted`'s layers, from the base, some list in `held` has.
pub(crate) fn held_prefix(held: &[Vec<String>], wanted: &[String]) -> usize {
    held.iter()
        .map(|h| h.iter().zip(wanted).take_while(|(a, b)| a == b).count())
        .max()
        .unwrap_or(0)
}

/// Which layers to send: those from the returned index on; the image's
/// config always goes with them, so at least the top layer is sent when
/// DEST holds every layer but not this image.
pub(crate) fn first_sent(prefix: usize, layers: usize) -> usize {
    prefix.min(layers.saturating_sub(1))
}

/// `repo:tag` into `repo` and `tag` (the tag after the last `:` that
/// follows the last `/`).
pub(crate) fn split_tag(reference: &str) -> Option<(&str, &str)> {
    let slash = reference.rfind('/').map_or(0, |i| i + 1);
    let colon = reference[slash..].rfind(':')? + slash;
    let (repo, tag) = (&reference[..colon], &reference[colon + 1..]);
    (!repo.is_empty() && !tag.is_empty()).then_some((repo, tag))
}

#[allow(clippy::too_many_arguments)]
async fn copy_one(
    image: &str,
    dest_name: &str,
    source: &Arc<dyn DockerDriver>,
    dest: &Arc<dyn DockerDriver>,
    cleanup: &Arc<Cleanup>,
    reporter: &Arc<Reporter>,
    options: &ExportOptions,
    held: &[Vec<String>],
) -> anyhow::Result<(Copied, Vec<String>)> {
    let started = Instant::now();
    let details = source
        .inspect_image(image)
        .await
        .with_context(|| format!("cannot find {image} on the source daemon"))?;
    let layers = details.diff_ids.len();
    let tags = crate::sweep::user_tags(&details.repo_tags);
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

    let prefix = held_prefix(held, &details.diff_ids);
    let first = first_sent(prefix, layers);
    let before = tags_before(dest.as_ref(), &tags).await;
    let sent_layers = layers - first;
    reporter.message(format!(
        "{image}: {dest_name} holds {prefix} of its {layers} layers; sending {sent_layers}"
    ));
    let counter = Arc::new(AtomicU64::new(0));
    let bar = reporter.bytes_bar(format!("{image} → {dest_name}"), None);
    let (how, routes, result) = if first == 0 {
        let result = load_whole(source, dest, &details, counter.clone(), bar.clone()).await;
        (How::Whole, vec!["save"], result)
    } else {
        let indexes: Vec<usize> = (first..layers).collect();
        match export_layers(source, cleanup, options, &details, &indexes).await {
            Ok((scratch, routes)) => {
                let result =
                    load_folder(dest, scratch.join("layers"), counter.clone(), bar.clone()).await;
                remove_dir(&scratch).await;
                (How::Delta, routes, result)
            }
            Err(e) => return Err(e),
        }
    };
    if let Some(bar) = &bar {
        bar.finish_and_clear();
    }
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
    let scratch = std::env::temp_dir().join(format!(".dlgrab-copy-{}", unique_suffix()));
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
            remove_dir(&scratch).await;
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
    bar: Option<indicatif::ProgressBar>,
) -> anyhow::Result<()> {
    let tags = crate::sweep::user_tags(&details.repo_tags);
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
    bar: Option<indicatif::ProgressBar>,
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
    bar: Option<indicatif::ProgressBar>,
) -> anyhow::Result<()> {
    let body = futures::stream::unfold(rx, move |mut rx| {
        let ok = ok.clone();
        let counter = counter.clone();
        let bar = bar.clone();
        async move {
            match rx.recv().await {
                Some(chunk) => {
                    counter.fetch_add(chunk.len() as u64, Ordering::SeqCst);
                    if let Some(bar) = &bar {
                        bar.inc(chunk.len() as u64);
                    }
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

async fn remove_dir(dir: &std::path::Path) {
    match tokio::fs::remove_dir_all(dir).await {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => tracing::debug!(dir = %dir.display(), "scratch not removed yet: {e}"),
    }
}

fn unique_suffix() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!("{:x}{:08x}", std::process::id(), nanos)
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
        let held: Vec<Vec<String>> = held.iter().map(|h| ids(h)).collect();
        assert_eq!(held_prefix(&held, &ids(wanted)), expected);
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

    #[test]
    fn classic_to_containerd_goes_whole() {
        use docker_driver::ImageStore::{Classic, Containerd};
        let classic = || Classic {
            driver: "overlay2".into(),
        };
        assert!(whole_images_only(&classic(), &Containerd));
        assert!(!whole_images_only(&Containerd, &classic()));
        assert!(whole_images_only(&Containerd, &Containerd));
        assert!(!whole_images_only(&classic(), &classic()));
    }

    #[test]
    fn the_config_always_goes_with_a_layer() {
        assert_eq!(first_sent(0, 3), 0);
        assert_eq!(first_sent(2, 3), 2);
        assert_eq!(first_sent(3, 3), 2);
        assert_eq!(first_sent(0, 0), 0);
    }

    #[test]
    fn tags_split_after_the_last_slash() {
        assert_eq!(split_tag("a/b:1"), Some(("a/b", "1")));
        assert_eq!(
            split_tag("localhost:5000/a:v2"),
            Some(("localhost:5000/a", "v2"))
        );
        assert_eq!(split_tag("localhost:5000/a"), None);
        assert_eq!(split_tag("busybox"), None);
        assert_eq!(split_tag(":x"), None);
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
