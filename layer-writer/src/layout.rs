//! Where each format puts a layer, and the top-level files that describe
//! the folder.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::path::{Path, PathBuf};

use oci_spec::image::Digest;
use serde_json::{Value, json};

use crate::error::io_err;
use crate::manifest::{MT_DOCKER_MANIFEST, MT_OCI_INDEX, MT_OCI_MANIFEST, digest_of};
use crate::pipeline::Streamed;
use crate::reference::{normalized, split_tag};
use crate::run::{TempKind, temp_name};
use crate::{Format, ImageContext, WriteError, WriterOptions, folder, fsx, v1};

pub(crate) const MT_OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub(crate) const MT_OCI_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
const REGISTRY: &str = "docker/registry/v2";

fn hex(d: &Digest) -> &str {
    d.digest()
}

pub(crate) fn oci_blob(root: &Path, d: &Digest) -> PathBuf {
    root.join("blobs").join("sha256").join(hex(d))
}

fn registry_blob(root: &Path, d: &Digest) -> PathBuf {
    let h = hex(d);
    root.join(REGISTRY)
        .join("blobs/sha256")
        .join(&h[..2])
        .join(h)
        .join("data")
}

fn repo_dir(root: &Path, image: &ImageContext) -> PathBuf {
    root.join(REGISTRY)
        .join("repositories")
        .join(&image.repository)
}

/// The paths a layer occupies, checked before writing.
pub(crate) fn layer_targets(
    root: &Path,
    format: Format,
    image: &ImageContext,
    diff_id: &Digest,
    index: usize,
) -> Vec<PathBuf> {
    match format {
        Format::Seed => image
            .layer_ids
            .get(index)
            .map(|id| root.join(id))
            .into_iter()
            .collect(),
        Format::Oci => match image.compressed.get(index) {
            Some(Some(c)) if file_size(&oci_blob(root, diff_id)).is_none() => {
                vec![oci_blob(root, &c.digest)]
            }
            _ => vec![oci_blob(root, diff_id)],
        },
        Format::Registry => {
            let mut v = vec![registry_blob(root, diff_id)];
            if let Some(Some(c)) = image.compressed.get(index) {
                v.push(registry_blob(root, &c.digest));
            }
            v
        }
    }
}

/// Whether the folder already holds layer `index` where `format` puts it:
/// its tar is there and hashes to `diff_id`.
pub(crate) fn holds_layer(
    root: &Path,
    format: Format,
    image: &ImageContext,
    diff_id: &Digest,
    index: usize,
) -> bool {
    let tar = match format {
        Format::Seed => match image.layer_ids.get(index) {
            Some(id) => root.join(id).join("layer.tar"),
            None => return false,
        },
        Format::Oci => {
            // As the tar, or as the blob the daemon stores (compressed).
            if let Some(Some(c)) = image.compressed.get(index)
                && file_size(&oci_blob(root, diff_id)).is_none()
            {
                return stored_blob_holds(root, c, diff_id);
            }
            oci_blob(root, diff_id)
        }
        Format::Registry => registry_blob(root, diff_id),
    };
    folder::file_holds(&tar, diff_id)
}

/// The files layer `index` occupies in `format`, relative to the root (for
/// [`Format::Seed`] the tar last).
pub(crate) fn layer_files(
    root: &Path,
    format: Format,
    image: &ImageContext,
    diff_id: &Digest,
    index: usize,
) -> Vec<PathBuf> {
    match format {
        Format::Seed => ["VERSION", "json", "layer.tar"]
            .iter()
            .map(|f| PathBuf::from(image.layer_ids.get(index).map_or("", String::as_str)).join(f))
            .collect(),
        _ => layer_targets(root, format, image, diff_id, index)
            .iter()
            .take(1)
            .map(|p| rel(root, p))
            .collect(),
    }
}

