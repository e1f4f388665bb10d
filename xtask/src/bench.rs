//! `cargo xtask bench [--quick] [--only SECTION,...]`: end-to-end benchmarks
//! against real `drift node` processes on loopback, with reference figures
//! measured in the same run. Writes `target/bench/report.{md,json}` and prints
//! the table. Sections: `single`, `three`, `small`, `remote` (all by default);
//! a ratio whose reference section was skipped is left blank.
//!
//! The bench always runs optimised: started from a debug xtask (what `cargo
//! xtask` builds), it builds the release `drift` and xtask binaries and runs
//! the release xtask, so the client side of the measurements is not slowed
//! by an unoptimised drift-p2p.

mod cluster;
mod floor;
mod refs;
mod report;
mod trash;
mod workload;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use drift_crypto::ClusterSecret;

use crate::proc::{cargo, run_ok, target_dir};
use cluster::{Cluster, machine_busy_ticks, own_cpu_ticks, ticks_per_sec};
use report::{Row, Target};
use workload::{CHUNK, Source, base_block, connect, parse_id};

/// Set in the environment of the release xtask the debug one starts.
const INNER_ENV: &str = "DRIFT_BENCH_OPTIMISED";
const MIB: f64 = (1 << 20) as f64;

/// How much each section measures.
pub struct Plan {
    quick: bool,
    ref_runs: usize,
    ref_time: Duration,
    tcp_bytes: usize,
    fsync_bytes: usize,
    /// Single-node file sizes: (label, bytes, runs); the last is the big one.
    sizes: Vec<(&'static str, u64, usize)>,
    multi_bytes: u64,
    multi_runs: usize,
    small_time: Duration,
    small_runs: usize,
    /// Sections to run; empty runs all of them.
    only: Vec<String>,
}

/// The sections `--only` accepts.
const SECTIONS: [&str; 4] = ["single", "three", "small", "remote"];

impl Plan {
    fn new(quick: bool, only: Vec<String>) -> Plan {
        if quick {
            Plan {
                quick,
                ref_runs: 3,
                ref_time: Duration::from_millis(150),
                tcp_bytes: 256 << 20,
                fsync_bytes: 64 << 20,
                sizes: vec![
                    ("1 MiB", 1 << 20, 3),
                    ("16 MiB (quick stand-in for 64 MiB)", 16 << 20, 3),
                    ("128 MiB (quick stand-in for 1 GiB)", 128 << 20, 3),
                ],
                multi_bytes: 64 << 20,
                multi_runs: 3,
                small_time: Duration::from_millis(1500),
                small_runs: 3,
                only,
            }
        } else {
            Plan {
                quick,
                ref_runs: 5,
                ref_time: Duration::from_millis(500),
                tcp_bytes: 2 << 30,
                fsync_bytes: 256 << 20,
                sizes: vec![
                    ("1 MiB", 1 << 20, 9),
                    ("64 MiB", 64 << 20, 5),
                    ("1 GiB", 1 << 30, 3),
                ],
                multi_bytes: 256 << 20,
                multi_runs: 5,
                small_time: Duration::from_secs(4),
                small_runs: 3,
                only,
            }
        }
    }

