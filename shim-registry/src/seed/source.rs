//! Where seeded content is read from: a directory, or a tar archive read in
//! place (an index of its entries, then each file read at its offset).

use std::collections::HashMap;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Component, Path, PathBuf};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncSeekExt};

use super::SeedError;

/// How many symbolic links one lookup may follow in an archive.
const MAX_LINKS: usize = 16;

/// A tree of files: a directory or an archive.
#[derive(Debug)]
pub(super) enum Source {
    /// A directory (an OCI image layout, or an extracted `docker save`).
    Dir(PathBuf),
    /// A `docker save` archive (or an OCI layout in a tar).
    Tar {
        /// The archive.
        file: PathBuf,
        /// Every entry by its normalised path.
        entries: HashMap<String, TarEntry>,
    },
}

/// One entry of an archive.
#[derive(Debug, Clone)]
pub(super) enum TarEntry {
    /// A regular file: where its data starts and how long it is.
    File { offset: u64, size: u64 },
    /// A symbolic or hard link, with its target as an archive path.
    Link { target: String },
    /// Anything else (directories).
    Other,
}

/// A file opened from a [`Source`], with its size.
pub(super) type Opened = (Box<dyn AsyncRead + Send + Unpin>, u64);

impl Source {
    /// Opens `path`: a directory as it is, anything else as a tar archive.
    pub(super) async fn open(path: &Path) -> Result<Source, SeedError> {
        let meta = tokio::fs::metadata(path)
            .await
            .map_err(|source| SeedError::Read {
                path: path.to_owned(),
                source,
            })?;
        if meta.is_dir() {
            return Ok(Source::Dir(path.to_owned()));
        }
        let file = path.to_owned();
        let entries = tokio::task::spawn_blocking(move || index_tar(&file))
            .await
            .map_err(|e| SeedError::Read {
                path: path.to_owned(),
                source: io::Error::other(e),
            })??;
        Ok(Source::Tar {
            file: path.to_owned(),
            entries,
        })
    }

    /// The path shown in errors for `inner`.
    pub(super) fn display(&self, inner: &str) -> PathBuf {
        match self {
            Source::Dir(dir) => dir.join(inner),
            Source::Tar { file, .. } => PathBuf::from(format!("{}:{inner}", file.display())),
        }
    }

    /// Whether `inner` names a file.
    pub(super) async fn exists(&self, inner: &str) -> bool {
        match self {
            Source::Dir(dir) => match safe_join(dir, inner) {
                Some(p) => tokio::fs::metadata(p).await.is_ok_and(|m| m.is_file()),
                None => false,
            },
            Source::Tar { entries, .. } => resolve(entries, inner).is_some(),
        }
    }

    /// Opens `inner` for reading.
    pub(super) async fn open_file(&self, inner: &str) -> Result<Opened, SeedError> {
        let missing = || SeedError::Missing {
            path: self.display(inner),
        };
        match self {
            Source::Dir(dir) => {
                let path = safe_join(dir, inner).ok_or_else(missing)?;
                let file = tokio::fs::File::open(&path).await.map_err(|source| {
                    if source.kind() == io::ErrorKind::NotFound {
                        missing()
                    } else {
                        SeedError::Read {
                            path: path.clone(),
                            source,
                        }
                    }
                })?;
                let size = file
                    .metadata()
                    .await
                    .map_err(|source| SeedError::Read {
                        path: path.clone(),
                        source,
                    })?
                    .len();
                Ok((Box::new(file), size))
            }
            Source::Tar { file, entries } => {
                let (offset, size) = resolve(entries, inner).ok_or_else(missing)?;
                let read_error = |source| SeedError::Read {
                    path: file.clone(),
                    source,
                };
                let mut f = tokio::fs::File::open(file).await.map_err(read_error)?;
                f.seek(SeekFrom::Start(offset)).await.map_err(read_error)?;
                Ok((Box::new(f.take(size)), size))
            }
        }
    }

    /// Reads all of `inner`, refusing files over `limit` bytes.
    pub(super) async fn read_small(&self, inner: &str, limit: u64) -> Result<Vec<u8>, SeedError> {
        let (mut reader, size) = self.open_file(inner).await?;
        if size > limit {
            return Err(SeedError::TooLarge {
                path: self.display(inner),
                limit,
            });
        }
        let mut buf = Vec::with_capacity(size as usize);
        reader
            .read_to_end(&mut buf)
            .await
            .map_err(|source| SeedError::Read {
                path: self.display(inner),
                source,
            })?;
        Ok(buf)
    }
}

