//! `cargo xtask chaos`: fault-injection scenarios against real `drift node` processes.
//!
//! The scenarios live once, in drift-cli's integration tests
//! (`crates/drift-cli/tests/it/chaos/`), where `cargo test` runs them scaled
//! down. This command runs them at full size (`DRIFT_CHAOS_FULL=1`), one at a
//! time, with node data under `target/chaos/`, and prints what each one did
//! from the reports the tests write. One implementation means the CI subset
//! and the long run can never drift apart; it also lets the hostile member be
//! an in-process drift-p2p peer, which a std-only xtask could not be.
//! Every node process belongs to a test's `Lab`, which kills it on success,
//! failure and panic alike.

use anyhow::{Context, Result, bail};
use serde_json::Value;

use crate::proc::{cargo, run_ok, target_dir};

/// The scenarios of issue 7, by the names their reports carry.
const SCENARIOS: [&str; 7] = [
    "crash during writes",
    "partition",
    "bit rot",
    "hostile member",
    "outsiders",
    "disk full",
    "secret never leaks",
];

pub fn run(args: &[String]) -> Result<()> {
    let mut quick = false;
    for a in args {
        match a.as_str() {
            "--quick" => quick = true,
            other => bail!("unknown chaos option {other:?} (try --quick)"),
        }
    }
    let work = target_dir().join("chaos");
    if work.exists() {
        std::fs::remove_dir_all(&work)
            .with_context(|| format!("cannot clear {}", work.display()))?;
    }
    std::fs::create_dir_all(&work)?;
    let report = work.join("report.jsonl");

    println!("== building the drift binary ==");
    run_ok(cargo().args(["build", "-p", "drift-cli", "--bin", "drift"]))?;
    println!(
        "== running {} scenarios ({}), data under {} ==",
        SCENARIOS.len(),
        if quick { "quick sizes" } else { "full sizes" },
        work.display()
    );
    let mut cmd = cargo();
    cmd.args([
        "test",
        "-p",
        "drift-cli",
        "--test",
        "it",
        "--",
        "chaos::",
        "--test-threads=1",
        "--nocapture",
    ])
    .env("DRIFT_CHAOS_DIR", &work)
    .env("DRIFT_CHAOS_REPORT", &report);
    if quick {
        cmd.env_remove("DRIFT_CHAOS_FULL");
    } else {
        cmd.env("DRIFT_CHAOS_FULL", "1");
    }
    let status = cmd.status().context("cannot run cargo test")?;

    let text = std::fs::read_to_string(&report).unwrap_or_default();
    let reports: Vec<Value> = text
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    println!();
    println!("== chaos summary ==");
    let mut failed = Vec::new();
    for name in SCENARIOS {
        let Some(r) = reports.iter().find(|r| r["scenario"] == name) else {
            println!(
                "\n-- {name}: FAIL (no report: the scenario stopped early; see the test output above)"
            );
            failed.push(name);
            continue;
        };
        let passed = r["passed"].as_bool() == Some(true);
        if !passed {
            failed.push(name);
        }
        println!(
            "\n-- {name}: {} in {:.0} s",
            if passed { "pass" } else { "FAIL" },
            r["secs"].as_f64().unwrap_or(0.0)
        );
        println!("   method:        {}", text_of(&r["method"]));
        println!("   did:           {}", text_of(&r["did"]));
        println!("   operations:    {}", r["operations"]);
        println!("   faults:        {}", r["faults"]);
        println!("   files checked: {}", r["files_checked"]);
        println!("   files lost:    {}", r["files_lost"]);
        if let Some(figures) = r["figures"].as_object() {
            for (k, v) in figures {
                println!("   {k}: {}", text_of(v));
            }
        }
        for f in r["failures"].as_array().into_iter().flatten() {
            println!("   failure: {}", text_of(f));
        }
    }
    println!();
    if failed.is_empty() && status.success() {
        println!(
            "== all {} scenarios passed, 0 files lost ==",
            SCENARIOS.len()
        );
        Ok(())
    } else if failed.is_empty() {
        bail!("every scenario reported a pass, but the test run failed ({status})")
    } else {
        bail!("{} scenario(s) failed: {}", failed.len(), failed.join(", "))
    }
}

fn text_of(v: &Value) -> String {
    v.as_str().map_or_else(|| v.to_string(), str::to_string)
}
