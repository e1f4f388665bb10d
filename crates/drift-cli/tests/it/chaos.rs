//! Fault injection against real `drift node` processes (issue 7): crashes,
//! partitions, bit rot, a hostile member, outsiders, a full disk and leaks.
//!
//! Every scenario runs scaled down in `cargo test`, and at full size with
//! `DRIFT_CHAOS_FULL=1` (what `cargo xtask chaos` sets). Each one prints a
//! [`Report`] and, when `DRIFT_CHAOS_REPORT` names a file, appends it there as
//! one JSON line for the xtask's summary. `DRIFT_CHAOS_DIR` puts node data
//! under that directory and keeps it for a post-mortem.

mod bitrot;
mod crash;
mod diskfull;
mod hostile;
mod leak;
mod netns;
mod outsiders;
mod partition;

use std::io::{BufRead, BufReader, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use super::harness::{bin, free_port};

/// The two sizes every scenario comes in.
#[derive(Debug, Clone, Copy)]
pub struct Scale {
    pub full: bool,
}

impl Scale {
    pub fn get() -> Scale {
        Scale {
            full: std::env::var_os("DRIFT_CHAOS_FULL").is_some_and(|v| v != "0"),
        }
    }

    /// `quick` in `cargo test`, `full` under `DRIFT_CHAOS_FULL`.
    pub fn pick<T>(self, quick: T, full: T) -> T {
        if self.full { full } else { quick }
    }
}

/// A small deterministic generator (xorshift64*), so failures can be replayed
/// from the seed a report prints.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }

    /// A seed from the clock, or `DRIFT_CHAOS_SEED` to replay a run.
    pub fn seed() -> u64 {
        if let Some(s) = std::env::var("DRIFT_CHAOS_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
        {
            return s;
        }
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        t.as_nanos() as u64 ^ u64::from(std::process::id()) << 32
    }

    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `lo..hi` (`hi > lo`).
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo)
    }

    pub fn bytes(&mut self, len: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(len + 8);
        while out.len() < len {
            out.extend_from_slice(&self.next().to_le_bytes());
        }
        out.truncate(len);
        out
    }
}

/// The content of file `i` of a scenario: incompressible and unique per
/// (seed, i), so no two files share a chunk by accident.
pub fn content(seed: u64, i: u64, len: usize) -> Vec<u8> {
    Rng::new(seed ^ (i + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15)).bytes(len)
}

/// What a scenario did and found; printed, and collected by `cargo xtask chaos`.
#[derive(Debug, Default)]
pub struct Report {
    pub scenario: &'static str,
    pub method: String,
    pub did: String,
    pub operations: u64,
    pub faults: u64,
    pub files_checked: u64,
    pub files_lost: u64,
    pub figures: Vec<(String, String)>,
    pub failures: Vec<String>,
    started: Option<Instant>,
}

impl Report {
    pub fn new(scenario: &'static str) -> Report {
        Report {
            scenario,
            started: Some(Instant::now()),
            ..Report::default()
        }
    }

    /// Records a figure worth printing.
    pub fn figure(&mut self, key: &str, value: impl ToString) {
        self.figures.push((key.to_string(), value.to_string()));
    }

    /// Records a failed expectation without stopping, so the report still
    /// shows every figure.
    pub fn check(&mut self, ok: bool, what: impl FnOnce() -> String) {
        if !ok {
            let what = what();
            eprintln!("chaos {}: FAILED: {what}", self.scenario);
            self.failures.push(what);
        }
    }

