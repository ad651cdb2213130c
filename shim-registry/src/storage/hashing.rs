//! Streaming digests.

use oci_spec::image::{Digest, DigestAlgorithm};
use sha2::Digest as _;

use super::StorageError;

/// A running digest in one of the supported algorithms.
#[derive(Clone)]
pub(crate) enum BlobHasher {
    Sha256(sha2::Sha256),
    Sha384(sha2::Sha384),
    Sha512(sha2::Sha512),
}

impl BlobHasher {
    /// A hasher for `algorithm`.
    pub(crate) fn new(algorithm: &DigestAlgorithm) -> Result<Self, StorageError> {
        match algorithm {
            DigestAlgorithm::Sha256 => Ok(Self::Sha256(sha2::Sha256::new())),
            DigestAlgorithm::Sha384 => Ok(Self::Sha384(sha2::Sha384::new())),
            DigestAlgorithm::Sha512 => Ok(Self::Sha512(sha2::Sha512::new())),
            other => Err(StorageError::UnsupportedAlgorithm {
                algorithm: other.to_string(),
            }),
        }
    }

    /// The default: sha256.
    pub(crate) fn sha256() -> Self {
        Self::Sha256(sha2::Sha256::new())
    }

    pub(crate) fn algorithm(&self) -> DigestAlgorithm {
        match self {
            Self::Sha256(_) => DigestAlgorithm::Sha256,
            Self::Sha384(_) => DigestAlgorithm::Sha384,
            Self::Sha512(_) => DigestAlgorithm::Sha512,
        }
    }

    pub(crate) fn update(&mut self, data: &[u8]) {
        match self {
            Self::Sha256(h) => h.update(data),
            Self::Sha384(h) => h.update(data),
            Self::Sha512(h) => h.update(data),
        }
    }

    pub(crate) fn finish(self) -> Digest {
        let (name, hex) = match self {
            Self::Sha256(h) => ("sha256", hex::encode(h.finalize())),
            Self::Sha384(h) => ("sha384", hex::encode(h.finalize())),
            Self::Sha512(h) => ("sha512", hex::encode(h.finalize())),
        };
        Digest::try_from(format!("{name}:{hex}")).expect("a hex digest is a valid digest")
    }
}

/// The digest of `data` in `algorithm`.
pub(crate) fn digest_of(algorithm: &DigestAlgorithm, data: &[u8]) -> Result<Digest, StorageError> {
    let mut h = BlobHasher::new(algorithm)?;
    h.update(data);
    Ok(h.finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_sha256() {
        let d = digest_of(&DigestAlgorithm::Sha256, b"").unwrap();
        assert_eq!(
            d.to_string(),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn streaming_equals_one_shot() {
        let mut h = BlobHasher::new(&DigestAlgorithm::Sha512).unwrap();
        h.update(b"hello ");
        h.update(b"world");
        assert_eq!(
            h.finish(),
            digest_of(&DigestAlgorithm::Sha512, b"hello world").unwrap()
        );
    }
}
