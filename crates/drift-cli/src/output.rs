//! Tables for people and JSON for scripts.

use std::fmt::Write as _;

use anyhow::{Context, Result};
use drift_server::{FileInfo, NodeStatus};

/// Writes `text` to stdout. A reader that went away (`drift ls | head -1`)
/// is not an error: drift stops quietly, as other Unix tools do.
pub fn emit(text: &str) -> Result<()> {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => other.context("cannot write to stdout"),
    }
}

/// Bytes as a short human figure (`1.5 MiB`).
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    // Compared after rounding to one decimal, so 1048575 is 1.0 MiB, not 1024.0 KiB.
    while (value * 10.0).round() >= 10240.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// A name as one line of a table: control characters (a newline, an
/// escape sequence) are shown escaped (`\n`, `\u{1b}`), not sent to the terminal.
fn printable(name: &str) -> String {
    if !name.chars().any(char::is_control) {
        return name.to_string();
    }
    name.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

pub fn print_files(files: &[FileInfo], json: bool) -> Result<()> {
    let mut out = String::new();
    if json {
        writeln!(out, "{}", serde_json::to_string_pretty(files)?)?;
        return emit(&out);
    }
    let names: Vec<String> = files.iter().map(|f| printable(&f.name)).collect();
    let width = names
        .iter()
        .map(|n| n.chars().count())
        .max()
        .unwrap_or(4)
        .max(4);
    writeln!(out, "{:<width$}  {:>10}  VERSION", "NAME", "SIZE")?;
    for (f, name) in files.iter().zip(&names) {
        writeln!(
            out,
            "{:<width$}  {:>10}  {:x}.{:016x}",
            name,
            human_bytes(f.size),
            f.version.time,
            f.version.node
        )?;
    }
    writeln!(out, "{} file(s)", files.len())?;
    emit(&out)
}

pub fn print_status(s: &NodeStatus, json: bool) -> Result<()> {
    if json {
        return emit(&format!("{}\n", serde_json::to_string_pretty(s)?));
    }
    emit(&status_text(s)?)
}

/// `drift status` for a person.
fn status_text(s: &NodeStatus) -> Result<String> {
    let mut out = String::new();
    writeln!(out, "node        {}", s.node_id)?;
    writeln!(out, "listen      {}", s.listen)?;
    writeln!(out, "replicas    R = {}", s.replicas)?;
    writeln!(out, "names       {} ({} tombstones)", s.names, s.tombstones)?;
    writeln!(out, "chunks      {} ({})", s.chunks, human_bytes(s.bytes))?;
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
    // The counts above are the last repair pass's; a peer that went down
    // since holds copies too, which come back with it (or are re-created
    // elsewhere once it is lost).
    let down = s
        .peers
        .iter()
        .filter(|p| p.state == drift_server::PeerState::Down)
        .count();
    if down > 0 {
        problems.push(format!(
            "{down} peer(s) down: their copies are re-created elsewhere if they stay down"
        ));
    }
    let health = if problems.is_empty() {
        "healthy".to_string()
    } else {
        problems.join("; ")
    };
    writeln!(out, "replication {health}")?;
    writeln!(out, "quarantined {}", s.quarantined)?;
    writeln!(out)?;
    writeln!(out, "{:<22}  {:<6}  {:>8}  ID", "PEER", "STATE", "SINCE")?;
    for p in &s.peers {
        writeln!(
            out,
            "{:<22}  {:<6}  {:>7}s  {}",
            p.addr.to_string(),
            p.state.to_string(),
            p.since_secs,
            &p.id[..16.min(p.id.len())]
        )?;
    }
    let count = |state| s.peers.iter().filter(|p| p.state == state).count();
    let (up, lost) = (
        count(drift_server::PeerState::Up),
        count(drift_server::PeerState::Lost),
    );
    // Lost peers have left placement: they are not counted as missing.
    write!(out, "{up} of {} peer(s) up", s.peers.len() - lost)?;
    if lost > 0 {
        write!(
            out,
            "; {lost} lost (their copies were re-created on the others; they rejoin if they connect again)"
        )?;
    }
    writeln!(out)?;
    for u in &s.unreached {
        writeln!(
            out,
            "not reached {} ({} attempt(s)): {}",
            u.addr, u.failures, u.error
        )?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_round_to_the_unit_a_person_expects() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(1023), "1023 B");
        assert_eq!(human_bytes(1024), "1.0 KiB");
        assert_eq!(human_bytes(1_048_575), "1.0 MiB");
        assert_eq!(human_bytes(1_048_576), "1.0 MiB");
        assert_eq!(human_bytes(1_572_864), "1.5 MiB");
        assert_eq!(human_bytes(u64::MAX), "16777216.0 TiB");
    }

    fn status(peers: &[drift_server::PeerState]) -> NodeStatus {
        NodeStatus {
            node_id: "ab".repeat(32),
            listen: "127.0.0.1:3000".parse().unwrap(),
            replicas: 3,
            peers: peers
                .iter()
                .enumerate()
                .map(|(i, state)| drift_server::PeerStatus {
                    id: format!("{i:064x}"),
                    addr: format!("127.0.0.1:{}", 7000 + i).parse().unwrap(),
                    state: *state,
                    since_secs: 1,
                })
                .collect(),
            names: 0,
            tombstones: 0,
            chunks: 0,
            bytes: 0,
            under_replicated: 0,
            quarantined: 0,
            missing: 0,
            unreached: Vec::new(),
        }
    }

    #[test]
    fn status_is_healthy_only_with_every_peer_up() {
        use drift_server::PeerState::{Down, Up};
        let text = status_text(&status(&[Up, Up])).unwrap();
        assert!(text.contains("replication healthy"), "{text}");
        let text = status_text(&status(&[Up, Down])).unwrap();
        assert!(
            text.contains("replication 1 peer(s) down: their copies are re-created"),
            "{text}"
        );
        assert!(text.contains("1 of 2 peer(s) up"), "{text}");
    }

    #[test]
    fn lost_peers_are_counted_apart() {
        use drift_server::PeerState::{Lost, Up};
        let text = status_text(&status(&[Up, Lost, Up])).unwrap();
        assert!(text.contains("replication healthy"), "{text}");
        assert!(text.contains("2 of 2 peer(s) up; 1 lost"), "{text}");
    }

    #[test]
    fn status_names_the_peer_addresses_not_reached_and_why() {
        let mut s = status(&[]);
        s.unreached.push(drift_server::Unreached {
            addr: "127.0.0.1:7000".parse().unwrap(),
            failures: 3,
            error: "cannot connect: connection refused".into(),
        });
        let text = status_text(&s).unwrap();
        assert!(
            text.contains(
                "not reached 127.0.0.1:7000 (3 attempt(s)): cannot connect: connection refused"
            ),
            "{text}"
        );
    }

    #[test]
    fn control_characters_in_names_are_shown_escaped() {
        assert_eq!(printable("plain name/ü.txt"), "plain name/ü.txt");
        assert_eq!(printable("two\nlines"), "two\\nlines");
        assert_eq!(printable("bell\u{7}\u{1b}[31m"), "bell\\u{7}\\u{1b}[31m");
    }
}
