//! Bearer tokens: the `/token` endpoint's requests, and signed, expiring
//! tokens listing the repositories and actions they grant.
//!
//! A client asking for offline access (`offline_token=true` on `GET`,
//! `access_type=offline` in a `POST` form) also gets a refresh token, which
//! the `refresh_token` grant trades for access tokens of the same user. That
//! is what `docker login` asks for: dockerd hands the refresh token to the
//! CLI, which stores it as the registry's `identitytoken` instead of the
//! password, and pushes and pulls use it from then on.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::Mac;
use serde::{Deserialize, Serialize};

use super::{Action, Authorizer, HmacSha256, Refusal, allowed, now_secs};

/// A token's prefix (a version, should the format change).
const PREFIX: &str = "shim1.";
/// How long a refresh token is valid.
const REFRESH_LIFETIME_SECS: u64 = 24 * 60 * 60;

/// What a token grants, signed.
#[derive(Debug, Serialize, Deserialize)]
pub(super) struct Claims {
    /// The user.
    sub: String,
    /// Issued at (seconds since the epoch).
    iat: u64,
    /// Expires at.
    exp: u64,
    /// Repository name → actions.
    access: Vec<(String, Vec<Action>)>,
    /// A refresh token: it grants nothing but new access tokens.
    #[serde(default)]
    refresh: bool,
}

impl Claims {
    /// Whether this access token allows `action` on `repository` (a refresh
    /// token allows nothing).
    pub(super) fn allows(&self, repository: &str, action: Action) -> bool {
        !self.refresh
            && self
                .access
                .iter()
                .any(|(name, actions)| name == repository && actions.contains(&action))
    }

    /// Whether this is an access token (any registry request needs one).
    pub(super) fn is_access(&self) -> bool {
        !self.refresh
    }
}

impl Serialize for Action {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Action {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        match Action::parse(&s).as_slice() {
            [one] => Ok(*one),
            _ => Err(serde::de::Error::custom("unknown action")),
        }
    }
}

/// Signs claims: `shim1.<base64url json>.<base64url hmac>`.
fn sign(key: &[u8], claims: &Claims) -> String {
    let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(claims).expect("claims serialize"));
    let mut m = HmacSha256::new_from_slice(key).expect("hmac takes any key length");
    m.update(payload.as_bytes());
    let signature = URL_SAFE_NO_PAD.encode(m.finalize().into_bytes());
    format!("{PREFIX}{payload}.{signature}")
}

/// The claims of a token signed with `key` and not expired at `now`.
pub(super) fn verify(key: &[u8], token: &str, now: u64) -> Option<Claims> {
    let (payload, signature) = token.strip_prefix(PREFIX)?.split_once('.')?;
    let signature = URL_SAFE_NO_PAD.decode(signature).ok()?;
    let mut m = HmacSha256::new_from_slice(key).ok()?;
    m.update(payload.as_bytes());
    m.verify_slice(&signature).ok()?;
    let claims: Claims = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).ok()?).ok()?;
    (claims.exp > now).then_some(claims)
}

/// A request for a token, from `GET /token` or `POST /token`.
#[derive(Debug, Default)]
pub(crate) struct TokenRequest {
    /// From Basic credentials or the form's `username`/`password`.
    pub(crate) credentials: Option<(String, String)>,
    /// The form's `refresh_token` of a `refresh_token` grant.
    pub(crate) refresh_token: Option<String>,
    /// The `scope` values (each may hold several scopes separated by spaces).
    pub(crate) scopes: Vec<String>,
    /// Whether a refresh token is asked for too (`offline_token=true`,
    /// `access_type=offline`).
    pub(crate) offline: bool,
    /// A `grant_type` other than `password` and `refresh_token`.
    pub(crate) unsupported_grant: Option<String>,
}

impl TokenRequest {
    /// From `GET /token`'s query pairs and `Authorization` header.
    pub(crate) fn from_get(query: &[(String, String)], authorization: Option<&str>) -> Self {
        let credentials = authorization
            .and_then(|a| super::strip_scheme(a, "basic"))
            .and_then(|b| super::STANDARD.decode(b.trim()).ok())
            .and_then(|b| String::from_utf8(b).ok())
            .and_then(|s| s.split_once(':').map(|(u, p)| (u.to_owned(), p.to_owned())));
        Self {
            credentials,
            refresh_token: None,
            scopes: values(query, "scope"),
            offline: values(query, "offline_token").iter().any(|v| v == "true"),
            unsupported_grant: None,
        }
    }

