//! Image references, IDs and layers: pure decisions.
//!
//! References (`[DOMAIN/]PATH[:TAG][@DIGEST]`) are read by
//! [`layer_writer::reference`], re-exported here, so that the driver, the
//! writer and dlgrab share one reading; what is the driver's own (what the
//! user typed, which layer a selector picks, whether an untag keeps the
//! image) follows.

pub use layer_writer::reference::*;

mod check;

pub use check::{ReferenceError, check_typed};

use crate::error::DriverError;
use crate::model::{ImageDetails, ImageStore, LayerSelector};

/// What the user typed, as far as its form tells.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Typed {
    /// `sha256:<64 hex>` or 64 hex: an image ID or a diff ID.
    FullDigest(String),
    /// 1 to 63 hex digits, with or without `sha256:`: a short image ID, or
    /// a name made of hex digits.
    HexPrefix(String),
    /// Anything else: a name, a tag or a digest reference.
    Name,
}

pub(crate) fn classify(what: &str) -> Typed {
    let hex = what.strip_prefix("sha256:").unwrap_or(what);
    let is_hex = !hex.is_empty() && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    match (is_hex, hex.len()) {
        (true, 64) => Typed::FullDigest(format!("sha256:{hex}")),
        (true, n) if n < 64 => Typed::HexPrefix(hex.to_owned()),
        _ => Typed::Name,
    }
}

/// `sha256:…` for a diff ID given with or without the prefix.
pub(crate) fn normalize_digest(d: &str) -> String {
    if d.starts_with("sha256:") {
        d.to_owned()
    } else {
        format!("sha256:{d}")
    }
}

/// The layer `selector` picks in `image`, which the caller named `what`.
pub(crate) fn select_layer(
    what: &str,
    image: &ImageDetails,
    selector: &LayerSelector,
) -> Result<usize, DriverError> {
    let no_such = |layer: String| DriverError::NoSuchLayer {
        image: image.id.clone(),
        layer,
    };
    match selector {
        LayerSelector::Top => image
            .diff_ids
            .len()
            .checked_sub(1)
            .ok_or_else(|| no_such("top".into())),
        LayerSelector::Index(i) if *i < image.diff_ids.len() => Ok(*i),
        LayerSelector::Index(i) => Err(DriverError::NoLayerAtIndex {
            reference: what.to_owned(),
            index: *i,
            count: image.diff_ids.len(),
        }),
        LayerSelector::DiffId(d) => {
            let d = normalize_digest(d);
            image
                .diff_ids
                .iter()
                .position(|x| *x == d)
                .ok_or_else(|| no_such(d))
        }
    }
}

/// Among `(id, tagged, diff_ids)` candidates holding `diff_id`: a tagged
/// one first, then the one with the fewest layers, then the smallest ID.
pub(crate) fn choose_for_diff_id<'a>(
    candidates: impl IntoIterator<Item = (&'a str, bool, &'a [String])>,
    diff_id: &str,
) -> Option<(&'a str, usize)> {
    candidates
        .into_iter()
        .filter_map(|(id, tagged, layers)| {
            let index = layers.iter().position(|l| l == diff_id)?;
            Some(((!tagged, layers.len(), id), index))
        })
        .min_by(|a, b| a.0.cmp(&b.0))
        .map(|((_, _, id), index)| (id, index))
}

