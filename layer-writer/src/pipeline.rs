//! One pass over a layer blob: detect the compression, decompress, check the
//! tar structure, hash both the raw and the tar bytes, and write one of them
//! to a temporary file. Synchronous: run it on a blocking thread.

use std::cell::RefCell;
use std::io::{self, Read, Write};
use std::path::Path;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};

use oci_spec::image::Digest;
use sha2::{Digest as _, Sha256};
use tempfile::NamedTempFile;

use crate::WriteError;
use crate::error::io_err;

/// The compression detected from a blob's first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Compression {
    None,
    Gzip,
    Zstd,
}

/// Which bytes go to the temporary file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Keep {
    /// The uncompressed tar.
    Tar,
    /// The bytes as received when compressed, else the tar.
    RawIfCompressed,
    /// The tar, and also the bytes as received (in a second temporary
    /// file) when compressed; the raw digest is to be verified.
    TarAndRaw,
}

/// The result of [`stream_layer`].
#[derive(Debug)]
pub(crate) struct Streamed {
    /// The temporary file, deleted on drop unless persisted.
    pub(crate) file: NamedTempFile,
    /// True when `file` holds the compressed bytes as received.
    pub(crate) raw_kept: bool,
    /// With [`Keep::TarAndRaw`] and a compressed input: the bytes as received.
    pub(crate) raw_copy: Option<NamedTempFile>,
    /// True when the caller asked for the raw bytes ([`Keep::TarAndRaw`]):
    /// `raw_digest` must then match the announced blob digest.
    pub(crate) raw_wanted: bool,
    pub(crate) compression: Compression,
    pub(crate) raw_digest: Digest,
    pub(crate) raw_size: u64,
    pub(crate) diff_id: Digest,
    pub(crate) tar_size: u64,
}

const BUF: usize = 256 * 1024;

/// Streams `src` through the pipeline into a temporary file in `dir`.
pub(crate) fn stream_layer(
    src: impl Read,
    dir: &Path,
    keep: Keep,
    cancel: &AtomicBool,
) -> Result<Streamed, WriteError> {
    let file = temp_in(dir)?;
    let path = file.path().to_path_buf();
    let out = Rc::new(RefCell::new(io::BufWriter::with_capacity(BUF, file)));
    let write_err: Slot = Rc::default();
    let src_err: Slot = Rc::default();
    let dec_err: Slot = Rc::default();

    // Raw side: hash, count, watch for cancellation, remember source errors.
    let mut raw = Tee::new(src, src_err.clone(), cancel);
    let raw_stats = raw.stats.clone();
    let mut head = Vec::with_capacity(512);
    (&mut raw)
        .take(512)
        .read_to_end(&mut head)
        .map_err(|e| classify(e, &src_err, &write_err, None))?;
    let compression = sniff(&head)?;
    // Uncompressed, the raw bytes are the tar: hashed once, on the tar side
    // (which reads `head` again below).
    raw.hashing = compression != Compression::None;
    let raw_kept = keep == Keep::RawIfCompressed && compression != Compression::None;
    let raw_out = if keep == Keep::TarAndRaw && compression != Compression::None {
        let copy = temp_in(dir)?;
        Some(Rc::new(RefCell::new(io::BufWriter::with_capacity(
            BUF, copy,
        ))))
    } else {
        None
    };
    if raw_kept {
        raw.sink = Some((out.clone(), write_err.clone()));
        raw.write_out(&head);
    } else if let Some(copy) = &raw_out {
        raw.sink = Some((copy.clone(), write_err.clone()));
        raw.write_out(&head);
    }
    let raw_input = io::Cursor::new(head).chain(raw);
    let decoded: Box<dyn Read + '_> = match compression {
        Compression::None => Box::new(raw_input),
        Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(
            io::BufReader::with_capacity(BUF, raw_input),
        )),
        Compression::Zstd => {
            Box::new(zstd::stream::read::Decoder::new(raw_input).map_err(WriteError::Decompress)?)
        }
    };
    let mut tar_side = Tee::new(decoded, dec_err.clone(), cancel);
    if !raw_kept {
        tar_side.sink = Some((out.clone(), write_err.clone()));
    }
    let fail = |e: io::Error| classify(e, &src_err, &write_err, Some(&dec_err));

    // The tar is not parsed: its bytes are checked against the diff ID,
    // which is all a copy needs. A parser would be stricter than the daemon
    // (Go's archive/tar takes two long-name or PAX headers for one member,
    // or a PAX header with no member after it, and so does `docker import`).
    io::copy(&mut tar_side, &mut io::sink()).map_err(fail)?;
    let tar_stats = tar_side.stats.clone();
    drop(tar_side); // drops the decoder, hence the raw tee and its file handle
    let (tar_hash, tar_size) = tar_stats.take();
    let (raw_hash, raw_size) = raw_stats.take();

    if let Some(e) = write_err.borrow_mut().take() {
        return Err(WriteError::Io { path, source: e });
    }
    let file = finish_temp(out, &path)?;
    let raw_copy = match raw_out {
        Some(copy) => {
            let copy_path = copy.borrow().get_ref().path().to_path_buf();
            Some(finish_temp(copy, &copy_path)?)
        }
        None => None,
    };
    Ok(Streamed {
        file,
        raw_kept,
        raw_copy,
        raw_wanted: keep == Keep::TarAndRaw,
        compression,
        raw_digest: if compression == Compression::None {
            to_digest(tar_hash.clone())
        } else {
            to_digest(raw_hash)
        },
        raw_size,
        diff_id: to_digest(tar_hash),
        tar_size,
    })
}

