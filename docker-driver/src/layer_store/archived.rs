//! A layer's files as the archive API streams its folder, for the
//! [`super::tar_split::Assembler`]: `GET /containers/{id}/archive?path=…`
//! of a layer's `diff` folder (seen through a container that mounts the
//! data root) is a tar whose entries are named `diff/<path in the layer>`.
//!
//! The tar-split metadata asks for files in the order of the layer's
//! original tar; the archive lists them in the daemon's walk order. Both
//! are the same for layers Docker made itself (its own walk wrote the
//! layer), so files stream straight through. A file that comes before its
//! turn is spooled (to memory when small, else to an unnamed temporary file
//! that vanishes with the process) until the tar-split asks for it.
//!
//! Only the archive's headers are parsed here (`tar`'s `Header`, PAX
//! records and GNU long names); the bytes the layer's tar is made of come
//! from the tar-split, and the whole is verified against the diff ID by
//! the caller.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Cursor, Read, Seek as _, SeekFrom, Write as _};
use std::path::PathBuf;

use super::tar_split::{Files, TarSplitError};

/// Files up to this size are spooled in memory (while the memory spool
/// holds less than [`MEMORY_SPOOL`]).
const SMALL_FILE: u64 = 256 << 10;
/// The most bytes spooled in memory at once; the rest go to disk.
const MEMORY_SPOOL: u64 = 8 << 20;

/// The files of one layer folder, read from the archive API's tar of it.
pub(crate) struct ArchivedFiles<R> {
    tar: R,
    /// The entries' common prefix, `diff/`.
    prefix: Vec<u8>,
    /// Bytes of the current entry (data and padding) not read yet.
    skip: u64,
    /// Files read past before their turn, by their path in the layer.
    spooled: HashMap<Vec<u8>, Spooled>,
    /// Bytes held by the in-memory spool.
    in_memory: u64,
    /// Hard links seen in the archive: path → the path it links to.
    links: HashMap<Vec<u8>, Vec<u8>>,
    current: Current,
    /// The archive's end was read.
    ended: bool,
}

/// A file kept until the tar-split asks for it.
enum Spooled {
    Memory(std::sync::Arc<[u8]>),
    Disk(std::sync::Arc<File>),
}

/// Where [`Files::read`] reads from.
enum Current {
    None,
    /// Straight from the archive: `left` data bytes, then `pad`.
    Stream {
        left: u64,
        pad: u64,
    },
    Memory(Cursor<std::sync::Arc<[u8]>>),
    Disk {
        file: std::sync::Arc<File>,
        at: u64,
    },
}

/// The bytes of the one file in the archive API's tar of a file (a blob
/// of containerd's content store seen through a reader container): the
/// headers before it (PAX, GNU long names, folders) are read past.
pub(crate) struct ArchivedFile<R> {
    archive: ArchivedFiles<R>,
    /// Bytes of the file not read yet; `None` before its header is read.
    left: Option<u64>,
}

impl<R: Read> ArchivedFile<R> {
    pub(crate) fn new(tar: R) -> Self {
        Self {
            archive: ArchivedFiles::new(tar, ""),
            left: None,
        }
    }

    /// The file's size, once its header is read.
    fn start(&mut self) -> io::Result<u64> {
        loop {
            match self.archive.next_entry()? {
                Some(entry) if entry.kind.is_file() => {
                    // Its data is read here, not skipped.
                    self.archive.skip = 0;
                    return Ok(entry.size);
                }
                Some(_) => {}
                None => {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "the archive holds no file",
                    ));
                }
            }
        }
    }
}

impl<R: Read> Read for ArchivedFile<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = match self.left {
            Some(left) => left,
            None => {
                let size = self.start()?;
                self.left = Some(size);
                size
            }
        };
        if left == 0 || buf.is_empty() {
            return Ok(0);
        }
        let want = usize::try_from(left).unwrap_or(usize::MAX).min(buf.len());
        let n = self.archive.tar.read(&mut buf[..want])?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the archive ended inside the file",
            ));
        }
        self.left = Some(left - n as u64);
        Ok(n)
    }
}

/// One header of the archive, with its PAX or GNU long name applied.
struct Entry {
    path: Vec<u8>,
    link: Option<Vec<u8>>,
    kind: tar::EntryType,
    size: u64,
}

