//! Integration tests of layer-writer: golden trees per format, bad input,
//! and `docker save` extraction.

mod errors;
mod folder;
mod formats;
mod lenient;
mod props;
mod pushed;
mod save;
mod support;
