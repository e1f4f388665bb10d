//! Reference figures measured in the same run: the primitives a chunk passes
//! through, the transport's cipher, memcpy, loopback TCP (its speed and its
//! CPU), fsynced writes and direct reads of chunk-sized files.

use std::hint::black_box;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use aes::cipher::{KeyIvInit, StreamCipher};
use anyhow::{Context, Result};
use sha1::{Digest, Sha1};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::Plan;
use super::floor::Floor;
use super::report::Row;
use super::workload::fill_random;

type Aes256Ctr = ctr::Ctr128BE<aes::Aes256>;

const MB: f64 = 1e6;
/// Primitives run over a 1 MiB buffer (a chunk), as drift's seal does.
const BUF: usize = 1 << 20;
/// The largest transport frame's payload (a Noise message is at most 64 KiB).
const FRAME: usize = 64 * 1024 - 16;
/// Chunk reads a get keeps in flight (the node's default pipeline depth).
const READERS: usize = 8;

/// The one-core figures the pipeline limits are derived from, in MB/s.
#[derive(Debug, Clone, Copy)]
pub struct Primitives {
    pub sha1: f64,
    pub aes: f64,
    pub blake3: f64,
    pub fsync_write: f64,
    /// 1 MiB files read back with direct I/O, as a get reads chunks.
    pub direct_read: f64,
}

impl Primitives {
    /// One core pushing a chunk through keyed hash, AES-CTR and SHA-1 in turn.
    pub fn one_core_pipeline(&self) -> f64 {
        1.0 / (1.0 / self.sha1 + 1.0 / self.aes + 1.0 / self.blake3)
    }

    /// Issue 8: min(2 cores × one-core pipeline, fsync write bandwidth).
    pub fn put_limit(&self) -> f64 {
        (2.0 * self.one_core_pipeline()).min(self.fsync_write)
    }

    /// The put limit's match for a get: opening uses the same three
    /// primitives, and its chunks come off the disk (read, not written).
    pub fn get_limit(&self) -> f64 {
        (2.0 * self.one_core_pipeline()).min(self.direct_read)
    }
}

/// Runs `f` (which processes `bytes_per_call` bytes) for about `time`, returning MB/s.
fn rate(time: Duration, bytes_per_call: usize, mut f: impl FnMut()) -> f64 {
    f(); // warm up caches and lazily detected CPU features
    let start = Instant::now();
    let mut calls = 0u64;
    while start.elapsed() < time {
        f();
        calls += 1;
    }
    (calls as f64 * bytes_per_call as f64) / start.elapsed().as_secs_f64() / MB
}

fn runs(plan: &Plan, f: impl Fn() -> f64) -> Vec<f64> {
    (0..plan.ref_runs).map(|_| f()).collect()
}

/// The reference files, kept for the get's reference measured again beside
/// each run ([`Probe::get_limit_now`]); set aside when dropped.
pub struct Probe {
    work: PathBuf,
    dir: PathBuf,
    /// 1 MiB files written and fsynced, for direct reads.
    files: Vec<PathBuf>,
}

impl Probe {
    /// The one-core primitives, measured once each now.
    ///
    /// There is no put limit measured beside a run: a write + fsync right
    /// after a 1 GiB put measured 325-346 MB/s, against 1780 in the reference
    /// section. The put takes the blocks freed before it, and on this
    /// machine's virtual disk blocks written for the first time are about 5×
    /// slower; that would measure the host's allocation, not the disk.
    fn primitives_now(plan: &Plan, fsync_write: f64, direct_read: f64) -> Primitives {
        let mut buf = vec![0u8; BUF];
        fill_random(&mut buf, 2);
        let t = plan.ref_time;
        let sha1 = rate(t, BUF, || {
            black_box(Sha1::digest(black_box(&buf)));
        });
        let blake3 = rate(t, BUF, || {
            black_box(blake3::keyed_hash(&[9u8; 32], black_box(&buf)));
        });
        let aes = rate(t, BUF, || {
            let mut c = Aes256Ctr::new(&[7u8; 32].into(), &[0u8; 16].into());
            c.apply_keystream(black_box(&mut buf));
        });
        Primitives {
            sha1,
            aes,
            blake3,
            fsync_write,
            direct_read,
        }
    }

