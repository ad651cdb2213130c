//! What a run writes where: layer folders (the default), one layer's tar on
//! stdout (`-o -`), or, with `--since BASE IMAGE`, one archive of the layers
//! IMAGE has beyond BASE that `docker load` turns back into IMAGE on a
//! daemon holding BASE.
//!
//! Both stdout and `--since` export into a scratch folder with the usual
//! [`Exporter`] (seed format, which keeps `manifest.json` and an OCI
//! `index.json` naming the absent layers as the daemon knows them), then
//! stream out of it: the layer's `layer.tar`, or a tar of the whole folder
//! (hard links kept). An archive file is written to a temporary file in a
//! scratch folder beside it and renamed into place; the scratch folder is
//! removed on every path (the [`Cleanup`] records it for errors and Ctrl-C).

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{Context, bail};
use docker_driver::{DockerDriver, LayerSelector};

use layer_writer::run::TempKind;

use crate::cleanup::Cleanup;
use crate::export::{Attempt, ExportOptions, Exported, Exporter};
use crate::failure::Kind;
use crate::report::Reporter;

/// Where the data of a run goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Target {
    /// Layer folders in this directory (`-o DIR`).
    Folder,
    /// The one layer's tar on stdout (`-o -`).
    LayerToStdout,
    /// The layers of `image` beyond `base`, as one loadable archive.
    Since {
        base: String,
        image: String,
        /// `None` for stdout.
        archive: Option<PathBuf>,
    },
}

/// What a run asks of its output, as `main` reads it off the command line.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Asked<'a> {
    /// The images or layers named (`IMAGE…`).
    pub(crate) images: &'a [String],
    /// `--since BASE`.
    pub(crate) since: Option<&'a str>,
    /// `-o`: a folder, a file (with `--since`) or `-` for stdout.
    pub(crate) output: &'a Path,
    /// `--json`, which writes its report to stdout.
    pub(crate) json: bool,
    /// The folder format (`--format`, `--registry-format`).
    pub(crate) format: layer_writer::Format,
}

/// Where a run that asks for `asked` writes, once the flags' constraints
/// are checked (before any daemon call).
pub(crate) fn target_for(asked: &Asked<'_>) -> anyhow::Result<Target> {
    let Asked {
        images: layers,
        since,
        output,
        json,
        format,
    } = *asked;
    let to_stdout = output == Path::new("-");
    if to_stdout && json {
        bail!("--json and -o - would both write to stdout: drop one of them");
    }
    if let Some(base) = since {
        let [image] = layers else {
            bail!(
                "--since BASE needs exactly one IMAGE (got {}): dlgrab --since BASE IMAGE -o delta.tar",
                layers.len()
            );
        };
        if output == Path::new(".") || output.as_os_str().is_empty() {
            bail!("--since writes one archive: name it with -o FILE (or -o - for stdout)");
        }
        return Ok(Target::Since {
            base: base.to_owned(),
            image: image.clone(),
            archive: (!to_stdout).then(|| output.to_path_buf()),
        });
    }
    if to_stdout {
        if layers.len() != 1 {
            bail!(
                "-o - writes one layer's tar to stdout, but {} layers were named (export several into a folder, or use --since for an archive)",
                layers.len()
            );
        }
        if format != layer_writer::Format::Seed {
            bail!("-o - writes the layer's tar: --format and --registry-format do not apply");
        }
        return Ok(Target::LayerToStdout);
    }
    if output.exists() && !output.is_dir() {
        bail!(
            "{} is a file, but -o names the folder to write the layers into (made if missing): name a folder, or use --since to write one archive file",
            output.display()
        );
    }
    if output.exists() && !output.is_dir() {
        bail!(
            "{} is a file, but -o names the folder to write the layers into (made if missing): name a folder, or use --since to write one archive file",
            output.display()
        );
    }
    Ok(Target::Folder)
}

