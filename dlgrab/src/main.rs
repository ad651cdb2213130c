//! dlgrab (placeholder)
fn main() {}
