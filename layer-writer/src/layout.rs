//! Where each format puts a layer, and the top-level files that describe
//! the folder.

use std::fs;
use std::path::{Path, PathBuf};

use oci_spec::image::Digest;
use serde_json::{Value, json};

use crate::error::io_err;
use crate::pipeline::Streamed;
use crate::{Format, ImageContext, WriteError, WriterOptions, fsx, v1};

pub(crate) const MT_OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub(crate) const MT_OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub(crate) const MT_OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub(crate) const MT_OCI_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
pub(crate) const MT_DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
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
        Format::Oci => vec![oci_blob(root, diff_id)],
        Format::Registry => {
            let mut v = vec![registry_blob(root, diff_id)];
            if let Some(Some(c)) = image.compressed.get(index) {
                v.push(registry_blob(root, &c.digest));
            }
            v
        }
    }
}

/// Moves the streamed temporary file into the format's place.
pub(crate) fn commit_layer(
    root: &Path,
    options: &WriterOptions,
    image: &ImageContext,
    index: usize,
    mut streamed: Streamed,
) -> Result<Vec<PathBuf>, WriteError> {
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
    let mut files = match options.format {
        Format::Seed => commit_seed(root, options.replace, image, index, streamed)?,
        Format::Oci => {
            let target = oci_blob(root, &streamed.diff_id);
            fsx::mkdirs(target.parent().expect("blob path has a parent"))?;
            fsx::finish(streamed.file, &target, options.replace)?;
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
            fsx::finish(streamed.file, &target, options.replace)?;
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
    Ok(files)
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
) -> Result<Vec<PathBuf>, WriteError> {
    let id = &image.layer_ids[index];
    let parent = index
        .checked_sub(1)
        .and_then(|p| image.layer_ids.get(p))
        .map(String::as_str);
    let count = image.layer_ids.len().max(index + 1);
    let json = v1::v1_layer_json(&image.config_json, index, count, id, parent)?;

    let tmp_dir = root.join(format!(".dlgrab-tmp-{id}-{}", fsx::unique()));
    fs::create_dir(&tmp_dir).map_err(io_err(&tmp_dir))?;
    let mut guard = fsx::RemoveOnDrop(Some(tmp_dir.clone()));
    let tar_path = tmp_dir.join("layer.tar");
    fsx::finish(streamed.file, &tar_path, false)?;
    fsx::write_atomic(&tmp_dir.join("VERSION"), b"1.0")?;
    fsx::write_atomic(&tmp_dir.join("json"), &json)?;
    fsx::sync_dir(&tmp_dir)?;

    let target = root.join(id);
    let mut old_guard = fsx::RemoveOnDrop(None);
    if target.exists() {
        if !replace {
            return Err(WriteError::TargetExists { path: target });
        }
        let old = root.join(format!(".dlgrab-old-{id}-{}", fsx::unique()));
        fs::rename(&target, &old).map_err(io_err(&target))?;
        old_guard.0 = Some(old);
    }
    fs::rename(&tmp_dir, &target).map_err(io_err(&target))?;
    guard.disarm();
    drop(old_guard);
    fsx::sync_dir(root)?;
    Ok(["VERSION", "json", "layer.tar"]
        .iter()
        .map(|f| PathBuf::from(id).join(f))
        .collect())
}

/// Rewrites the top-level files of `format` from the folder's content.
pub(crate) fn refresh(root: &Path, format: Format, image: &ImageContext) -> Result<(), WriteError> {
    match format {
        Format::Seed | Format::Oci => refresh_layout(root, format, image),
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

fn digest_of(bytes: &[u8]) -> Digest {
    use sha2::Digest as _;
    crate::pipeline::to_digest(sha2::Sha256::new_with_prefix(bytes))
}

/// `docker.io/library/demo:latest` for `demo:latest`, as containerd names images.
fn normalized(tag: &str) -> String {
    let first = tag.split('/').next().unwrap_or_default();
    let has_domain =
        tag.contains('/') && (first.contains('.') || first.contains(':') || first == "localhost");
    if has_domain {
        tag.to_string()
    } else if tag.contains('/') {
        format!("docker.io/{tag}")
    } else {
        format!("docker.io/library/{tag}")
    }
}

/// Splits `name:tag` (the tag after the last `/`); digests are not tags.
pub(crate) fn split_tag(reference: &str) -> Option<(String, String)> {
    if reference.contains('@') {
        return None;
    }
    let slash = reference.rfind('/').map_or(0, |p| p + 1);
    let colon = reference[slash..].rfind(':')? + slash;
    Some((
        reference[..colon].to_string(),
        reference[colon + 1..].to_string(),
    ))
}

/// The registry path of a familiar name: `demo` → `library/demo`.
pub(crate) fn registry_path(name: &str) -> String {
    let n = normalized(&format!("{name}:x"));
    let n = n.strip_suffix(":x").unwrap_or(&n);
    match n.split_once('/') {
        Some((_, path)) => path.to_string(),
        None => n.to_string(),
    }
}

fn refresh_layout(root: &Path, format: Format, image: &ImageContext) -> Result<(), WriteError> {
    let diff_ids = image.diff_ids()?;
    let config_digest = image.config_digest();
    let cfg_hex = hex(&config_digest).to_string();

    // Layers: present in the folder, or referenced for a daemon that has them.
    let mut layers = Vec::with_capacity(diff_ids.len());
    let mut docker_paths = Vec::with_capacity(diff_ids.len());
    let mut tar_paths = Vec::with_capacity(diff_ids.len());
    for (i, d) in diff_ids.iter().enumerate() {
        let (path, rel_path) = match format {
            Format::Seed => {
                let id = image.layer_ids.get(i).ok_or(WriteError::NoSuchLayer {
                    index: i,
                    count: image.layer_ids.len(),
                })?;
                (root.join(id).join("layer.tar"), format!("{id}/layer.tar"))
            }
            _ => (oci_blob(root, d), format!("blobs/sha256/{}", hex(d))),
        };
        docker_paths.push(rel_path);
        layers.push(match file_size(&path) {
            Some(size) => LayerDesc {
                media_type: MT_OCI_TAR.into(),
                digest: d.clone(),
                size,
                present: true,
            },
            None => absent(image, i, d),
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
    tracing::trace!(
        present = layers.iter().filter(|l| l.present).count(),
        pushed = pushed.is_some(),
        "refreshing layout"
    );

    // Seed: the OCI blobs named by diff ID are hard links to the layer.tar
    // files, needed only when the index names our own manifest (or when a
    // compressed digest is the diff ID itself).
    if format == Format::Seed {
        for (i, d) in diff_ids.iter().enumerate() {
            let blob = oci_blob(root, d);
            let tar = &tar_paths[i];
            let linked = layers[i].present
                && (pushed.is_none()
                    || matches!(image.compressed.get(i), Some(Some(c)) if &c.digest == d));
            if linked {
                if !same_file(tar, &blob) {
                    fsx::link_atomic(tar, &blob)?;
                }
            } else if !layers[i].present || same_file(tar, &blob) {
                // A stale link whose layer was removed, or one no longer needed.
                let _ = fs::remove_file(&blob);
            }
        }
    }

    // The config, under both names docker load may look for.
    let cfg_blob = oci_blob(root, &config_digest);
    if fs::read(&cfg_blob).ok().as_deref() != Some(&image.config_json[..]) {
        fsx::write_atomic(&cfg_blob, &image.config_json)?;
    }
    let config_path = match format {
        Format::Seed => {
            let p = root.join(format!("{cfg_hex}.json"));
            if !same_file(&cfg_blob, &p) {
                fsx::link_atomic(&cfg_blob, &p)?;
            }
            format!("{cfg_hex}.json")
        }
        _ => format!("blobs/sha256/{cfg_hex}"),
    };

    // The OCI manifest (as pushed, or our own) and the index.
    let (manifest_type, manifest) = match &pushed {
        Some((mt, bytes)) => (mt.as_str(), bytes.clone()),
        None => (MT_OCI_MANIFEST, oci_manifest(image, &layers)),
    };
    let manifest_digest = digest_of(&manifest);
    let old_index = fs::read(root.join("index.json")).ok();
    fsx::write_atomic(&oci_blob(root, &manifest_digest), &manifest)?;
    let tags: Vec<&String> = image
        .repo_tags
        .iter()
        .filter(|t| split_tag(t).is_some())
        .collect();
    let entry = |annotations: Option<Value>| {
        let mut d = descriptor(manifest_type, &manifest_digest, manifest.len() as u64);
        if let Some(a) = annotations {
            d["annotations"] = a;
        }
        d
    };
    let manifests: Vec<Value> = if tags.is_empty() {
        vec![entry(None)]
    } else {
        tags.iter()
            .map(|t| {
                let tag = split_tag(t).map(|(_, tag)| tag).unwrap_or_default();
                entry(Some(json!({
                    "io.containerd.image.name": normalized(t),
                    "org.opencontainers.image.ref.name": tag,
                })))
            })
            .collect()
    };
    let index = json!({"schemaVersion": 2, "mediaType": MT_OCI_INDEX, "manifests": manifests});
    fsx::write_atomic(
        &root.join("oci-layout"),
        br#"{"imageLayoutVersion":"1.0.0"}"#,
    )?;
    fsx::write_atomic(&root.join("index.json"), &to_vec(&index))?;
    remove_stale_manifests(root, old_index.as_deref(), &manifest_digest);

    // Docker's manifest.json and repositories.
    let docker =
        json!([{"Config": config_path, "RepoTags": image.repo_tags, "Layers": docker_paths}]);
    fsx::write_atomic(&root.join("manifest.json"), &to_vec(&docker))?;
    write_repositories(root, image, format, &diff_ids)
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
    let m: Value = serde_json::from_slice(bytes).map_err(|_| "not JSON")?;
    if m["schemaVersion"] != 2 {
        return Err("schema version is not 2");
    }
    if let Some(declared) = m.get("mediaType")
        && declared != media_type
    {
        return Err("media type differs from the one declared inside");
    }
    if m["config"]["digest"].as_str() != Some(image.config_digest().as_ref()) {
        return Err("config is not this image's");
    }
    let named = m["layers"].as_array().ok_or("no layers")?;
    let diff_ids = image.diff_ids().map_err(|_| "bad config")?;
    if named.len() != diff_ids.len() {
        return Err("layer count differs from the config's");
    }
    for (l, c) in named.iter().zip(&image.compressed) {
        if let Some(c) = c
            && (l["digest"].as_str() != Some(c.digest.as_ref()) || l["size"] != c.size)
        {
            return Err("a layer differs from the known compressed blob");
        }
    }
    Ok(())
}

/// The compressed blob of layer `index` is in the OCI layout.
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
    image: &ImageContext,
    format: Format,
    diff_ids: &[Digest],
) -> Result<(), WriteError> {
    let top = match format {
        Format::Seed => image.layer_ids.last().cloned(),
        _ => diff_ids.last().map(|d| hex(d).to_string()),
    };
    let mut repos = serde_json::Map::new();
    for (name, tag) in image.repo_tags.iter().filter_map(|t| split_tag(t)) {
        let entry = repos.entry(name).or_insert_with(|| json!({}));
        entry[tag] = json!(top.clone().unwrap_or_default());
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

fn same_file(a: &Path, b: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (fs::metadata(a), fs::metadata(b)) {
        (Ok(x), Ok(y)) => x.dev() == y.dev() && x.ino() == y.ino(),
        _ => false,
    }
}

/// Deletes the manifest blobs the previous `index.json` named, if replaced.
fn remove_stale_manifests(root: &Path, old_index: Option<&[u8]>, current: &Digest) {
    let Some(old) = old_index.and_then(|b| serde_json::from_slice::<Value>(b).ok()) else {
        return;
    };
    for m in old["manifests"].as_array().into_iter().flatten() {
        if let Some(d) = m["digest"].as_str().and_then(|d| d.parse::<Digest>().ok())
            && &d != current
        {
            let _ = fs::remove_file(oci_blob(root, &d));
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
        let Ok(m) = serde_json::from_slice::<Value>(bytes) else {
            return false;
        };
        let named: Vec<&str> = m["layers"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|l| l["digest"].as_str())
            .collect();
        m["config"]["digest"].as_str() == Some(config_digest.as_ref())
            && layers
                .iter()
                .filter(|l| l.present)
                .all(|l| named.contains(&l.digest.as_ref()))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(normalized("demo:latest"), "docker.io/library/demo:latest");
        assert_eq!(normalized("a/b:1"), "docker.io/a/b:1");
        assert_eq!(normalized("localhost:5000/b:1"), "localhost:5000/b:1");
        assert_eq!(
            split_tag("localhost:5000/b:1"),
            Some(("localhost:5000/b".into(), "1".into()))
        );
        assert_eq!(split_tag("localhost:5000/b"), None);
        assert_eq!(registry_path("demo"), "library/demo");
        assert_eq!(registry_path("wtest/demo"), "wtest/demo");
        assert_eq!(registry_path("localhost:5000/x/y"), "x/y");
    }
}
