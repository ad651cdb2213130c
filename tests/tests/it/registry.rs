//! Daemon tests for the registry (filled in by its crate's work).
