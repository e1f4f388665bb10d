//! `cargo xtask`: the demo, benchmarks, fuzzing and the CI checks.

mod bench;
mod chaos;
mod ci;
mod demo;
mod proc;

use anyhow::{Result, bail};

const USAGE: &str = "usage: cargo xtask <command>

commands:
  demo [--base-port N]   start a local three-node cluster and show drift working
  bench [--quick]        end-to-end benchmarks; writes target/bench/report.{md,json}
  chaos [--quick]        fault-injection scenarios against real nodes
  fuzz [--seconds N]     run every fuzz target for a bounded time
  ci                     run exactly what .ci/run runs";

fn main() {
    if let Err(e) = run() {
        eprintln!("xtask: {e:#}");
        std::process::exit(1);
    }
}

fn run() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some((cmd, rest)) = args.split_first() else {
        println!("{USAGE}");
        return Ok(());
    };
    match cmd.as_str() {
        "demo" => demo::run(rest),
        "ci" => ci::run(),
        "fuzz" => ci::fuzz(rest),
        "bench" => bench::run(rest),
        "chaos" => chaos::run(rest),
        "-h" | "--help" | "help" => {
            println!("{USAGE}");
            Ok(())
        }
        other => bail!("unknown command {other:?}\n\n{USAGE}"),
    }
}
