//! (placeholder: crate docs are written with the crate)
#![warn(missing_docs)]