/// Moves the streamed temporary file into the format's place; also says
/// whether the place already held this very layer (then kept as it was).
pub(crate) fn commit_layer(
    root: &Path,
    options: &WriterOptions,
    image: &ImageContext,
    index: usize,
    mut streamed: Streamed,
) -> Result<(Vec<PathBuf>, bool), WriteError> {
    // The compressed blob as received, beside the tar ([`Keep::TarAndRaw`]):
    // placed first, removed again if the layer itself cannot be placed.
    let mut raw_guard = fsx::RemoveOnDrop(None);
    let mut raw_file = None;
    if let (Some(copy), Some(Some(c))) = (streamed.raw_copy.take(), image.compressed.get(index)) {
        let target = oci_blob(root, &c.digest);
        fsx::mkdirs(target.parent().expect("blob path has a parent"))?;
        if file_size(&target) == Some(c.size) {
            drop(copy); // content-addressed: the same bytes are already there
        } else {
            fsx::finish(copy, &target, true)?;
            raw_guard.0 = Some(target.clone());
        }
        raw_file = Some(rel(root, &target));
    }
    let mut already_there = false;
    let mut files = match options.format {
        Format::Seed => {
            let (files, there) = commit_seed(root, options.replace, image, index, streamed)?;
            already_there = there;
            files
        }
        Format::Oci if streamed.raw_kept => {
            // The compressed blob as stored (its digest checked, its tar
            // hashed to the diff ID while it streamed).
            let target = oci_blob(root, &streamed.raw_digest);
            fsx::mkdirs(target.parent().expect("blob path has a parent"))?;
            if !options.replace && folder::file_holds(&target, &streamed.raw_digest) {
                already_there = true; // content-addressed: the same bytes
            } else {
                fsx::finish(streamed.file, &target, options.replace)?;
            }
            vec![rel(root, &target)]
        }
        Format::Oci => {
            let target = oci_blob(root, &streamed.diff_id);
            fsx::mkdirs(target.parent().expect("blob path has a parent"))?;
            if !options.replace && folder::file_holds(&target, &streamed.diff_id) {
                already_there = true; // content-addressed: the same bytes
            } else {
                fsx::finish(streamed.file, &target, options.replace)?;
            }
            vec![rel(root, &target)]
        }
        Format::Registry => {
            let digest = if streamed.raw_kept {
                streamed.raw_digest.clone()
            } else {
                streamed.diff_id.clone()
            };
            let target = registry_blob(root, &digest);
            fsx::mkdirs(target.parent().expect("blob path has a parent"))?;
            if !options.replace && folder::file_holds(&target, &digest) {
                already_there = true; // content-addressed: the same bytes
            } else {
                fsx::finish(streamed.file, &target, options.replace)?;
            }
            let link = repo_dir(root, image)
                .join("_layers/sha256")
                .join(hex(&digest))
                .join("link");
            fsx::write_atomic(&link, digest.to_string().as_bytes())?;
            vec![rel(root, &target), rel(root, &link)]
        }
    };
    raw_guard.disarm();
    files.extend(raw_file);
    Ok((files, already_there))
}

fn rel(root: &Path, p: &Path) -> PathBuf {
    p.strip_prefix(root).unwrap_or(p).to_path_buf()
}

fn commit_seed(
    root: &Path,
    replace: bool,
    image: &ImageContext,
    index: usize,
    streamed: Streamed,
) -> Result<(Vec<PathBuf>, bool), WriteError> {
    let id = &image.layer_ids[index];
    let files = layer_files(root, Format::Seed, image, &streamed.diff_id, index);
    let target = root.join(id);
    // Another run wrote this very layer meanwhile: keep its folder.
    if !replace
        && target.exists()
        && holds_layer(root, Format::Seed, image, &streamed.diff_id, index)
    {
        return Ok((files, true));
    }
    let parent = index
        .checked_sub(1)
        .and_then(|p| image.layer_ids.get(p))
        .map(String::as_str);
    let count = image.layer_ids.len().max(index + 1);
    let json = v1::v1_layer_json(&image.config_json, index, count, id, parent)?;

    let tmp_dir = root.join(format!("{}-{id}", temp_name(TempKind::Tmp)));
    fs::create_dir(&tmp_dir).map_err(io_err(&tmp_dir))?;
    let mut guard = fsx::RemoveOnDrop(Some(tmp_dir.clone()));
    let tar_path = tmp_dir.join("layer.tar");
    fsx::finish(streamed.file, &tar_path, false)?;
    fsx::write_atomic(&tmp_dir.join("VERSION"), b"1.0")?;
    fsx::write_atomic(&tmp_dir.join("json"), &json)?;
    fsx::sync_dir(&tmp_dir)?;

    let mut old_guard = fsx::RemoveOnDrop(None);
    if target.exists() {
        if !replace {
            return Err(WriteError::TargetExists { path: target });
        }
        let old = root.join(format!("{}-{id}", temp_name(TempKind::Old)));
        fs::rename(&target, &old).map_err(io_err(&target))?;
        old_guard.0 = Some(old);
    }
    fs::rename(&tmp_dir, &target).map_err(io_err(&target))?;
    guard.disarm();
    drop(old_guard);
    fsx::sync_dir(root)?;
    Ok((files, false))
}