    fn runs(&self, section: &str) -> bool {
        self.only.is_empty() || self.only.iter().any(|s| s == section)
    }
}

pub fn run(args: &[String]) -> Result<()> {
    let mut quick = false;
    let mut only = Vec::new();
    let mut args_iter = args.iter();
    while let Some(a) = args_iter.next() {
        match a.as_str() {
            "--quick" => quick = true,
            "--only" => {
                let list = args_iter
                    .next()
                    .context("--only needs a list of sections, e.g. --only small,remote")?;
                for section in list.split(',') {
                    if !SECTIONS.contains(&section) {
                        bail!(
                            "unknown bench section {section:?} (sections: {})",
                            SECTIONS.join(", ")
                        );
                    }
                    only.push(section.to_string());
                }
            }
            other => bail!("unknown bench option {other:?} (try --quick or --only SECTION,...)"),
        }
    }
    if cfg!(debug_assertions) && std::env::var_os(INNER_ENV).is_none() {
        return run_optimised(args);
    }
    bench(Plan::new(quick, only))
}

/// Builds the release binaries and runs the bench in the release xtask.
fn run_optimised(args: &[String]) -> Result<()> {
    println!("building release drift and xtask (the bench measures optimised code)");
    run_ok(cargo().args(["build", "--release", "-p", "drift-cli", "-p", "xtask"]))?;
    let xtask = target_dir().join("release").join("xtask");
    let status = std::process::Command::new(&xtask)
        .arg("bench")
        .args(args)
        .env(INNER_ENV, "1")
        .status()
        .with_context(|| format!("cannot run {}", xtask.display()))?;
    if !status.success() {
        bail!("the bench failed ({status})");
    }
    Ok(())
}

struct Ctx {
    plan: Plan,
    bin: PathBuf,
    work: PathBuf,
    secret: ClusterSecret,
    secret_file: PathBuf,
    tick: f64,
    /// Unique per file, so no run dedups against another.
    next_tag: u64,
    /// The same run's references, for the floors.
    floor: floor::Floor,
    /// Each transfer against its floor, reported in a section of their own at the end.
    floors: Vec<Row>,
}

impl Ctx {
    fn tag(&mut self) -> u64 {
        self.next_tag += 1;
        self.next_tag
    }

