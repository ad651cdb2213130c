//! [`DataRootDriver`]: [`DockerDriver`] over a classic store's data root,
//! with no daemon running.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use async_trait::async_trait;
use bytes::Bytes;
use serde::Deserialize;

use crate::driver::{BoxStream, DockerDriver};
use crate::error::{DataRootError, DriverError};
use crate::history::{self, ApiRow};
use crate::layer_store::{LayerStore, chain_id};
use crate::model::{
    BuildOptions, ContainerSummary, DaemonInfo, ImageConfig, ImageDetails, ImageStore,
    ImageSummary, LayerSelector, PushEvent, ReaderContainer, RegistryCredentials, ResolvedLayer,
};
use crate::reference::{self, Typed};

/// [`DockerDriver`] over a Docker data root (`/var/lib/docker`, or a copy
/// of one) with a classic image store, read without a daemon.
///
/// Images, names, history and layers come from the store's files (see
/// [`LayerStore`]); everything is opened read-only. What needs a daemon
/// (tag, push, save, load, build, remove) fails with
/// [`DriverError::NoDaemon`]: layers are read with [`DataRootDriver::store`].
#[derive(Debug, Clone)]
pub struct DataRootDriver {
    store: LayerStore,
}

impl DataRootDriver {
    /// The driver for the data root `root`, its graph driver detected from
    /// which `image/<driver>/` holds a layer database.
    pub fn open(root: impl Into<PathBuf>) -> Result<Self, DataRootError> {
        Ok(Self {
            store: LayerStore::detect(root)?,
        })
    }

    /// The layer store read.
    pub fn store(&self) -> &LayerStore {
        &self.store
    }

    /// Every reference of `repositories.json` with its image ID.
    fn references(&self) -> Result<BTreeMap<String, String>, DataRootError> {
        self.store.references()
    }

    /// The image ID `reference` names: a full or short image ID, or a name.
    fn lookup(&self, reference: &str) -> Result<String, DriverError> {
        let no_such = || DriverError::NoSuchImage {
            reference: reference.to_owned(),
        };
        match reference::classify(reference) {
            Typed::FullDigest(id) => {
                if self.store.image_ids()?.contains(&id) {
                    Ok(id)
                } else {
                    self.lookup_name(reference)?.ok_or_else(no_such)
                }
            }
            Typed::HexPrefix(prefix) => {
                let matches: Vec<String> = self
                    .store
                    .image_ids()?
                    .into_iter()
                    .filter(|id| id["sha256:".len()..].starts_with(&prefix))
                    .collect();
                match matches.len() {
                    0 => self.lookup_name(reference)?.ok_or_else(no_such),
                    1 => Ok(matches.into_iter().next().unwrap_or_default()),
                    _ => Err(DriverError::AmbiguousId {
                        prefix: reference.to_owned(),
                        candidates: matches,
                    }),
                }
            }
            Typed::Name => self.lookup_name(reference)?.ok_or_else(no_such),
        }
    }

    /// The image ID `repositories.json` gives `name` (`name[:tag]` or
    /// `name@digest`, with or without `docker.io/` and `library/`).
    fn lookup_name(&self, name: &str) -> Result<Option<String>, DriverError> {
        let tagged = reference::with_default_tag(name);
        let wanted = familiar(&tagged);
        Ok(self
            .references()?
            .into_iter()
            .find(|(r, _)| familiar(r) == wanted)
            .map(|(_, id)| id))
    }

    /// An image's config, read and parsed.
    fn config(&self, id: &str) -> Result<(Vec<u8>, Config), DriverError> {
        let bytes = self.store.image_config(id)?;
        let config = serde_json::from_slice(&bytes).map_err(|e| DataRootError::Format {
            path: self
                .store
                .image_dir()
                .join("imagedb/content/sha256")
                .join(id.trim_start_matches("sha256:")),
            source: Box::new(e),
        })?;
        Ok((bytes, config))
    }

    /// The details of image `id`, as `docker image inspect` and `docker
    /// history` would give them.
    fn details(&self, id: &str) -> Result<ImageDetails, DriverError> {
        let (bytes, config) = self.config(id)?;
        let references = self.references()?;
        let names = references.iter().filter(|(_, v)| *v == id).map(|(r, _)| r);
        let (repo_digests, repo_tags): (Vec<String>, Vec<String>) =
            names.cloned().partition(|r| r.contains('@'));
        let diff_ids = config.rootfs.diff_ids.clone();
        let rows = self.history_rows(id, &config);
        let flags = history::config_empty_flags(&bytes);
        let history = history::map_rows(&rows, diff_ids.len(), flags.as_deref())
            .unwrap_or_else(|| history::unmapped(&rows));
        Ok(ImageDetails {
            id: id.to_owned(),
            repo_tags,
            repo_digests,
            parent: self.store.parent(id),
            created: config.created,
            os: config.os,
            architecture: config.architecture,
            variant: config.variant.filter(|v| !v.is_empty()),
            diff_ids,
            history,
        })
    }