/// Rewrites the top-level files of `format` from the folder's content.
/// Call with the folder's [`folder::FolderLock`] held.
pub(crate) fn refresh(root: &Path, format: Format, image: &ImageContext) -> Result<(), WriteError> {
    match format {
        Format::Seed | Format::Oci => {
            let images = folder::record(root, image)?;
            refresh_layout(root, format, &images)
        }
        Format::Registry => refresh_registry(root, image),
    }
}

/// A layer as the manifest describes it.
struct LayerDesc {
    media_type: String,
    digest: Digest,
    size: u64,
    present: bool,
}

fn absent(image: &ImageContext, index: usize, diff_id: &Digest) -> LayerDesc {
    match image.compressed.get(index) {
        Some(Some(c)) => LayerDesc {
            media_type: c.media_type.clone(),
            digest: c.digest.clone(),
            size: c.size,
            present: false,
        },
        _ => LayerDesc {
            media_type: MT_OCI_TAR.into(),
            digest: diff_id.clone(),
            size: 0,
            present: false,
        },
    }
}

fn file_size(p: &Path) -> Option<u64> {
    fs::metadata(p)
        .ok()
        .filter(|m| m.is_file())
        .map(|m| m.len())
}

fn descriptor(mt: &str, d: &Digest, size: u64) -> Value {
    json!({"mediaType": mt, "digest": d.to_string(), "size": size})
}

fn oci_manifest(image: &ImageContext, layers: &[LayerDesc]) -> Vec<u8> {
    let m = json!({
        "schemaVersion": 2,
        "mediaType": MT_OCI_MANIFEST,
        "config": descriptor(MT_OCI_CONFIG, &image.config_digest(), image.config_json.len() as u64),
        "layers": layers.iter().map(|l| descriptor(&l.media_type, &l.digest, l.size)).collect::<Vec<_>>(),
    });
    serde_json::to_vec(&m).expect("a json value serialises")
}

/// One image of the folder, as its top-level files describe it.
struct Described<'a> {
    image: &'a ImageContext,
    config_digest: Digest,
    diff_ids: Vec<Digest>,
    /// `manifest.json`'s layer paths, base first.
    docker_paths: Vec<String>,
    layers: Vec<LayerDesc>,
    /// The image manifest: as pushed, or built here.
    manifest: (String, Vec<u8>),
    /// The index the image ID names, when the pushed manifest is its
    /// entry: `index.json` names it instead of the manifest.
    index: Option<(String, Vec<u8>)>,
}

impl Described<'_> {
    fn complete(&self) -> bool {
        self.layers.iter().all(|l| l.present)
    }
}

