//! What a user may type where an image or layer is expected, checked
//! before any daemon call, so that a mistake is named with the rule it
//! breaks instead of coming back as the daemon's `invalid reference
//! format` (or, for an empty string, an HTTP redirect).
//!
//! An ID (`sha256:<hex>` or hex digits, full or short) is always accepted.
//! A name follows the distribution project's grammar
//! (`reference/regexp.go`, which Docker and Podman apply):
//! `[DOMAIN/]PATH[:TAG][@DIGEST]`, the path lowercase components
//! `[a-z0-9]+` joined by `.`, `_`, `__` or dashes and separated by `/`, the
//! tag up to 128 of `[A-Za-z0-9_.-]` not starting with `.` or `-`, the digest
//! `ALGORITHM:HEX`, the whole name at most 255 characters.

/// Why a reference is refused before the daemon is asked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ReferenceError {
    /// Nothing was typed (a script's empty variable, say).
    #[error(
        "an empty image reference was given (an empty variable in a script?): name an image, an image ID or a layer"
    )]
    Empty,
    /// `<missing>` copied from `docker history`, which shows it for the
    /// rows without an image ID of their own.
    #[error(
        "{reference:?} is what `docker history` shows for a row without an image ID: name the image and pick the layer with --index N (`dlgrab --list IMAGE` numbers them)"
    )]
    HistoryPlaceholder {
        /// The reference as typed.
        reference: String,
    },
    /// The reference breaks a rule of the reference grammar.
    #[error("{reference:?} is not a valid image reference: {rule}")]
    Invalid {
        /// The reference as typed.
        reference: String,
        /// The rule it breaks, and what to type instead where that is clear.
        rule: String,
    },
}

/// Checks `what`, a layer or image as a user typed it: an ID or diff ID
/// (full or short, with or without `sha256:`), or an image name with its tag
/// or digest.
pub fn check_typed(what: &str) -> Result<(), ReferenceError> {
    if what.is_empty() {
        return Err(ReferenceError::Empty);
    }
    if what == "<missing>" {
        return Err(ReferenceError::HistoryPlaceholder {
            reference: what.to_owned(),
        });
    }
    if !matches!(super::classify(what), super::Typed::Name) {
        return Ok(());
    }
    broken_rule(what).map_or(Ok(()), |rule| {
        Err(ReferenceError::Invalid {
            reference: what.to_owned(),
            rule,
        })
    })
}

/// The longest name the grammar allows (domain and path together).
const NAME_MAX: usize = 255;
/// The longest tag.
const TAG_MAX: usize = 128;

/// The first rule `reference` breaks, as a message; `None` when it is valid.
fn broken_rule(reference: &str) -> Option<String> {
    if let Some(c) = reference
        .chars()
        .find(|c| c.is_whitespace() || c.is_control())
    {
        return Some(format!(
            "it holds {c:?}; a reference has no spaces or control characters (quoting left over from a script?)"
        ));
    }
    let parts = super::Reference::parse(reference);
    let (name, tag, digest) = (parts.name(), parts.tag(), parts.digest());
    if name.is_empty() {
        return Some("the repository name before the tag or digest is missing".to_owned());
    }
    if name.len() > NAME_MAX {
        return Some(format!(
            "the repository name is {} characters long, at most {NAME_MAX} are allowed",
            name.len()
        ));
    }
    let mut components: Vec<&str> = name.split('/').collect();
    let first = components[0];
    if components.len() > 1 && (first.contains('.') || first.contains(':') || first == "localhost")
    {
        if let Some(rule) = domain_rule(first) {
            return Some(rule);
        }
        components.remove(0);
    }
    for component in &components {
        if let Some(rule) = component_rule(component, name) {
            return Some(rule);
        }
    }
    if components
        .iter()
        .any(|c| c.bytes().any(|b| b.is_ascii_uppercase()))
    {
        return Some(format!(
            "repository names are lowercase: try \"{}{}\"",
            name.to_ascii_lowercase(),
            &reference[name.len()..]
        ));
    }
    if let Some(tag) = tag
        && let Some(rule) = tag_rule(tag)
    {
        return Some(rule);
    }
    digest.and_then(digest_rule)
}

/// What is wrong with a registry host (`host[:port]`), if anything.
fn domain_rule(domain: &str) -> Option<String> {
    let (host, port) = match domain.strip_prefix('[') {
        // An IPv6 address: `[::1]:5000`.
        Some(v6) => match v6.split_once(']') {
            Some((addr, rest)) if addr.parse::<std::net::Ipv6Addr>().is_ok() => {
                (None, rest.strip_prefix(':'))
            }
            _ => {
                return Some(format!(
                    "the registry address {domain:?} is not a valid IPv6 address in brackets"
                ));
            }
        },
        None => match domain.split_once(':') {
            Some((host, port)) => (Some(host), Some(port)),
            None => (Some(domain), None),
        },
    };
    if let Some(port) = port
        && (port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()))
    {
        return Some(format!(
            "the registry {domain:?} has the port {port:?}; a port is digits only"
        ));
    }
    let valid_label = |label: &str| {
        !label.is_empty()
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !label.starts_with('-')
            && !label.ends_with('-')
    };
    if let Some(host) = host
        && !host.split('.').all(valid_label)
    {
        return Some(format!(
            "the registry host {host:?} is not a host name (letters, digits and dashes, in labels separated by dots)"
        ));
    }
    None
}

