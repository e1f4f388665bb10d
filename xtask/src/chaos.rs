//! `cargo xtask chaos`: fault-injection scenarios against real `drift node` processes.

use anyhow::{Result, bail};

pub fn run(args: &[String]) -> Result<()> {
    let _ = args;
    bail!("chaos is not implemented yet")
}
