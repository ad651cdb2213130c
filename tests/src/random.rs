//! Seeded, incompressible, reproducible bytes (SplitMix64).

use std::io::{self, Read};

/// `size` bytes derived from `seed`: the same arguments always give the same
/// bytes, and they do not compress. Byte `i` does not depend on `size`, so a
/// shorter result is a prefix of a longer one.
pub fn random_bytes(size: usize, seed: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(size);
    RandomReader::new(size as u64, seed)
        .read_to_end(&mut out)
        .expect("reading from memory cannot fail");
    out
}

/// A reader of the same bytes as [`random_bytes`], for large files that
/// should not sit in memory.
#[derive(Debug, Clone)]
pub struct RandomReader {
    seed: u64,
    pos: u64,
    size: u64,
}

impl RandomReader {
    /// A reader of `size` bytes derived from `seed`.
    pub fn new(size: u64, seed: u64) -> Self {
        Self { seed, pos: 0, size }
    }
}

impl Read for RandomReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = self.size - self.pos;
        let n = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        for b in &mut buf[..n] {
            let word = word(self.seed, self.pos / 8);
            *b = word.to_le_bytes()[(self.pos % 8) as usize];
            self.pos += 1;
        }
        Ok(n)
    }
}

/// The `index`-th SplitMix64 output for `seed`.
fn word(seed: u64, index: u64) -> u64 {
    let mut z = seed.wrapping_add(index.wrapping_add(1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reproducible_and_prefix_stable() {
        let a = random_bytes(1000, 7);
        assert_eq!(a, random_bytes(1000, 7));
        assert_eq!(&a[..100], &random_bytes(100, 7)[..]);
        assert_ne!(a, random_bytes(1000, 8));
    }

    #[test]
    fn chunked_reads_match() {
        let whole = random_bytes(777, 3);
        let mut r = RandomReader::new(777, 3);
        let mut got = Vec::new();
        let mut buf = [0u8; 13];
        loop {
            let n = r.read(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            got.extend_from_slice(&buf[..n]);
        }
        assert_eq!(got, whole);
    }

    #[test]
    fn looks_incompressible() {
        let data = random_bytes(64 * 1024, 1);
        let mut counts = [0u32; 256];
        for b in &data {
            counts[*b as usize] += 1;
        }
        // Each byte value appears about 256 times; none wildly off.
        assert!(
            counts.iter().all(|&c| (150..400).contains(&c)),
            "{counts:?}"
        );
    }
}