    /// Stops the lab, prints the report, hands it to the xtask, and fails the
    /// test on any failed check or lost file. A passing scenario's data is
    /// removed; a failing one's is kept under `DRIFT_CHAOS_DIR` for a post-mortem.
    pub fn finish(mut self, lab: Lab) {
        let root = lab.root.clone();
        let kept = lab._tmp.is_none();
        drop(lab);
        if self.files_lost > 0 {
            self.failures
                .push(format!("{} file(s) lost", self.files_lost));
        }
        let passed = self.failures.is_empty();
        let secs = self.started.map_or(0.0, |s| s.elapsed().as_secs_f64());
        println!("== chaos: {} ({}) ==", self.scenario, self.method);
        println!("  did:           {}", self.did);
        println!("  operations:    {}", self.operations);
        println!("  faults:        {}", self.faults);
        println!("  files checked: {}", self.files_checked);
        println!("  files lost:    {}", self.files_lost);
        for (k, v) in &self.figures {
            println!("  {k}: {v}");
        }
        println!(
            "  result:        {} in {secs:.1} s",
            if passed { "pass" } else { "FAIL" }
        );
        for f in &self.failures {
            println!("  failure: {f}");
        }
        if kept && passed {
            let _ = std::fs::remove_dir_all(&root);
        } else if kept {
            println!("  data and node logs kept in {}", root.display());
        }
        if let Some(path) = std::env::var_os("DRIFT_CHAOS_REPORT") {
            let figures: serde_json::Map<String, serde_json::Value> = self
                .figures
                .iter()
                .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
                .collect();
            let line = serde_json::json!({
                "scenario": self.scenario,
                "method": self.method,
                "did": self.did,
                "operations": self.operations,
                "faults": self.faults,
                "files_checked": self.files_checked,
                "files_lost": self.files_lost,
                "figures": figures,
                "failures": self.failures,
                "passed": passed,
                "secs": secs,
            });
            let mut f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .unwrap();
            writeln!(f, "{line}").unwrap();
        }
        assert!(
            passed,
            "chaos {} failed: {:?}",
            self.scenario, self.failures
        );
    }
}

/// Waits until `cond` holds, polling every `every`, for at most `limit`;
/// returns whether it held.
pub fn wait_until(limit: Duration, every: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(every);
    }
}

/// Runs `cmd` to completion, killing it (by pid) after `limit`.
pub fn run_bounded(mut cmd: Command, limit: Duration) -> Output {
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("cannot spawn a command");
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(limit) {
        Ok(out) => out.expect("cannot wait for a command"),
        Err(_) => {
            signal(pid, "KILL");
            panic!("command did not finish within {limit:?}");
        }
    }
}

/// Sends a signal (by name: KILL, STOP, CONT) to a process.
pub fn signal(pid: u32, name: &str) {
    let _ = Command::new("kill")
        .args([format!("-{name}"), pid.to_string()])
        .stderr(Stdio::null())
        .status();
}

/// What a client needs to talk to the lab's nodes (cheap to clone into threads).
#[derive(Clone)]
pub struct Clients {
    pub secret: String,
    pub addrs: Vec<SocketAddr>,
    /// The namespace each node lives in, if the lab uses namespaces.
    pub netns: Vec<Option<String>>,
}

impl Clients {
    /// Runs `drift ARGS --node <node i>` (inside node i's namespace, if any).
    pub fn run(&self, i: usize, args: &[&str]) -> Output {
        let mut cmd = match &self.netns[i] {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, bin()]);
                c
            }
            None => Command::new(bin()),
        };
        cmd.args(args)
            .args(["--node", &self.addrs[i].to_string()])
            .env("DRIFT_SECRET", &self.secret);
        run_bounded(cmd, Duration::from_secs(90))
    }

    /// Names listed by node i with their sizes, or `None` if it did not answer.
    pub fn ls(&self, i: usize) -> Option<Vec<(String, u64)>> {
        let out = self.run(i, &["ls", "--json"]);
        if !out.status.success() {
            return None;
        }
        let json: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
        Some(
            json.as_array()?
                .iter()
                .filter_map(|f| Some((f["name"].as_str()?.to_string(), f["size"].as_u64()?)))
                .collect(),
        )
    }

    pub fn status(&self, i: usize) -> Option<serde_json::Value> {
        let out = self.run(i, &["status", "--json"]);
        if !out.status.success() {
            return None;
        }
        serde_json::from_slice(&out.stdout).ok()
    }

    /// How many peers node i reports up.
    pub fn peers_up(&self, i: usize) -> usize {
        self.status(i)
            .and_then(|s| {
                s["peers"]
                    .as_array()
                    .map(|p| p.iter().filter(|p| p["state"] == "Up").count())
            })
            .unwrap_or(0)
    }
}

/// One `drift node` of a lab.
pub struct LabNode {
    pub addr: SocketAddr,
    pub dir: PathBuf,
    pub log: PathBuf,
    pub extra: Vec<String>,
    child: Option<Child>,
}

