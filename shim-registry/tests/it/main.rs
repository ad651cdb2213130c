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