    /// The history rows, newest first, as the daemon's history call makes
    /// them (moby `ImageHistory`): a row's size is its layer's, and IDs go
    /// to the rows from the newest down, one per image along the parent
    /// chain.
    fn history_rows(&self, id: &str, config: &Config) -> Vec<ApiRow> {
        let mut layers = Vec::new();
        let mut rows: Vec<ApiRow> = config
            .history
            .iter()
            .map(|h| {
                let mut size = 0;
                if !h.empty_layer
                    && let Some(diff_id) = config.rootfs.diff_ids.get(layers.len())
                {
                    layers.push(diff_id.clone());
                    size = self.store.layer_size(&chain_id(&layers));
                }
                ApiRow {
                    id: "<missing>".to_owned(),
                    created: h.created.as_deref().and_then(unix_seconds).unwrap_or(0),
                    created_by: h.created_by.clone(),
                    size,
                    comment: h.comment.clone(),
                }
            })
            .collect();
        rows.reverse();
        let mut next = Some(id.to_owned());
        for row in &mut rows {
            let Some(id) = next.take() else { break };
            next = self.store.parent(&id);
            row.id = id;
        }
        rows
    }

    /// The diff IDs of every image, for a diff-ID lookup.
    fn all_diff_ids(&self) -> Result<Vec<(String, bool, Vec<String>)>, DriverError> {
        let tagged: BTreeSet<String> = self
            .references()?
            .into_iter()
            .filter(|(r, _)| !r.contains('@'))
            .map(|(_, id)| id)
            .collect();
        let mut all = Vec::new();
        for id in self.store.image_ids()? {
            match self.config(&id) {
                Ok((_, config)) => {
                    let is_tagged = tagged.contains(&id);
                    all.push((id, is_tagged, config.rootfs.diff_ids));
                }
                Err(e) => {
                    tracing::debug!(image = %id, error = %e, "skipping an unreadable image config")
                }
            }
        }
        Ok(all)
    }
}

#[async_trait]
impl DockerDriver for DataRootDriver {
    async fn info(&self) -> Result<DaemonInfo, DriverError> {
        Ok(DaemonInfo {
            server_version: "none (data root)".to_owned(),
            api_version: String::new(),
            image_store: ImageStore::Classic {
                driver: self.store.driver().to_owned(),
            },
            os: std::env::consts::OS.to_owned(),
            arch: go_arch(std::env::consts::ARCH).to_owned(),
            root_dir: Some(self.store.root().to_path_buf()),
            elsewhere: None,
            podman: false,
        })
    }

    async fn inspect_image(&self, reference: &str) -> Result<ImageDetails, DriverError> {
        let id = self.lookup(reference)?;
        self.details(&id)
    }

    async fn image_config(&self, reference: &str) -> Result<ImageConfig, DriverError> {
        let id = self.lookup(reference)?;
        Ok(ImageConfig {
            bytes: self.store.image_config(&id)?,
            index: None,
        })
    }

    async fn resolve(
        &self,
        what: &str,
        selector: LayerSelector,
    ) -> Result<ResolvedLayer, DriverError> {
        let (id, requested_id, diff_index) = match reference::classify(what) {
            Typed::FullDigest(digest) => match self.lookup(&digest) {
                Ok(id) => (id.clone(), Some(id), None),
                Err(DriverError::NoSuchImage { .. }) => {
                    let all = self.all_diff_ids()?;
                    let chosen = reference::choose_for_diff_id(
                        all.iter()
                            .map(|(id, tagged, layers)| (id.as_str(), *tagged, &layers[..])),
                        &digest,
                    )
                    .map(|(id, index)| (id.to_owned(), index));
                    let (id, index) = chosen.ok_or_else(|| DriverError::NoSuchImage {
                        reference: digest.clone(),
                    })?;
                    (id, None, Some(index))
                }
                Err(e) => return Err(e),
            },
            Typed::HexPrefix(prefix) => {
                let id = self.lookup(what)?;
                let by_id = id["sha256:".len()..].starts_with(&prefix);
                (id.clone(), by_id.then_some(id), None)
            }
            Typed::Name => (self.lookup(what)?, None, None),
        };
        let image = self.details(&id)?;
        let layer_index = match (diff_index, &selector) {
            (Some(index), LayerSelector::Top) => index,
            _ => reference::select_layer(what, &image, &selector)?,
        };
        Ok(ResolvedLayer {
            image,
            layer_index,
            requested_id,
        })
    }

    async fn list_images(&self) -> Result<Vec<ImageSummary>, DriverError> {
        let references = self.references()?;
        Ok(self
            .store
            .image_ids()?
            .into_iter()
            .map(|id| {
                let names = references.iter().filter(|(_, v)| **v == id).map(|(r, _)| r);
                let (repo_digests, repo_tags) = names.cloned().partition(|r| r.contains('@'));
                ImageSummary {
                    parent_id: self.store.parent(&id),
                    id,
                    repo_tags,
                    repo_digests,
                }
            })
            .collect())
    }