fn refresh_layout(root: &Path, format: Format, images: &[ImageContext]) -> Result<(), WriteError> {
    // Seed: where each layer's tar is, by diff ID, whichever image's folder holds it.
    let mut tars: HashMap<Digest, PathBuf> = HashMap::new();
    if format == Format::Seed {
        for image in images {
            for (id, d) in image.layer_ids.iter().zip(image.diff_ids()?) {
                let path = root.join(id).join("layer.tar");
                if !id.is_empty() && file_size(&path).is_some() {
                    tars.entry(d).or_insert(path);
                }
            }
        }
    }
    let mut described = images
        .iter()
        .map(|image| describe(root, format, image, &tars))
        .collect::<Result<Vec<_>, _>>()?;
    // Images whose layers are all here first (a classic `docker load` stops
    // at the first image it cannot load), base images before the images
    // built on them, then by config digest: the same order whatever order
    // the runs came in.
    described.sort_by(|a, b| {
        (!a.complete(), a.layers.len(), a.config_digest.to_string()).cmp(&(
            !b.complete(),
            b.layers.len(),
            b.config_digest.to_string(),
        ))
    });
    tracing::trace!(images = described.len(), "refreshing layout");

    if format == Format::Seed {
        link_diff_id_blobs(root, &described, &tars)?;
    }

    // Configs, under both names docker load may look for: the blob is
    // there already (`folder::record` wrote or read back every one).
    let mut docker = Vec::with_capacity(described.len());
    for d in &described {
        let cfg_hex = hex(&d.config_digest).to_string();
        let cfg_blob = oci_blob(root, &d.config_digest);
        let config_path = match format {
            Format::Seed => {
                let p = root.join(format!("{cfg_hex}.json"));
                point_at_blob(&cfg_blob, &p, Path::new("blobs/sha256").join(&cfg_hex))?;
                format!("{cfg_hex}.json")
            }
            _ => format!("blobs/sha256/{cfg_hex}"),
        };
        docker.push(
            json!({"Config": config_path, "RepoTags": d.image.repo_tags, "Layers": d.docker_paths}),
        );
    }

    // The OCI manifests and the index: one entry per tag, or one untagged.
    let old_index = fs::read(root.join("index.json")).ok();
    let mut entries = Vec::new();
    let mut current = HashSet::new();
    for d in &described {
        let (manifest_type, manifest) = (&d.manifest.0, &d.manifest.1);
        let mut manifest_digest = digest_of(manifest);
        fsx::write_atomic(&oci_blob(root, &manifest_digest), manifest)?;
        if let Some((_, index)) = &d.index {
            // The index names the manifest, which stays beside it.
            current.insert(manifest_digest);
            manifest_digest = digest_of(index);
            fsx::write_atomic(&oci_blob(root, &manifest_digest), index)?;
        }
        let (manifest_type, manifest) = d
            .index
            .as_ref()
            .map_or((manifest_type, manifest), |(t, b)| (t, b));
        let entry = |annotations: Option<Value>| {
            let mut e = descriptor(manifest_type, &manifest_digest, manifest.len() as u64);
            if let Some(a) = annotations {
                e["annotations"] = a;
            }
            e
        };
        let tags: Vec<(&String, &str)> = d
            .image
            .repo_tags
            .iter()
            .filter_map(|t| split_tag(t).map(|(_, tag)| (t, tag)))
            .collect();
        if tags.is_empty() {
            entries.push(entry(None));
        }
        for (t, tag) in tags {
            entries.push(entry(Some(json!({
                "io.containerd.image.name": normalized(t),
                "org.opencontainers.image.ref.name": tag,
            }))));
        }
        current.insert(manifest_digest);
    }
    let index = json!({"schemaVersion": 2, "mediaType": MT_OCI_INDEX, "manifests": entries});
    fsx::write_atomic(
        &root.join("oci-layout"),
        br#"{"imageLayoutVersion":"1.0.0"}"#,
    )?;
    fsx::write_atomic(&root.join("index.json"), &to_vec(&index))?;
    remove_stale_manifests(root, old_index.as_deref(), &current);

    // Docker's manifest.json and repositories.
    fsx::write_atomic(&root.join("manifest.json"), &to_vec(&Value::Array(docker)))?;
    write_repositories(root, format, &described)
}

