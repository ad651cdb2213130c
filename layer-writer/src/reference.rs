//! Image references as Docker writes them, `[DOMAIN/]PATH[:TAG][@DIGEST]`,
//! read in one place for every crate (`docker_driver::reference`
//! re-exports this module).
//!
//! The rules are the distribution project's (`reference/normalize.go`, as
//! Docker and containerd apply them): the tag is after the last `:` that
//! follows the last `/`, so a registry's port is no tag
//! (`localhost:5000/a:b` is `localhost:5000/a` tagged `b`); a digest
//! follows `@`; the first path component is a domain when it holds a `.`
//! or a `:` or is `localhost`, else the name is Docker Hub's, whose
//! one-component names are under `library/`.
//!
//! Nothing is validated: the names read here come from a daemon, which
//! checked them, or from a user, whom the daemon answers. (`oci-spec`'s
//! `distribution::Reference` applies the same rules but refuses what its
//! grammar does not allow, adds `latest` where no tag is written, and keeps
//! no short, "familiar" form.)

/// The tag a reference without tag or digest means.
pub const DEFAULT_TAG: &str = "latest";

/// Docker Hub's domain, as fully qualified names carry it.
const DOCKER_HUB: &str = "docker.io";
/// The Docker Hub namespace of one-component names.
const OFFICIAL: &str = "library";

/// A reference split into its parts, as written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reference<'a> {
    name: &'a str,
    tag: Option<&'a str>,
    digest: Option<&'a str>,
}

impl<'a> Reference<'a> {
    /// Splits `reference` (never fails: see the module's docs).
    pub fn parse(reference: &'a str) -> Self {
        let (rest, digest) = match reference.split_once('@') {
            Some((rest, digest)) => (rest, Some(digest)),
            None => (reference, None),
        };
        let last = rest.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match rest[last..].rfind(':') {
            Some(i) => (&rest[..last + i], Some(&rest[last + i + 1..])),
            None => (rest, None),
        };
        Self { name, tag, digest }
    }

    /// The repository as written, without tag and digest:
    /// `localhost:5000/a` for `localhost:5000/a:b`, `a` for `a@sha256:…`.
    pub fn name(&self) -> &'a str {
        self.name
    }

    /// The tag, when one is written.
    pub fn tag(&self) -> Option<&'a str> {
        self.tag
    }

    /// The digest (`sha256:…`), when one is written.
    pub fn digest(&self) -> Option<&'a str> {
        self.digest
    }

    /// The registry the name starts with (`localhost:5000`, `docker.io`,
    /// `quay.io`); `None` for a Docker Hub name written short (`a/b`, `b`).
    pub fn domain(&self) -> Option<&'a str> {
        let (first, _) = self.name.split_once('/')?;
        (first.contains('.') || first.contains(':') || first == "localhost").then_some(first)
    }

    /// The repository's path on its registry: without the domain, and on
    /// Docker Hub with `library/` before a one-component name (`demo` and
    /// `docker.io/demo` → `library/demo`, `localhost:5000/x/y` → `x/y`,
    /// `localhost:5000/x` → `x`).
    pub fn registry_path(&self) -> String {
        let (domain, path) = match self.domain() {
            Some(domain) => (domain, &self.name[domain.len() + 1..]),
            None => (DOCKER_HUB, self.name),
        };
        if domain == DOCKER_HUB && !path.contains('/') {
            format!("{OFFICIAL}/{path}")
        } else {
            path.to_owned()
        }
    }

    /// The tag, or [`DEFAULT_TAG`] when none (or an empty one) is written.
    pub fn tag_or_default(&self) -> &'a str {
        self.tag.filter(|t| !t.is_empty()).unwrap_or(DEFAULT_TAG)
    }
}

/// `name:tag` into `name` and `tag`; `None` for a digest reference, a name
/// without a tag, or an empty name or tag.
pub fn split_tag(reference: &str) -> Option<(&str, &str)> {
    let r = Reference::parse(reference);
    match (r.name, r.tag, r.digest) {
        (name, Some(tag), None) if !name.is_empty() && !tag.is_empty() => Some((name, tag)),
        _ => None,
    }
}

/// The repository of a tag or digest reference ([`Reference::name`]).
pub fn repository(reference: &str) -> &str {
    Reference::parse(reference).name
}

/// `name` → `name:latest`; references with a tag or digest unchanged.
pub fn with_default_tag(reference: &str) -> String {
    let r = Reference::parse(reference);
    if r.tag.is_some() || r.digest.is_some() {
        reference.to_owned()
    } else {
        format!("{reference}:{DEFAULT_TAG}")
    }
}

/// `reference` fully qualified, as containerd names images:
/// `docker.io/library/demo:latest` for `demo:latest`, `docker.io/a/b:1` for
/// `a/b:1`; a name with a domain unchanged.
pub fn normalized(reference: &str) -> String {
    let r = Reference::parse(reference);
    match r.domain() {
        Some(_) => reference.to_owned(),
        None if r.name.contains('/') => format!("{DOCKER_HUB}/{reference}"),
        None => format!("{DOCKER_HUB}/{OFFICIAL}/{reference}"),
    }
}

