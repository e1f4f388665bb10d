//! `cargo xtask ci` and `fuzz`.

use anyhow::{Result, bail};

use crate::proc::{cargo, root, run_ok};

/// Exactly what `.ci/run` does.
pub fn run() -> Result<()> {
    run_ok(
        std::process::Command::new("bash")
            .arg(root().join(".ci/run"))
            .current_dir(root()),
    )
}

/// Runs every fuzz target (stable toolchain, no sanitizer) for a bounded time.
pub fn fuzz(args: &[String]) -> Result<()> {
    let mut seconds = 30u64;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--seconds" => {
                seconds = it.next().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
                    eprintln!("xtask: --seconds takes a number; using 30");
                    30
                })
            }
            other => bail!("unknown fuzz option {other:?}"),
        }
    }
    run_ok(cargo().args([
        "run",
        "--release",
        "-p",
        "drift-p2p",
        "--example",
        "fuzz",
        "--",
        "--seconds",
        &seconds.to_string(),
    ]))
}
