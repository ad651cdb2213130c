//! Request paths, names, tags, digests and query strings.

use oci_spec::image::{Digest, DigestAlgorithm};

use crate::storage::Reference;

/// What a `/v2/...` path names. Names and references are not validated here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Route {
    /// `/v2/`
    Base,
    /// `/v2/<name>/blobs/<digest>`
    Blob { name: String, digest: String },
    /// `/v2/<name>/blobs/uploads/`
    UploadStart { name: String },
    /// `/v2/<name>/blobs/uploads/<id>`
    Upload { name: String, id: String },
    /// `/v2/<name>/manifests/<reference>`
    Manifest { name: String, reference: String },
    /// `/v2/<name>/tags/list`
    Tags { name: String },
    /// `/v2/<name>/referrers/<digest>`
    Referrers { name: String, digest: String },
}

impl Route {
    /// Parses a request path; `None` when it is not a registry endpoint.
    pub(crate) fn parse(path: &str) -> Option<Route> {
        let rest = path.strip_prefix("/v2")?;
        if rest.is_empty() || rest == "/" {
            return Some(Route::Base);
        }
        let rest = rest.strip_prefix('/')?;
        let segments: Vec<&str> = rest.split('/').collect();
        let n = segments.len();
        let name =
            |upto: usize| -> Option<String> { (upto > 0).then(|| segments[..upto].join("/")) };
        // Upload endpoints first: `<name>/blobs/uploads/` and `<name>/blobs/uploads/<id>`.
        if n >= 3 && segments[n - 3] == "blobs" && segments[n - 2] == "uploads" {
            let id = segments[n - 1];
            let name = name(n - 3)?;
            return Some(if id.is_empty() {
                Route::UploadStart { name }
            } else {
                Route::Upload {
                    name,
                    id: id.to_owned(),
                }
            });
        }
        if n >= 2 {
            let last = percent_decode(segments[n - 1])?;
            match segments[n - 2] {
                "blobs" if last == "uploads" => {
                    return Some(Route::UploadStart { name: name(n - 2)? });
                }
                "blobs" if !last.is_empty() => {
                    return Some(Route::Blob {
                        name: name(n - 2)?,
                        digest: last,
                    });
                }
                "manifests" if !last.is_empty() => {
                    return Some(Route::Manifest {
                        name: name(n - 2)?,
                        reference: last,
                    });
                }
                "tags" if last == "list" => return Some(Route::Tags { name: name(n - 2)? }),
                "referrers" if !last.is_empty() => {
                    return Some(Route::Referrers {
                        name: name(n - 2)?,
                        digest: last,
                    });
                }
                _ => {}
            }
        }
        None
    }
}

/// Whether `name` is a repository name by the spec's grammar:
/// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*(\/[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*)*`.
pub(crate) fn valid_name(name: &str) -> bool {
    !name.is_empty() && name.len() <= 255 && name.split('/').all(valid_name_component)
}

fn valid_name_component(component: &str) -> bool {
    let alnum = |c: u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    let bytes = component.as_bytes();
    let mut i = 0;
    loop {
        // [a-z0-9]+
        let start = i;
        while i < bytes.len() && alnum(bytes[i]) {
            i += 1;
        }
        if i == start {
            return false;
        }
        if i == bytes.len() {
            return true;
        }
        // separator: `.`, `_`, `__` or `-+`
        match bytes[i] {
            b'.' => i += 1,
            b'_' => {
                i += 1;
                if i < bytes.len() && bytes[i] == b'_' {
                    i += 1;
                }
            }
            b'-' => {
                while i < bytes.len() && bytes[i] == b'-' {
                    i += 1;
                }
            }
            _ => return false,
        }
    }
}

/// Whether `tag` is a tag: `[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}`.
pub(crate) fn valid_tag(tag: &str) -> bool {
    let bytes = tag.as_bytes();
    let Some((&first, rest)) = bytes.split_first() else {
        return false;
    };
    (first.is_ascii_alphanumeric() || first == b'_')
        && rest.len() <= 127
        && rest
            .iter()
            .all(|&c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'))
}

/// Parses a digest this registry can verify (sha256, sha384 or sha512).
pub(crate) fn parse_digest(s: &str) -> Option<Digest> {
    let d = Digest::try_from(s).ok()?;
    matches!(
        d.algorithm(),
        DigestAlgorithm::Sha256 | DigestAlgorithm::Sha384 | DigestAlgorithm::Sha512
    )
    .then_some(d)
}

/// Parses a manifest reference: a digest when it contains `:`, else a tag.
pub(crate) fn parse_reference(s: &str) -> Option<Reference> {
    if s.contains(':') {
        parse_digest(s).map(Reference::Digest)
    } else if valid_tag(s) {
        Some(Reference::Tag(s.to_owned()))
    } else {
        None
    }
}

/// The decoded `key=value` pairs of a query string.
pub(crate) fn query_pairs(query: Option<&str>) -> Vec<(String, String)> {
    let Some(query) = query else {
        return Vec::new();
    };
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .filter_map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let plus = |s: &str| s.replace('+', " ");
            Some((percent_decode(&plus(k))?, percent_decode(&plus(v))?))
        })
        .collect()
}