    fn cluster(&self, name: &str, n: usize, r: usize) -> Result<Cluster> {
        Cluster::start(&self.bin, &self.secret_file, &self.work.join(name), n, r)
    }
}

fn bench(plan: Plan) -> Result<()> {
    let started = Instant::now();
    let bin = target_dir().join("release").join("drift");
    if !bin.exists() {
        run_ok(cargo().args(["build", "--release", "-p", "drift-cli"]))?;
    }
    let work = target_dir().join("bench");
    std::fs::create_dir_all(&work).with_context(|| format!("cannot create {}", work.display()))?;
    let _trash = trash::EmptyOnDrop::new(&work);
    let secret = ClusterSecret::generate()?;
    let secret_file = work.join("secret");
    std::fs::write(&secret_file, secret.to_hex())?;
    let mut rows = Vec::new();
    println!("reference figures…");
    let (floor, probe) = refs::measure(&plan, &work, &mut rows)?;
    let mut ctx = Ctx {
        plan,
        bin,
        work: work.clone(),
        secret,
        secret_file,
        tick: ticks_per_sec(),
        next_tag: u64::from(std::process::id()) << 24,
        floor,
        floors: Vec::new(),
    };
    // The references run first, outside this runtime: the TCP one builds its own.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    // The clients run as a task on the runtime's workers, as in the `drift`
    // binary, not in `block_on` on this thread.
    let body = rt.spawn(async move {
        // A skipped section's reference is NaN, which leaves its ratios blank.
        let (mut single_put, mut single_get) = (f64::NAN, f64::NAN);
        if ctx.plan.runs("single") {
            println!("single node…");
            (single_put, single_get) = single_node(&mut ctx, probe, &mut rows).await?;
        }
        if ctx.plan.runs("three") || ctx.plan.runs("small") {
            println!("three nodes, R = 3…");
            three_nodes(&mut ctx, single_put, &mut rows).await?;
        }
        if ctx.plan.runs("remote") {
            println!("four nodes, R = 3, get through a node without a copy…");
            remote_get(&mut ctx, single_get, &mut rows).await?;
        }
        rows.append(&mut ctx.floors);
        anyhow::Ok((ctx, rows))
    });
    let (ctx, rows) = rt.block_on(body).context("the bench's task stopped")??;
    drop(rt);

    let header = format!(
        "# drift bench{}\n\n{} on {} CPUs; every figure is the median of its runs; MB = 10^6 bytes. \
         Ratios compare with the reference measured in this run, except where the reference says it is quoted; \
         where it was measured beside each run, the ratio is the median of the runs' own ratios.\n\
         Total time {:.0} s.",
        if ctx.plan.quick { " (--quick)" } else { "" },
        std::env::consts::ARCH,
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        started.elapsed().as_secs_f64(),
    );
    let md = report::markdown(&rows, &header);
    let json = report::json(
        &rows,
        serde_json::json!({
            "quick": ctx.plan.quick,
            "cpus": std::thread::available_parallelism().map_or(0, |n| n.get()),
            "seconds": started.elapsed().as_secs_f64(),
            "unix_time": std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
        }),
    );
    report::write(&work, &md, &json)?;
    println!("\n{md}");
    println!(
        "reports: {} and {}",
        work.join("report.md").display(),
        work.join("report.json").display()
    );
    Ok(())
}

fn mb_per_s(bytes: u64, secs: f64) -> f64 {
    bytes as f64 / secs / 1e6
}

fn ms_per_mib(ticks: u64, tick: f64, bytes: u64) -> f64 {
    ticks as f64 / tick * 1000.0 / (bytes as f64 / MIB)
}

/// Single-node put and get for each size; returns the big file's put and get
/// medians. The big file's open limit is measured again right before each
/// get: the direct read moved 2255 -> 1834 MB/s between runs a minute apart.
/// (Why not the put limit: see `refs::Probe::primitives_now`.)
async fn single_node(ctx: &mut Ctx, probe: refs::Probe, rows: &mut Vec<Row>) -> Result<(f64, f64)> {
    const S: &str = "Single node";
    let prims = ctx.floor.prims;
    let cluster = ctx.cluster("single", 1, 3)?;
    cluster.wait_ready(&ctx.secret).await?;
    let node = &cluster.nodes[0];
    let client = connect(node.addr, &ctx.secret).await?;
    let base = base_block(42);
    let sizes = ctx.plan.sizes.clone();
    let n_sizes = sizes.len();
    let mut big = (0.0, 0.0);
    let mut peaks = Vec::new();
    for (k, (label, bytes, runs)) in sizes.into_iter().enumerate() {
        let is_big = k + 1 == n_sizes;
        node.reset_peak();
        let (mut puts, mut gets, mut put_cpu, mut get_cpu) = (vec![], vec![], vec![], vec![]);
        let (mut put_client, mut get_client) = (ClientCpu::default(), ClientCpu::default());
        let mut get_limits = vec![];
        for _ in 0..runs {
            let tag = ctx.tag();
            let name = format!("single-{tag}");
            let (c0, k0) = (node.cpu_ticks()?, own_cpu_ticks()?);
            let secs = workload::put(&client, &name, Source::new(base.clone(), bytes, tag)).await?;
            let (c1, k1) = (node.cpu_ticks()?, own_cpu_ticks()?);
            puts.push(mb_per_s(bytes, secs));
            put_cpu.push(ms_per_mib(c1 - c0, ctx.tick, bytes));
            put_client.add(ctx.tick, bytes, secs, c1 - c0, k1 - k0);
            if is_big {
                get_limits.push(probe.get_limit_now(&ctx.plan)?);
            }
            let (c1, k1) = (node.cpu_ticks()?, own_cpu_ticks()?);
            let secs = workload::get(&client, &name, bytes).await?;
            let (c2, k2) = (node.cpu_ticks()?, own_cpu_ticks()?);
            gets.push(mb_per_s(bytes, secs));
            get_cpu.push(ms_per_mib(c2 - c1, ctx.tick, bytes));
            get_client.add(ctx.tick, bytes, secs, c2 - c1, k2 - k1);
        }
        let peak = node.peak_rss_kib()? as f64 / 1024.0;
        peaks.push(peak);
        let mut put_row = Row::new(S, format!("put, {label}"), "MB/s").samples(puts);
        let mut get_row = Row::new(S, format!("get, {label}"), "MB/s").samples(gets);
        if is_big {
            ctx.floors
                .push(ctx.floor.single_put(label, put_row.samples.clone()));
            put_row = put_row
                .against("put pipeline limit", prims.put_limit())
                .target(Target::RatioAtLeast(floor::SINGLE_PUT_SHARE));
            get_row = get_row
                .against_each("open pipeline limit", get_limits)
                .target(Target::RatioAtLeast(0.7));
            big = (put_row.median(), get_row.median());
        } else {
            put_row = put_row.against("put pipeline limit", prims.put_limit());
            get_row = get_row.against("open pipeline limit", prims.get_limit());
        }
        rows.push(put_row);
        rows.push(get_row);
        if k > 0 {
            rows.push(Row::new(S, format!("put CPU, {label}"), "CPU-ms/MiB").samples(put_cpu));
            rows.push(Row::new(S, format!("get CPU, {label}"), "CPU-ms/MiB").samples(get_cpu));
            if is_big {
                rows.extend(put_client.rows(S, "put", label));
                rows.extend(get_client.rows(S, "get", label));
            }
            let mut rss =
                Row::new(S, format!("peak RSS during put+get, {label}"), "MiB").samples(vec![peak]);
            if is_big {
                rss = rss.target(Target::ValueAtMost(64.0));
            }
            rows.push(rss);
        }
    }
    if peaks.len() >= 2 {
        let growth = peaks[peaks.len() - 1] - peaks[peaks.len() - 2];
        rows.push(
            Row::new(S, "peak RSS growth, biggest vs middle size", "MiB")
                .samples(vec![growth])
                .target(Target::ValueAtMost(16.0)),
        );
    }
    client.close().await;
    Ok(big)
}

/// Three nodes, R = 3: a big put and reads of it, and small files from 16 clients.
async fn three_nodes(ctx: &mut Ctx, single_put: f64, rows: &mut Vec<Row>) -> Result<()> {
    let cluster = ctx.cluster("three", 3, 3)?;
    cluster.wait_ready(&ctx.secret).await?;
    if ctx.plan.runs("three") {
        big_put(ctx, &cluster, single_put, rows).await?;
    }
    if ctx.plan.runs("small") {
        small_files(ctx, &cluster, rows).await?;
    }
    Ok(())
}

const THREE: &str = "Three nodes, R = 3";

/// Issue 8's targets for 256 MiB: a 3-node put, a get through a node without
/// a copy (seconds), and the CPU of a read (CPU-ms/MiB).
const PUT_LIMIT_S: f64 = 0.5;
const GET_LIMIT_S: f64 = 0.2;
const READ_CPU_LIMIT: f64 = 1.0;

async fn big_put(
    ctx: &mut Ctx,
    cluster: &Cluster,
    single_put: f64,
    rows: &mut Vec<Row>,
) -> Result<()> {
    const S: &str = THREE;
    let client = connect(cluster.nodes[0].addr, &ctx.secret).await?;
    let base = base_block(43);
    let bytes = ctx.plan.multi_bytes;
    let label = format!("{} MiB", bytes >> 20);
    cluster.reset_peaks();
    let (mut puts, mut secs_all, mut cpu) = (vec![], vec![], vec![]);
    let mut put_client = ClientCpu::default();
    let mut name = String::new();
    for _ in 0..ctx.plan.multi_runs {
        let tag = ctx.tag();
        name = format!("three-{tag}");
        let (c0, k0) = (cluster.cpu_ticks()?, own_cpu_ticks()?);
        let secs = workload::put(&client, &name, Source::new(base.clone(), bytes, tag)).await?;
        // A put returns only after every replica target answered, so all of
        // its CPU has been spent by now.
        let (c1, k1) = (cluster.cpu_ticks()?, own_cpu_ticks()?);
        puts.push(mb_per_s(bytes, secs));
        secs_all.push(secs);
        cpu.push(ms_per_mib(c1 - c0, ctx.tick, bytes));
        put_client.add(ctx.tick, bytes, secs, c1 - c0, k1 - k0);
    }
    let peaks = cluster.peaks_mib()?;
    // Reads of the last file through the node that took it (every node holds
    // every chunk at R = 3 on 3 nodes): issue 8's read CPU on the cluster
    // Garage's figure comes from, beside the harder read through a node
    // without a copy in the remote section.
    let (mut gets, mut get_cpu) = (vec![], vec![]);
    for _ in 0..ctx.plan.multi_runs {
        let c0 = cluster.cpu_ticks()?;
        let secs = workload::get(&client, &name, bytes).await?;
        let c1 = cluster.cpu_ticks()?;
        gets.push(mb_per_s(bytes, secs));
        get_cpu.push(ms_per_mib(c1 - c0, ctx.tick, bytes));
    }
    ctx.floors
        .push(ctx.floor.three_put(&label, puts.clone(), PUT_LIMIT_S));
    rows.push(
        Row::new(S, format!("put through node 0, {label}"), "MB/s")
            .samples(puts)
            .against("single-node put, biggest file", single_put)
            .target(Target::RatioAtLeast(floor::THREE_PUT_SHARE)),
    );
    rows.push(time_row(
        S,
        format!("put time, {label}"),
        secs_all,
        bytes,
        PUT_LIMIT_S,
    ));
    rows.push(
        Row::new(S, "put CPU, summed over the 3 nodes", "CPU-ms/MiB")
            .samples(cpu)
            .target(Target::ValueAtMost(5.0)),
    );
    rows.extend(put_client.rows(S, "put", &label));
    rows.push(peak_row(
        S,
        "peak RSS during the put, max over nodes",
        &peaks,
    ));
    rows.push(
        Row::new(
            S,
            format!("get through node 0 (holds a copy), {label}"),
            "MB/s",
        )
        .samples(gets),
    );
    rows.push(
        Row::new(S, "get CPU, summed over the 3 nodes", "CPU-ms/MiB")
            .samples(get_cpu)
            .target(Target::ValueAtMost(READ_CPU_LIMIT)),
    );
    client.close().await;
    Ok(())
}

async fn small_files(ctx: &mut Ctx, cluster: &Cluster, rows: &mut Vec<Row>) -> Result<()> {
    const S: &str = THREE;
    let (mut p, mut g) = (vec![], vec![]);
    let (mut put_cpu, mut get_cpu) = (SmallCpu::default(), SmallCpu::default());
    let cpu = || {
        Ok(workload::Ticks {
            nodes: cluster.cpu_ticks()?,
            client: own_cpu_ticks()?,
            machine: machine_busy_ticks()?,
        })
    };
    for _ in 0..ctx.plan.small_runs {
        let tag = ctx.tag();
        let (puts, gets) = workload::small_files(
            &cluster.addrs(),
            &ctx.secret,
            16,
            ctx.plan.small_time,
            tag,
            cpu,
        )
        .await?;
        p.push(puts.per_sec());
        g.push(gets.per_sec());
        put_cpu.add(ctx.tick, &puts);
        get_cpu.add(ctx.tick, &gets);
    }
    let note = format!(
        "16 clients, one connection each, spread over the 3 nodes; {:.1} s per run",
        ctx.plan.small_time.as_secs_f64()
    );
    rows.push(
        Row::new(S, "small files (4 KiB) put", "puts/s")
            .samples(p)
            .against("Garage, TCP_NODELAY (quoted in issue 8)", 352.0)
            .target(Target::ValueAtLeast(3000.0))
            .note(note.clone()),
    );
    rows.extend(put_cpu.rows(S, "put"));
    rows.push(
        Row::new(S, "small files (4 KiB) get", "gets/s")
            .samples(g)
            .against("Garage, TCP_NODELAY (quoted in issue 8)", 756.0)
            .target(Target::ValueAtLeast(20000.0))
            .note(note),
    );
    rows.extend(get_cpu.rows(S, "get"));
    Ok(())
}

/// What a small-file request costs in CPU, and whether the phase was bound
/// by it: as [`ClientCpu`], per request instead of per MiB. The kernel's
/// own threads (disk writeback, block-queue work) belong to no process, so
/// the machine's busy cores are reported too.
#[derive(Default)]
struct SmallCpu {
    nodes: Vec<f64>,
    client: Vec<f64>,
    busy: Vec<f64>,
    machine: Vec<f64>,
}

impl SmallCpu {
    fn add(&mut self, tick: f64, phase: &workload::Phase) {
        let t = phase.ticks;
        let per_op = |ticks: u64| ticks as f64 / tick * 1e6 / phase.ops.max(1) as f64;
        self.nodes.push(per_op(t.nodes));
        self.client.push(per_op(t.client));
        self.busy
            .push((t.nodes + t.client) as f64 / tick / phase.secs);
        self.machine.push(t.machine as f64 / tick / phase.secs);
    }

