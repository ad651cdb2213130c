//! Daemon tests for the writer (filled in by its crate's work).
