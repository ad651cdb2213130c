//! Who may do what: no authentication (the default), HTTP Basic with static
//! users, or Bearer tokens from a built-in token endpoint, as the
//! [distribution token spec] describes and `docker login`, containerd,
//! skopeo and the `oci-client` crate use.
//!
//! Each user holds [`Grant`]s: actions ([`Action::Pull`], [`Action::Push`],
//! [`Action::Delete`]) on a repository, on every repository below a prefix
//! (`team/*`), or on all of them (`*`).
//!
//! - With [`Auth::basic`], every request carries `Authorization: Basic …`;
//!   a request without valid credentials gets `401 UNAUTHORIZED` with
//!   `WWW-Authenticate: Basic realm="…"`, one the user may not make gets
//!   `403 DENIED`.
//! - With [`Auth::bearer`], the registry also serves `GET /token` (Basic
//!   credentials, `?service=…&scope=repository:NAME:pull,push`) and
//!   `POST /token` (an OAuth2 password grant, as containerd sends it, or a
//!   refresh-token grant). Tokens are opaque, HMAC-signed with a key made at
//!   start-up, and expire (access tokens after [`Auth::token_lifetime`],
//!   refresh tokens after a day). A client asking for offline access
//!   (`offline_token=true`, `access_type=offline`), as `docker login` does,
//!   also gets a refresh token, which the Docker CLI keeps as its
//!   `identitytoken`.
//!   Requests without a token get `401` with
//!   `WWW-Authenticate: Bearer realm="…",service="…",scope="…"`.
//!
//! The realm is `http://HOST/token` on the host the request named, also for
//! a request that came in over TLS (the port speaks both): a client that
//! accepts the registry's certificate does not always accept it for the token
//! endpoint. Docker 26 and 28 with the containerd image store are such
//! clients: for an insecure registry they skip verification on the registry's
//! own requests but fetch tokens with Go's default HTTP client, so an
//! `https://` realm on a self-signed certificate fails with `x509: certificate
//! signed by unknown authority`. [`Auth::realm`] sets another realm.
//!
//! ```
//! use shim_registry::auth::{Action, Auth, Grant};
//!
//! let auth = Auth::bearer()
//!     .user("admin", "secret")
//!     .user_with("reader", "pw", [Grant::new("*", &[Action::Pull])])
//!     .user_with("ci", "pw2", [Grant::new("team/*", &[Action::Pull, Action::Push])]);
//! # let _ = shim_registry::Registry::builder().auth(auth);
//! ```
//!
//! [distribution token spec]: https://distribution.github.io/distribution/spec/auth/token/

mod token;

use std::collections::BTreeSet;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use sha2::Sha256;

pub(crate) use token::{TokenRefusal, TokenRequest};

type HmacSha256 = Hmac<Sha256>;

/// The default token lifetime.
const DEFAULT_TOKEN_LIFETIME: Duration = Duration::from_secs(300);
/// The default `service` named in Bearer challenges.
const DEFAULT_SERVICE: &str = "shim-registry";

/// What a user may do to a repository.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Action {
    /// Read blobs, manifests, tags and referrers.
    Pull,
    /// Upload blobs, push manifests and tags.
    Push,
    /// Delete blobs, manifests and tags.
    Delete,
}

impl Action {
    /// The action's name in a token scope (`pull`, `push`, `delete`).
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Pull => "pull",
            Action::Push => "push",
            Action::Delete => "delete",
        }
    }

    /// Parses a scope action; `*` means all of them.
    fn parse(s: &str) -> Vec<Action> {
        match s {
            "pull" => vec![Action::Pull],
            "push" => vec![Action::Push],
            "delete" => vec![Action::Delete],
            "*" => vec![Action::Pull, Action::Push, Action::Delete],
            _ => Vec::new(),
        }
    }
}

/// Actions allowed on the repositories a pattern names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    repository: String,
    actions: BTreeSet<Action>,
}

