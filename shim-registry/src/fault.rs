//! Fault injection, for testing how clients cope with a misbehaving
//! registry.
//!
//! A [`Faults`] policy is a list of [`FaultRule`]s. Each rule matches
//! requests by method and path (a regular expression, or a glob where `*`
//! stands for one path segment's characters and `**` for anything), counts
//! the requests it matches (from 1, in arrival order), and fires on the
//! occurrences it names ([`Occurrence`]). A firing rule's [`Fault`] then
//! applies: a delay (after which the request goes on, and further rules are
//! looked at), an error answer with a chosen status and spec error code, a
//! connection closed without an answer, or a response whose body is cut
//! short. Counting is per rule and exact, so a test gets the same faults on
//! every run for the same sequence of requests.
//!
//! Faults apply before authentication and routing, to every path
//! (`/token` too).
//!
//! ```
//! use std::time::Duration;
//! use http::{Method, StatusCode};
//! use shim_registry::fault::{Fault, FaultRule, Faults, Occurrence};
//!
//! let faults = Faults::new()
//!     // The 2nd blob upload PATCH gets a 503 TOOMANYREQUESTS.
//!     .rule(
//!         FaultRule::glob("/v2/**/blobs/uploads/*")
//!             .method(Method::PATCH)
//!             .on(Occurrence::Nth(2))
//!             .fault(Fault::respond(StatusCode::SERVICE_UNAVAILABLE, "TOOMANYREQUESTS")),
//!     )
//!     // Every manifest GET is slow.
//!     .rule(FaultRule::glob("/v2/**/manifests/*").method(Method::GET).fault(
//!         Fault::Delay(Duration::from_millis(50)),
//!     ))
//!     // The first blob read stops after 10 bytes.
//!     .rule(
//!         FaultRule::regex(r"^/v2/.+/blobs/sha256:[0-9a-f]{64}$")?
//!             .method(Method::GET)
//!             .on(Occurrence::Nth(1))
//!             .fault(Fault::CutBody { after: 10 }),
//!     );
//! let registry = shim_registry::Registry::builder().faults(faults).build()?;
//! # let _ = registry;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::sync::Mutex;
use std::time::Duration;

use http::{Method, StatusCode};
use regex::Regex;

/// A path pattern that is not a valid regular expression.
#[derive(Debug, thiserror::Error)]
#[error("invalid fault path pattern {pattern:?}")]
pub struct FaultPatternError {
    /// The pattern given.
    pub pattern: String,
    /// Why it is invalid.
    #[source]
    pub source: regex::Error,
}

/// Which of a rule's matching requests it fires on (counted from 1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Occurrence {
    /// Every matching request.
    Every,
    /// Only the nth matching request.
    Nth(u64),
    /// The first n matching requests.
    FirstN(u64),
    /// Every matching request after the first n.
    AfterN(u64),
}

impl Occurrence {
    fn fires(&self, n: u64) -> bool {
        match *self {
            Occurrence::Every => true,
            Occurrence::Nth(k) => n == k,
            Occurrence::FirstN(k) => n <= k,
            Occurrence::AfterN(k) => n > k,
        }
    }
}

/// What a firing rule does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// Waits, then goes on with the request (and the rules after this one).
    Delay(Duration),
    /// Answers with this status and a spec error body
    /// `{"errors":[{"code":…,"message":…}]}` instead of handling the request.
    Respond {
        /// The status.
        status: StatusCode,
        /// The error code, e.g. `TOOMANYREQUESTS`, `BLOB_UNKNOWN`.
        code: String,
    },
    /// Closes the connection without answering (clients see the connection
    /// end before a response; the request is not handled).
    Reset,
    /// Handles the request, then sends only the first `after` bytes of the
    /// response body (the headers, `Content-Length` included, unchanged) and
    /// closes the connection.
    CutBody {
        /// How many body bytes are sent.
        after: u64,
    },
}

impl Fault {
    /// A [`Fault::Respond`].
    pub fn respond(status: StatusCode, code: impl Into<String>) -> Self {
        Fault::Respond {
            status,
            code: code.into(),
        }
    }
}

/// Requests to match and what to do to them.
#[derive(Debug, Clone)]
pub struct FaultRule {
    method: Option<Method>,
    path: Regex,
    occurrence: Occurrence,
    fault: Fault,
}

impl FaultRule {
    /// Matches paths against a regular expression (unanchored unless it says
    /// `^…$`); any method, every occurrence, a 500 `UNKNOWN` until told.
    pub fn regex(pattern: &str) -> Result<Self, FaultPatternError> {
        let path = Regex::new(pattern).map_err(|source| FaultPatternError {
            pattern: pattern.to_owned(),
            source,
        })?;
        Ok(Self::with_path(path))
    }

