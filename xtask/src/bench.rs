//! `cargo xtask bench`: end-to-end benchmarks against real nodes on loopback.

use anyhow::{Result, bail};

pub fn run(args: &[String]) -> Result<()> {
    let _ = args;
    bail!("bench is not implemented yet")
}
