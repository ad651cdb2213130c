//! Rebuilding a layer's tar from its tar-split metadata and its files.
//!
//! When a classic store unpacks a layer, it keeps the tar's headers and
//! padding as [tar-split](https://github.com/vbatts/tar-split) JSON lines
//! (`tar-split.json.gz`) and the file contents in the layer's folder. Docker
//! rebuilds the exact tar from both for `docker save` and `docker push`, and
//! so does [`Assembler`]:
//!
//! - `{"type":2,"payload":"<base64>"}`: a raw segment (headers, padding, the
//!   end-of-archive blocks), copied as is;
//! - `{"type":1,"name":"./a/b","size":N,"payload":"<base64 CRC-64>"}` (or
//!   `name_raw`, base64 bytes, for names that are not UTF-8): a file entry
//!   whose N data bytes are read from `<folder>/a/b`, their CRC-64/ISO
//!   (big-endian, as Go's `hash.Sum`) checked against the payload.
//!   Directories, symlinks, hard links and whiteouts have size 0 and no data.
//!
//! Only the first N bytes of a file are read, so the tar is intact as long
//! as they are; the caller checks the whole against the diff ID anyway.

use std::fs::File;
use std::io::{self, BufRead, Read};
use std::path::{Component, Path, PathBuf};

use base64::Engine as _;
use serde::Deserialize;

#[cfg(test)]
mod props;

/// A CRC-64 as Go's `crc64.MakeTable(crc64.ISO)` computes it (carry-less
/// multiplication where the CPU has it: the table-driven `crc` crate cost
/// as much CPU as the SHA-256 of the whole layer).
fn crc64_iso() -> crc_fast::Digest {
    crc_fast::Digest::new(crc_fast::CrcAlgorithm::Crc64GoIso)
}

/// Why a tar-split stream could not be turned into a tar.
#[derive(Debug, thiserror::Error)]
pub(crate) enum TarSplitError {
    /// A line is not a tar-split entry.
    #[error("tar-split line {line} is not a valid entry")]
    BadEntry {
        line: u64,
        #[source]
        source: serde_json::Error,
    },
    /// A payload or raw name is not base64.
    #[error("tar-split line {line} has a payload or name that is not base64")]
    BadBase64 {
        line: u64,
        #[source]
        source: base64::DecodeError,
    },
    /// An entry type other than 1 (file) and 2 (segment).
    #[error("tar-split line {line} has unknown entry type {kind}")]
    UnknownType { line: u64, kind: u8 },
    /// A file name that leaves the layer folder, or is empty.
    #[error("tar-split entry {name:?} does not name a file inside the layer")]
    BadName { name: String },
    /// A file's data could not be opened or read.
    #[error("cannot read {} of the layer", path.display())]
    FileRead {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// A file is shorter than its entry says.
    #[error("{} has {found} bytes, the layer's tar-split records {expected}", path.display())]
    FileTooShort {
        path: PathBuf,
        expected: u64,
        found: u64,
    },
    /// A file's data does not have the CRC recorded for it.
    #[error("{} does not have the checksum the layer's tar-split records", path.display())]
    ChecksumMismatch { path: PathBuf },
}

impl From<TarSplitError> for io::Error {
    fn from(e: TarSplitError) -> Self {
        match e {
            TarSplitError::FileRead { .. } => io::Error::other(e),
            e => io::Error::new(io::ErrorKind::InvalidData, e),
        }
    }
}

/// One JSON line of a tar-split stream.
#[derive(Debug, Deserialize)]
struct Entry {
    #[serde(rename = "type")]
    kind: u8,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    name_raw: Option<String>,
    #[serde(default)]
    size: u64,
    #[serde(default)]
    payload: Option<String>,
}

/// What [`Assembler`] is emitting.
enum State {
    /// Between entries.
    Idle,
    /// A raw segment, from `at` on.
    Segment { data: Vec<u8>, at: usize },
    /// A file's data, read from [`Files`].
    File {
        path: PathBuf,
        size: u64,
        left: u64,
        expected: Vec<u8>,
    },
    /// The tar-split stream has ended.
    Done,
}

/// Where an [`Assembler`] reads the layer's file data: one file at a time,
/// in the tar-split's order.
pub(crate) trait Files {
    /// Makes the file `name` (as the tar names it: `./a/b`, `a/b`) the one
    /// [`Files::read`] reads; returns how messages name it.
    fn open(&mut self, name: &[u8]) -> Result<PathBuf, TarSplitError>;

    /// Reads on in the file last opened.
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize>;
}

/// The layer's files in a folder of this machine (the layer store's
/// `diff` folder).
pub(crate) struct Folder {
    folder: PathBuf,
    file: Option<File>,
}

impl Files for Folder {
    fn open(&mut self, name: &[u8]) -> Result<PathBuf, TarSplitError> {
        let path = inside(&self.folder, name)?;
        let file = File::open(&path).map_err(|source| TarSplitError::FileRead {
            path: path.clone(),
            source,
        })?;
        self.file = Some(file);
        Ok(path)
    }

    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match &mut self.file {
            Some(file) => file.read(buf),
            None => Ok(0),
        }
    }
}

