//! `cargo xtask demo`: the original three-node demo, then what it could not do.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::proc::{Managed, cargo, run_ok, target_dir};

/// One demo node: the original's ports were 3000, 7000 and 5000.
struct DemoNode {
    port: u16,
    peers: Vec<u16>,
    data: PathBuf,
    process: Option<Managed>,
}

struct Demo {
    bin: PathBuf,
    secret: String,
    work: PathBuf,
    nodes: Vec<DemoNode>,
    passed: Vec<&'static str>,
}

pub fn run(args: &[String]) -> Result<()> {
    let mut base = 3000u16;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--base-port" => {
                base = it
                    .next()
                    .and_then(|s| s.parse().ok())
                    .filter(|p| *p > 0 && *p <= 65535 - 4000)
                    .context("--base-port takes a port number up to 61535")?;
            }
            other => bail!("unknown demo option {other:?} (try --base-port N)"),
        }
    }
    let ports = [base, base + 4000, base + 2000];
    for p in ports {
        if TcpListener::bind(("127.0.0.1", p)).is_err() {
            bail!(
                "port {p} is in use on 127.0.0.1; pass --base-port to use other ports (e.g. cargo xtask demo --base-port 13000)"
            );
        }
    }

    step_title("building the drift binary");
    run_ok(cargo().args(["build", "-p", "drift-cli", "--bin", "drift"]))?;
    let bin = target_dir().join("debug").join("drift");
    let work = target_dir().join("demo");
    if work.exists() {
        std::fs::remove_dir_all(&work)
            .with_context(|| format!("cannot clear {}", work.display()))?;
    }
    std::fs::create_dir_all(&work)?;
    let secret = String::from_utf8(Command::new(&bin).arg("keygen").output()?.stdout)?
        .trim()
        .to_string();
    println!(
        "generated a fresh cluster secret (64 hex characters; every node and client needs it)"
    );

    let nodes = vec![
        DemoNode {
            port: ports[0],
            peers: vec![],
            data: work.join(format!("node-{}", ports[0])),
            process: None,
        },
        DemoNode {
            port: ports[1],
            peers: vec![],
            data: work.join(format!("node-{}", ports[1])),
            process: None,
        },
        DemoNode {
            port: ports[2],
            peers: vec![ports[0], ports[1]],
            data: work.join(format!("node-{}", ports[2])),
            process: None,
        },
    ];
    let mut demo = Demo {
        bin,
        secret,
        work,
        nodes,
        passed: Vec::new(),
    };
    let result = demo.script();
    for n in &mut demo.nodes {
        if let Some(mut p) = n.process.take() {
            p.kill();
        }
    }
    println!();
    match result {
        Ok(()) => {
            println!(
                "== summary: {} of {} steps passed ==",
                demo.passed.len(),
                demo.passed.len()
            );
            for s in &demo.passed {
                println!("  ok  {s}");
            }
            Ok(())
        }
        Err(e) => {
            println!(
                "== summary: {} steps passed, then one failed ==",
                demo.passed.len()
            );
            for s in &demo.passed {
                println!("  ok  {s}");
            }
            Err(e)
        }
    }
}

fn step_title(text: &str) {
    println!();
    println!("== {text} ==");
}

