//! The `drift` binary.
fn main() {}