impl<R: Read> ArchivedFiles<R> {
    /// The files of the folder the archive `tar` holds, its entries named
    /// `<top>/…` (`top`: the folder's last component, e.g. `diff`).
    pub(crate) fn new(tar: R, top: &str) -> Self {
        let mut prefix = top.trim_matches('/').as_bytes().to_vec();
        prefix.push(b'/');
        Self {
            tar,
            prefix,
            skip: 0,
            spooled: HashMap::new(),
            in_memory: 0,
            links: HashMap::new(),
            current: Current::None,
            ended: false,
        }
    }

    /// Reads and drops `n` bytes of the archive.
    fn discard(&mut self, n: u64) -> io::Result<()> {
        let copied = io::copy(&mut (&mut self.tar).take(n), &mut io::sink())?;
        if copied < n {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the archive of the layer's folder ended inside an entry",
            ));
        }
        Ok(())
    }

    /// Fills `block` from the archive; false at a clean end (no bytes).
    fn read_block(&mut self, block: &mut [u8; 512]) -> io::Result<bool> {
        let mut filled = 0;
        while filled < block.len() {
            match self.tar.read(&mut block[filled..]) {
                Ok(0) if filled == 0 => return Ok(false),
                Ok(0) => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the archive of the layer's folder ended inside a header",
                    ));
                }
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(true)
    }

    /// Reads an entry's data whole (a PAX record set, a GNU long name).
    fn read_data(&mut self, size: u64) -> io::Result<Vec<u8>> {
        if size > 1 << 20 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "the archive of the layer's folder has an extended header over 1 MiB",
            ));
        }
        let mut data = vec![0; size as usize];
        self.tar.read_exact(&mut data)?;
        self.discard(padding(size))?;
        Ok(data)
    }

    /// The next entry's header (its data not read), or `None` at the end.
    fn next_entry(&mut self) -> io::Result<Option<Entry>> {
        let skip = std::mem::take(&mut self.skip);
        self.discard(skip)?;
        let mut long_name = None;
        let mut long_link = None;
        let mut pax_path = None;
        let mut pax_link = None;
        let mut pax_size = None;
        loop {
            let mut block = [0u8; 512];
            if self.ended || !self.read_block(&mut block)? || block.iter().all(|&b| b == 0) {
                self.ended = true;
                return Ok(None);
            }
            let header = tar::Header::from_byte_slice(&block);
            let bad = |e: io::Error| io::Error::new(io::ErrorKind::InvalidData, e);
            let size = header.entry_size().map_err(bad)?;
            let kind = header.entry_type();
            match kind {
                tar::EntryType::XHeader => {
                    let data = self.read_data(size)?;
                    for record in tar::PaxExtensions::new(&data) {
                        let record = record.map_err(bad)?;
                        match record.key_bytes() {
                            b"path" => pax_path = Some(record.value_bytes().to_vec()),
                            b"linkpath" => pax_link = Some(record.value_bytes().to_vec()),
                            b"size" => {
                                pax_size = std::str::from_utf8(record.value_bytes())
                                    .ok()
                                    .and_then(|v| v.parse().ok());
                            }
                            _ => {}
                        }
                    }
                }
                tar::EntryType::XGlobalHeader => {
                    self.read_data(size)?;
                }
                tar::EntryType::GNULongName => {
                    long_name = Some(trim_nul(self.read_data(size)?));
                }
                tar::EntryType::GNULongLink => {
                    long_link = Some(trim_nul(self.read_data(size)?));
                }
                kind => {
                    let size = pax_size.unwrap_or(size);
                    let path = pax_path
                        .or(long_name)
                        .unwrap_or_else(|| header.path_bytes().into_owned());
                    let link = pax_link
                        .or(long_link)
                        .or_else(|| header.link_name_bytes().map(|l| l.into_owned()));
                    // Only regular files carry data here.
                    let data = if kind.is_file() || kind == tar::EntryType::Continuous {
                        size
                    } else {
                        0
                    };
                    self.skip = data + padding(data);
                    return Ok(Some(Entry {
                        path,
                        link,
                        kind,
                        size: data,
                    }));
                }
            }
        }
    }

    /// The path inside the layer of an archive entry's name, or `None` for
    /// the folder itself and names outside it.
    fn in_layer(&self, name: &[u8]) -> Option<Vec<u8>> {
        let rest = name.strip_prefix(&self.prefix[..])?;
        let rest = normal(rest);
        (!rest.is_empty()).then_some(rest)
    }

    /// Keeps the current entry's data (`size` bytes) for later.
    fn spool(&mut self, path: Vec<u8>, size: u64) -> io::Result<()> {
        self.skip = padding(size);
        let spooled = if size <= SMALL_FILE && self.in_memory + size <= MEMORY_SPOOL {
            let mut data = vec![0; size as usize];
            self.tar.read_exact(&mut data)?;
            self.in_memory += size;
            Spooled::Memory(data.into())
        } else {
            let mut file = tempfile::tempfile()?;
            let copied = io::copy(&mut (&mut self.tar).take(size), &mut file)?;
            if copied < size {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the archive of the layer's folder ended inside a file",
                ));
            }
            file.flush()?;
            Spooled::Disk(file.into())
        };
        tracing::trace!(
            path = %String::from_utf8_lossy(&path),
            size,
            "spooled a file the layer's tar lists later"
        );
        self.spooled.insert(path, spooled);
        Ok(())
    }

    /// Serves a spooled copy of `path` (or of what it is a hard link to).
    fn take_spooled(&mut self, path: &[u8]) -> bool {
        let key = match self.spooled.contains_key(path) {
            true => path.to_vec(),
            false => match self.links.get(path) {
                Some(target) if self.spooled.contains_key(target) => target.clone(),
                _ => return false,
            },
        };
        // Kept: another hard link may name the same data.
        self.current = match &self.spooled[&key] {
            Spooled::Memory(data) => Current::Memory(Cursor::new(data.clone())),
            Spooled::Disk(file) => Current::Disk {
                file: file.clone(),
                at: 0,
            },
        };
        true
    }
}