    fn rows(self, section: &'static str, what: &str) -> [Row; 4] {
        [
            Row::new(
                section,
                format!("small files: CPU per {what}, summed over the 3 nodes"),
                "CPU-us",
            )
            .samples(self.nodes),
            Row::new(
                section,
                format!("small files: CPU per {what} of the bench's 16 clients (in this process)"),
                "CPU-us",
            )
            .samples(self.client),
            cores_row(
                section,
                format!("cores busy during the small {what}s, nodes and clients"),
                self.busy,
                "CPU time over wall time",
            ),
            cores_row(
                section,
                format!("cores busy during the small {what}s, whole machine"),
                self.machine,
                "/proc/stat, kernel threads such as disk writeback included",
            ),
        ]
    }
}

fn peak_row(section: &'static str, name: &str, peaks: &[f64]) -> Row {
    let max = peaks.iter().copied().fold(0.0, f64::max);
    let each: Vec<String> = peaks.iter().map(|p| format!("{p:.0}")).collect();
    Row::new(section, name, "MiB")
        .samples(vec![max])
        .target(Target::ValueAtMost(64.0))
        .note(format!("per node: {}", each.join(", ")))
}

/// Four nodes, R = 3: a file none of whose chunks is on node 3, read through node 3.
async fn remote_get(ctx: &mut Ctx, single_get: f64, rows: &mut Vec<Row>) -> Result<()> {
    const S: &str = "Get through a node without a local copy (4 nodes, R = 3)";
    let cluster = ctx.cluster("four", 4, 3)?;
    let ids = cluster.wait_ready(&ctx.secret).await?;
    let ids: Vec<[u8; 32]> = ids.iter().map(|s| parse_id(s)).collect::<Result<_>>()?;
    let bytes = ctx.plan.multi_bytes;
    let n_chunks = (bytes as usize).div_ceil(CHUNK);
    let base = base_block(44);
    let tag = ctx.tag();
    let source = workload::source_avoiding(&ctx.secret, &base, tag, n_chunks, &ids, ids[3], 3);
    let name = format!("remote-{tag}");
    let writer = connect(cluster.nodes[0].addr, &ctx.secret).await?;
    workload::put(&writer, &name, source).await?;
    writer.close().await;
    let reader = connect(cluster.nodes[3].addr, &ctx.secret).await?;
    let held = reader.status().await?.chunks;
    if held != 0 {
        bail!(
            "node 3 holds {held} chunks of a file placed off it: drift-server's placement changed; update bench/workload.rs"
        );
    }
    cluster.reset_peaks();
    let (mut gets, mut secs_all, mut cpu) = (vec![], vec![], vec![]);
    let mut get_client = ClientCpu::default();
    for _ in 0..ctx.plan.multi_runs {
        let (c0, k0) = (cluster.cpu_ticks()?, own_cpu_ticks()?);
        let secs = workload::get(&reader, &name, bytes).await?;
        let (c1, k1) = (cluster.cpu_ticks()?, own_cpu_ticks()?);
        gets.push(mb_per_s(bytes, secs));
        secs_all.push(secs);
        cpu.push(ms_per_mib(c1 - c0, ctx.tick, bytes));
        get_client.add(ctx.tick, bytes, secs, c1 - c0, k1 - k0);
    }
    let peaks = cluster.peaks_mib()?;
    let label = format!("{} MiB", bytes >> 20);
    ctx.floors
        .push(ctx.floor.remote_get(&label, gets.clone(), GET_LIMIT_S));
    let total = cpu.iter().zip(&get_client.client).map(|(n, c)| n + c);
    ctx.floors
        .push(ctx.floor.remote_get_cpu(total.collect(), READ_CPU_LIMIT));
    rows.push(
        Row::new(S, format!("get through node 3, {label}"), "MB/s")
            .samples(gets)
            .against("single-node get, biggest file", single_get)
            .target(Target::RatioAtLeast(0.7))
            .note("node 3 holds none of its chunks (checked)"),
    );
    rows.push(time_row(
        S,
        format!("get time, {label}"),
        secs_all,
        bytes,
        GET_LIMIT_S,
    ));
    rows.push(
        Row::new(S, "get CPU, summed over the 4 nodes", "CPU-ms/MiB")
            .samples(cpu)
            .target(Target::ValueAtMost(READ_CPU_LIMIT)),
    );
    rows.extend(get_client.rows(S, "get", &label));
    rows.push(peak_row(
        S,
        "peak RSS during the gets, max over nodes",
        &peaks,
    ));
    reader.close().await;
    Ok(())
}

/// The other side of a transfer's CPU: the bench's client, which runs in
/// this process, and how many cores the nodes and the client kept busy
/// together. Near the machine's core count, a transfer is bound by CPU and
/// only doing less work per MiB makes it faster; well below, it waits
/// (on the disk, on the network, on hand-offs).
#[derive(Default)]
struct ClientCpu {
    client: Vec<f64>,
    busy: Vec<f64>,
}

impl ClientCpu {
    /// One transfer of `bytes` in `secs`: CPU ticks spent by the nodes and by the client.
    fn add(&mut self, tick: f64, bytes: u64, secs: f64, nodes: u64, client: u64) {
        self.client.push(ms_per_mib(client, tick, bytes));
        self.busy.push((nodes + client) as f64 / tick / secs);
    }

