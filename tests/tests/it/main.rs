//! Integration tests against a real Docker daemon.
//!
//! Every test asks `testkit::daemon_or_skip` for the daemon under test; with
//! none reachable it prints why and returns (and fails instead under
//! `cargo xtask test`, which sets `DLGRAB_REQUIRE_DAEMON=1`).

mod archive;
mod buildkit;
mod context;
mod copy;
mod delta;
mod driver;
mod errors;
mod export;
mod faults;
mod imported;
mod keep_going;
mod kit;
mod platform;
mod registry;
mod routes;
mod seed;
mod shim_seed;
mod store;
mod writer;
