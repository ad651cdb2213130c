//! The decisions of an export, kept free of I/O so they can be tested alone:
//! which way to get a layer out ([`choose_route`], and the types it decides
//! on), and what each layer's folder and registry name are. The push
//! route's own decisions (its survey, its presence policy) live with it
//! under `route/push/`.

use anyhow::bail;
use docker_driver::{DaemonInfo, ImageDetails, ImageStore};

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
    /// The classic layer store read through the Engine API's archive of a
    /// container that mounts it.
    Archive,
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
    /// The archive route could not read the layer store through the daemon
    /// (it refused the container or the archive, or the files differ).
    Archive(String),
}

impl GaveWay {
    /// Why the store route failed, when it is among `gave_way`.
    pub(crate) fn store_failure(gave_way: &[GaveWay]) -> Option<&str> {
        gave_way.iter().find_map(|g| match g {
            GaveWay::Store(why) => Some(why.as_str()),
            _ => None,
        })
    }
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
    /// The store route's reassembly, the layer store's files read through
    /// the Engine API (a container created, never started, that mounts the
    /// data root read-only): for any user the daemon serves, local or not.
    Archive,
}

impl Route {
    /// The route's name in `--json` and messages.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Route::Push => "push",
            Route::Save => "save",
            Route::Store => "store",
            Route::Archive => "archive",
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
    let archive = archive_possible(info, gave_way);
    if via == Via::Archive {
        return match archive {
            Ok(()) => Ok((Route::Archive, "asked for with --via archive".into())),
            Err(why) => bail!("--via archive: {why}"),
        };
    }
    if let Some(host) = &info.elsewhere {
        // Its 127.0.0.1 is not ours, nor its data root a path here.
        return match (via, archive) {
            (Via::Push | Via::Store, _) => bail!(
                "--via {}: the daemon at {host} runs on another machine, which cannot reach \
                 dlgrab's registry on this machine's loopback nor share its layer store; \
                 use --via archive or --via save",
                if via == Via::Push { "push" } else { "store" }
            ),
            (Via::Auto, Ok(())) => Ok((
                Route::Archive,
                format!(
                    "the daemon at {host} runs on another machine: its store is read \
                     through the Engine API"
                ),
            )),
            (_, archive) => Ok((
                Route::Save,
                match (via, archive) {
                    (Via::Save, _) => "asked for with --via save".into(),
                    (_, Err(why)) => format!(
                        "the daemon at {host} runs on another machine and {why}: only docker \
                         save reaches here"
                    ),
                    _ => format!("the daemon at {host} runs on another machine"),
                },
            )),
        };
    }
    let store_failed = GaveWay::store_failure(gave_way);
    let push_gave_way = gave_way.iter().find_map(|g| match g {
        GaveWay::Survey(saw) => Some(format!(
            "the survey push showed {saw}, which costs more than docker save"
        )),
        GaveWay::Refused(message) => Some(format!(
            "the daemon's push to dlgrab's registry failed ({message}): docker save reads the \
             layers instead"
        )),
        GaveWay::Store(_) | GaveWay::Archive(_) => None,
    });
    let store = match store_failed {
        Some(why) => &StoreAccess::Unavailable(format!("the store route failed: {why}")),
        None => store,
    };
    let (route, why) = match (via, store) {
        (Via::Store, StoreAccess::Unavailable(why)) if info.podman => {
            bail!("--via store: Podman's store cannot be read: {why}")
        }
        (Via::Store, StoreAccess::Unavailable(why)) if classic => {
            bail!("--via store: the layer store cannot be read: {why}")
        }
        (Via::Store, StoreAccess::Unavailable(why)) => {
            bail!("--via store: the containerd image store's content store cannot be read: {why}")
        }
        (Via::Store, StoreAccess::Readable) => (Route::Store, "asked for with --via store".into()),
        (Via::Push, _) if named => (Route::Push, "asked for with --via push".into()),
        (Via::Push, _) => (Route::Save, unnamed.into()),
        (Via::Save | Via::Archive, _) => (Route::Save, "asked for with --via save".into()),
        (Via::Auto, StoreAccess::Readable) if info.podman => (
            Route::Store,
            "Podman's store (containers/storage) is readable: the layer is rebuilt from its \
             own files"
                .into(),
        ),
        (Via::Auto, StoreAccess::Readable) if classic => (
            Route::Store,
            "the classic layer store is readable: the layer is rebuilt from its own files".into(),
        ),
        (Via::Auto, StoreAccess::Readable) => (
            Route::Store,
            "the containerd content store is readable: the layer's blob is read as stored".into(),
        ),
        (Via::Auto, StoreAccess::Unavailable(why)) if archive.is_ok() => (
            Route::Archive,
            format!(
                "the daemon's store cannot be read here ({why}): a container of the daemon's \
                 reads it through the Engine API"
            ),
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
    // Say why the archive route was left, where it was taken before.
    let why = match gave_way.iter().find_map(|g| match g {
        GaveWay::Archive(failed) => Some(failed),
        _ => None,
    }) {
        Some(failed) => format!("{why} (the archive route gave way: {failed})"),
        None => why,
    };
    Ok((route, why))
}

/// Whether the archive route can be taken on this daemon: Docker (a
/// classic store of a graph driver dlgrab reads, or the containerd store)
/// with a data root, the route not failed before; else why not.
pub(crate) fn archive_possible(info: &DaemonInfo, gave_way: &[GaveWay]) -> Result<(), String> {
    if let Some(why) = gave_way.iter().find_map(|g| match g {
        GaveWay::Archive(why) => Some(why),
        _ => None,
    }) {
        return Err(format!("the archive route failed: {why}"));
    }
    let supported = if info.podman {
        docker_driver::containers_storage::SUPPORTED_DRIVERS
    } else {
        docker_driver::layer_store::SUPPORTED_DRIVERS
    };
    if let ImageStore::Classic { driver } = &info.image_store
        && !supported.contains(&driver.as_str())
    {
        return Err(format!("graph driver {driver} is not one dlgrab reads"));
    }
    if info.root_dir.is_none() {
        return Err("the daemon reports no data root".into());
    }
    Ok(())
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

/// The repository and tag the registry layout records, from the image's first tag.
pub(crate) fn registry_name(image: &ImageDetails) -> (String, String) {
    use docker_driver::reference::{DEFAULT_TAG, Reference};
    let short = strip_algorithm(&image.id)
        .chars()
        .take(12)
        .collect::<String>();
    let tags = crate::temp_names::user_tags(&image.repo_tags);
    let Some(tag) = tags.first() else {
        return (format!("dlgrab/{short}"), DEFAULT_TAG.to_owned());
    };
    // Its path on its registry (domain left out, `library/` for Docker
    // Hub's one-component names) and its tag, `latest` when none.
    let reference = Reference::parse(tag);
    (
        reference.registry_path(),
        reference.tag_or_default().to_owned(),
    )
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use docker_driver::HistoryRow;
    use shim_registry::oci_spec::image::Digest;

    pub(crate) fn image(tags: &[&str], digests: &[&str], layers: usize) -> ImageDetails {
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

    pub(crate) fn info(store: ImageStore) -> DaemonInfo {
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

    pub(crate) fn classic() -> ImageStore {
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
        // Without a data root to read through it, only save reaches here.
        let (route, why) =
            choose_route(&remote, &img, Via::Auto, &StoreAccess::Readable, &[]).unwrap();
        assert_eq!(route, Route::Save);
        assert!(why.contains("another machine"), "{why}");
        let (route, _) =
            choose_route(&remote, &img, Via::Save, &StoreAccess::Readable, &[]).unwrap();
        assert_eq!(route, Route::Save);
        // With one, its layer store is read through the Engine API, until
        // that gives way.
        remote.root_dir = Some("/var/lib/docker".into());
        let (route, why) =
            choose_route(&remote, &img, Via::Auto, &StoreAccess::Readable, &[]).unwrap();
        assert_eq!(route, Route::Archive);
        assert!(why.contains("another machine"), "{why}");
        let refused = [GaveWay::Archive("authorization denied".into())];
        let (route, why) =
            choose_route(&remote, &img, Via::Auto, &StoreAccess::Readable, &refused).unwrap();
        assert_eq!(route, Route::Save);
        assert!(why.contains("authorization denied"), "{why}");
        let err = choose_route(
            &remote,
            &img,
            Via::Archive,
            &StoreAccess::Readable,
            &refused,
        )
        .unwrap_err();
        assert!(err.to_string().contains("authorization denied"), "{err}");
        for via in [Via::Push, Via::Store] {
            let err = choose_route(&remote, &img, via, &StoreAccess::Readable, &[]).unwrap_err();
            assert!(err.to_string().contains("ssh://me@build"), "{err}");
        }
    }

    #[test]
    fn an_unreadable_classic_store_is_read_through_the_archive_route_first() {
        let mut local = info(classic());
        local.root_dir = Some("/var/lib/docker".into());
        let unreadable = StoreAccess::Unavailable("permission denied".into());
        for tags in [&["x:1"][..], &[]] {
            let img = image(tags, &[], 2);
            let (route, why) = choose_route(&local, &img, Via::Auto, &unreadable, &[]).unwrap();
            assert_eq!(route, Route::Archive);
            assert!(why.contains("permission denied"), "{why}");
        }
        // Given way: push for a named image, as without the archive route.
        let refused = [GaveWay::Archive("no".into())];
        let img = image(&["x:1"], &[], 2);
        let (route, why) = choose_route(&local, &img, Via::Auto, &unreadable, &refused).unwrap();
        assert_eq!(route, Route::Push);
        assert!(why.ends_with("(the archive route gave way: no)"), "{why}");
        // A readable store is cheaper still.
        let (route, _) =
            choose_route(&local, &img, Via::Auto, &StoreAccess::Readable, &[]).unwrap();
        assert_eq!(route, Route::Store);
        // The containerd store's content store is read the same way, and
        // gives way to push as well.
        let mut containerd = info(ImageStore::Containerd);
        containerd.root_dir = Some("/var/lib/docker".into());
        let (route, _) = choose_route(&containerd, &img, Via::Auto, &unreadable, &[]).unwrap();
        assert_eq!(route, Route::Archive);
        let (route, _) = choose_route(&containerd, &img, Via::Archive, &unreadable, &[]).unwrap();
        assert_eq!(route, Route::Archive);
        let (route, _) = choose_route(&containerd, &img, Via::Auto, &unreadable, &refused).unwrap();
        assert_eq!(route, Route::Push);
        // Podman's store is read through a container too where it is not
        // readable here (its driver is `overlay`), and where it is, from disk.
        let mut podman = local.clone();
        podman.podman = true;
        let (route, _) = choose_route(&podman, &img, Via::Auto, &unreadable, &[]).unwrap();
        assert_eq!(route, Route::Push, "overlay2 is not Podman's driver");
        podman.image_store = ImageStore::Classic {
            driver: "overlay".into(),
        };
        let (route, _) = choose_route(&podman, &img, Via::Auto, &unreadable, &[]).unwrap();
        assert_eq!(route, Route::Archive);
        let (route, _) = choose_route(&podman, &img, Via::Auto, &unreadable, &refused).unwrap();
        assert_eq!(route, Route::Push);
        let (route, why) =
            choose_route(&podman, &img, Via::Auto, &StoreAccess::Readable, &[]).unwrap();
        assert_eq!(route, Route::Store);
        assert!(why.contains("Podman's store"), "{why}");
        let err = choose_route(&podman, &img, Via::Store, &unreadable, &[]).unwrap_err();
        assert!(
            format!("{err}").contains("Podman's store cannot be read"),
            "{err}"
        );
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

    pub(crate) fn digest(c: char) -> Digest {
        format!("sha256:{}", c.to_string().repeat(64))
            .parse()
            .unwrap()
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

    pub(crate) fn row(id: Option<&str>, layer_index: Option<usize>) -> HistoryRow {
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
    fn registry_names() {
        let mut img = image(&["demo:1"], &[], 1);
        assert_eq!(registry_name(&img), ("library/demo".into(), "1".into()));
        img.repo_tags = vec!["localhost:5000/a/b:v2".into()];
        assert_eq!(registry_name(&img), ("a/b".into(), "v2".into()));
        img.repo_tags = vec!["team/app".into()];
        assert_eq!(registry_name(&img), ("team/app".into(), "latest".into()));
        img.repo_tags = vec!["docker.io/library/demo:1".into()];
        assert_eq!(registry_name(&img), ("library/demo".into(), "1".into()));
        img.repo_tags = vec!["localhost:5000/a:b".into()];
        assert_eq!(registry_name(&img), ("a".into(), "b".into()));
        img.repo_tags.clear();
        assert_eq!(
            registry_name(&img),
            (format!("dlgrab/{}", "a".repeat(12)), "latest".into())
        );
    }
    pub(crate) fn oci_manifest(layers: usize, salt: &str) -> String {
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
}