impl Grant {
    /// `actions` on `repository`: a name (`library/busybox`), a prefix
    /// ending in `/*` (`team/*`: every repository below `team/`), or `*`
    /// (every repository).
    pub fn new(repository: impl Into<String>, actions: &[Action]) -> Self {
        Self {
            repository: repository.into(),
            actions: actions.iter().copied().collect(),
        }
    }

    fn covers(&self, repository: &str) -> bool {
        match self.repository.strip_suffix('*') {
            Some("") => true,
            Some(prefix) if prefix.ends_with('/') => repository.starts_with(prefix),
            _ => self.repository == repository,
        }
    }
}

/// A user with a password and grants.
#[derive(Clone)]
struct User {
    name: String,
    /// HMAC of the password under the registry's key (compared in constant time).
    password_mac: Vec<u8>,
    grants: Vec<Grant>,
}

/// How clients authenticate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scheme {
    None,
    Basic,
    Bearer,
}

/// The authentication a registry asks for; see the [module docs](self).
#[derive(Clone)]
pub struct Auth {
    scheme: Scheme,
    users: Vec<(String, String, Vec<Grant>)>,
    service: String,
    realm: Option<String>,
    token_lifetime: Duration,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth")
            .field("scheme", &self.scheme)
            .field(
                "users",
                &self.users.iter().map(|(n, _, _)| n).collect::<Vec<_>>(),
            )
            .field("service", &self.service)
            .field("realm", &self.realm)
            .field("token_lifetime", &self.token_lifetime)
            .finish()
    }
}

impl Default for Auth {
    fn default() -> Self {
        Self::none()
    }
}

impl Auth {
    fn with_scheme(scheme: Scheme) -> Self {
        Self {
            scheme,
            users: Vec::new(),
            service: DEFAULT_SERVICE.to_owned(),
            realm: None,
            token_lifetime: DEFAULT_TOKEN_LIFETIME,
        }
    }

    /// No authentication: everyone may do everything (the default).
    pub fn none() -> Self {
        Self::with_scheme(Scheme::None)
    }

    /// HTTP Basic authentication of the users added.
    pub fn basic() -> Self {
        Self::with_scheme(Scheme::Basic)
    }

    /// Bearer tokens from the registry's own `/token` endpoint, handed to the
    /// users added (who log in there with Basic credentials or an OAuth2
    /// password grant).
    pub fn bearer() -> Self {
        Self::with_scheme(Scheme::Bearer)
    }

    /// Adds a user who may do everything to every repository.
    pub fn user(self, name: impl Into<String>, password: impl Into<String>) -> Self {
        self.user_with(
            name,
            password,
            [Grant::new(
                "*",
                &[Action::Pull, Action::Push, Action::Delete],
            )],
        )
    }

    /// Adds a user with these grants only.
    pub fn user_with(
        mut self,
        name: impl Into<String>,
        password: impl Into<String>,
        grants: impl IntoIterator<Item = Grant>,
    ) -> Self {
        self.users
            .push((name.into(), password.into(), grants.into_iter().collect()));
        self
    }

    /// The `service` of Bearer challenges and tokens (default `shim-registry`).
    pub fn service(mut self, service: impl Into<String>) -> Self {
        self.service = service.into();
        self
    }

    /// The token endpoint's URL in Bearer challenges (default:
    /// `http://HOST/token`, `HOST` as the request named it, also for requests
    /// over TLS; see the [module docs](self)).
    pub fn realm(mut self, realm: impl Into<String>) -> Self {
        self.realm = Some(realm.into());
        self
    }

    /// How long a token is valid (default 5 minutes).
    pub fn token_lifetime(mut self, lifetime: Duration) -> Self {
        self.token_lifetime = lifetime;
        self
    }

    /// Whether requests must authenticate at all.
    pub fn is_required(&self) -> bool {
        self.scheme != Scheme::None
    }
}

/// What a request needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Need {
    /// Any authenticated user (`/v2/`).
    Login,
    /// An action on a repository.
    Access { repository: String, action: Action },
}

/// Why a request is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// No or bad credentials: 401 with this `WWW-Authenticate`.
    Unauthorized { challenge: String },
    /// Known user, not allowed: 403.
    Denied,
}

