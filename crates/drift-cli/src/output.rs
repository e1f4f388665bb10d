//! Tables for people and JSON for scripts.

use anyhow::Result;
use drift_server::{FileInfo, NodeStatus};

/// Bytes as a short human figure (`1.5 MiB`).
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

pub fn print_files(files: &[FileInfo], json: bool) -> Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(files)?);
        return Ok(());
    }
    let width = files.iter().map(|f| f.name.len()).max().unwrap_or(4).max(4);
    println!("{:<width$}  {:>10}  VERSION", "NAME", "SIZE");
    for f in files {
        println!(
            "{:<width$}  {:>10}  {:x}.{:016x}",
            f.name,
            human_bytes(f.size),
            f.version.time,
            f.version.node
        );
    }
    println!("{} file(s)", files.len());
    Ok(())
}

pub fn print_status(s: &NodeStatus, json: bool) -> Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(s)?);
        return Ok(());
    }
    println!("node        {}", s.node_id);
    println!("listen      {}", s.listen);
    println!("replicas    R = {}", s.replicas);
    println!("names       {} ({} tombstones)", s.names, s.tombstones);
    println!("chunks      {} ({})", s.chunks, human_bytes(s.bytes));
    let mut problems = Vec::new();
    if s.missing > 0 {
        problems.push(format!(
            "{} chunk(s) missing: no reachable node has a good copy",
            s.missing
        ));
    }
    if s.under_replicated > 0 {
        problems.push(format!("{} chunk(s) under-replicated", s.under_replicated));
    }
    let health = if problems.is_empty() {
        "healthy".to_string()
    } else {
        problems.join("; ")
    };
    println!("replication {health}");
    println!("quarantined {}", s.quarantined);
    println!();
    println!("{:<22}  {:<6}  {:>8}  ID", "PEER", "STATE", "SINCE");
    for p in &s.peers {
        println!(
            "{:<22}  {:<6}  {:>7}s  {}",
            p.addr.to_string(),
            p.state.to_string(),
            p.since_secs,
            &p.id[..16.min(p.id.len())]
        );
    }
    let up = s
        .peers
        .iter()
        .filter(|p| p.state == drift_server::PeerState::Up)
        .count();
    println!("{up} of {} peer(s) up", s.peers.len());
    Ok(())
}
