//! `Range` and `Content-Range` headers.

use std::ops::Range;

/// What a blob `GET`'s `Range` header asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ByteRange {
    /// No usable range: send the whole blob.
    Whole,
    /// These bytes (end exclusive).
    Part(Range<u64>),
    /// A range beyond the blob, or an inverted one (416).
    Unsatisfiable,
}

/// Resolves a `Range: bytes=...` header against a blob of `size` bytes.
/// Malformed or multi-range headers are ignored (RFC 9110 allows it).
pub(crate) fn resolve_range(header: Option<&str>, size: u64) -> ByteRange {
    let Some(spec) = header.and_then(|h| h.trim().strip_prefix("bytes=")) else {
        return ByteRange::Whole;
    };
    if spec.contains(',') {
        return ByteRange::Whole;
    }
    let Some((first, last)) = spec.trim().split_once('-') else {
        return ByteRange::Whole;
    };
    let (first, last) = (first.trim(), last.trim());
    if first.is_empty() {
        // suffix: the last N bytes
        let Ok(n) = last.parse::<u64>() else {
            return ByteRange::Whole;
        };
        if n == 0 || size == 0 {
            return ByteRange::Unsatisfiable;
        }
        return ByteRange::Part(size - n.min(size)..size);
    }
    let Ok(start) = first.parse::<u64>() else {
        return ByteRange::Whole;
    };
    let end = if last.is_empty() {
        size
    } else {
        match last.parse::<u64>() {
            Ok(l) if l >= start => l.saturating_add(1).min(size),
            // RFC 9110 §14.1.1: "A byte-range-spec is invalid if the last-pos
            // value is present and less than the first-pos"; §14.2: a server
            // "MAY ignore or reject a Range header field that contains an
            // invalid ranges-specifier". Rejected (416), as Go's net/http does.
            Ok(_) => return ByteRange::Unsatisfiable,
            Err(_) => return ByteRange::Whole,
        }
    };
    if start >= size {
        return ByteRange::Unsatisfiable;
    }
    ByteRange::Part(start..end)
}

/// Parses an upload's `Content-Range: <start>-<end>` (inclusive; a `bytes `
/// prefix is tolerated). `None` when malformed.
pub(crate) fn parse_content_range(header: &str) -> Option<(u64, u64)> {
    let h = header.trim();
    let h = h.strip_prefix("bytes ").unwrap_or(h);
    let h = h.split('/').next()?;
    let (a, b) = h.split_once('-')?;
    let (a, b) = (a.trim().parse().ok()?, b.trim().parse().ok()?);
    (a <= b).then_some((a, b))
}

/// The `Range` header value of an upload of `size` bytes: `0-<size-1>`
/// (`0-0` when empty, as the reference registry answers).
pub(crate) fn upload_range(size: u64) -> String {
    format!("0-{}", size.saturating_sub(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn check(header: Option<&str>, size: u64, expected: ByteRange) {
        assert_eq!(
            resolve_range(header, size),
            expected,
            "{header:?} of {size}"
        );
    }

    #[test]
    fn ranges() {
        use ByteRange::*;
        check(None, 10, Whole);
        check(Some("bytes=0-4"), 10, Part(0..5));
        check(Some("bytes=5-"), 10, Part(5..10));
        check(Some("bytes=5-100"), 10, Part(5..10));
        check(Some("bytes=-3"), 10, Part(7..10));
        check(Some("bytes=-30"), 10, Part(0..10));
        check(Some("bytes=9-9"), 10, Part(9..10));
        check(Some("bytes=10-"), 10, Unsatisfiable);
        check(Some("bytes=10-20"), 10, Unsatisfiable);
        check(Some("bytes=0-"), 0, Unsatisfiable);
        check(Some("bytes=-0"), 10, Unsatisfiable);
        check(Some("bytes=4-2"), 10, Unsatisfiable);
        check(Some("bytes=500-0"), 2048, Unsatisfiable);
        check(Some("bytes=4-x"), 10, Whole);
        check(Some("bytes=0-1,3-4"), 10, Whole);
        check(Some("items=0-1"), 10, Whole);
        check(Some("bytes=x-1"), 10, Whole);
    }

    #[test]
    fn content_ranges() {
        assert_eq!(parse_content_range("0-99"), Some((0, 99)));
        assert_eq!(parse_content_range("bytes 100-199/200"), Some((100, 199)));
        assert_eq!(parse_content_range("5-4"), None);
        assert_eq!(parse_content_range("a-b"), None);
        assert_eq!(upload_range(0), "0-0");
        assert_eq!(upload_range(10), "0-9");
    }
}
