//! The decisions of an export, kept free of I/O so they can be tested alone:
//! which way to get a layer out, which blobs to claim present, how pushed
//! manifests map to layers, and what each layer's folder is called.

use std::collections::HashSet;
use std::sync::Mutex;

use anyhow::{Context, bail};
use docker_driver::{DaemonInfo, ImageDetails, ImageStore};
use layer_writer::BlobRef;
use shim_registry::oci_spec::image::Digest;
use shim_registry::{Presence, PresencePolicy};

use crate::cli::Via;

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
///   written): it wins wherever the classic layer store is readable.
/// - The push route only pays when the daemon asks before it uploads: the
///   containerd image store always does; a classic store does only for
///   layers it has pushed or pulled before (the image then has repo
///   digests). A classic store uploads every other layer unasked,
///   compressing each, which costs more than `docker save`.
/// - An image with no name at all is never pushed: the temporary tag would
///   be its only reference, and removing it could delete the image.
pub(crate) fn choose_route(
    info: &DaemonInfo,
    image: &ImageDetails,
    via: Via,
    store: &StoreAccess,
) -> anyhow::Result<(Route, String)> {
    let named = !image.repo_tags.is_empty() || !image.repo_digests.is_empty();
    let unnamed = "the image has no name, so it is never tagged and pushed";
    let classic = matches!(info.image_store, ImageStore::Classic { .. });
    let (route, why) = match (via, store) {
        (Via::Store, _) if !classic => bail!(
            "--via store needs a classic image store; this daemon uses the containerd image store"
        ),
        (Via::Store, StoreAccess::Unavailable(why)) => {
            bail!("--via store: the layer store cannot be read: {why}")
        }
        (Via::Store, StoreAccess::Readable) => (Route::Store, "asked for with --via store".into()),
        (Via::Push, _) if named => (Route::Push, "asked for with --via push".into()),
        (Via::Push, _) => (Route::Save, unnamed.into()),
        (Via::Save, _) => (Route::Save, "asked for with --via save".into()),
        (Via::Auto, StoreAccess::Readable) if classic => (
            Route::Store,
            "the classic layer store is readable: the layer is rebuilt from its own files".into(),
        ),
        (Via::Auto, _) if !named => (Route::Save, unnamed.into()),
        (Via::Auto, store) => match (&info.image_store, store) {
            (ImageStore::Containerd, _) => (
                Route::Push,
                "the containerd store asks before every upload".into(),
            ),
            (ImageStore::Classic { .. }, StoreAccess::Unavailable(why))
                if !image.repo_digests.is_empty() =>
            {
                (
                    Route::Push,
                    format!(
                        "the classic store knows this image's digests and asks before uploading (layer store: {why})"
                    ),
                )
            }
            (ImageStore::Classic { .. }, StoreAccess::Unavailable(why)) => (
                Route::Save,
                format!(
                    "a classic store would upload and compress every layer of this never-pushed image (layer store: {why})"
                ),
            ),
            (ImageStore::Classic { .. }, StoreAccess::Readable) => {
                (Route::Store, "the classic layer store is readable".into())
            }
        },
    };
    Ok((route, why))
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

/// `sha256:abc` → `abc`.
pub(crate) fn strip_algorithm(id: &str) -> &str {
    id.split_once(':').map_or(id, |(_, hex)| hex)
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
#[derive(Debug)]
pub(crate) struct CapturePolicy {
    claimed_size: u64,
    capture: Mutex<Option<HashSet<Digest>>>,
}

impl CapturePolicy {
    /// A policy in survey mode.
    pub(crate) fn new() -> Self {
        Self {
            claimed_size: 1,
            capture: Mutex::new(None),
        }
    }

    /// Switches to capture mode: only `wanted` may be uploaded.
    pub(crate) fn capture(&self, wanted: impl IntoIterator<Item = Digest>) {
        *self.capture.lock().unwrap_or_else(|e| e.into_inner()) =
            Some(wanted.into_iter().collect());
    }
}

impl PresencePolicy for CapturePolicy {
    fn blob(&self, _repository: &str, digest: &Digest) -> Presence {
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
    let Some(tag) = image.repo_tags.first() else {
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
        let (route, _) =
            choose_route(&info(store), &image(tags, digests, 2), via, &unreadable).unwrap();
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
        check_route(classic(), &["x:1"], &[], Via::Auto, Route::Save);
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
    fn the_store_route_wins_where_the_layer_store_is_readable() {
        let choose = |store: ImageStore, tags: &[&str], via: Via, access: &StoreAccess| {
            choose_route(&info(store), &image(tags, &[], 2), via, access)
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
        assert_eq!(route, Route::Save);
        assert!(why.contains("permission denied"), "{why}");
        // Forced routes stay forced.
        let (route, _) = choose(classic(), &["x:1"], Via::Save, &readable).unwrap();
        assert_eq!(route, Route::Save);
        let (route, _) = choose(classic(), &["x:1"], Via::Push, &readable).unwrap();
        assert_eq!(route, Route::Push);
        // The containerd store has no classic layer store to read.
        let (route, _) = choose(ImageStore::Containerd, &["x:1"], Via::Auto, &unreadable).unwrap();
        assert_eq!(route, Route::Push);
        let e = choose(ImageStore::Containerd, &["x:1"], Via::Store, &unreadable).unwrap_err();
        assert!(e.to_string().contains("containerd image store"), "{e}");
        let e = choose(classic(), &["x:1"], Via::Store, &unreadable).unwrap_err();
        assert!(e.to_string().contains("permission denied"), "{e}");
    }

    fn digest(c: char) -> Digest {
        format!("sha256:{}", c.to_string().repeat(64))
            .parse()
            .unwrap()
    }

    #[test]
    fn survey_claims_everything_then_capture_leaves_wanted_to_storage() {
        let policy = CapturePolicy::new();
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
