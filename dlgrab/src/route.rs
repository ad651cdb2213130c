//! The ways a layer leaves the daemon, side by side. Each is an
//! `Exporter::by_*` method taking the wanted layers of one image and
//! returning them written and verified by `layer-writer`;
//! [`crate::plan::choose_route`] picks one by expected cost and
//! `export.rs` runs it.
//!
//! - [`push`]: the daemon pushes into a temporary registry on 127.0.0.1; a
//!   survey push learns the blob digests, a capture push uploads only the
//!   wanted layers. Cheap where the daemon asks before uploading.
//! - [`save`]: one `docker save` stream, read once, keeping the wanted
//!   layers. Costs the image up to the last wanted layer.
//! - [`store`]: the layer's tar rebuilt from the classic layer store on
//!   disk (tar-split metadata and the layer's files), read-only. Costs that
//!   layer only; needs a readable data root (or `--data-root`, offline).

pub(crate) mod push;
pub(crate) mod save;
pub(crate) mod store;