    async fn create_reader(&self, _spec: &ReaderContainer) -> Result<String, DriverError> {
        Err(DriverError::NoDaemon {
            operation: "creating a container",
        })
    }

    fn archive(
        &self,
        _container: &str,
        _path: &str,
    ) -> BoxStream<Result<bytes::Bytes, DriverError>> {
        Box::pin(futures::stream::once(async {
            Err(DriverError::NoDaemon {
                operation: "reading a container's files",
            })
        }))
    }

    async fn remove_container(&self, _id: &str) -> Result<(), DriverError> {
        Err(DriverError::NoDaemon {
            operation: "removing a container",
        })
    }

    async fn list_containers(&self, _key: &str) -> Result<Vec<ContainerSummary>, DriverError> {
        // A data root alone runs no containers.
        Ok(Vec::new())
    }

    async fn tag(&self, _image: &str, _repo: &str, _tag: &str) -> Result<(), DriverError> {
        Err(DriverError::NoDaemon {
            operation: "tagging an image",
        })
    }

    async fn untag(&self, _reference: &str) -> Result<(), DriverError> {
        Err(DriverError::NoDaemon {
            operation: "removing a tag",
        })
    }

    fn push(
        &self,
        _repo: &str,
        _tag: &str,
        _credentials: Option<RegistryCredentials>,
    ) -> BoxStream<Result<PushEvent, DriverError>> {
        Box::pin(futures::stream::iter([Err(DriverError::NoDaemon {
            operation: "pushing an image",
        })]))
    }

    fn export_images(&self, _references: &[String]) -> BoxStream<Result<Bytes, DriverError>> {
        Box::pin(futures::stream::iter([Err(DriverError::NoDaemon {
            operation: "saving images",
        })]))
    }

    async fn load(&self, _archive: BoxStream<Bytes>) -> Result<Vec<String>, DriverError> {
        Err(DriverError::NoDaemon {
            operation: "loading images",
        })
    }

    async fn build(
        &self,
        _context_tar: Bytes,
        _options: BuildOptions,
    ) -> Result<String, DriverError> {
        Err(DriverError::NoDaemon {
            operation: "building an image",
        })
    }

    async fn remove_image(&self, _reference: &str) -> Result<(), DriverError> {
        Err(DriverError::NoDaemon {
            operation: "removing an image",
        })
    }
}

/// The fields of an image config read here.
#[derive(Debug, Deserialize)]
struct Config {
    #[serde(default)]
    created: Option<String>,
    #[serde(default)]
    os: String,
    #[serde(default)]
    architecture: String,
    #[serde(default)]
    variant: Option<String>,
    #[serde(default)]
    rootfs: RootFs,
    #[serde(default)]
    history: Vec<History>,
}

#[derive(Debug, Default, Deserialize)]
struct RootFs {
    #[serde(default)]
    diff_ids: Vec<String>,
}

#[derive(Debug, Deserialize)]
struct History {
    #[serde(default)]
    created: Option<String>,
    #[serde(default)]
    created_by: String,
    #[serde(default)]
    comment: String,
    #[serde(default)]
    empty_layer: bool,
}

/// A reference as `repositories.json` and `docker images` show Docker Hub
/// names: without `docker.io/` and `library/`.
fn familiar(reference: &str) -> &str {
    let r = reference.strip_prefix("docker.io/").unwrap_or(reference);
    r.strip_prefix("library/").unwrap_or(r)
}

/// Rust's name of an architecture → Go's.
fn go_arch(rust: &str) -> &str {
    match rust {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        other => other,
    }
}

/// Seconds since the epoch of an RFC 3339 time (`2024-01-02T03:04:05.6Z`,
/// `…+01:00`).
fn unix_seconds(text: &str) -> Option<i64> {
    let (date, time) = text.split_once(['T', 't', ' '])?;
    let mut d = date.splitn(3, '-').map(|p| p.parse::<i64>().ok());
    let (y, m, day) = (d.next()??, d.next()??, d.next()??);
    let clock_end = time.find(['Z', 'z', '+', '-']).unwrap_or(time.len());
    let (clock, zone) = time.split_at(clock_end);
    let clock = clock.split('.').next()?;
    let mut c = clock.splitn(3, ':').map(|p| p.parse::<i64>().ok());
    let (h, min, s) = (c.next()??, c.next()??, c.next()??);
    let offset = match zone.as_bytes().first() {
        Some(sign @ (b'+' | b'-')) => {
            let (oh, om) = zone[1..].split_once(':')?;
            let minutes = oh.parse::<i64>().ok()? * 60 + om.parse::<i64>().ok()?;
            if *sign == b'+' {
                minutes * 60
            } else {
                -minutes * 60
            }
        }
        _ => 0,
    };
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * 86_400 + h * 3600 + min * 60 + s - offset)
}

#[cfg(test)]
mod tests;