fn temp_in(dir: &Path) -> Result<NamedTempFile, WriteError> {
    crate::fsx::temp_in(dir)
}

/// Flushes and fsyncs a temporary file once every reader holding it is gone.
fn finish_temp(
    out: Rc<RefCell<io::BufWriter<NamedTempFile>>>,
    path: &Path,
) -> Result<NamedTempFile, WriteError> {
    let out = Rc::try_unwrap(out)
        .map_err(|_| WriteError::Cancelled)?
        .into_inner();
    let file = out.into_inner().map_err(|e| WriteError::Io {
        path: path.to_path_buf(),
        source: e.into_error(),
    })?;
    file.as_file().sync_all().map_err(io_err(path))?;
    Ok(file)
}

pub(crate) fn to_digest(h: Sha256) -> Digest {
    let hex = hex::encode(h.finalize());
    format!("sha256:{hex}")
        .parse()
        .expect("a sha256 digest is valid")
}

/// The diff ID of a layer blob: the SHA-256 of its tar once decompressed
/// (gzip, zstd or none, told from its first bytes). Reads all of `src`;
/// checks nothing else (the writer does). Synchronous.
pub fn diff_id_of(mut src: impl Read) -> Result<Digest, WriteError> {
    let mut head = Vec::with_capacity(512);
    (&mut src)
        .take(512)
        .read_to_end(&mut head)
        .map_err(WriteError::Read)?;
    let input = io::Cursor::new(head.clone()).chain(src);
    let decoded: Box<dyn Read> = match sniff(&head)? {
        Compression::None => Box::new(input),
        Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(
            io::BufReader::with_capacity(BUF, input),
        )),
        Compression::Zstd => {
            Box::new(zstd::stream::read::Decoder::new(input).map_err(WriteError::Decompress)?)
        }
    };
    crate::folder::digest_of_reader(decoded).map_err(WriteError::Decompress)
}

fn sniff(head: &[u8]) -> Result<Compression, WriteError> {
    if head.starts_with(&[0x1f, 0x8b]) {
        Ok(Compression::Gzip)
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Ok(Compression::Zstd)
    } else if head.is_empty() || is_tar_header(head) {
        Ok(Compression::None)
    } else {
        Err(WriteError::UnknownCompression)
    }
}

/// A zero block (end of archive) or a header whose checksum is right.
fn is_tar_header(head: &[u8]) -> bool {
    if head.len() < 512 {
        return false;
    }
    let block = &head[..512];
    if block.iter().all(|b| *b == 0) {
        return true;
    }
    let field = &block[148..156];
    let text: String = field
        .iter()
        .map(|b| *b as char)
        .filter(|c| c.is_ascii_digit())
        .collect();
    let Ok(expected) = u32::from_str_radix(&text, 8) else {
        return false;
    };
    let sum: u32 = block
        .iter()
        .enumerate()
        .map(|(i, b)| {
            if (148..156).contains(&i) {
                32
            } else {
                u32::from(*b)
            }
        })
        .sum();
    sum == expected
}

type Slot = Rc<RefCell<Option<io::Error>>>;
type Sink = (Rc<RefCell<io::BufWriter<NamedTempFile>>>, Slot);