impl<R: Read> Files for ArchivedFiles<R> {
    fn open(&mut self, name: &[u8]) -> Result<PathBuf, TarSplitError> {
        use std::os::unix::ffi::OsStrExt;
        let wanted = normal(name);
        let mut shown = self.prefix.clone();
        shown.extend_from_slice(&wanted);
        let path = PathBuf::from(std::ffi::OsStr::from_bytes(&shown));
        let failed = |source: io::Error| TarSplitError::FileRead {
            path: path.clone(),
            source,
        };
        // What is left of the file read before (the tar-split may want
        // fewer bytes than the archive has, should the file have grown).
        if let Current::Stream { left, pad } = std::mem::replace(&mut self.current, Current::None) {
            self.skip = left + pad;
        }
        if self.take_spooled(&wanted) {
            return Ok(path);
        }
        loop {
            let Some(entry) = self.next_entry().map_err(failed)? else {
                return Err(failed(io::Error::new(
                    io::ErrorKind::NotFound,
                    "not in the archive of the layer's folder (or listed before a hard link \
                     to it was read)",
                )));
            };
            let Some(at) = self.in_layer(&entry.path) else {
                continue;
            };
            if entry.kind == tar::EntryType::Link {
                if let Some(target) = entry.link.as_deref().and_then(|l| self.in_layer(l)) {
                    self.links.insert(at.clone(), target);
                }
                if at == wanted && self.take_spooled(&wanted) {
                    return Ok(path);
                }
                continue;
            }
            if entry.size == 0 {
                continue;
            }
            if at == wanted {
                self.skip = 0;
                self.current = Current::Stream {
                    left: entry.size,
                    pad: padding(entry.size),
                };
                return Ok(path);
            }
            self.spool(at, entry.size).map_err(failed)?;
        }
    }

    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match &mut self.current {
            Current::None => Ok(0),
            Current::Stream { left, .. } => {
                let want = usize::try_from(*left).unwrap_or(usize::MAX).min(buf.len());
                let n = self.tar.read(&mut buf[..want])?;
                *left -= n as u64;
                Ok(n)
            }
            Current::Memory(cursor) => cursor.read(buf),
            Current::Disk { file, at } => {
                let mut handle: &File = file;
                handle.seek(SeekFrom::Start(*at))?;
                let n = handle.read(buf)?;
                *at += n as u64;
                Ok(n)
            }
        }
    }
}

/// The padding after `size` data bytes, to the next 512-byte block.
fn padding(size: u64) -> u64 {
    (512 - size % 512) % 512
}