    /// From `POST /token`'s form pairs (an OAuth2 password or refresh-token
    /// grant).
    pub(crate) fn from_form(form: &[(String, String)], authorization: Option<&str>) -> Self {
        let mut request = Self::from_get(form, authorization);
        let first = |key: &str| values(form, key).into_iter().next();
        request.offline = first("access_type").as_deref() == Some("offline");
        match first("grant_type").as_deref().unwrap_or("password") {
            "password" => {
                if let (Some(u), Some(p)) = (first("username"), first("password")) {
                    request.credentials = Some((u, p));
                }
            }
            "refresh_token" => {
                // The refresh token alone says who the user is.
                request.credentials = None;
                request.refresh_token = Some(first("refresh_token").unwrap_or_default());
            }
            other => request.unsupported_grant = Some(other.to_owned()),
        }
        request
    }
}

fn values(pairs: &[(String, String)], key: &str) -> Vec<String> {
    pairs
        .iter()
        .filter(|(k, _)| k == key)
        .map(|(_, v)| v.clone())
        .collect()
}

/// Why no token was issued.
#[derive(Debug)]
pub(crate) enum TokenRefusal {
    /// Bad or missing credentials, or a refresh token not ours or expired:
    /// 401 with this challenge.
    Unauthorized(Refusal),
    /// A grant type other than `password` and `refresh_token`.
    UnsupportedGrant(String),
}

impl Authorizer {
    /// Issues a token for the scopes asked that the user holds (scopes the
    /// user does not hold are left out, as the token spec says), with a
    /// refresh token when offline access is asked; the JSON answer of the
    /// token endpoint.
    pub(crate) fn issue(&self, request: &TokenRequest) -> Result<serde_json::Value, TokenRefusal> {
        if let Some(grant) = &request.unsupported_grant {
            return Err(TokenRefusal::UnsupportedGrant(grant.clone()));
        }
        let now = now_secs();
        let user = match &request.refresh_token {
            // The user named by a valid refresh token, with the grants the
            // user holds now.
            Some(refresh) => verify(&self.key, refresh.trim(), now)
                .filter(|claims| claims.refresh)
                .and_then(|claims| self.users.iter().find(|u| u.name == claims.sub)),
            None => request
                .credentials
                .as_ref()
                .and_then(|(u, p)| self.login(u, p)),
        }
        .ok_or_else(|| {
            TokenRefusal::Unauthorized(Refusal::Unauthorized {
                challenge: self.basic_challenge(),
            })
        })?;
        let mut access: Vec<(String, Vec<Action>)> = Vec::new();
        for scope in request.scopes.iter().flat_map(|s| s.split(' ')) {
            // repository:NAME:ACTIONS, where NAME may hold `:` only in a
            // host:port prefix (which we do not have): split at the last `:`.
            let Some(rest) = scope.strip_prefix("repository:") else {
                continue;
            };
            let Some((name, actions)) = rest.rsplit_once(':') else {
                continue;
            };
            let mut granted: Vec<Action> = actions
                .split(',')
                .flat_map(Action::parse)
                .filter(|a| allowed(&user.grants, name, *a))
                .collect();
            granted.sort();
            granted.dedup();
            if !granted.is_empty() {
                access.push((name.to_owned(), granted));
            }
        }
        let lifetime = self.token_lifetime.as_secs().max(1);
        let claims = Claims {
            sub: user.name.clone(),
            iat: now,
            exp: now + lifetime,
            access,
            refresh: false,
        };
        let scope: Vec<String> = claims
            .access
            .iter()
            .map(|(name, actions)| {
                let actions: Vec<&str> = actions.iter().map(|a| a.as_str()).collect();
                format!("repository:{name}:{}", actions.join(","))
            })
            .collect();
        let token = sign(&self.key, &claims);
        tracing::debug!(user = %user.name, scope = ?scope, offline = request.offline, "token issued");
        let mut answer = serde_json::json!({
            "token": token,
            "access_token": token,
            "expires_in": lifetime,
            "issued_at": rfc3339(now),
            "scope": scope.join(" "),
        });
        if request.offline {
            let refresh = Claims {
                sub: user.name.clone(),
                iat: now,
                exp: now + REFRESH_LIFETIME_SECS,
                access: Vec::new(),
                refresh: true,
            };
            answer["refresh_token"] = sign(&self.key, &refresh).into();
        }
        Ok(answer)
    }
}