/// The checks of one registry: an [`Auth`] with its signing key.
pub(crate) struct Authorizer {
    scheme: Scheme,
    users: Vec<User>,
    service: String,
    realm: Option<String>,
    token_lifetime: Duration,
    key: [u8; 32],
}

impl Authorizer {
    pub(crate) fn new(auth: Auth) -> Self {
        let key: [u8; 32] = rand::random();
        let users = auth
            .users
            .into_iter()
            .map(|(name, password, grants)| User {
                password_mac: mac(&key, password.as_bytes()),
                name,
                grants,
            })
            .collect();
        Self {
            scheme: auth.scheme,
            users,
            service: auth.service,
            realm: auth.realm,
            token_lifetime: auth.token_lifetime,
            key,
        }
    }

    pub(crate) fn is_required(&self) -> bool {
        self.scheme != Scheme::None
    }

    pub(crate) fn serves_tokens(&self) -> bool {
        self.scheme == Scheme::Bearer
    }

    /// Checks a request's `Authorization` against what it needs. `origin` is
    /// `scheme://host` of the request (its host is the default Bearer
    /// realm's).
    pub(crate) fn check(
        &self,
        authorization: Option<&str>,
        need: &Need,
        origin: &str,
    ) -> Result<(), Refusal> {
        match self.scheme {
            Scheme::None => Ok(()),
            Scheme::Basic => {
                let user = authorization
                    .and_then(|a| self.basic_user(a))
                    .ok_or_else(|| Refusal::Unauthorized {
                        challenge: self.basic_challenge(),
                    })?;
                match need {
                    Need::Login => Ok(()),
                    Need::Access { repository, action } => {
                        if allowed(&user.grants, repository, *action) {
                            Ok(())
                        } else {
                            Err(Refusal::Denied)
                        }
                    }
                }
            }
            Scheme::Bearer => {
                let unauthorized = |error: Option<&str>| Refusal::Unauthorized {
                    challenge: self.bearer_challenge(origin, need, error),
                };
                let Some(raw) = authorization.and_then(|a| strip_scheme(a, "bearer")) else {
                    return Err(unauthorized(None));
                };
                let claims = token::verify(&self.key, raw.trim(), now_secs())
                    .filter(token::Claims::is_access)
                    .ok_or_else(|| unauthorized(Some("invalid_token")))?;
                match need {
                    Need::Login => Ok(()),
                    Need::Access { repository, action } => {
                        if claims.allows(repository, *action) {
                            Ok(())
                        } else {
                            Err(unauthorized(Some("insufficient_scope")))
                        }
                    }
                }
            }
        }
    }

    /// The user whose `Basic` credentials these are, if the password matches.
    fn basic_user(&self, authorization: &str) -> Option<&User> {
        let encoded = strip_scheme(authorization, "basic")?;
        let decoded = STANDARD.decode(encoded.trim()).ok()?;
        let decoded = String::from_utf8(decoded).ok()?;
        let (name, password) = decoded.split_once(':')?;
        self.login(name, password)
    }

    /// The user named `name` if `password` is theirs.
    fn login(&self, name: &str, password: &str) -> Option<&User> {
        let user = self.users.iter().find(|u| u.name == name)?;
        let mut m = HmacSha256::new_from_slice(&self.key).ok()?;
        m.update(password.as_bytes());
        m.verify_slice(&user.password_mac).ok().map(|()| user)
    }

    fn basic_challenge(&self) -> String {
        format!("Basic realm=\"{}\"", self.service)
    }

    fn bearer_challenge(&self, origin: &str, need: &Need, error: Option<&str>) -> String {
        // Plain HTTP whatever the request's scheme: see the module docs.
        let realm = self.realm.clone().unwrap_or_else(|| {
            let host = origin.split_once("://").map_or(origin, |(_, host)| host);
            format!("http://{host}/token")
        });
        let mut challenge = format!("Bearer realm=\"{realm}\",service=\"{}\"", self.service);
        if let Need::Access { repository, action } = need {
            // Clients ask for pull with push, as registries challenge them.
            let actions = match action {
                Action::Pull => "pull",
                Action::Push => "pull,push",
                Action::Delete => "delete",
            };
            challenge.push_str(&format!(",scope=\"repository:{repository}:{actions}\""));
        }
        if let Some(error) = error {
            challenge.push_str(&format!(",error=\"{error}\""));
        }
        challenge
    }
}