impl LabNode {
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }
}

/// A cluster of `drift node` processes under one directory; every process
/// is killed when the lab is dropped, whether the test passed or panicked.
pub struct Lab {
    pub clients: Clients,
    pub nodes: Vec<LabNode>,
    pub root: PathBuf,
    pub net: Option<netns::Net>,
    _tmp: Option<tempfile::TempDir>,
}

impl Lab {
    /// Starts `n` nodes; node i gets `extra(i)` as further arguments. With
    /// `use_netns`, each node runs in its own network namespace (the caller
    /// checked [`netns::Net::available`]).
    pub fn start(
        scenario: &str,
        n: usize,
        use_netns: bool,
        extra: impl Fn(usize) -> Vec<String>,
    ) -> Lab {
        let (root, tmp) = match std::env::var_os("DRIFT_CHAOS_DIR") {
            Some(base) => {
                let base = PathBuf::from(base);
                std::fs::create_dir_all(&base).unwrap();
                let dir = tempfile::Builder::new()
                    .prefix(&format!("{scenario}-"))
                    .tempdir_in(base)
                    .unwrap();
                // Kept for a post-mortem; the xtask clears it on its next run.
                (dir.keep(), None)
            }
            None => {
                let dir = tempfile::Builder::new()
                    .prefix(&format!("drift-chaos-{scenario}-"))
                    .tempdir()
                    .unwrap();
                (dir.path().to_path_buf(), Some(dir))
            }
        };
        let secret = run_bounded(
            {
                let mut c = Command::new(bin());
                c.arg("keygen");
                c
            },
            Duration::from_secs(30),
        );
        let secret = String::from_utf8(secret.stdout).unwrap().trim().to_string();
        let net = use_netns.then(|| netns::Net::create(n).expect("cannot set up namespaces"));
        let mut lab = Lab {
            clients: Clients {
                secret,
                addrs: Vec::new(),
                netns: Vec::new(),
            },
            nodes: Vec::new(),
            root,
            net,
            _tmp: tmp,
        };
        for i in 0..n {
            let ns = lab.net.as_ref().map(|net| net.node_ns(i));
            let host: IpAddr = match &lab.net {
                Some(net) => net.addr(i),
                None => IpAddr::V4(Ipv4Addr::LOCALHOST),
            };
            let dir = lab.root.join(format!("node{i}"));
            let log = lab.root.join(format!("node{i}.log"));
            lab.nodes.push(LabNode {
                addr: SocketAddr::new(host, 0),
                dir,
                log,
                extra: extra(i),
                child: None,
            });
            lab.clients.netns.push(ns);
            lab.clients.addrs.push(SocketAddr::new(host, 0));
            // A probed port may be taken before the node binds it: retry.
            let mut started = false;
            for _ in 0..5 {
                let port = if lab.net.is_some() {
                    20000 + i as u16
                } else {
                    free_port()
                };
                lab.nodes[i].addr.set_port(port);
                lab.clients.addrs[i].set_port(port);
                if lab.launch(i) {
                    started = true;
                    break;
                }
            }
            assert!(
                started,
                "node {i} did not start; see {}",
                lab.nodes[i].log.display()
            );
        }
        lab.wait_mesh(Duration::from_secs(60));
        lab
    }