/// Seconds since the epoch as `YYYY-MM-DDTHH:MM:SSZ`.
fn rfc3339(secs: u64) -> String {
    let days = secs / 86_400;
    let rem = secs % 86_400;
    // Howard Hinnant's civil_from_days.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::super::{Auth, Grant, Need};
    use super::*;

    #[test]
    fn dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_700_000_000), "2023-11-14T22:13:20Z");
    }

    #[test]
    fn tokens_carry_only_granted_scopes_and_expire() {
        let a = Authorizer::new(Auth::bearer().user_with(
            "u",
            "p",
            [Grant::new("lib/*", &[Action::Pull])],
        ));
        let request = TokenRequest {
            credentials: Some(("u".into(), "p".into())),
            scopes: vec!["repository:lib/a:pull,push repository:other:pull".into()],
            ..TokenRequest::default()
        };
        let answer = a.issue(&request).unwrap();
        assert_eq!(answer["scope"], "repository:lib/a:pull");
        let token = answer["token"].as_str().unwrap();
        let claims = verify(&a.key, token, now_secs()).unwrap();
        assert!(claims.allows("lib/a", Action::Pull));
        assert!(!claims.allows("lib/a", Action::Push));
        assert!(!claims.allows("other", Action::Pull));
        assert!(verify(&a.key, token, now_secs() + 301).is_none());
        assert!(verify(&[0; 32], token, now_secs()).is_none());
        let bearer = format!("Bearer {token}");
        let need = Need::Access {
            repository: "lib/a".into(),
            action: Action::Pull,
        };
        assert!(a.check(Some(&bearer), &need, "http://h").is_ok());
        let mut tampered = token.to_owned();
        tampered.insert(10, 'x');
        assert!(
            a.check(Some(&format!("Bearer {tampered}")), &need, "http://h")
                .is_err()
        );
        let wrong = TokenRequest {
            credentials: Some(("u".into(), "nope".into())),
            ..TokenRequest::default()
        };
        assert!(a.issue(&wrong).is_err());
        assert!(answer.get("refresh_token").is_none(), "not asked for");
    }

    fn form(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn refresh_tokens_for_offline_access_only_buy_access_tokens() {
        let a = Authorizer::new(Auth::bearer().user_with(
            "u",
            "p",
            [Grant::new("lib/*", &[Action::Pull])],
        ));
        let get = form(&[
            ("offline_token", "true"),
            ("scope", "repository:lib/a:pull"),
        ]);
        let request = TokenRequest::from_get(&get, Some("Basic dTpw")); // u:p
        let answer = a.issue(&request).unwrap();
        let refresh = answer["refresh_token"].as_str().expect("a refresh token");
        let pull = Need::Access {
            repository: "lib/a".into(),
            action: Action::Pull,
        };
        // A refresh token is no access token, not even for /v2/.
        for need in [&pull, &Need::Login] {
            assert!(
                a.check(Some(&format!("Bearer {refresh}")), need, "http://h")
                    .is_err()
            );
        }
        let by_refresh = TokenRequest::from_form(
            &form(&[
                ("grant_type", "refresh_token"),
                ("refresh_token", refresh),
                ("scope", "repository:lib/b:pull,push"),
            ]),
            None,
        );
        let answer = a.issue(&by_refresh).unwrap();
        assert_eq!(answer["scope"], "repository:lib/b:pull");
        assert!(answer.get("refresh_token").is_none(), "not asked for");
        let token = answer["access_token"].as_str().unwrap();
        let need = Need::Access {
            repository: "lib/b".into(),
            action: Action::Pull,
        };
        assert!(
            a.check(Some(&format!("Bearer {token}")), &need, "http://h")
                .is_ok()
        );
        // An access token is no refresh token; nor is garbage.
        for bad in [token, "x", ""] {
            let request = TokenRequest::from_form(
                &form(&[("grant_type", "refresh_token"), ("refresh_token", bad)]),
                None,
            );
            assert!(matches!(
                a.issue(&request),
                Err(TokenRefusal::Unauthorized(_))
            ));
        }
        let offline_post = TokenRequest::from_form(
            &form(&[
                ("grant_type", "password"),
                ("username", "u"),
                ("password", "p"),
                ("access_type", "offline"),
            ]),
            None,
        );
        assert!(a.issue(&offline_post).unwrap()["refresh_token"].is_string());
        let other = TokenRequest::from_form(&form(&[("grant_type", "client_credentials")]), None);
        assert!(matches!(
            a.issue(&other),
            Err(TokenRefusal::UnsupportedGrant(g)) if g == "client_credentials"
        ));
    }
}