/// How the top-level files describe `image`: its layers present in the
/// folder (by diff ID) or referenced for a daemon that has them, and the
/// manifest `index.json` names.
fn describe<'a>(
    root: &Path,
    format: Format,
    image: &'a ImageContext,
    tars: &HashMap<Digest, PathBuf>,
) -> Result<Described<'a>, WriteError> {
    let diff_ids = image.diff_ids()?;
    let mut layers = Vec::with_capacity(diff_ids.len());
    let mut docker_paths = Vec::with_capacity(diff_ids.len());
    let mut tar_paths = Vec::with_capacity(diff_ids.len());
    for (i, d) in diff_ids.iter().enumerate() {
        let path = match format {
            Format::Seed => {
                let id = image.layer_ids.get(i).ok_or(WriteError::NoSuchLayer {
                    index: i,
                    count: image.layer_ids.len(),
                })?;
                let own = root.join(id).join("layer.tar");
                match tars.get(d) {
                    Some(found) if file_size(&own).is_none() => found.clone(),
                    _ => own,
                }
            }
            _ => oci_blob(root, d),
        };
        // Seed: a layer here is named by its blob, the data itself (its
        // `layer.tar` is a symlink to it, see `link_diff_id_blobs`).
        docker_paths.push(match format {
            Format::Seed if file_size(&path).is_some() => format!("blobs/sha256/{}", hex(d)),
            _ => rel(root, &path).to_string_lossy().into_owned(),
        });
        let stored = match (format, image.compressed.get(i)) {
            (Format::Oci, Some(Some(c))) if file_size(&path).is_none() => {
                let blob = oci_blob(root, &c.digest);
                (file_size(&blob) == Some(c.size)).then_some((c, blob))
            }
            _ => None,
        };
        layers.push(match (file_size(&path), stored) {
            (Some(size), _) => LayerDesc {
                media_type: MT_OCI_TAR.into(),
                digest: d.clone(),
                size,
                present: true,
            },
            // OCI: the blob as the daemon stores it.
            (None, Some((c, blob))) => {
                *docker_paths.last_mut().expect("pushed above") =
                    rel(root, &blob).to_string_lossy().into_owned();
                LayerDesc {
                    media_type: c.media_type.clone(),
                    digest: c.digest.clone(),
                    size: c.size,
                    present: true,
                }
            }
            (None, None) => absent(image, i, d),
        });
        tar_paths.push(path);
    }

    // The manifest as pushed, when every layer the folder holds is also
    // there as the compressed blob that manifest names.
    let pushed = pushed_manifest(image).filter(|_| {
        layers
            .iter()
            .zip(&diff_ids)
            .enumerate()
            .all(|(i, (l, d))| !l.present || raw_blob_present(root, image, i, d))
    });
    let index = pushed.and_then(|m| index_naming(image, &m.1));
    let manifest = match pushed {
        Some(m) => m.clone(),
        None => (MT_OCI_MANIFEST.to_owned(), oci_manifest(image, &layers)),
    };
    Ok(Described {
        image,
        config_digest: image.config_digest(),
        diff_ids,
        docker_paths,
        layers,
        manifest,
        index,
    })
}

/// [`ImageContext::index`] when it is an index with an entry for
/// `manifest` (its digest and size).
fn index_naming(image: &ImageContext, manifest: &[u8]) -> Option<(String, Vec<u8>)> {
    let (media_type, bytes) = image.index.as_ref()?;
    let entries = crate::manifest::index_entries(bytes).ok()?;
    let digest = digest_of(manifest);
    let names = entries
        .iter()
        .any(|e| *e.digest() == digest && e.size() == manifest.len() as u64);
    if !names {
        tracing::debug!("the index does not name the manifest: not used");
        return None;
    }
    Some((media_type.clone(), bytes.clone()))
}