    /// Starts node i's process; true once it printed its ready line.
    fn launch(&mut self, i: usize) -> bool {
        let node = &self.nodes[i];
        let mut cmd = match &self.clients.netns[i] {
            Some(ns) => {
                // `ip netns exec` execs the command, so the child's pid is the node's.
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, bin()]);
                c
            }
            None => Command::new(bin()),
        };
        cmd.args(["node", "--listen", &node.addr.to_string(), "--data"])
            .arg(&node.dir)
            .args(["--anti-entropy", "1", "--exit-with-parent"])
            .args(&node.extra);
        for (j, other) in self.clients.addrs.iter().enumerate() {
            if j != i && other.port() != 0 {
                cmd.args(["--peer", &other.to_string()]);
            }
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&node.log)
            .unwrap();
        cmd.env("DRIFT_SECRET", &self.clients.secret)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log);
        let mut child = cmd.spawn().expect("cannot spawn drift node");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let ready =
            matches!(rx.recv_timeout(Duration::from_secs(30)), Ok(l) if l.contains("listening on"));
        if ready {
            self.nodes[i].child = Some(child);
        } else {
            let _ = child.kill();
            let _ = child.wait();
        }
        ready
    }

    /// Restarts a killed node on its old address and data directory,
    /// retrying while the port is still being released.
    pub fn restart(&mut self, i: usize) {
        assert!(self.nodes[i].child.is_none(), "node {i} is running");
        let ok = (0..20).any(|_| {
            let ok = self.launch(i);
            if !ok {
                std::thread::sleep(Duration::from_millis(250));
            }
            ok
        });
        assert!(
            ok,
            "node {i} did not restart; see {}",
            self.nodes[i].log.display()
        );
    }

    /// SIGKILL: no chance to flush or clean anything.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.nodes[i].child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Waits until every running node sees every other running node up.
    pub fn wait_mesh(&self, limit: Duration) {
        let running: Vec<usize> = (0..self.nodes.len())
            .filter(|i| self.nodes[*i].is_running())
            .collect();
        for &i in &running {
            let ok = wait_until(limit, Duration::from_millis(200), || {
                self.clients.peers_up(i) + 1 >= running.len()
            });
            assert!(ok, "node {i} did not see its peers within {limit:?}");
        }
    }

    /// Writes `data` to a scratch file and stores it as `name` through node i.
    pub fn put(&self, i: usize, name: &str, data: &[u8]) -> Output {
        put_via(&self.clients, &self.root, i, name, data)
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for i in 0..self.nodes.len() {
            self.kill(i);
        }
        // Namespaces go after their processes (field order would drop them later anyway).
        self.net.take();
    }
}

/// Stores `data` as `name` through node i, by way of a scratch file under `root`.
pub fn put_via(clients: &Clients, root: &Path, i: usize, name: &str, data: &[u8]) -> Output {
    let scratch = root.join("scratch");
    std::fs::create_dir_all(&scratch).unwrap();
    let file = tempfile::NamedTempFile::new_in(&scratch).unwrap();
    std::fs::write(file.path(), data).unwrap();
    clients.run(i, &["put", file.path().to_str().unwrap(), "--name", name])
}

/// Every chunk file of a data directory: (path, the id its name claims).
pub fn chunk_files(data_dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    walk(&data_dir.join("chunks"), &mut |p| {
        let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if name.len() == 40 && name.chars().all(|c| c.is_ascii_hexdigit()) {
            out.push(p.to_path_buf());
        }
    });
    out.sort();
    out
}

/// Leftover temp files (the store's `.tmp-` prefix) anywhere under the chunks.
pub fn temp_files(data_dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    walk(&data_dir.join("chunks"), &mut |p| {
        if p.file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with(".tmp-"))
        {
            out.push(p.to_path_buf());
        }
    });
    out
}

/// Chunk files whose content does not hash to their name (torn or rotten).
pub fn bad_chunk_files(data_dir: &Path) -> Vec<PathBuf> {
    chunk_files(data_dir)
        .into_iter()
        .filter(|p| match std::fs::read(p) {
            Ok(bytes) => {
                drift_crypto::ChunkId::of(&bytes).to_hex()
                    != p.file_name().and_then(|n| n.to_str()).unwrap_or("")
            }
            // Removed between listing and reading (GC, repair hand-off).
            Err(_) => false,
        })
        .collect()
}

/// Calls `f` on every file under `dir`, recursively (bounded depth).
pub fn walk(dir: &Path, f: &mut impl FnMut(&Path)) {
    fn go(dir: &Path, depth: usize, f: &mut impl FnMut(&Path)) {
        let Ok(rd) = std::fs::read_dir(dir) else {
            return;
        };
        for de in rd.flatten() {
            let p = de.path();
            match de.file_type() {
                Ok(t) if t.is_dir() && depth < 8 => go(&p, depth + 1, f),
                Ok(t) if t.is_file() => f(&p),
                _ => {}
            }
        }
    }
    go(dir, 0, f)
}

/// Whether `needle` occurs in `hay`.
pub fn contains(hay: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && hay.windows(needle.len()).any(|w| w == needle)
}

/// One line of a command's stderr, for reports.
pub fn stderr_line(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).trim().to_string()
}