    /// The open pipeline limit, measured now (the reference files read again).
    pub fn get_limit_now(&self, plan: &Plan) -> Result<f64> {
        let read = direct_read_files(&self.files, READERS)?;
        Ok(Self::primitives_now(plan, f64::NAN, read).get_limit())
    }
}

impl Drop for Probe {
    fn drop(&mut self) {
        super::trash::set_aside(&self.work, &self.dir);
    }
}

pub fn measure(plan: &Plan, work: &Path, rows: &mut Vec<Row>) -> Result<(Floor, Probe)> {
    const S: &str = "Reference figures (same run)";
    let mut buf = vec![0u8; BUF];
    fill_random(&mut buf, 1);
    let t = plan.ref_time;

    let sha1 = runs(plan, || {
        rate(t, BUF, || {
            black_box(Sha1::digest(black_box(&buf)));
        })
    });
    let aes = runs(plan, || {
        let mut b = buf.clone();
        rate(t, BUF, || {
            let mut c = Aes256Ctr::new(&[7u8; 32].into(), &[0u8; 16].into());
            c.apply_keystream(black_box(&mut b));
        })
    });
    let blake3 = runs(plan, || {
        rate(t, BUF, || {
            black_box(blake3::keyed_hash(&[9u8; 32], black_box(&buf)));
        })
    });
    // drift-p2p seals each frame (up to 64 KiB) in place with ring's AES-256-GCM.
    let gcm = runs(plan, || {
        let key = ring::aead::LessSafeKey::new(
            ring::aead::UnboundKey::new(&ring::aead::AES_256_GCM, &[5u8; 32])
                .expect("a 32-byte key suits AES-256-GCM"),
        );
        let mut frame = buf[..FRAME].to_vec();
        rate(t, FRAME, || {
            let nonce = ring::aead::Nonce::assume_unique_for_key([0u8; 12]);
            black_box(key.seal_in_place_separate_tag(
                nonce,
                ring::aead::Aad::empty(),
                black_box(&mut frame),
            ))
            .ok();
        })
    });
    let keys = drift_crypto::ClusterSecret::from_bytes([3; 32]).keys();
    let seal = runs(plan, || {
        let mut b = buf.clone();
        rate(t, BUF, || {
            // Sealing ciphertext again is as costly as sealing plaintext.
            black_box(keys.convergence.seal(black_box(&mut b)));
        })
    });
    let memcpy = runs(plan, || {
        let src = vec![1u8; 64 << 20];
        let mut dst = vec![0u8; 64 << 20];
        rate(t, src.len(), || {
            dst.copy_from_slice(black_box(&src));
            black_box(&mut dst);
        })
    });
    let (tcp, tcp_cpu): (Vec<f64>, Vec<f64>) = (0..plan.ref_runs)
        .map(|_| tcp_loopback(plan.tcp_bytes).unwrap_or((f64::NAN, f64::NAN)))
        .unzip();
    // Each run rewrites blocks the last one freed. On this machine's
    // virtual disk, blocks written for the first time are several times
    // slower (a 256 MiB fsync write: 345 MB/s against 1525 for freed ones),
    // which measures the host, not the disk drift writes to. The last run's
    // chunk files stay for the get's references beside its runs.
    let probe = work.join("fsync-probe");
    let mut fsync = Vec::new();
    for _ in 0..plan.ref_runs {
        fsync.push(fsync_write(&probe.join("big"), plan.fsync_bytes)?);
    }
    let (mut chunk_fsync, mut direct_read, mut files) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..plan.ref_runs {
        for f in &files {
            let _ = std::fs::remove_file(f);
        }
        let (rate, written) = chunk_files_fsync(&probe, plan.fsync_bytes)?;
        chunk_fsync.push(rate);
        direct_read.push(direct_read_files(&written, READERS)?);
        files = written;
    }
    let probe = Probe {
        work: work.to_path_buf(),
        dir: probe,
        files,
    };

    let p = Primitives {
        sha1: super::report::median(&sha1),
        aes: super::report::median(&aes),
        blake3: super::report::median(&blake3),
        fsync_write: super::report::median(&fsync),
        direct_read: super::report::median(&direct_read),
    };
    let floor = Floor {
        prims: p,
        gcm: super::report::median(&gcm),
        hop: super::report::median(&tcp_cpu),
        memcpy: super::report::median(&memcpy),
        cores: std::thread::available_parallelism().map_or(f64::NAN, |n| n.get() as f64),
    };
    let mb = "MB/s";
    rows.push(Row::new(S, "SHA-1, one core, 1 MiB buffer", mb).samples(sha1));
    rows.push(Row::new(S, "AES-256-CTR, one core", mb).samples(aes));
    rows.push(Row::new(S, "BLAKE3 keyed hash, one core", mb).samples(blake3));
    rows.push(
        Row::new(S, "one-core seal pipeline = 1/(1/sha1+1/aes+1/blake3)", mb)
            .samples(vec![p.one_core_pipeline()])
            .note("derived from the medians above"),
    );
    rows.push(
        Row::new(S, "drift-crypto seal, one core, measured", mb)
            .samples(seal)
            .against("one-core pipeline", p.one_core_pipeline()),
    );
    rows.push(
        Row::new(S, "AES-256-GCM seal (ring), one core, 64 KiB in place", mb)
            .samples(gcm)
            .note("the transport's frame cipher"),
    );
    rows.push(Row::new(S, "memcpy, 64 MiB buffers", mb).samples(memcpy));
    rows.push(
        Row::new(S, "loopback TCP, tokio multi-thread, one connection", mb)
            .samples(tcp)
            .note(format!("{} MiB per run", plan.tcp_bytes >> 20)),
    );
    rows.push(
        Row::new(S, "loopback TCP CPU, sender and receiver together", "CPU-ms/MiB")
            .samples(tcp_cpu)
            .note("this process's user+sys time over the same runs: what one hop costs, before any crypto"),
    );
    rows.push(
        Row::new(S, "write + fsync, one file", mb)
            .samples(fsync)
            .note(format!(
                "{} MiB in 1 MiB writes, one fsync",
                plan.fsync_bytes >> 20
            )),
    );
    rows.push(
        Row::new(S, "1 MiB files, write + fsync each, 2 threads", mb)
            .samples(chunk_fsync)
            .note("what a chunk store that fsyncs every chunk can reach"),
    );
    rows.push(
        Row::new(S, "1 MiB files, direct read", mb)
            .samples(direct_read)
            .note(format!(
                "the files above, read back as the chunk store reads a chunk, {READERS} at a time (a get's pipeline depth)"
            )),
    );
    rows.push(
        Row::new(S, "put pipeline limit = min(2 × one-core, fsync write)", mb)
            .samples(vec![p.put_limit()])
            .note("issue 8's single-node put reference"),
    );
    rows.push(
        Row::new(
            S,
            "open pipeline limit = min(2 × one-core, direct read)",
            mb,
        )
        .samples(vec![p.get_limit()])
        .note("issue 8's single-node get reference"),
    );
    Ok((floor, probe))
}

