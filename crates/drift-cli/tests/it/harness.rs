//! Starting `drift node` processes and running commands against them.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_drift")
}

/// A port that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub struct Run(pub Output);

impl Run {
    pub fn assert_ok(self) -> String {
        assert!(
            self.0.status.success(),
            "command failed: {}",
            String::from_utf8_lossy(&self.0.stderr)
        );
        String::from_utf8(self.0.stdout).unwrap()
    }

    pub fn assert_err(self) -> String {
        assert!(!self.0.status.success(), "command unexpectedly succeeded");
        String::from_utf8(self.0.stderr).unwrap()
    }
}

/// Runs `drift ARGS` with `secret` (if any) in DRIFT_SECRET, bounded in time.
pub fn drift(args: &[&str], secret: Option<&str>) -> Run {
    drift_to(args, secret, Stdio::piped())
}

/// [`drift`] with its stdout going to `stdout` (its output is then not in the [`Run`]).
pub fn drift_to(args: &[&str], secret: Option<&str>, stdout: Stdio) -> Run {
    let mut cmd = Command::new(bin());
    cmd.args(args)
        .env_remove("DRIFT_SECRET")
        .stdin(Stdio::null());
    if let Some(s) = secret {
        cmd.env("DRIFT_SECRET", s);
    }
    let child = cmd.stdout(stdout).stderr(Stdio::piped()).spawn().unwrap();
    let guard = ChildGuard(Some(child));
    Run(guard.wait_with_timeout(Duration::from_secs(60)))
}

/// Starts `drift ARGS`, a command that runs until stopped, with `secret`
/// in DRIFT_SECRET and the default log level; returns the process (killed
/// when dropped) and its stderr, line by line as it comes.
pub fn spawn_with_stderr(args: &[&str], secret: &str) -> (ChildGuard, mpsc::Receiver<String>) {
    let mut child = Command::new(bin())
        .args(args)
        .env("DRIFT_SECRET", secret)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { return };
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    (ChildGuard(Some(child)), rx)
}

/// Kills its child when dropped, so a failing test leaves no process behind.
pub struct ChildGuard(Option<Child>);

impl ChildGuard {
    fn wait_with_timeout(mut self, limit: Duration) -> Output {
        let child = self.0.take().unwrap();
        let pid = child.id();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(child.wait_with_output());
        });
        match rx.recv_timeout(limit) {
            Ok(out) => out.unwrap(),
            Err(_) => {
                // The child moved into the waiting thread; kill it by pid.
                let _ = Command::new("kill").arg("-9").arg(pid.to_string()).status();
                panic!("drift command did not finish within {limit:?}");
            }
        }
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Some(c) = self.0.as_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Running `drift node` processes sharing one secret.
pub struct Cluster {
    pub secret: String,
    pub dirs: Vec<tempfile::TempDir>,
    addrs: Vec<SocketAddr>,
    children: Vec<ChildGuard>,
}

impl Cluster {
    /// Starts `n` nodes; each later node bootstraps from the first.
    pub fn start(n: usize) -> Cluster {
        let secret = drift(&["keygen"], None).assert_ok().trim().to_string();
        let mut c = Cluster {
            secret,
            dirs: Vec::new(),
            addrs: Vec::new(),
            children: Vec::new(),
        };
        for i in 0..n {
            let peers: Vec<SocketAddr> = c.addrs.first().copied().into_iter().collect();
            c.spawn(i, peers);
        }
        c.wait_mesh();
        c
    }

    fn spawn(&mut self, i: usize, peers: Vec<SocketAddr>) {
        let dir = tempfile::tempdir().unwrap();
        // A port may be taken between probing and binding; retry a few times.
        for _ in 0..5 {
            let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
            if let Some(guard) = self.launch(addr, dir.path(), &peers) {
                assert!(i == self.addrs.len());
                self.addrs.push(addr);
                self.dirs.push(dir);
                self.children.push(guard);
                return;
            }
        }
        panic!("node {i} did not start");
    }

    /// Starts `drift node` and waits (bounded) for its ready line.
    fn launch(
        &self,
        addr: SocketAddr,
        dir: &std::path::Path,
        peers: &[SocketAddr],
    ) -> Option<ChildGuard> {
        let mut cmd = Command::new(bin());
        cmd.args([
            "node",
            "--listen",
            &addr.to_string(),
            "--data",
            dir.to_str().unwrap(),
            "--anti-entropy",
            "1",
            "--exit-with-parent",
        ])
        .env("DRIFT_SECRET", &self.secret)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
        for p in peers {
            cmd.args(["--peer", &p.to_string()]);
        }
        let mut child = cmd.spawn().unwrap();
        let stdout = child.stdout.take().unwrap();
        let guard = ChildGuard(Some(child));
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        match rx.recv_timeout(Duration::from_secs(20)) {
            Ok(line) if line.contains("listening on") => Some(guard),
            _ => None,
        }
    }

    /// Restarts a stopped node on its old address and data directory.
    pub fn restart(&mut self, i: usize) {
        let guard = self
            .launch(self.addrs[i], self.dirs[i].path(), &[])
            .expect("node did not restart");
        self.children[i] = guard;
    }

    /// Sends SIGTERM to node `i` and waits (bounded) for it to exit; returns
    /// whether it exited with status 0.
    pub fn terminate(&mut self, i: usize) -> bool {
        let mut child = self.children[i].0.take().expect("node is running");
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let deadline = std::time::Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status.success();
            }
            if std::time::Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn addr(&self, i: usize) -> SocketAddr {
        self.addrs[i]
    }

    /// The process id of running node `i`.
    pub fn pid(&self, i: usize) -> u32 {
        self.children[i].0.as_ref().expect("node is running").id()
    }

    /// Runs `drift ARGS --node <node i>`.
    pub fn run(&self, i: usize, args: &[&str]) -> Run {
        let node = self.addrs[i].to_string();
        let mut all: Vec<&str> = args.to_vec();
        all.extend(["--node", &node]);
        drift(&all, Some(&self.secret))
    }

    pub fn run_bytes(&self, i: usize, args: &[&str]) -> Output {
        self.run(i, args).0
    }

    pub fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.children[i].0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Waits (bounded) until every node reports every other one up.
    fn wait_mesh(&self) {
        let want = format!(
            "{} of {} peer(s) up",
            self.addrs.len() - 1,
            self.addrs.len() - 1
        );
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        for i in 0..self.addrs.len() {
            loop {
                let out = self.run(i, &["status"]).0;
                if String::from_utf8_lossy(&out.stdout).contains(&want) {
                    break;
                }
                assert!(
                    std::time::Instant::now() < deadline,
                    "cluster did not connect"
                );
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}
