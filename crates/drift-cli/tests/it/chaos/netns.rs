//! Network namespaces joined by veth pairs to a bridge, so one node's link
//! can be cut like a pulled cable. Set up and torn down here; every address
//! lives only inside namespaces this code created.

use std::net::{IpAddr, Ipv4Addr};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

static NEXT: AtomicU32 = AtomicU32::new(0);

/// A hub namespace holding a bridge, and one namespace per node, each with
/// `eth0` (10.213.0.(i+1)/24) wired to bridge port `p<i>` in the hub.
pub struct Net {
    hub: String,
    nodes: Vec<String>,
}

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run ip: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

impl Net {
    /// True when running as root with a working `ip` that may create namespaces.
    pub fn available() -> bool {
        if std::env::var_os("DRIFT_CHAOS_NO_NETNS").is_some() {
            return false;
        }
        let root = std::fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("Uid:"))
                    .map(|l| l.split_whitespace().nth(1) == Some("0"))
            })
            .unwrap_or(false);
        if !root {
            return false;
        }
        let probe = format!(
            "dchaos{}p{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let ok = ip(&["netns", "add", &probe]).is_ok();
        if ok {
            let _ = ip(&["netns", "del", &probe]);
        }
        ok
    }

    /// Creates the hub and `n` node namespaces.
    pub fn create(n: usize) -> Result<Net, String> {
        let tag = format!(
            "dchaos{}n{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let mut net = Net {
            hub: format!("{tag}h"),
            nodes: Vec::new(),
        };
        // On error, dropping `net` deletes whatever was created so far.
        ip(&["netns", "add", &net.hub])?;
        ip(&["-n", &net.hub, "link", "set", "lo", "up"])?;
        ip(&["-n", &net.hub, "link", "add", "br0", "type", "bridge"])?;
        ip(&["-n", &net.hub, "link", "set", "br0", "up"])?;
        for i in 0..n {
            let ns = format!("{tag}x{i}");
            ip(&["netns", "add", &ns])?;
            net.nodes.push(ns.clone());
            let port = format!("p{i}");
            ip(&[
                "-n", &net.hub, "link", "add", &port, "type", "veth", "peer", "name", "eth0",
                "netns", &ns,
            ])?;
            ip(&["-n", &net.hub, "link", "set", &port, "master", "br0"])?;
            ip(&["-n", &net.hub, "link", "set", &port, "up"])?;
            let cidr = format!("{}/24", net.addr(i));
            ip(&["-n", &ns, "addr", "add", &cidr, "dev", "eth0"])?;
            ip(&["-n", &ns, "link", "set", "eth0", "up"])?;
            ip(&["-n", &ns, "link", "set", "lo", "up"])?;
        }
        Ok(net)
    }

    pub fn node_ns(&self, i: usize) -> String {
        self.nodes[i].clone()
    }

    pub fn addr(&self, i: usize) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(10, 213, 0, i as u8 + 1))
    }

    /// Cuts node i off: its bridge port goes down (its eth0 loses carrier).
    pub fn cut(&self, i: usize) -> Result<(), String> {
        ip(&["-n", &self.hub, "link", "set", &format!("p{i}"), "down"])
    }

    /// Reconnects node i.
    pub fn heal(&self, i: usize) -> Result<(), String> {
        ip(&["-n", &self.hub, "link", "set", &format!("p{i}"), "up"])
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        // Deleting a namespace deletes its end of each veth pair, and with it the pair.
        for ns in self.nodes.iter().chain(std::iter::once(&self.hub)) {
            let _ = ip(&["netns", "del", ns]);
        }
    }
}
