//! Black-box conformance tests, written from the OCI distribution spec v1.1:
//! a registry is spawned on 127.0.0.1:0 and spoken to over HTTP(S).

mod auth;
#[cfg(feature = "cli")]
mod binary;
mod blobs;
mod dev_mode;
mod faults;
mod hold;
mod load;
mod manifests;
mod oci_client;
mod props;
mod seed;
#[cfg(feature = "cli")]
mod skopeo;
mod support;
mod transport;
mod uploads;

/// Without the `cli` feature the `shim-registry` program is not built, and
/// its tests (`binary`, `skopeo`) are left out: this says so.
#[cfg(not(feature = "cli"))]
#[test]
#[expect(clippy::print_stderr, reason = "a skipped test says why on stderr")]
fn program_tests_need_the_cli_feature() {
    eprintln!(
        "SKIP binary::*, skopeo::*: the `shim-registry` program is built only with the `cli` \
         feature (cargo test -p shim-registry --features cli)"
    );
}