/// `inner` under `dir`, or `None` when it would leave `dir`.
fn safe_join(dir: &Path, inner: &str) -> Option<PathBuf> {
    let rel = Path::new(inner);
    rel.components()
        .all(|c| matches!(c, Component::Normal(_) | Component::CurDir))
        .then(|| dir.join(rel))
}

/// An archive path without `./`, empty and `.` components; `..` pops.
/// `None` when it climbs above the archive's root.
pub(super) fn normalise(path: &str) -> Option<String> {
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop()?;
            }
            p => parts.push(p),
        }
    }
    Some(parts.join("/"))
}

/// Follows links from `inner` to a regular file: its offset and size.
fn resolve(entries: &HashMap<String, TarEntry>, inner: &str) -> Option<(u64, u64)> {
    let mut path = normalise(inner)?;
    for _ in 0..MAX_LINKS {
        match entries.get(&path)? {
            TarEntry::File { offset, size } => return Some((*offset, *size)),
            TarEntry::Link { target } => path = target.clone(),
            TarEntry::Other => return None,
        }
    }
    None
}

/// Lists an archive's entries without reading their data.
fn index_tar(file: &Path) -> Result<HashMap<String, TarEntry>, SeedError> {
    let read_error = |source| SeedError::Read {
        path: file.to_owned(),
        source,
    };
    let mut f = std::fs::File::open(file).map_err(read_error)?;
    let mut magic = [0u8; 4];
    let n = f.read(&mut magic).map_err(read_error)?;
    if (n >= 2 && magic[..2] == [0x1f, 0x8b]) || (n == 4 && magic == [0x28, 0xb5, 0x2f, 0xfd]) {
        return Err(SeedError::Compressed {
            path: file.to_owned(),
        });
    }
    f.seek(SeekFrom::Start(0)).map_err(read_error)?;
    let mut archive = tar::Archive::new(f);
    let not_tar = |source: io::Error| SeedError::NotAnArchive {
        path: file.to_owned(),
        source,
    };
    let mut entries = HashMap::new();
    for entry in archive.entries_with_seek().map_err(not_tar)? {
        let entry = entry.map_err(not_tar)?;
        let raw = entry.path().map_err(not_tar)?;
        let Some(name) = raw.to_str().and_then(normalise) else {
            continue;
        };
        let kind = entry.header().entry_type();
        let value = if kind.is_file() {
            TarEntry::File {
                offset: entry.raw_file_position(),
                size: entry.size(),
            }
        } else if kind.is_symlink() || kind.is_hard_link() {
            let Some(link) = entry.link_name().map_err(not_tar)? else {
                continue;
            };
            let link = link.to_string_lossy().into_owned();
            // Symbolic links are relative to the link's folder; hard links
            // name an archive path.
            let joined = if kind.is_symlink() && !link.starts_with('/') {
                match name.rsplit_once('/') {
                    Some((dir, _)) => format!("{dir}/{link}"),
                    None => link,
                }
            } else {
                link
            };
            match normalise(&joined) {
                Some(target) => TarEntry::Link { target },
                None => continue,
            }
        } else {
            TarEntry::Other
        };
        entries.insert(name, value);
    }
    if entries.is_empty() {
        return Err(SeedError::NotAnArchive {
            path: file.to_owned(),
            source: io::Error::new(io::ErrorKind::InvalidData, "no entries"),
        });
    }
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_normalised() {
        assert_eq!(normalise("./a/b").as_deref(), Some("a/b"));
        assert_eq!(normalise("a//./b/").as_deref(), Some("a/b"));
        assert_eq!(normalise("a/../b").as_deref(), Some("b"));
        assert_eq!(normalise("../b"), None);
        assert!(safe_join(Path::new("/x"), "../etc/passwd").is_none());
        assert!(safe_join(Path::new("/x"), "/etc/passwd").is_none());
        assert_eq!(
            safe_join(Path::new("/x"), "blobs/sha256/ab"),
            Some(PathBuf::from("/x/blobs/sha256/ab"))
        );
    }

    #[test]
    fn links_followed_a_bounded_number_of_times() {
        let mut e = HashMap::new();
        e.insert(
            "blobs/sha256/aa".to_owned(),
            TarEntry::File {
                offset: 512,
                size: 3,
            },
        );
        e.insert(
            "x/layer.tar".to_owned(),
            TarEntry::Link {
                target: "blobs/sha256/aa".to_owned(),
            },
        );
        e.insert(
            "loop".to_owned(),
            TarEntry::Link {
                target: "loop".to_owned(),
            },
        );
        assert_eq!(resolve(&e, "./x/layer.tar"), Some((512, 3)));
        assert_eq!(resolve(&e, "loop"), None);
        assert_eq!(resolve(&e, "nope"), None);
    }
}
