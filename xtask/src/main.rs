//! `cargo xtask`: demo, bench, fuzz and ci.
fn main() {}