/// The indexes of `image`'s layers that `base` lacks: those beyond the
/// longest common prefix of their diff IDs.
pub(crate) fn new_layers(
    base: &[String],
    image: &[String],
    base_name: &str,
    image_name: &str,
) -> anyhow::Result<Range<usize>> {
    let common = base.iter().zip(image).take_while(|(b, i)| b == i).count();
    if common == 0 {
        return Err(Kind::NotABase.error(format!(
            "{base_name} is not a base of {image_name}: their first layers differ \
             ({} vs {}), so a daemon holding {base_name} holds none of {image_name}'s layers",
            base.first().map_or("none", String::as_str),
            image.first().map_or("none", String::as_str),
        )));
    }
    if common == image.len() {
        return Err(Kind::NothingNew.error(format!(
            "nothing new: every layer of {image_name} ({}) is already in {base_name}",
            layers(image.len())
        )));
    }
    Ok(common..image.len())
}

/// What a `--since` run wrote, for `--json`.
#[derive(Debug, Clone)]
pub(crate) struct Delta {
    pub(crate) base: String,
    pub(crate) image: String,
    pub(crate) image_id: String,
    /// How many of IMAGE's layers (from the base) BASE already has.
    pub(crate) shared_layers: usize,
    /// The archive's path, or `-` for stdout.
    pub(crate) archive: PathBuf,
    /// The archive's size in bytes.
    pub(crate) size: u64,
    pub(crate) layers: Vec<Exported>,
    /// How long getting the layers out and writing the archive took.
    pub(crate) seconds: f64,
}

/// What a run did, for `--json`.
#[derive(Debug)]
pub(crate) enum Done {
    /// Per reference as typed.
    Layers(Vec<Attempt>),
    Streamed,
    Delta(Box<Delta>),
}

/// Runs the export `target` asks for.
pub(crate) async fn run(
    target: Target,
    driver: Arc<dyn DockerDriver>,
    cleanup: Arc<Cleanup>,
    reporter: Arc<Reporter>,
    options: ExportOptions,
    layers: &[String],
    selector: LayerSelector,
) -> anyhow::Result<Done> {
    match target {
        Target::Folder => Ok(Done::Layers(
            Exporter::new(driver, cleanup, reporter, options)
                .run_each(layers, selector)
                .await?,
        )),
        Target::LayerToStdout => {
            let scratch = crate::temp_names::scratch_in_temp(TempKind::Stdout);
            cleanup.add_dir(scratch.clone());
            let result = layer_to_stdout(
                &scratch, driver, cleanup, reporter, options, layers, selector,
            )
            .await;
            crate::temp_names::remove(&scratch).await;
            result.map(|()| Done::Streamed)
        }
        Target::Since {
            base,
            image,
            archive,
        } => {
            let scratch = match &archive {
                Some(path) => {
                    if path.is_dir() {
                        return Err(Kind::Output.error(format!(
                            "{} is a folder: with --since, -o names the archive file",
                            path.display()
                        )));
                    }
                    if path.exists() && !options.replace {
                        return Err(Kind::Output.error(format!(
                            "output already there: {} (use --force to replace it)",
                            path.display()
                        )));
                    }
                    crate::temp_names::scratch_in(&parent_of(path), TempKind::Delta)
                }
                None => crate::temp_names::scratch_in_temp(TempKind::Delta),
            };
            cleanup.add_dir(scratch.clone());
            let result = since(
                &scratch,
                driver,
                cleanup,
                reporter,
                options,
                &base,
                &image,
                archive.as_deref(),
            )
            .await;
            crate::temp_names::remove(&scratch).await;
            result.map(|d| Done::Delta(Box::new(d)))
        }
    }
}

async fn layer_to_stdout(
    scratch: &Path,
    driver: Arc<dyn DockerDriver>,
    cleanup: Arc<Cleanup>,
    reporter: Arc<Reporter>,
    mut options: ExportOptions,
    layers: &[String],
    selector: LayerSelector,
) -> anyhow::Result<()> {
    options.outdir = scratch.to_path_buf();
    options.format = layer_writer::Format::Seed;
    options.replace = false;
    let exported = Exporter::new(driver, cleanup, reporter, options)
        .run(layers, selector)
        .await?;
    let [layer] = exported.as_slice() else {
        bail!("expected one layer, {} were exported", exported.len());
    };
    let tar = scratch.join(&layer.id).join("layer.tar");
    let cancel = Cancel::default();
    let flag = cancel.flag();
    tokio::task::spawn_blocking(move || -> io::Result<()> {
        let file = std::fs::File::open(&tar)?;
        let mut out = io::BufWriter::with_capacity(1 << 20, io::stdout().lock());
        io::copy(&mut Cancellable { inner: file, flag }, &mut out)?;
        out.flush()
    })
    .await
    .context("the copy to stdout stopped")?
    .context("cannot write the layer to stdout")
}