fn classify(e: io::Error, src: &Slot, write: &Slot, dec: Option<&Slot>) -> WriteError {
    if let Some(w) = write.borrow_mut().take() {
        return WriteError::Io {
            path: "<temporary layer file>".into(),
            source: w,
        };
    }
    if e.kind() == io::ErrorKind::Interrupted && e.to_string() == CANCELLED {
        return WriteError::Cancelled;
    }
    if let Some(s) = src.borrow_mut().take() {
        if s.to_string() == CANCELLED {
            return WriteError::Cancelled;
        }
        return WriteError::Read(s);
    }
    if let Some(d) = dec.and_then(|d| d.borrow_mut().take()) {
        return WriteError::Decompress(d);
    }
    if dec.is_none() {
        return WriteError::Read(e);
    }
    WriteError::Decompress(e)
}

const CANCELLED: &str = "layer write cancelled";

/// A reader that hashes and counts what passes, optionally copies it to a
/// file, and records its inner reader's errors.
struct Tee<'c, R> {
    inner: R,
    stats: Rc<RefCell<(Sha256, u64)>>,
    /// False once the same bytes are hashed elsewhere (an uncompressed
    /// blob's raw side: its bytes are the tar's).
    hashing: bool,
    err: Slot,
    sink: Option<Sink>,
    cancel: &'c AtomicBool,
}

impl<'c, R: Read> Tee<'c, R> {
    fn new(inner: R, err: Slot, cancel: &'c AtomicBool) -> Self {
        Self {
            inner,
            stats: Rc::default(),
            hashing: true,
            err,
            sink: None,
            cancel,
        }
    }

    fn write_out(&mut self, buf: &[u8]) {
        if let Some((out, slot)) = &self.sink
            && slot.borrow().is_none()
            && let Err(e) = out.borrow_mut().write_all(buf)
        {
            *slot.borrow_mut() = Some(e);
        }
    }
}

impl<R: Read> Read for Tee<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.cancel.load(Ordering::Relaxed) {
            *self.err.borrow_mut() = Some(io::Error::other(CANCELLED));
            return Err(io::Error::other(CANCELLED));
        }
        let n = match self.inner.read(buf) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return Err(e),
            Err(e) => {
                let kind = e.kind();
                let msg = e.to_string();
                *self.err.borrow_mut() = Some(e);
                return Err(io::Error::new(kind, msg));
            }
        };
        {
            let mut stats = self.stats.borrow_mut();
            if self.hashing {
                stats.0.update(&buf[..n]);
            }
            stats.1 += n as u64;
        }
        self.write_out(&buf[..n]);
        if let Some((_, slot)) = &self.sink
            && slot.borrow().is_some()
        {
            return Err(io::Error::other("cannot write the temporary file"));
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a_tar() -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        let data = vec![5u8; 3000];
        let mut header = tar::Header::new_ustar();
        header.set_size(data.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        builder
            .append_data(&mut header, "f", &data[..])
            .expect("file");
        builder.into_inner().expect("tar")
    }

    fn sha(bytes: &[u8]) -> Digest {
        let mut h = Sha256::new();
        h.update(bytes);
        to_digest(h)
    }

    #[test]
    fn raw_and_tar_digests_of_plain_and_gzip_blobs() {
        let dir = tempfile::tempdir().expect("tempdir");
        let tar = a_tar();
        let plain =
            stream_layer(&tar[..], dir.path(), Keep::Tar, &AtomicBool::new(false)).expect("plain");
        assert_eq!(plain.compression, Compression::None);
        assert_eq!(plain.diff_id, sha(&tar));
        assert_eq!(plain.raw_digest, sha(&tar), "uncompressed: raw is the tar");
        assert_eq!(
            (plain.raw_size, plain.tar_size),
            (tar.len() as u64, tar.len() as u64)
        );

        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&tar).expect("gzip");
        let gz = gz.finish().expect("gzip");
        let packed =
            stream_layer(&gz[..], dir.path(), Keep::Tar, &AtomicBool::new(false)).expect("gzip");
        assert_eq!(packed.compression, Compression::Gzip);
        assert_eq!(packed.diff_id, sha(&tar));
        assert_eq!(packed.raw_digest, sha(&gz));
        assert_eq!(packed.raw_size, gz.len() as u64);
    }
}
