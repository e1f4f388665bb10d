//! `drift node` processes on loopback for the bench: started on free ports,
//! watched through /proc, and always killed (on success, error or panic).

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use drift_crypto::ClusterSecret;
use drift_server::PeerState;
use drift_server::client::Client;

/// One node process; killed when dropped.
pub struct NodeProc {
    pub addr: SocketAddr,
    pub data: PathBuf,
    child: Child,
}

impl NodeProc {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// utime + stime in clock ticks.
    pub fn cpu_ticks(&self) -> Result<u64> {
        cpu_ticks_of(&self.pid().to_string())
    }

    /// Peak resident set size (VmHWM) in KiB.
    pub fn peak_rss_kib(&self) -> Result<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .context("no VmHWM in /proc status")
    }

    /// Resets VmHWM to the current RSS (clear_refs 5), so the next read is the
    /// peak of what follows.
    pub fn reset_peak(&self) {
        let _ = std::fs::write(format!("/proc/{}/clear_refs", self.pid()), "5");
    }
}

impl Drop for NodeProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A set of nodes started together; the first is everyone's bootstrap peer.
pub struct Cluster {
    pub nodes: Vec<NodeProc>,
    pub dir: PathBuf,
}

fn free_port() -> Result<u16> {
    let l = TcpListener::bind("127.0.0.1:0").context("cannot bind a loopback port")?;
    Ok(l.local_addr()?.port())
}

impl Cluster {
    pub fn start(
        bin: &Path,
        secret_file: &Path,
        dir: &Path,
        n: usize,
        replicas: usize,
    ) -> Result<Cluster> {
        if dir.exists() {
            std::fs::remove_dir_all(dir)
                .with_context(|| format!("cannot clear {}", dir.display()))?;
        }
        std::fs::create_dir_all(dir)?;
        let mut cluster = Cluster {
            nodes: Vec::new(),
            dir: dir.to_path_buf(),
        };
        let mut first: Option<SocketAddr> = None;
        for i in 0..n {
            let addr: SocketAddr = format!("127.0.0.1:{}", free_port()?).parse()?;
            let data = dir.join(format!("node-{i}"));
            let log = std::fs::File::create(dir.join(format!("node-{i}.log")))?;
            let mut cmd = Command::new(bin);
            cmd.arg("--secret-file")
                .arg(secret_file)
                .args(["node", "--listen", &addr.to_string(), "--data"])
                .arg(&data)
                .args(["--replicas", &replicas.to_string(), "--exit-with-parent"])
                .env("RUST_LOG", "warn")
                .stdin(Stdio::null())
                .stdout(log.try_clone()?)
                .stderr(log);
            if let Some(peer) = first {
                cmd.args(["--peer", &peer.to_string()]);
            }
            let child = cmd
                .spawn()
                .with_context(|| format!("cannot start {}", bin.display()))?;
            cluster.nodes.push(NodeProc { addr, data, child });
            first.get_or_insert(addr);
        }
        Ok(cluster)
    }

    pub fn addrs(&self) -> Vec<SocketAddr> {
        self.nodes.iter().map(|n| n.addr).collect()
    }

    /// Waits until every node answers and sees every other as up; returns
    /// the nodes' ids (hex), in order.
    pub async fn wait_ready(&self, secret: &ClusterSecret) -> Result<Vec<String>> {
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut ids = Vec::new();
        for node in &self.nodes {
            loop {
                let status = async {
                    let c = Client::connect(node.addr, secret, Duration::from_secs(2)).await?;
                    let s = c.status().await;
                    c.close().await;
                    anyhow::Ok(s?)
                }
                .await;
                match status {
                    Ok(s)
                        if s.peers.iter().filter(|p| p.state == PeerState::Up).count()
                            >= self.nodes.len() - 1 =>
                    {
                        ids.push(s.node_id);
                        break;
                    }
                    _ if Instant::now() > deadline => {
                        bail!(
                            "node {} did not join its {} peers within 30 s (log in {})",
                            node.addr,
                            self.nodes.len() - 1,
                            self.dir.display()
                        )
                    }
                    _ => tokio::time::sleep(Duration::from_millis(50)).await,
                }
            }
        }
        Ok(ids)
    }

    pub fn cpu_ticks(&self) -> Result<u64> {
        self.nodes.iter().map(NodeProc::cpu_ticks).sum()
    }

    pub fn reset_peaks(&self) {
        self.nodes.iter().for_each(NodeProc::reset_peak);
    }

    /// Peak RSS of each node, MiB.
    pub fn peaks_mib(&self) -> Result<Vec<f64>> {
        self.nodes
            .iter()
            .map(|n| Ok(n.peak_rss_kib()? as f64 / 1024.0))
            .collect()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // Kill first (NodeProc's drop), then set the data aside; logs stay.
        let data: Vec<PathBuf> = self.nodes.drain(..).map(|n| n.data.clone()).collect();
        let work = self.dir.parent().unwrap_or(&self.dir);
        for d in data {
            super::trash::set_aside(work, &d);
        }
    }
}

/// utime + stime of process `pid` ("self" for this one) in clock ticks,
/// threads that have exited included.
fn cpu_ticks_of(pid: &str) -> Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // The command name may hold spaces; fields are counted after its ')'.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    // Fields 14 and 15 of stat(5); `rest` starts at field 3.
    let utime: u64 = f.get(11).context("short stat")?.parse()?;
    let stime: u64 = f.get(12).context("short stat")?.parse()?;
    Ok(utime + stime)
}

/// This process's CPU in clock ticks: the bench's client, which runs in it.
pub fn own_cpu_ticks() -> Result<u64> {
    cpu_ticks_of("self")
}

/// Clock ticks all CPUs of the machine spent busy (not idle or waiting
/// for I/O), from /proc/stat: kernel threads such as disk writeback count
/// here and in no process.
pub fn machine_busy_ticks() -> Result<u64> {
    let stat = std::fs::read_to_string("/proc/stat")?;
    let line = stat.lines().next().context("empty /proc/stat")?;
    let f: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(str::parse)
        .collect::<Result<_, _>>()?;
    // user nice system idle iowait irq softirq steal (guest time is in user).
    let busy = [0, 1, 2, 5, 6, 7].iter().filter_map(|&i| f.get(i)).sum();
    Ok(busy)
}

/// Clock ticks per second of `/proc/<pid>/stat` times.
pub fn ticks_per_sec() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}