/// One TCP connection on 127.0.0.1 moving `bytes` between two tasks of a
/// two-worker multi-thread runtime; returns MB/s and the CPU time this
/// process spent per MiB moved (both ends; nothing else runs meanwhile).
fn tcp_loopback(bytes: usize) -> Result<(f64, f64)> {
    let tick = super::cluster::ticks_per_sec();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let reader = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await?;
            let mut buf = vec![0u8; 256 * 1024];
            let mut got = 0usize;
            loop {
                let n = s.read(&mut buf).await?;
                if n == 0 {
                    break;
                }
                got += n;
            }
            Ok::<_, std::io::Error>(got)
        });
        let mut s = tokio::net::TcpStream::connect(addr).await?;
        s.set_nodelay(true)?;
        let buf = vec![5u8; 256 * 1024];
        let cpu0 = super::cluster::own_cpu_ticks()?;
        let start = Instant::now();
        let mut sent = 0;
        while sent < bytes {
            s.write_all(&buf).await?;
            sent += buf.len();
        }
        s.shutdown().await?;
        drop(s);
        let got = reader.await??;
        let secs = start.elapsed().as_secs_f64();
        let cpu = super::cluster::own_cpu_ticks()? - cpu0;
        Ok((
            got as f64 / secs / MB,
            super::ms_per_mib(cpu, tick, got as u64),
        ))
    })
}

