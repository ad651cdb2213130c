//! Manifests as dlgrab reads them: [`layer_writer::manifest`], the one
//! module the push, save and store routes, the driver and the writer share
//! (oci-spec's types, OCI and Docker schema 2). The routes import it
//! directly; the digest is re-exported here for the modules that name it
//! through `crate::manifest`.

pub(crate) use layer_writer::manifest::digest_of;