/// The first value of `key` in decoded query pairs.
pub(crate) fn query_value<'a>(pairs: &'a [(String, String)], key: &str) -> Option<&'a str> {
    pairs
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

/// Decodes `%XX` escapes; `None` on a bad escape or non-UTF-8 result.
pub(crate) fn percent_decode(s: &str) -> Option<String> {
    if !s.contains('%') {
        return Some(s.to_owned());
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3)?;
            let hex = std::str::from_utf8(hex).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// Escapes a query value (for `Link` headers).
pub(crate) fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn route(path: &str, expected: Option<Route>) {
        assert_eq!(Route::parse(path), expected, "{path}");
    }

    fn s(x: &str) -> String {
        x.to_owned()
    }

    const D: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn routes() {
        route("/v2/", Some(Route::Base));
        route("/v2", Some(Route::Base));
        route("/v3/", None);
        route("/v2/foo", None);
        route(
            &format!("/v2/foo/blobs/{D}"),
            Some(Route::Blob {
                name: s("foo"),
                digest: s(D),
            }),
        );
        route(
            "/v2/foo/blobs/sha256%3Aabc",
            Some(Route::Blob {
                name: s("foo"),
                digest: s("sha256:abc"),
            }),
        );
        route(
            "/v2/a/b/c/blobs/uploads/",
            Some(Route::UploadStart { name: s("a/b/c") }),
        );
        route(
            "/v2/a/blobs/uploads",
            Some(Route::UploadStart { name: s("a") }),
        );
        route(
            "/v2/a/blobs/uploads/1234",
            Some(Route::Upload {
                name: s("a"),
                id: s("1234"),
            }),
        );
        route("/v2/blobs/uploads/", None);
        route(
            "/v2/x/manifests/y/manifests/latest",
            Some(Route::Manifest {
                name: s("x/manifests/y"),
                reference: s("latest"),
            }),
        );
        route(
            "/v2/x/blobs/tags/list",
            Some(Route::Tags { name: s("x/blobs") }),
        );
        route(
            &format!("/v2/x/referrers/{D}"),
            Some(Route::Referrers {
                name: s("x"),
                digest: s(D),
            }),
        );
        route("/v2/x/manifests/", None);
        route(
            "/v2//manifests/a",
            Some(Route::Manifest {
                name: s(""),
                reference: s("a"),
            }),
        );
    }

    #[track_caller]
    fn name(n: &str, ok: bool) {
        assert_eq!(valid_name(n), ok, "{n}");
    }

    #[test]
    fn names() {
        name("a", true);
        name("library/busybox", true);
        name("a.b_c__d---e/f9/g", true);
        name("a/b/c/d/e/f", true);
        name("", false);
        name("A", false);
        name("a//b", false);
        name("/a", false);
        name("a/", false);
        name("a___b", false);
        name("a.", false);
        name(".a", false);
        name("a..b", false);
        name("_a", false);
        name("a-", false);
        name(&"a".repeat(256), false);
    }

    #[test]
    fn tags() {
        assert!(valid_tag("latest"));
        assert!(valid_tag("_x.Y-1"));
        assert!(valid_tag(&"a".repeat(128)));
        assert!(!valid_tag(&"a".repeat(129)));
        assert!(!valid_tag(".x"));
        assert!(!valid_tag("-x"));
        assert!(!valid_tag(""));
        assert!(!valid_tag("a:b"));
    }

    #[test]
    fn digests() {
        assert!(parse_digest(D).is_some());
        assert!(parse_digest(&format!("sha512:{}", "a".repeat(128))).is_some());
        assert!(parse_digest("sha256:abc").is_none());
        assert!(parse_digest(&D.to_uppercase()).is_none());
        assert!(parse_digest("md5:d41d8cd98f00b204e9800998ecf8427e").is_none());
        assert!(parse_digest("nope").is_none());
        assert!(matches!(parse_reference(D), Some(Reference::Digest(_))));
        assert!(matches!(parse_reference("v1"), Some(Reference::Tag(_))));
        assert!(parse_reference("sha256:zz").is_none());
    }

    #[test]
    fn queries() {
        let q = query_pairs(Some("digest=sha256%3Aab&n=2&x&last=a+b"));
        assert_eq!(query_value(&q, "digest"), Some("sha256:ab"));
        assert_eq!(query_value(&q, "n"), Some("2"));
        assert_eq!(query_value(&q, "x"), Some(""));
        assert_eq!(query_value(&q, "last"), Some("a b"));
        assert_eq!(query_value(&q, "y"), None);
        assert_eq!(percent_decode("%zz"), None);
        assert_eq!(percent_encode("a:b/c"), "a%3Ab%2Fc");
    }
}