/// Sequential writes of `bytes` in 1 MiB pieces to `path`, then one fsync;
/// the file is deleted before and after.
fn fsync_write(path: &Path, bytes: usize) -> Result<f64> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let _ = std::fs::remove_file(path);
    let mut buf = vec![0u8; BUF];
    fill_random(&mut buf, 11);
    let start = Instant::now();
    let mut f =
        std::fs::File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
    let mut written = 0;
    while written < bytes {
        buf[..8].copy_from_slice(&(written as u64).to_le_bytes());
        f.write_all(&buf)?;
        written += buf.len();
    }
    f.sync_all()?;
    let secs = start.elapsed().as_secs_f64();
    drop(f);
    std::fs::remove_file(path)?;
    Ok(written as f64 / secs / MB)
}

/// Two threads each writing 1 MiB files in `dir`, each fsynced before the
/// next; returns MB/s and the files.
fn chunk_files_fsync(dir: &Path, bytes: usize) -> Result<(f64, Vec<PathBuf>)> {
    std::fs::create_dir_all(dir)?;
    let per_thread = bytes / 2 / BUF;
    let start = Instant::now();
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..2)
            .map(|t| {
                scope.spawn(move || -> Result<()> {
                    let mut buf = vec![0u8; BUF];
                    fill_random(&mut buf, 20 + t);
                    for i in 0..per_thread {
                        let path = dir.join(format!("c-{t}-{i}"));
                        let mut f = std::fs::File::create(&path)?;
                        buf[..8].copy_from_slice(&(i as u64).to_le_bytes());
                        f.write_all(&buf)?;
                        f.sync_data()?;
                    }
                    Ok(())
                })
            })
            .collect();
        for h in handles {
            h.join()
                .map_err(|_| anyhow::anyhow!("fsync thread panicked"))??;
        }
        Ok::<_, anyhow::Error>(())
    })?;
    let secs = start.elapsed().as_secs_f64();
    let files = (0..2)
        .flat_map(|t| (0..per_thread).map(move |i| dir.join(format!("c-{t}-{i}"))))
        .collect();
    Ok(((2 * per_thread * BUF) as f64 / secs / MB, files))
}

/// Reads `files` whole with direct I/O from `readers` threads at once, each
/// file opened, read and closed as the chunk store does for a get.
fn direct_read_files(files: &[PathBuf], readers: usize) -> Result<f64> {
    let start = Instant::now();
    let bytes = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..readers)
            .map(|r| {
                scope.spawn(move || -> Result<usize> {
                    let mut buf = drift_store::aligned_buffer(BUF);
                    let mut bytes = 0;
                    for path in files.iter().skip(r).step_by(readers) {
                        let file = drift_store::UncachedReader::open(path)?;
                        file.read_at(0, BUF, &mut buf)?;
                        bytes += buf.len();
                    }
                    Ok(bytes)
                })
            })
            .collect();
        handles.into_iter().try_fold(0, |sum, h| {
            let bytes = h
                .join()
                .map_err(|_| anyhow::anyhow!("read thread panicked"))??;
            anyhow::Ok(sum + bytes)
        })
    })?;
    Ok(bytes as f64 / start.elapsed().as_secs_f64() / MB)
}