    /// Matches whole paths against a glob: `*` is any characters but `/`,
    /// `**` any characters, `?` one character but `/`; everything else is
    /// literal.
    pub fn glob(pattern: &str) -> Self {
        let mut re = String::from("^");
        let mut chars = pattern.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '*' if chars.peek() == Some(&'*') => {
                    chars.next();
                    re.push_str(".*");
                }
                '*' => re.push_str("[^/]*"),
                '?' => re.push_str("[^/]"),
                c => re.push_str(&regex::escape(c.encode_utf8(&mut [0; 4]))),
            }
        }
        re.push('$');
        Self::with_path(Regex::new(&re).expect("an escaped glob is a valid regex"))
    }

    fn with_path(path: Regex) -> Self {
        Self {
            method: None,
            path,
            occurrence: Occurrence::Every,
            fault: Fault::respond(StatusCode::INTERNAL_SERVER_ERROR, "UNKNOWN"),
        }
    }

    /// Matches only this method.
    #[must_use]
    pub fn method(mut self, method: Method) -> Self {
        self.method = Some(method);
        self
    }

    /// Fires on these occurrences (default: every one).
    #[must_use]
    pub fn on(mut self, occurrence: Occurrence) -> Self {
        self.occurrence = occurrence;
        self
    }

    /// Does this when firing.
    #[must_use]
    pub fn fault(mut self, fault: Fault) -> Self {
        self.fault = fault;
        self
    }

    fn matches(&self, method: &Method, path: &str) -> bool {
        self.method.as_ref().is_none_or(|m| m == method) && self.path.is_match(path)
    }
}

/// A fault injection policy; see the [module docs](self).
#[derive(Debug, Clone, Default)]
pub struct Faults {
    rules: Vec<FaultRule>,
}

impl Faults {
    /// No rules.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a rule (rules are looked at in the order added).
    #[must_use]
    pub fn rule(mut self, rule: FaultRule) -> Self {
        self.rules.push(rule);
        self
    }
}

/// What to do with one request.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Decision {
    /// Total delay before anything else.
    pub(crate) delay: Duration,
    /// The first firing non-delay fault, if any.
    pub(crate) fault: Option<Fault>,
}

/// A policy with its counters.
pub(crate) struct FaultState {
    rules: Vec<FaultRule>,
    counts: Mutex<Vec<u64>>,
}

impl FaultState {
    pub(crate) fn new(faults: Faults) -> Self {
        let counts = Mutex::new(vec![0; faults.rules.len()]);
        Self {
            rules: faults.rules,
            counts,
        }
    }

    /// Counts the request against every matching rule and decides.
    pub(crate) fn decide(&self, method: &Method, path: &str) -> Decision {
        let mut decision = Decision::default();
        let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        for (rule, count) in self.rules.iter().zip(counts.iter_mut()) {
            if !rule.matches(method, path) {
                continue;
            }
            *count += 1;
            if decision.fault.is_some() || !rule.occurrence.fires(*count) {
                continue;
            }
            match &rule.fault {
                Fault::Delay(d) => decision.delay += *d,
                other => decision.fault = Some(other.clone()),
            }
            tracing::debug!(%method, path, occurrence = *count, fault = ?rule.fault, "injecting a fault");
        }
        decision
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        let r = FaultRule::glob("/v2/**/blobs/uploads/*");
        assert!(r.matches(&Method::PATCH, "/v2/a/b/blobs/uploads/123"));
        assert!(!r.matches(&Method::PATCH, "/v2/a/blobs/uploads/1/2"));
        assert!(!r.matches(&Method::PATCH, "/v2/a/blobs/sha256:x"));
        let r = FaultRule::glob("/v2/a.b/manifests/?").method(Method::GET);
        assert!(r.matches(&Method::GET, "/v2/a.b/manifests/x"));
        assert!(!r.matches(&Method::GET, "/v2/aXb/manifests/x"));
        assert!(!r.matches(&Method::PUT, "/v2/a.b/manifests/x"));
        assert!(FaultRule::regex("(").is_err());
    }

    #[test]
    fn counts_are_per_rule_and_exact() {
        let state = FaultState::new(
            Faults::new()
                .rule(
                    FaultRule::glob("/a")
                        .on(Occurrence::Nth(2))
                        .fault(Fault::Reset),
                )
                .rule(
                    FaultRule::glob("/*")
                        .on(Occurrence::AfterN(2))
                        .fault(Fault::Delay(Duration::from_millis(5))),
                )
                .rule(
                    FaultRule::glob("/*")
                        .on(Occurrence::FirstN(1))
                        .fault(Fault::CutBody { after: 3 }),
                ),
        );
        let get = Method::GET;
        assert_eq!(
            state.decide(&get, "/a").fault,
            Some(Fault::CutBody { after: 3 })
        );
        assert_eq!(state.decide(&get, "/a").fault, Some(Fault::Reset));
        let third = state.decide(&get, "/b");
        assert_eq!(third.fault, None);
        assert_eq!(third.delay, Duration::from_millis(5));
        assert_eq!(
            state.decide(&get, "/a"),
            Decision {
                delay: Duration::from_millis(5),
                fault: None
            }
        );
    }
}