/// `tag` in the short form the Docker CLI shows and `docker save` writes:
/// `docker.io/library/x:1` is `x:1`, `docker.io/a/x:1` is `a/x:1` (Podman
/// lists names fully qualified); other names are kept as they are.
pub fn familiar_tag(tag: &str) -> String {
    let Some(rest) = tag.strip_prefix("docker.io/").filter(|r| !r.is_empty()) else {
        return tag.to_owned();
    };
    let rest = rest
        .strip_prefix("library/")
        .filter(|r| !r.contains('/'))
        .unwrap_or(rest);
    rest.to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";

    #[track_caller]
    fn check(reference: &str, name: &str, tag: Option<&str>, digest: Option<&str>) {
        let r = Reference::parse(reference);
        assert_eq!(
            (r.name(), r.tag(), r.digest()),
            (name, tag, digest),
            "{reference}"
        );
    }

    #[test]
    fn parts() {
        check("busybox", "busybox", None, None);
        check("busybox:1", "busybox", Some("1"), None);
        check("a/b:v2", "a/b", Some("v2"), None);
        check("localhost:5000/a:b", "localhost:5000/a", Some("b"), None);
        check("localhost:5000/a", "localhost:5000/a", None, None);
        check(
            "127.0.0.1:5000/x/y:t",
            "127.0.0.1:5000/x/y",
            Some("t"),
            None,
        );
        check(&format!("a@{D}"), "a", None, Some(D));
        check(&format!("a:1@{D}"), "a", Some("1"), Some(D));
        check(
            &format!("localhost:5000/a@{D}"),
            "localhost:5000/a",
            None,
            Some(D),
        );
        check("a:", "a", Some(""), None);
        check("", "", None, None);
    }

    #[track_caller]
    fn check_registry(reference: &str, domain: Option<&str>, path: &str, tag: &str) {
        let r = Reference::parse(reference);
        assert_eq!(
            (r.domain(), r.registry_path().as_str(), r.tag_or_default()),
            (domain, path, tag),
            "{reference}"
        );
    }

    #[test]
    fn registry_paths() {
        check_registry("demo", None, "library/demo", "latest");
        check_registry("demo:1", None, "library/demo", "1");
        check_registry("wtest/demo", None, "wtest/demo", "latest");
        check_registry("docker.io/demo:1", Some("docker.io"), "library/demo", "1");
        check_registry(
            "docker.io/library/demo:1",
            Some("docker.io"),
            "library/demo",
            "1",
        );
        check_registry("localhost:5000/a:b", Some("localhost:5000"), "a", "b");
        check_registry(
            "localhost:5000/x/y",
            Some("localhost:5000"),
            "x/y",
            "latest",
        );
        check_registry("localhost/x:1", Some("localhost"), "x", "1");
        check_registry("quay.io/a/b:2", Some("quay.io"), "a/b", "2");
        check_registry(&format!("a@{D}"), None, "library/a", "latest");
        check_registry("a:", None, "library/a", "latest");
        // A dot or colon makes a domain only before a `/`.
        check_registry("test.com:5000", None, "library/test.com", "5000");
    }

    #[test]
    fn tags_split() {
        assert_eq!(split_tag("a/b:1"), Some(("a/b", "1")));
        assert_eq!(
            split_tag("localhost:5000/a:v2"),
            Some(("localhost:5000/a", "v2"))
        );
        assert_eq!(split_tag("localhost:5000/a"), None);
        assert_eq!(split_tag("busybox"), None);
        assert_eq!(split_tag(":x"), None);
        assert_eq!(split_tag("a:"), None);
        assert_eq!(split_tag(&format!("a@{D}")), None);
        assert_eq!(split_tag(&format!("a:1@{D}")), None);
    }

    #[test]
    fn repositories_and_default_tags() {
        assert_eq!(repository("busybox:latest"), "busybox");
        assert_eq!(repository("127.0.0.1:5000/x:t"), "127.0.0.1:5000/x");
        assert_eq!(repository("127.0.0.1:5000/x"), "127.0.0.1:5000/x");
        assert_eq!(repository("127.0.0.1:5000/x@sha256:00"), "127.0.0.1:5000/x");
        assert_eq!(
            with_default_tag("127.0.0.1:5000/x"),
            "127.0.0.1:5000/x:latest"
        );
        assert_eq!(with_default_tag("busybox"), "busybox:latest");
        assert_eq!(with_default_tag("x:1"), "x:1");
        assert_eq!(with_default_tag(&format!("x@{D}")), format!("x@{D}"));
    }

    #[test]
    fn normalized_names() {
        assert_eq!(normalized("demo:latest"), "docker.io/library/demo:latest");
        assert_eq!(normalized("a/b:1"), "docker.io/a/b:1");
        assert_eq!(normalized("localhost:5000/b:1"), "localhost:5000/b:1");
        assert_eq!(normalized("localhost/b:1"), "localhost/b:1");
        assert_eq!(normalized("docker.io/library/b:1"), "docker.io/library/b:1");
        assert_eq!(
            normalized("test.com:5000"),
            "docker.io/library/test.com:5000"
        );
    }

    #[test]
    fn familiar_tags() {
        assert_eq!(familiar_tag("docker.io/library/x:1"), "x:1");
        assert_eq!(familiar_tag("docker.io/a/x:1"), "a/x:1");
        assert_eq!(familiar_tag("docker.io/library/a/x:1"), "library/a/x:1");
        assert_eq!(familiar_tag("docker.io/library/x"), "x");
        assert_eq!(familiar_tag("localhost/x:1"), "localhost/x:1");
        assert_eq!(familiar_tag("x:1"), "x:1");
        assert_eq!(familiar_tag("127.0.0.1:5000/x:1"), "127.0.0.1:5000/x:1");
        assert_eq!(familiar_tag("docker.io/"), "docker.io/");
        assert_eq!(familiar_tag("docker.iox/a:1"), "docker.iox/a:1");
        assert_eq!(
            familiar_tag(&format!("docker.io/library/x@{D}")),
            format!("x@{D}")
        );
    }
}