/// Seed: the OCI blobs named by diff ID hold the layers' data, and each
/// `<id>/layer.tar` is a relative symlink to its blob, as in Docker 25+'s
/// own `docker save`; `manifest.json` names the blobs (a symlinked layer
/// is read as empty by Podman 4's loader, containers/image before 5.30).
///
/// Symlinks, not hard links: an archive of the folder made with a plain
/// `tar -c` stores the second name of a hard-linked file as a link entry
/// with no data, and Podman's loader (containers/image) reads such an
/// entry as an empty file, while containerd's skips it; both follow a
/// symlink.
fn link_diff_id_blobs(
    root: &Path,
    described: &[Described<'_>],
    tars: &HashMap<Digest, PathBuf>,
) -> Result<(), WriteError> {
    for (d, tar) in tars {
        let blob = oci_blob(root, d);
        if !same_file(tar, &blob) {
            fsx::link_atomic(tar, &blob)?;
        }
        point_at_blob(&blob, tar, Path::new("../blobs/sha256").join(hex(d)))?;
    }
    let mut seen = HashSet::new();
    for d in described.iter().flat_map(|x| &x.diff_ids) {
        if tars.contains_key(d) || !seen.insert(d) {
            continue;
        }
        // A blob left by a layer no longer here.
        let _ = fs::remove_file(oci_blob(root, d));
    }
    Ok(())
}

/// [`ImageContext::manifest`] when it is an image manifest (OCI or Docker
/// schema 2) of this config whose layers are the image's, base first, and
/// agree with every known [`ImageContext::compressed`] blob.
pub(crate) fn pushed_manifest(image: &ImageContext) -> Option<&(String, Vec<u8>)> {
    let pushed = image.manifest.as_ref()?;
    match check_pushed(image, &pushed.0, &pushed.1) {
        Ok(()) => Some(pushed),
        Err(reason) => {
            tracing::debug!(reason, "pushed manifest not used");
            None
        }
    }
}

fn check_pushed(image: &ImageContext, media_type: &str, bytes: &[u8]) -> Result<(), &'static str> {
    if media_type != MT_OCI_MANIFEST && media_type != MT_DOCKER_MANIFEST {
        return Err("not an image manifest");
    }
    let m = crate::manifest::image_manifest(bytes).map_err(|e| match e {
        crate::manifest::ManifestError::SchemaVersion { .. } => "schema version is not 2",
        _ => "not an OCI or Docker schema 2 image manifest",
    })?;
    if let Some(declared) = m.media_type()
        && declared.as_ref() != media_type
    {
        return Err("media type differs from the one declared inside");
    }
    if *m.config().digest() != image.config_digest() {
        return Err("config is not this image's");
    }
    let named = m.layers();
    let diff_ids = image.diff_ids().map_err(|_| "bad config")?;
    if named.len() != diff_ids.len() {
        return Err("layer count differs from the config's");
    }
    for (l, c) in named.iter().zip(&image.compressed) {
        if let Some(c) = c
            && (*l.digest() != c.digest || l.size() != c.size)
        {
            return Err("a layer differs from the known compressed blob");
        }
    }
    Ok(())
}

/// The compressed blob of layer `index` is in the OCI layout.
/// Whether the stored (compressed) blob `c` is in the OCI layout and
/// decompresses to `diff_id`.
fn stored_blob_holds(root: &Path, c: &crate::BlobRef, diff_id: &Digest) -> bool {
    let blob = oci_blob(root, &c.digest);
    if file_size(&blob) != Some(c.size) || !folder::file_holds(&blob, &c.digest) {
        return false;
    }
    fs::File::open(&blob)
        .ok()
        .and_then(|f| crate::pipeline::diff_id_of(f).ok())
        .is_some_and(|d| &d == diff_id)
}

fn raw_blob_present(root: &Path, image: &ImageContext, index: usize, diff_id: &Digest) -> bool {
    match image.compressed.get(index) {
        Some(Some(c)) => {
            &c.digest == diff_id || file_size(&oci_blob(root, &c.digest)) == Some(c.size)
        }
        _ => false,
    }
}