    fn rows(self, section: &'static str, what: &str, label: &str) -> [Row; 2] {
        [
            Row::new(
                section,
                format!("{what} CPU of the bench's client (in this process), {label}"),
                "CPU-ms/MiB",
            )
            .samples(self.client),
            cores_row(
                section,
                format!("cores busy during the {what}, nodes and client, {label}"),
                self.busy,
                "CPU time over wall time",
            ),
        ]
    }
}

/// Cores kept busy (CPU time over wall time), out of the machine's, and
/// `how` that was counted.
fn cores_row(section: &'static str, name: String, samples: Vec<f64>, how: &str) -> Row {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    Row::new(section, name, "cores")
        .samples(samples)
        .note(format!("of {cores}; {how}"))
}

/// A wall-time row for a 256 MiB transfer, which issue 8 gives a limit in
/// seconds; smaller (quick) runs only say so.
fn time_row(section: &'static str, what: String, secs: Vec<f64>, bytes: u64, limit_s: f64) -> Row {
    let row = Row::new(section, what, "s").samples(secs);
    if bytes == 256 << 20 {
        row.target(Target::ValueAtMost(limit_s))
    } else {
        row.note(format!(
            "issue 8's ≤ {limit_s} s target is for 256 MiB (full run)"
        ))
    }
}