/// A GNU long name or link without its trailing NULs.
fn trim_nul(mut name: Vec<u8>) -> Vec<u8> {
    while name.last() == Some(&0) {
        name.pop();
    }
    name
}

/// A path inside the layer as bytes, without `./`, leading or trailing `/`.
fn normal(name: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(name.len());
    for part in name.split(|&b| b == b'/') {
        if part.is_empty() || part == b"." {
            continue;
        }
        if !out.is_empty() {
            out.push(b'/');
        }
        out.extend_from_slice(part);
    }
    out
}

#[cfg(test)]
mod tests {
    use std::io::Read as _;

    use super::super::tar_split::Assembler;
    use super::super::tests::split;
    use super::*;

    /// A tar of `files` (name, data), in that order, as `builder` writes it.
    fn tar_of(files: &[(&str, &[u8])], prefix: &str) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        let mut dir = tar::Header::new_gnu();
        dir.set_entry_type(tar::EntryType::Directory);
        dir.set_size(0);
        dir.set_mode(0o755);
        dir.set_cksum();
        if !prefix.is_empty() {
            builder.append_data(&mut dir, prefix, io::empty()).unwrap();
        }
        for (name, data) in files {
            let mut header = tar::Header::new_gnu();
            header.set_size(data.len() as u64);
            header.set_mode(0o644);
            header.set_cksum();
            let path = if prefix.is_empty() {
                (*name).to_owned()
            } else {
                format!("{prefix}/{name}")
            };
            builder.append_data(&mut header, path, *data).unwrap();
        }
        builder.into_inner().unwrap()
    }

    /// The layer tar rebuilt from its tar-split and the archive `folder`.
    fn rebuild(layer: &[u8], folder: Vec<u8>) -> io::Result<Vec<u8>> {
        let lines = split(layer);
        let mut out = Vec::new();
        Assembler::with_files(lines.as_bytes(), ArchivedFiles::new(&folder[..], "diff"))
            .read_to_end(&mut out)?;
        Ok(out)
    }

    #[test]
    fn files_in_the_same_order_stream_through() {
        let big = vec![7u8; 300 << 10];
        let files: &[(&str, &[u8])] = &[("a", b"one"), ("b/c", &big), ("d", b"")];
        let layer = tar_of(files, "");
        let folder = tar_of(files, "diff");
        assert_eq!(rebuild(&layer, folder).unwrap(), layer);
    }

    #[test]
    fn files_out_of_order_are_spooled_until_their_turn() {
        let big = vec![9u8; 600 << 10];
        let layer = tar_of(&[("z", b"last"), ("a", b"first"), ("m", &big)], "");
        let folder = tar_of(&[("a", b"first"), ("m", &big), ("z", b"last")], "diff");
        assert_eq!(rebuild(&layer, folder).unwrap(), layer);
    }

    #[test]
    fn long_names_are_followed() {
        let long = format!("{}/file", "d".repeat(150));
        let files: &[(&str, &[u8])] = &[(&long, b"deep")];
        let layer = tar_of(files, "");
        let folder = tar_of(files, "diff");
        assert_eq!(rebuild(&layer, folder).unwrap(), layer);
    }

    #[test]
    fn a_file_missing_from_the_archive_is_an_error_naming_it() {
        let layer = tar_of(&[("a", b"one"), ("b", b"two")], "");
        let folder = tar_of(&[("a", b"one")], "diff");
        let error = rebuild(&layer, folder).unwrap_err();
        assert!(error.to_string().contains("diff/b"), "{error}");
    }

    #[test]
    fn a_changed_file_fails_its_checksum() {
        let layer = tar_of(&[("a", b"one")], "");
        let folder = tar_of(&[("a", b"two")], "diff");
        let error = rebuild(&layer, folder).unwrap_err();
        assert!(error.to_string().contains("checksum"), "{error}");
    }

    #[test]
    fn a_grown_file_is_read_only_as_far_as_recorded() {
        let layer = tar_of(&[("a", b"one"), ("b", b"two")], "");
        let folder = tar_of(&[("a", b"one and more"), ("b", b"two")], "diff");
        // The bytes recorded match, so the checksum holds; the rest is
        // skipped and the next file still found.
        assert_eq!(rebuild(&layer, folder).unwrap(), layer);
    }
}