fn write_repositories(
    root: &Path,
    format: Format,
    described: &[Described<'_>],
) -> Result<(), WriteError> {
    let mut repos = serde_json::Map::new();
    for d in described {
        let image = d.image;
        let top = match format {
            Format::Seed => image.layer_ids.last().cloned(),
            _ => d.diff_ids.last().map(|l| hex(l).to_string()),
        };
        for (name, tag) in image.repo_tags.iter().filter_map(|t| split_tag(t)) {
            let entry = repos.entry(name).or_insert_with(|| json!({}));
            entry[tag] = json!(top.clone().unwrap_or_default());
        }
    }
    let path = root.join("repositories");
    if repos.is_empty() {
        let _ = fs::remove_file(&path);
        return Ok(());
    }
    let mut bytes = to_vec(&Value::Object(repos));
    bytes.push(b'\n');
    fsx::write_atomic(&path, &bytes)
}

fn to_vec(v: &Value) -> Vec<u8> {
    serde_json::to_vec(v).expect("a json value serialises")
}

/// Makes `path` a symlink to `target` (relative to `path`'s folder), which
/// resolves to `blob`, unless it already is one resolving to `blob`. The
/// caller has made `blob` a hard link of `path`'s data first, so `path`
/// names the data at every moment, a crash included: a hard link, then the
/// symlink atomically renamed over it.
fn point_at_blob(blob: &Path, path: &Path, target: PathBuf) -> Result<(), WriteError> {
    if is_symlink(path) && same_file(path, blob) {
        return Ok(());
    }
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = dir.join(temp_name(TempKind::Link));
    std::os::unix::fs::symlink(&target, &tmp).map_err(io_err(&tmp))?;
    if !same_file(&tmp, blob) {
        let _ = fs::remove_file(&tmp);
        return Err(WriteError::Io {
            path: tmp,
            source: std::io::Error::other(format!(
                "symlink to {} does not resolve to {}",
                target.display(),
                blob.display()
            )),
        });
    }
    fs::rename(&tmp, path).map_err(|source| {
        let _ = fs::remove_file(&tmp);
        WriteError::Io {
            path: path.into(),
            source,
        }
    })
}

fn is_symlink(p: &Path) -> bool {
    fs::symlink_metadata(p).is_ok_and(|m| m.file_type().is_symlink())
}

fn same_file(a: &Path, b: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (fs::metadata(a), fs::metadata(b)) {
        (Ok(x), Ok(y)) => x.dev() == y.dev() && x.ino() == y.ino(),
        _ => false,
    }
}

/// Deletes the manifest blobs the previous `index.json` named that the new one does not.
fn remove_stale_manifests(root: &Path, old_index: Option<&[u8]>, current: &HashSet<Digest>) {
    let Some(old) = old_index.and_then(|b| crate::manifest::index_entries(b).ok()) else {
        return;
    };
    for m in old {
        if !current.contains(m.digest()) {
            let _ = fs::remove_file(oci_blob(root, m.digest()));
        }
    }
}

fn refresh_registry(root: &Path, image: &ImageContext) -> Result<(), WriteError> {
    let diff_ids = image.diff_ids()?;
    let repo = repo_dir(root, image);
    let config_digest = image.config_digest();

    // Config blob, linked into the repository like a layer.
    let cfg_blob = registry_blob(root, &config_digest);
    if fs::read(&cfg_blob).ok().as_deref() != Some(&image.config_json[..]) {
        fsx::write_atomic(&cfg_blob, &image.config_json)?;
    }
    let cfg_link = repo
        .join("_layers/sha256")
        .join(hex(&config_digest))
        .join("link");
    fsx::write_atomic(&cfg_link, config_digest.to_string().as_bytes())?;

    let mut layers = Vec::with_capacity(diff_ids.len());
    for (i, d) in diff_ids.iter().enumerate() {
        let compressed = image.compressed.get(i).and_then(Option::as_ref);
        let desc = if let Some(size) = file_size(&registry_blob(root, d)) {
            LayerDesc {
                media_type: MT_OCI_TAR.into(),
                digest: d.clone(),
                size,
                present: true,
            }
        } else if let Some(c) =
            compressed.filter(|c| file_size(&registry_blob(root, &c.digest)).is_some())
        {
            LayerDesc {
                media_type: c.media_type.clone(),
                digest: c.digest.clone(),
                size: c.size,
                present: true,
            }
        } else {
            absent(image, i, d)
        };
        layers.push(desc);
    }

    // The manifest as pushed when it names what is stored, else our own.
    let pushed = image.manifest.as_ref().filter(|(_, bytes)| {
        let Ok(m) = crate::manifest::image_manifest(bytes) else {
            return false;
        };
        *m.config().digest() == config_digest
            && layers
                .iter()
                .filter(|l| l.present)
                .all(|l| m.layers().iter().any(|n| *n.digest() == l.digest))
    });
    let manifest = match pushed {
        Some((_, bytes)) => bytes.clone(),
        None => oci_manifest(image, &layers),
    };
    let md = digest_of(&manifest);
    fsx::write_atomic(&registry_blob(root, &md), &manifest)?;
    let link = md.to_string();
    let manifests = repo.join("_manifests");
    fsx::write_atomic(
        &manifests
            .join("revisions/sha256")
            .join(hex(&md))
            .join("link"),
        link.as_bytes(),
    )?;
    let tag = manifests.join("tags").join(&image.tag);
    fsx::write_atomic(
        &tag.join("index/sha256").join(hex(&md)).join("link"),
        link.as_bytes(),
    )?;
    fsx::write_atomic(&tag.join("current/link"), link.as_bytes())
}