/// What is wrong with one path component of `name`, if anything.
fn component_rule(component: &str, name: &str) -> Option<String> {
    if component.is_empty() {
        return Some(format!(
            "the name {name:?} has an empty path component (a '/' at an end, or two in a row)"
        ));
    }
    if let Some(c) = component
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Some(format!(
            "{c:?} cannot be in a repository name, which holds a-z, 0-9 and the separators '.', '_', '__' and '-'"
        ));
    }
    let separator = |b: u8| matches!(b, b'.' | b'_' | b'-');
    let bytes = component.as_bytes();
    let bad_ends = separator(bytes[0]) || separator(bytes[bytes.len() - 1]);
    let bad_runs = bytes
        .windows(2)
        .any(|w| separator(w[0]) && separator(w[1]) && !(w == b"__" || w == b"--"))
        || component.contains("___")
        || component.contains("..");
    if bad_ends || bad_runs {
        return Some(format!(
            "the component {component:?} of the name must start and end with a letter or digit, with one '.', '_', '__' or dashes between them"
        ));
    }
    None
}

/// What is wrong with a tag, if anything.
fn tag_rule(tag: &str) -> Option<String> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-');
    if tag.is_empty() {
        return Some("the tag after ':' is empty: drop the ':' or name a tag".to_owned());
    }
    if tag.len() > TAG_MAX {
        return Some(format!(
            "the tag is {} characters long, at most {TAG_MAX} are allowed",
            tag.len()
        ));
    }
    if let Some(c) = tag.chars().find(|c| !allowed(*c)) {
        return Some(format!(
            "{c:?} cannot be in a tag, which holds A-Z, a-z, 0-9, '_', '.' and '-'"
        ));
    }
    if tag.starts_with(['.', '-']) {
        return Some(format!(
            "the tag {tag:?} starts with {:?}; a tag starts with a letter, a digit or '_'",
            &tag[..1]
        ));
    }
    None
}

/// What is wrong with a digest (after `@`), if anything.
fn digest_rule(digest: &str) -> Option<String> {
    let Some((algorithm, hex)) = digest.split_once(':') else {
        return Some(format!(
            "the digest {digest:?} after '@' has no algorithm: write it as sha256:<64 hex digits>"
        ));
    };
    let lower_hex = |s: &str| s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    match algorithm {
        "sha256" if hex.len() == 64 && lower_hex(hex) => None,
        "sha256" => Some(format!(
            "the digest {digest:?} is not sha256: and 64 lowercase hex digits (it has {} characters after sha256:)",
            hex.len()
        )),
        "sha384" if hex.len() == 96 && lower_hex(hex) => None,
        "sha512" if hex.len() == 128 && lower_hex(hex) => None,
        _ => Some(format!(
            "the digest {digest:?} is not sha256: (or sha384:, sha512:) and its hex digits"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: &str = "1111111111111111111111111111111111111111111111111111111111111111";

    #[track_caller]
    fn accepted(what: &str) {
        assert_eq!(check_typed(what), Ok(()), "{what}");
    }

    /// `what` is refused with a message that contains `needle`.
    #[track_caller]
    fn refused(what: &str, needle: &str) {
        let message = check_typed(what).expect_err(what).to_string();
        assert!(message.contains(needle), "{what}: {message}");
    }

    #[test]
    fn ids_and_valid_names_pass() {
        accepted(H);
        accepted(&format!("sha256:{H}"));
        accepted("abc123");
        accepted("sha256:abc");
        accepted("busybox");
        accepted("busybox:1.36");
        accepted("library/busybox:latest");
        accepted("docker.io/library/busybox");
        accepted("localhost/x:1");
        accepted("localhost:5000/a/b-c__d.e:v1_2-3.RC");
        accepted("127.0.0.1:5000/dlgrab-run-x:t");
        accepted("[::1]:5000/x:1");
        accepted("Registry.Example.COM/team/app:Tag");
        accepted(&format!("busybox@sha256:{H}"));
        accepted(&format!("busybox:1@sha256:{H}"));
        accepted("a--b:1");
    }

    #[test]
    fn mistakes_name_their_rule() {
        assert_eq!(check_typed(""), Err(ReferenceError::Empty));
        refused("<missing>", "docker history");
        refused("UPPER:case", "lowercase: try \"upper:case\"");
        refused("me/MyApp", "lowercase: try \"me/myapp\"");
        refused("Me/x@sha256:00", "lowercase: try \"me/x@sha256:00\"");
        refused("busybox:", "tag after ':' is empty");
        refused(":1", "repository name before the tag");
        refused("busybox:-x", "starts with \"-\"");
        refused("busybox:a+b", "'+' cannot be in a tag");
        refused(&format!("busybox:{}", "t".repeat(129)), "at most 128");
        refused("a//b", "empty path component");
        refused("a/", "empty path component");
        refused("a_-b", "start and end with a letter or digit");
        refused("-a", "start and end");
        refused("a b", "no spaces");
        refused("a$b", "'$' cannot be in a repository name");
        refused("busybox@sha256:abc", "64 lowercase hex digits");
        refused("busybox@abc", "no algorithm");
        refused("host:port/x", "a port is digits only");
        refused("bad_host.io/x", "not a host name");
        refused(&"a".repeat(256), "at most 255");
    }
}