/// Incompressible, non-repeating bytes (xorshift), so no chunk dedups by accident.
fn pseudo_random(len: usize) -> Vec<u8> {
    let mut x: u64 = 0x2545_F491_4F6C_DD1D;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

fn picture(i: usize) -> String {
    format!("This is the content of file {i} - distributed file system data!")
}

impl Demo {
    fn script(&mut self) -> Result<()> {
        step_title("starting three nodes, as the original demo did");
        println!(
            ":{} and :{} start alone; :{} bootstraps from both",
            self.nodes[0].port, self.nodes[1].port, self.nodes[2].port
        );
        for i in 0..3 {
            self.start(i)?;
        }
        self.wait_mesh()?;
        println!("every node sees the other two");
        self.passed
            .push("three-node cluster formed (:3000 and :7000, :5000 peering with both)");

        let (a, b, c) = (0, 1, 2);
        step_title(&format!(
            "the original demo: store, get and delete ten files through :{}",
            self.port(c)
        ));
        let dir = self.work.join("files");
        std::fs::create_dir_all(&dir)?;
        for i in 0..10 {
            let path = dir.join(format!("picture_{i}.png"));
            std::fs::write(&path, picture(i))?;
            self.ok(c, &["put", path.to_str().context("path")?])?;
        }
        println!("stored picture_0.png … picture_9.png");
        for i in 0..10 {
            let got = self.ok(c, &["get", &format!("picture_{i}.png")])?;
            if got != picture(i).as_bytes() {
                bail!("picture_{i}.png came back with the wrong bytes");
            }
        }
        println!("read all ten back, byte for byte (\"{}\")", picture(0));
        for i in 0..10 {
            self.ok(c, &["rm", &format!("picture_{i}.png")])?;
        }
        let err = self.fail(c, &["get", "picture_3.png"])?;
        println!("deleted all ten; a get now fails at once: {err}");
        self.passed
            .push("original demo replayed: 10 files stored, read back and deleted");

        step_title(&format!(
            "reading through a node that never ingested the file (put via :{}, get via :{})",
            self.port(c),
            self.port(a)
        ));
        let report = pseudo_random(5_000_000);
        let report_path = dir.join("report.bin");
        std::fs::write(&report_path, &report)?;
        self.ok(c, &["put", report_path.to_str().context("path")?])?;
        let got = self.ok(a, &["get", "report.bin"])?;
        if got != report {
            bail!("report.bin read through :{} differs", self.port(a));
        }
        println!(
            "5 MB file stored through :{}, read back through :{}: identical, every chunk verified",
            self.port(c),
            self.port(a)
        );
        self.passed
            .push("a node that never ingested a file serves it");

        step_title("dedup: the same bytes under two names take the space of one");
        let before = self.bytes_on_disk(b)?;
        let copy = dir.join("report-copy.bin");
        std::fs::write(&copy, &report)?;
        self.ok(c, &["put", copy.to_str().context("path")?])?;
        let after = self.bytes_on_disk(b)?;
        println!(
            "chunk bytes on :{} before the second name: {before}, after: {after}",
            self.port(b)
        );
        if after != before {
            bail!("storing identical content grew the store from {before} to {after} bytes");
        }
        self.passed
            .push("identical content stored once (dedup by SHA-1 of sealed chunks)");

        step_title(&format!("killing node :{} (SIGKILL)", self.port(b)));
        self.kill(b);
        for n in [a, c] {
            for name in ["report.bin", "report-copy.bin"] {
                if self.ok(n, &["get", name])? != report {
                    bail!("{name} via :{} differs after the kill", self.port(n));
                }
            }
        }
        println!(
            "every file still reads, byte for byte, from :{} and :{}",
            self.port(a),
            self.port(c)
        );
        self.passed.push("a killed node loses no file");

        step_title(&format!("changing things while :{} is down", self.port(b)));
        self.ok(a, &["rm", "report-copy.bin"])?;
        let news = dir.join("news.txt");
        std::fs::write(&news, "written while a node was down")?;
        self.ok(c, &["put", news.to_str().context("path")?])?;
        println!("deleted report-copy.bin and stored news.txt (2 of 3 replicas is a quorum)");

        step_title(&format!("restarting :{}: it catches up", self.port(b)));
        self.start(b)?;
        self.wait_mesh()?;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ls = String::from_utf8_lossy(&self.ok(b, &["ls"])?).to_string();
            if ls.contains("news.txt") && !ls.contains("report-copy.bin") {
                break;
            }
            if Instant::now() > deadline {
                bail!(
                    ":{} did not catch up within 30 s; its listing:\n{ls}",
                    self.port(b)
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        if self.ok(b, &["get", "news.txt"])? != b"written while a node was down" {
            bail!("news.txt differs on the restarted node");
        }
        let err = self.fail(b, &["get", "report-copy.bin"])?;
        println!("the restarted node has news.txt, and the delete stuck: {err}");
        print!("{}", String::from_utf8_lossy(&self.ok(b, &["ls"])?));
        self.passed.push(
            "a restarted node catches up; a delete made while it was down does not come back",
        );
        Ok(())
    }

    fn port(&self, i: usize) -> u16 {
        self.nodes[i].port
    }

    fn start(&mut self, i: usize) -> Result<()> {
        let n = &self.nodes[i];
        let mut cmd = Command::new(&self.bin);
        cmd.args([
            "node",
            "--listen",
            &format!("127.0.0.1:{}", n.port),
            "--data",
        ])
        .arg(&n.data)
        .args(["--anti-entropy", "1", "--exit-with-parent"])
        .env("DRIFT_SECRET", &self.secret)
        .env(
            "RUST_LOG",
            std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
        );
        for p in &n.peers {
            cmd.args(["--peer", &format!("127.0.0.1:{p}")]);
        }
        let (process, lines) = Managed::spawn(cmd, format!("node :{}", n.port))?;
        self.nodes[i].process = Some(process);
        let ready = lines
            .recv_timeout(Duration::from_secs(30))
            .unwrap_or_default();
        if !ready.contains("listening on") {
            bail!(
                "node :{} did not start (see its log lines above)",
                self.port(i)
            );
        }
        Ok(())
    }

    fn kill(&mut self, i: usize) {
        if let Some(mut p) = self.nodes[i].process.take() {
            p.kill();
        }
    }

    fn drift(&self, i: usize, args: &[&str]) -> Result<Output> {
        let mut cmd = Command::new(&self.bin);
        cmd.args(args)
            .args(["--node", &format!("127.0.0.1:{}", self.port(i))])
            .env("DRIFT_SECRET", &self.secret);
        cmd.output()
            .with_context(|| format!("cannot run drift {args:?}"))
    }

    /// Runs a command that must succeed; returns its stdout.
    fn ok(&self, i: usize, args: &[&str]) -> Result<Vec<u8>> {
        let out = self.drift(i, args)?;
        if !out.status.success() {
            bail!(
                "drift {} via :{} failed: {}",
                args.join(" "),
                self.port(i),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(out.stdout)
    }

    /// Runs a command that must fail; returns its error line.
    fn fail(&self, i: usize, args: &[&str]) -> Result<String> {
        let out = self.drift(i, args)?;
        if out.status.success() {
            bail!(
                "drift {} via :{} should have failed",
                args.join(" "),
                self.port(i)
            );
        }
        Ok(String::from_utf8_lossy(&out.stderr).trim().to_string())
    }

    fn status_json(&self, i: usize) -> Result<serde_json::Value> {
        Ok(serde_json::from_slice(&self.ok(i, &["status", "--json"])?)?)
    }

    fn bytes_on_disk(&self, i: usize) -> Result<u64> {
        self.status_json(i)?["bytes"]
            .as_u64()
            .context("status has no byte count")
    }

    /// Waits until every running node sees every other running node up.
    fn wait_mesh(&self) -> Result<()> {
        let running: Vec<usize> = (0..self.nodes.len())
            .filter(|i| self.nodes[*i].process.is_some())
            .collect();
        let deadline = Instant::now() + Duration::from_secs(30);
        for &i in &running {
            loop {
                let up = self
                    .status_json(i)
                    .ok()
                    .and_then(|s| {
                        s["peers"]
                            .as_array()
                            .map(|p| p.iter().filter(|p| p["state"] == "Up").count())
                    })
                    .unwrap_or(0);
                if up + 1 >= running.len() {
                    break;
                }
                if Instant::now() > deadline {
                    bail!("node :{} did not see its peers within 30 s", self.port(i));
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        Ok(())
    }
}
