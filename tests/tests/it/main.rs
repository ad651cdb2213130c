//! integration tests (placeholder)