/// Whether `grants` allow `action` on `repository`.
fn allowed(grants: &[Grant], repository: &str, action: Action) -> bool {
    grants
        .iter()
        .any(|g| g.covers(repository) && g.actions.contains(&action))
}

/// `value` without its case-insensitive `scheme ` prefix.
fn strip_scheme<'a>(value: &'a str, scheme: &str) -> Option<&'a str> {
    let (s, rest) = value.trim_start().split_once(' ')?;
    s.eq_ignore_ascii_case(scheme).then_some(rest)
}

fn mac(key: &[u8], data: &[u8]) -> Vec<u8> {
    let mut m = HmacSha256::new_from_slice(key).expect("hmac takes any key length");
    m.update(data);
    m.finalize().into_bytes().to_vec()
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn basic(user: &str, password: &str) -> String {
        format!("Basic {}", STANDARD.encode(format!("{user}:{password}")))
    }

    fn access(repository: &str, action: Action) -> Need {
        Need::Access {
            repository: repository.to_owned(),
            action,
        }
    }

    #[test]
    fn grants_cover_names_prefixes_and_all() {
        assert!(Grant::new("*", &[]).covers("a/b"));
        assert!(Grant::new("a/*", &[]).covers("a/b/c"));
        assert!(!Grant::new("a/*", &[]).covers("ab"));
        assert!(Grant::new("a", &[]).covers("a"));
        assert!(!Grant::new("a", &[]).covers("a/b"));
        assert!(!Grant::new("a*", &[]).covers("ab"));
    }

    #[test]
    fn basic_checks_password_and_grants() {
        let a = Authorizer::new(Auth::basic().user("u", "p").user_with(
            "r",
            "q",
            [Grant::new("lib/*", &[Action::Pull])],
        ));
        let o = "http://h";
        assert!(a.check(Some(&basic("u", "p")), &Need::Login, o).is_ok());
        assert!(matches!(
            a.check(Some(&basic("u", "x")), &Need::Login, o),
            Err(Refusal::Unauthorized { challenge }) if challenge.starts_with("Basic realm=")
        ));
        assert!(a.check(None, &Need::Login, o).is_err());
        assert!(a.check(Some("Basic !!!"), &Need::Login, o).is_err());
        assert!(
            a.check(Some(&basic("r", "q")), &access("lib/x", Action::Pull), o)
                .is_ok()
        );
        assert_eq!(
            a.check(Some(&basic("r", "q")), &access("lib/x", Action::Push), o),
            Err(Refusal::Denied)
        );
        assert_eq!(
            a.check(Some(&basic("r", "q")), &access("other", Action::Pull), o),
            Err(Refusal::Denied)
        );
    }

    #[test]
    fn bearer_challenge_names_realm_service_and_scope() {
        let a = Authorizer::new(Auth::bearer().user("u", "p"));
        let Err(Refusal::Unauthorized { challenge }) =
            a.check(None, &access("x/y", Action::Push), "https://127.0.0.1:5")
        else {
            panic!("no challenge");
        };
        assert_eq!(
            challenge,
            "Bearer realm=\"http://127.0.0.1:5/token\",service=\"shim-registry\",scope=\"repository:x/y:pull,push\""
        );
        let a = Authorizer::new(Auth::bearer().realm("https://auth.test/t"));
        let Err(Refusal::Unauthorized { challenge }) = a.check(None, &Need::Login, "http://h:1")
        else {
            panic!("no challenge");
        };
        assert_eq!(
            challenge,
            "Bearer realm=\"https://auth.test/t\",service=\"shim-registry\""
        );
    }
}
