//! Daemon tests for the driver (filled in by its crate's work).
