//! Daemon tests for the export (filled in by its crate's work).