/// Hostile input to every parser of the request line and headers: none
/// panics, and what they accept is what the grammar allows.
#[cfg(test)]
mod props {
    use proptest::prelude::*;

    use super::super::range::{ByteRange, parse_content_range, resolve_range};
    use super::*;

    /// Paths made of registry-ish pieces, and arbitrary strings.
    fn paths() -> impl Strategy<Value = String> {
        let piece = prop_oneof![
            Just("v2".to_owned()),
            Just("blobs".to_owned()),
            Just("uploads".to_owned()),
            Just("manifests".to_owned()),
            Just("tags".to_owned()),
            Just("list".to_owned()),
            Just("referrers".to_owned()),
            Just("".to_owned()),
            Just("..".to_owned()),
            Just("%2e%2e".to_owned()),
            Just("sha256%3A".to_owned()),
            "[a-z0-9._%-]{0,12}",
            any::<String>(),
        ];
        prop_oneof![
            prop::collection::vec(piece, 0..8).prop_map(|p| format!("/{}", p.join("/"))),
            any::<String>(),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn route_parse_never_panics_and_names_come_from_the_path(path in paths()) {
            if let Some(route) = Route::parse(&path) {
                prop_assert!(path.starts_with("/v2"));
                match route {
                    Route::Base => {}
                    Route::Blob { name, .. }
                    | Route::UploadStart { name }
                    | Route::Upload { name, .. }
                    | Route::Manifest { name, .. }
                    | Route::Tags { name }
                    | Route::Referrers { name, .. } => {
                        prop_assert!(path.contains(&name));
                        // A name that passes the grammar never climbs out.
                        if valid_name(&name) {
                            prop_assert!(!name.split('/').any(|c| c == ".." || c == "."));
                        }
                    }
                }
            }
        }

        #[test]
        fn names_accepted_match_the_spec_grammar(name in any::<String>()) {
            let re = regex::Regex::new(
                r"^[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*(/[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*)*$",
            ).unwrap();
            prop_assert_eq!(valid_name(&name), re.is_match(&name) && name.len() <= 255);
        }

        #[test]
        fn generated_names_are_accepted(name in "[a-z0-9]{1,5}((\\.|_|__|-{1,3})[a-z0-9]{1,5}){0,3}(/[a-z0-9]{1,5}){0,3}") {
            prop_assert!(valid_name(&name));
        }

        #[test]
        fn tags_accepted_match_the_spec_grammar(tag in any::<String>()) {
            let re = regex::Regex::new(r"^[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}$").unwrap();
            prop_assert_eq!(valid_tag(&tag), re.is_match(&tag));
        }

        #[test]
        fn digests_and_references_never_panic(s in prop_oneof![
            any::<String>(),
            "(sha256|sha384|sha512|md5|SHA256|sha256\\+b64):[0-9a-fA-F]{0,130}",
        ]) {
            if let Some(d) = parse_digest(&s) {
                prop_assert_eq!(d.to_string(), s.clone());
            }
            match parse_reference(&s) {
                Some(Reference::Tag(t)) => prop_assert!(valid_tag(&t)),
                Some(Reference::Digest(d)) => prop_assert_eq!(d.to_string(), s),
                None => {}
            }
        }

        #[test]
        fn valid_digests_parse(hex in "[0-9a-f]{64}") {
            let digest = format!("sha256:{hex}");
            prop_assert!(parse_digest(&digest).is_some());
        }

        #[test]
        fn query_strings_never_panic(q in any::<String>(), n in any::<u64>()) {
            let pairs = query_pairs(Some(&q));
            let _ = query_value(&pairs, "n");
            let encoded = percent_encode(&q);
            prop_assert_eq!(percent_decode(&encoded), Some(q.clone()));
            let pairs = query_pairs(Some(&format!("n={n}&last={encoded}")));
            prop_assert_eq!(query_value(&pairs, "last"), Some(q.as_str()));
        }

        #[test]
        fn ranges_stay_inside_the_blob(
            header in prop_oneof![
                any::<String>(),
                "bytes= ?[0-9]{0,21} ?- ?[0-9]{0,21}",
                "bytes=[0-9]{0,3}-[0-9]{0,3}(,[0-9]{0,3}-[0-9]{0,3})?",
            ],
            size in prop_oneof![Just(0u64), 0u64..2000, Just(u64::MAX)],
        ) {
            match resolve_range(Some(&header), size) {
                ByteRange::Part(r) => {
                    prop_assert!(r.start < r.end);
                    prop_assert!(r.end <= size);
                }
                ByteRange::Whole | ByteRange::Unsatisfiable => {}
            }
        }

        #[test]
        fn content_ranges_are_ordered(header in prop_oneof![
            any::<String>(),
            "(bytes )?[0-9]{0,21}-[0-9]{0,21}(/[0-9*]{0,5})?",
        ]) {
            if let Some((a, b)) = parse_content_range(&header) {
                prop_assert!(a <= b);
            }
        }
    }
}