/// Whether deleting the tag `tag` of an image leaves the image in place.
///
/// Classic store (moby `daemon/images/image_delete.go`): removing the last
/// tag of a repository also removes that repository's digest references; the
/// image goes when no reference is left, unless child images hold it (it then
/// stays as an untagged parent). Containerd store: each name is an image
/// record; the content goes with the last name, so another tag must remain.
pub(crate) fn untag_keeps_image(
    store: &ImageStore,
    repo_tags: &[String],
    repo_digests: &[String],
    tag: &str,
    has_children: bool,
) -> bool {
    let others: Vec<&String> = repo_tags.iter().filter(|t| *t != tag).collect();
    match store {
        ImageStore::Containerd => !others.is_empty(),
        ImageStore::Classic { .. } => {
            let repo = repository(tag);
            let repo_keeps_tag = others.iter().any(|t| repository(t) == repo);
            let digests_left = repo_digests
                .iter()
                .filter(|d| repo_keeps_tag || repository(d) != repo)
                .count();
            has_children || !others.is_empty() || digests_left > 0
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: &str = "1111111111111111111111111111111111111111111111111111111111111111";

    #[track_caller]
    fn check_classify(what: &str, expected: Typed) {
        assert_eq!(classify(what), expected, "{what}");
    }

    #[test]
    fn classifies() {
        check_classify(H, Typed::FullDigest(format!("sha256:{H}")));
        check_classify(
            &format!("sha256:{H}"),
            Typed::FullDigest(format!("sha256:{H}")),
        );
        check_classify("abc123", Typed::HexPrefix("abc123".into()));
        check_classify("sha256:abc", Typed::HexPrefix("abc".into()));
        check_classify("busybox", Typed::Name);
        check_classify("ABC", Typed::Name);
        check_classify("busybox:1", Typed::Name);
        check_classify(&format!("busybox@sha256:{H}"), Typed::Name);
        check_classify("sha256:", Typed::Name);
    }

    #[track_caller]
    fn check_repo(reference: &str, repo: &str) {
        assert_eq!(repository(reference), repo, "{reference}");
    }

    #[test]
    fn repositories() {
        check_repo("busybox:latest", "busybox");
        check_repo("127.0.0.1:5000/dlgrab-x:t", "127.0.0.1:5000/dlgrab-x");
        check_repo("127.0.0.1:5000/dlgrab-x", "127.0.0.1:5000/dlgrab-x");
        check_repo("127.0.0.1:5000/x@sha256:00", "127.0.0.1:5000/x");
        assert_eq!(
            with_default_tag("127.0.0.1:5000/x"),
            "127.0.0.1:5000/x:latest"
        );
        assert_eq!(with_default_tag("x:1"), "x:1");
    }

    fn v(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    #[track_caller]
    fn check_untag(store: &ImageStore, tags: &[&str], digests: &[&str], children: bool, ok: bool) {
        assert_eq!(
            untag_keeps_image(store, &v(tags), &v(digests), "r/x:t", children),
            ok
        );
    }

    #[test]
    fn untag_safety() {
        let classic = ImageStore::Classic {
            driver: "overlay2".into(),
        };
        let c = ImageStore::Containerd;
        check_untag(&classic, &["r/x:t"], &[], false, false);
        check_untag(&classic, &["r/x:t"], &[], true, true);
        check_untag(&classic, &["r/x:t", "app:1"], &[], false, true);
        // The repository's digests go with its last tag.
        check_untag(&classic, &["r/x:t"], &["r/x@sha256:00"], false, false);
        check_untag(&classic, &["r/x:t"], &["busybox@sha256:00"], false, true);
        check_untag(
            &classic,
            &["r/x:t", "r/x:u"],
            &["r/x@sha256:00"],
            false,
            true,
        );
        check_untag(&c, &["r/x:t"], &["busybox@sha256:00"], true, false);
        check_untag(&c, &["r/x:t", "app:1"], &[], false, true);
    }

    #[test]
    fn diff_id_choice() {
        let a = v(&["sha256:1", "sha256:2"]);
        let b = v(&["sha256:1"]);
        let c = v(&["sha256:1", "sha256:2", "sha256:3"]);
        let images = [
            ("a", false, &a[..]),
            ("b", false, &b[..]),
            ("c", true, &c[..]),
        ];
        assert_eq!(choose_for_diff_id(images, "sha256:1"), Some(("c", 0)));
        let images = [("a", false, &a[..]), ("b", false, &b[..])];
        assert_eq!(choose_for_diff_id(images, "sha256:2"), Some(("a", 1)));
        assert_eq!(choose_for_diff_id(images, "sha256:9"), None);
    }

    #[test]
    fn familiar_tags() {
        assert_eq!(familiar_tag("docker.io/library/x:1"), "x:1");
        assert_eq!(familiar_tag("docker.io/a/x:1"), "a/x:1");
        assert_eq!(familiar_tag("docker.io/library/a/x:1"), "library/a/x:1");
        assert_eq!(familiar_tag("localhost/x:1"), "localhost/x:1");
        assert_eq!(familiar_tag("x:1"), "x:1");
        assert_eq!(familiar_tag("127.0.0.1:5000/x:1"), "127.0.0.1:5000/x:1");
    }
}