/// The tar a tar-split stream describes, as a [`Read`]er: segments from
/// `lines`, file data from `files`.
pub(crate) struct Assembler<R, F = Folder> {
    lines: R,
    files: F,
    line: Vec<u8>,
    line_no: u64,
    state: State,
    /// The CRC of the current file's data so far.
    crc: crc_fast::Digest,
}

impl<R: BufRead> Assembler<R> {
    /// An assembler over the (decompressed) tar-split `lines` of the layer
    /// whose files are under `folder`.
    pub(crate) fn new(lines: R, folder: PathBuf) -> Self {
        Self::with_files(lines, Folder { folder, file: None })
    }
}

impl<R: BufRead, F: Files> Assembler<R, F> {
    /// An assembler over the (decompressed) tar-split `lines`, reading file
    /// data from `files`.
    pub(crate) fn with_files(lines: R, files: F) -> Self {
        Self {
            lines,
            files,
            line: Vec::new(),
            line_no: 0,
            state: State::Idle,
            crc: crc64_iso(),
        }
    }

    /// Moves to the next entry that has bytes to emit, or to the end.
    fn next_entry(&mut self) -> io::Result<()> {
        loop {
            self.line.clear();
            if self.lines.read_until(b'\n', &mut self.line)? == 0 {
                self.state = State::Done;
                return Ok(());
            }
            self.line_no += 1;
            let text = self.line.trim_ascii();
            if text.is_empty() {
                continue;
            }
            let line = self.line_no;
            let entry: Entry = serde_json::from_slice(text)
                .map_err(|source| TarSplitError::BadEntry { line, source })?;
            let decode = |s: &str| {
                base64::engine::general_purpose::STANDARD
                    .decode(s)
                    .map_err(|source| TarSplitError::BadBase64 { line, source })
            };
            let payload = match &entry.payload {
                Some(p) => decode(p)?,
                None => Vec::new(),
            };
            match entry.kind {
                2 if payload.is_empty() => continue,
                2 => {
                    self.state = State::Segment {
                        data: payload,
                        at: 0,
                    };
                    return Ok(());
                }
                1 if entry.size == 0 => continue,
                1 => {
                    let name = match (&entry.name_raw, entry.name) {
                        (Some(raw), _) if !raw.is_empty() => decode(raw)?,
                        (_, Some(name)) => name.into_bytes(),
                        (_, None) => Vec::new(),
                    };
                    let path = self.files.open(&name)?;
                    self.state = State::File {
                        path,
                        size: entry.size,
                        left: entry.size,
                        expected: payload,
                    };
                    self.crc.reset();
                    return Ok(());
                }
                kind => return Err(TarSplitError::UnknownType { line, kind }.into()),
            }
        }
    }
}

impl<R: BufRead, F: Files> Read for Assembler<R, F> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        loop {
            match &mut self.state {
                State::Done => return Ok(0),
                State::Idle => self.next_entry()?,
                State::Segment { data, at } => {
                    let n = (data.len() - *at).min(buf.len());
                    buf[..n].copy_from_slice(&data[*at..*at + n]);
                    *at += n;
                    if *at == data.len() {
                        self.state = State::Idle;
                    }
                    return Ok(n);
                }
                State::File {
                    path,
                    size,
                    left,
                    expected,
                } => {
                    let want = usize::try_from(*left).unwrap_or(usize::MAX).min(buf.len());
                    let n = match self.files.read(&mut buf[..want]) {
                        Ok(n) => n,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                        Err(source) => {
                            return Err(TarSplitError::FileRead {
                                path: path.clone(),
                                source,
                            }
                            .into());
                        }
                    };
                    if n == 0 {
                        return Err(TarSplitError::FileTooShort {
                            path: path.clone(),
                            expected: *size,
                            found: *size - *left,
                        }
                        .into());
                    }
                    self.crc.update(&buf[..n]);
                    *left -= n as u64;
                    if *left == 0 {
                        let sum = self.crc.finalize();
                        // Go's hash.Sum appends the CRC big-endian.
                        if sum.to_be_bytes()[..] != expected[..] {
                            return Err(
                                TarSplitError::ChecksumMismatch { path: path.clone() }.into()
                            );
                        }
                        self.state = State::Idle;
                    }
                    return Ok(n);
                }
            }
        }
    }
}

/// `folder` joined with a tar entry's name (`./a/b`, `a/b`, `/a/b`), which
/// must stay inside it.
pub(crate) fn inside(folder: &Path, name: &[u8]) -> Result<PathBuf, TarSplitError> {
    use std::os::unix::ffi::OsStrExt;
    let relative = Path::new(std::ffi::OsStr::from_bytes(name));
    let bad = || TarSplitError::BadName {
        name: String::from_utf8_lossy(name).into_owned(),
    };
    let mut path = folder.to_path_buf();
    let mut parts = 0;
    for component in relative.components() {
        match component {
            Component::Normal(part) => {
                path.push(part);
                parts += 1;
            }
            Component::CurDir | Component::RootDir => {}
            Component::ParentDir | Component::Prefix(_) => return Err(bad()),
        }
    }
    if parts == 0 {
        return Err(bad());
    }
    Ok(path)
}