#[allow(clippy::too_many_arguments)]
async fn since(
    scratch: &Path,
    driver: Arc<dyn DockerDriver>,
    cleanup: Arc<Cleanup>,
    reporter: Arc<Reporter>,
    mut options: ExportOptions,
    base: &str,
    image: &str,
    archive: Option<&Path>,
) -> anyhow::Result<Delta> {
    let info = driver
        .info()
        .await
        .context("cannot talk to the Docker daemon")?;
    tracing::debug!(?info, "daemon");
    let base_details = driver
        .inspect_image(base)
        .await
        .with_context(|| format!("cannot find the base image {base}"))?;
    let image_details = driver
        .inspect_image(image)
        .await
        .with_context(|| format!("cannot find the image {image}"))?;
    let range = new_layers(&base_details.diff_ids, &image_details.diff_ids, base, image)?;
    reporter.message(format!(
        "{image} has {} beyond the {} it shares with {base}",
        layers(range.len()),
        range.start
    ));

    let started = std::time::Instant::now();
    let layers_dir = scratch.join("layers");
    options.outdir = layers_dir.clone();
    options.format = layer_writer::Format::Seed;
    options.replace = false;
    let indexes: Vec<usize> = range.clone().collect();
    let mut exported = Exporter::new(driver, cleanup, reporter.clone(), options)
        .run_indexes(&image_details, &indexes)
        .await?;
    for layer in &mut exported {
        // Their files were in the scratch folder; the archive holds them now.
        layer.files.clear();
    }

    let cancel = Cancel::default();
    let flag = cancel.flag();
    let size = match archive {
        Some(path) => {
            reporter.message(format!("Writing archive: {}", path.display()));
            let partial = scratch.join("archive.tar.partial");
            let path = path.to_path_buf();
            tokio::task::spawn_blocking(move || -> io::Result<u64> {
                let file = std::fs::File::create(&partial)?;
                let out = Counting::new(io::BufWriter::with_capacity(1 << 20, file));
                let out = write_tar(&layers_dir, out, &flag)?;
                let size = out.count;
                let file = out
                    .inner
                    .into_inner()
                    .map_err(io::IntoInnerError::into_error)?;
                file.sync_all()?;
                drop(file);
                if flag.load(Ordering::SeqCst) {
                    return Err(cancelled());
                }
                std::fs::rename(&partial, &path)?;
                if let Ok(dir) = std::fs::File::open(parent_of(&path)) {
                    let _ = dir.sync_all();
                }
                Ok(size)
            })
            .await
            .context("writing the archive stopped")?
            .context("cannot write the archive")
            .map_err(|e| Kind::Output.tag(e))?
        }
        None => tokio::task::spawn_blocking(move || -> io::Result<u64> {
            let out = Counting::new(io::BufWriter::with_capacity(1 << 20, io::stdout().lock()));
            let mut out = write_tar(&layers_dir, out, &flag)?;
            out.flush()?;
            Ok(out.count)
        })
        .await
        .context("writing the archive stopped")?
        .context("cannot write the archive to stdout")
        .map_err(|e| Kind::Output.tag(e))?,
    };
    drop(cancel);
    Ok(Delta {
        base: base.to_owned(),
        image: image.to_owned(),
        image_id: image_details.id.clone(),
        shared_layers: range.start,
        archive: archive.map_or_else(|| PathBuf::from("-"), Path::to_path_buf),
        size,
        layers: exported,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// Writes a tar of everything under `root` (scratch entries of the exporter
/// excepted) to `out`: directories, files, symlinks, and hard links as links
/// to the first path of the same file, in a stable order.
pub(crate) fn write_tar<W: Write>(root: &Path, out: W, cancel: &AtomicBool) -> io::Result<W> {
    use std::os::unix::fs::MetadataExt;
    use tar::{EntryType, Header, HeaderMode};

    let mut paths = Vec::new();
    collect(root, Path::new(""), &mut paths)?;
    let mut builder = tar::Builder::new(out);
    let mut first_of: HashMap<(u64, u64), PathBuf> = HashMap::new();
    for rel in paths {
        if cancel.load(Ordering::SeqCst) {
            return Err(cancelled());
        }
        let path = root.join(&rel);
        let meta = std::fs::symlink_metadata(&path)?;
        let mut header = Header::new_gnu();
        header.set_metadata_in_mode(&meta, HeaderMode::Deterministic);
        let kind = meta.file_type();
        if kind.is_dir() {
            header.set_size(0);
            builder.append_data(&mut header, &rel, io::empty())?;
        } else if kind.is_symlink() {
            header.set_size(0);
            builder.append_link(&mut header, &rel, std::fs::read_link(&path)?)?;
        } else if kind.is_file() {
            if meta.nlink() > 1 {
                let key = (meta.dev(), meta.ino());
                if let Some(first) = first_of.get(&key) {
                    header.set_entry_type(EntryType::Link);
                    header.set_size(0);
                    builder.append_link(&mut header, &rel, first)?;
                    continue;
                }
                first_of.insert(key, rel.clone());
            }
            let file = std::fs::File::open(&path)?;
            builder.append_data(
                &mut header,
                &rel,
                Cancellable {
                    inner: file,
                    flag: cancel,
                },
            )?;
        }
    }
    builder.into_inner()
}

/// Relative paths under `dir` (parents before children, names sorted),
/// leaving out the exporter's own scratch entries (`.dlgrab-…`).
fn collect(root: &Path, rel: &Path, out: &mut Vec<PathBuf>) -> io::Result<()> {
    let mut names: Vec<_> = std::fs::read_dir(root.join(rel))?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<io::Result<_>>()?;
    names.sort();
    for name in names {
        if name.to_string_lossy().starts_with(".dlgrab") {
            continue;
        }
        let child = rel.join(&name);
        let meta = std::fs::symlink_metadata(root.join(&child))?;
        out.push(child.clone());
        if meta.is_dir() {
            collect(root, &child, out)?;
        }
    }
    Ok(())
}

/// Raised when the run is dropped (Ctrl-C): the blocking writer stops at
/// its next read.
#[derive(Default)]
struct Cancel(Arc<AtomicBool>);

impl Cancel {
    fn flag(&self) -> CancelFlag {
        CancelFlag(self.0.clone())
    }
}

impl Drop for Cancel {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

#[derive(Clone)]
struct CancelFlag(Arc<AtomicBool>);

impl std::ops::Deref for CancelFlag {
    type Target = AtomicBool;
    fn deref(&self) -> &AtomicBool {
        &self.0
    }
}

/// A reader that fails once the run is cancelled.
struct Cancellable<R, F> {
    inner: R,
    flag: F,
}

impl<R: Read, F: std::ops::Deref<Target = AtomicBool>> Read for Cancellable<R, F> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.flag.load(Ordering::SeqCst) {
            return Err(cancelled());
        }
        self.inner.read(buf)
    }
}

fn cancelled() -> io::Error {
    io::Error::other("cancelled")
}

/// A writer that counts the bytes through it.
struct Counting<W> {
    inner: W,
    count: u64,
}

impl<W> Counting<W> {
    fn new(inner: W) -> Self {
        Self { inner, count: 0 }
    }
}

impl<W: Write> Write for Counting<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.count += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// `n layers`, or `1 layer`.
fn layers(n: usize) -> String {
    match n {
        1 => "1 layer".to_owned(),
        n => format!("{n} layers"),
    }
}

/// The folder a file path is in (`.` for a bare name).
fn parent_of(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

#[cfg(test)]
mod tests;
