//! Streams `DRIFT_BENCH_BYTES` (default 1 GiB) over loopback through drift-p2p
//! and through raw tokio TCP, in the same run, and reports both rates and their ratio.
//!
//! A third figure is the floor every encrypted transport pays on top of TCP:
//! the same bytes sealed with ring's AES-256-GCM (the cipher drift-p2p's Noise
//! runs) in place, one frame per 60 KiB, with no framing codec, no streams and
//! no flow control. drift-p2p's rate over that one says how much of the
//! remaining gap is the transport's own overhead rather than the cipher.
//!
//! `DRIFT_BENCH_BYTES=268435456 cargo bench -p drift-p2p --bench transport`
//! (`DRIFT_BENCH_HEADLINE_ONLY=1` skips the criterion samples after the headline lines;
//! `DRIFT_BENCH_ROUNDS` sets how many alternating rounds the headline's medians take, 5 by default).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{Criterion, SamplingMode, Throughput};
use drift_crypto::ClusterSecret;
use drift_p2p::{Config, Endpoint, Event, NodeKey, Role};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::runtime::Runtime;

/// Payload per `Data` message, as the server's chunk transfer would use.
const PIECE: usize = 60 * 1024;

#[derive(Serialize, Deserialize)]
enum Msg {
    Chunk(#[serde(with = "drift_p2p::payload")] Bytes),
    Received(u64),
}

fn total_bytes() -> u64 {
    std::env::var("DRIFT_BENCH_BYTES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1 << 30)
}

async fn raw_tcp(bytes: u64) -> Duration {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let sink = tokio::spawn(async move {
        let (mut tcp, _) = listener.accept().await.expect("accept");
        tcp.set_nodelay(true).expect("nodelay");
        let mut buf = vec![0u8; 256 * 1024];
        let mut got = 0u64;
        loop {
            match tcp.read(&mut buf).await.expect("read") {
                0 => break got,
                n => got += n as u64,
            }
        }
    });
    let mut tcp = TcpStream::connect(addr).await.expect("connect");
    tcp.set_nodelay(true).expect("nodelay");
    let piece = vec![0x5au8; PIECE];
    let start = Instant::now();
    let mut sent = 0u64;
    while sent < bytes {
        let n = PIECE.min((bytes - sent) as usize);
        tcp.write_all(&piece[..n]).await.expect("write");
        sent += n as u64;
    }
    tcp.shutdown().await.expect("shutdown");
    assert_eq!(sink.await.expect("sink"), bytes);
    start.elapsed()
}

/// Frames per write on the sealed floor, as drift-p2p's writer batches them.
const FLOOR_BATCH: usize = 4;

fn floor_key() -> ring::aead::LessSafeKey {
    let key = ring::aead::UnboundKey::new(&ring::aead::AES_256_GCM, &[7u8; 32]).expect("key");
    ring::aead::LessSafeKey::new(key)
}

fn floor_nonce(n: u64) -> ring::aead::Nonce {
    let mut nonce = [0u8; 12];
    nonce[4..].copy_from_slice(&n.to_be_bytes());
    ring::aead::Nonce::assume_unique_for_key(nonce)
}

/// TCP with every 60 KiB piece sealed on one side and opened on the other.
async fn sealed_tcp(bytes: u64) -> Duration {
    const TAG: usize = 16;
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let sink = tokio::spawn(async move {
        let (mut tcp, _) = listener.accept().await.expect("accept");
        tcp.set_nodelay(true).expect("nodelay");
        let key = floor_key();
        // Reads go into a 1 MiB buffer and the unread tail moves to the front
        // only when under a frame of room is left: few copies beside the kernel's.
        let mut buf = vec![0u8; 1 << 20];
        let (mut at, mut filled, mut got, mut nonce) = (0usize, 0usize, 0u64, 0u64);
        loop {
            if buf.len() - filled < 4 + PIECE + TAG {
                buf.copy_within(at..filled, 0);
                filled -= at;
                at = 0;
            }
            let n = tcp.read(&mut buf[filled..]).await.expect("read");
            if n == 0 {
                break got;
            }
            filled += n;
            while filled - at >= 4 {
                let len = u32::from_be_bytes(buf[at..at + 4].try_into().expect("4")) as usize;
                if filled - at < 4 + len {
                    break;
                }
                let body = &mut buf[at + 4..at + 4 + len];
                let plain = key
                    .open_in_place(floor_nonce(nonce), ring::aead::Aad::empty(), body)
                    .expect("open");
                got += plain.len() as u64;
                nonce += 1;
                at += 4 + len;
            }
        }
    });
    let mut tcp = TcpStream::connect(addr).await.expect("connect");
    tcp.set_nodelay(true).expect("nodelay");
    let key = floor_key();
    let piece = vec![0x5au8; PIECE];
    let mut out = Vec::with_capacity(FLOOR_BATCH * (4 + PIECE + TAG));
    let start = Instant::now();
    let (mut sent, mut nonce) = (0u64, 0u64);
    while sent < bytes {
        out.clear();
        for _ in 0..FLOOR_BATCH {
            if sent >= bytes {
                break;
            }
            let n = PIECE.min((bytes - sent) as usize);
            out.extend_from_slice(&((n + TAG) as u32).to_be_bytes());
            let at = out.len();
            out.extend_from_slice(&piece[..n]);
            let tag = key
                .seal_in_place_separate_tag(
                    floor_nonce(nonce),
                    ring::aead::Aad::empty(),
                    &mut out[at..],
                )
                .expect("seal");
            out.extend_from_slice(tag.as_ref());
            nonce += 1;
            sent += n as u64;
        }
        tcp.write_all(&out).await.expect("write");
    }
    tcp.shutdown().await.expect("shutdown");
    assert_eq!(sink.await.expect("sink"), bytes);
    start.elapsed()
}

struct Pair {
    client: Endpoint<Msg>,
    server: Endpoint<Msg>,
    addr: SocketAddr,
}

async fn pair() -> Pair {
    let secret = ClusterSecret::generate().expect("rng");
    let mut config = Config::new(&secret, NodeKey::generate(), Role::Node);
    if let Some(window) = std::env::var("DRIFT_BENCH_WINDOW")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        config.stream_window = window;
    }
    let (server, mut events) = Endpoint::<Msg>::bind("127.0.0.1:0".parse().expect("addr"), config)
        .await
        .expect("bind");
    tokio::spawn(async move {
        while let Some(event) = events.recv().await {
            let Event::Stream { mut stream, .. } = event else {
                continue;
            };
            tokio::spawn(async move {
                let mut got = 0u64;
                while let Ok(Some(Msg::Chunk(b))) = stream.recv().await {
                    got += b.len() as u64;
                }
                let _ = stream.send(&Msg::Received(got)).await;
                let _ = stream.finish().await;
            });
        }
    });
    let (client, _events) =
        Endpoint::client(Config::new(&secret, NodeKey::generate(), Role::Client));
    let addr = server.local_addr().expect("bound");
    Pair {
        client,
        server,
        addr,
    }
}

async fn transport(pair: &Pair, bytes: u64) -> Duration {
    let conn = pair.client.connect(pair.addr).await.expect("connect");
    let piece = Bytes::from(vec![0x5au8; PIECE]);
    let start = Instant::now();
    let mut stream = conn.open().await.expect("open");
    let mut sent = 0u64;
    while sent < bytes {
        let n = PIECE.min((bytes - sent) as usize);
        stream
            .send(&Msg::Chunk(piece.slice(..n)))
            .await
            .expect("send");
        sent += n as u64;
    }
    stream.finish().await.expect("finish");
    match stream.recv().await.expect("reply") {
        Some(Msg::Received(n)) => assert_eq!(n, bytes),
        _ => panic!("unexpected reply"),
    }
    let took = start.elapsed();
    conn.close("done");
    took
}

/// User + system CPU time of this process so far (from /proc; 0 elsewhere).
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the parenthesised command name; utime and stime are 14 and 15.
    let after = stat.rsplit(')').next().unwrap_or("");
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 = fields.get(11..13).map_or(0.0, |f| {
        f.iter().filter_map(|v| v.parse::<f64>().ok()).sum()
    });
    ticks / 100.0
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn gbps(bytes: u64, d: Duration) -> f64 {
    bytes as f64 / d.as_secs_f64() / 1e9
}

fn main() {
    let rt = Runtime::new().expect("runtime");
    let bytes = total_bytes();
    let pair = rt.block_on(pair());

    // The headline: rounds of one pass each, alternating, same process and
    // runtime; medians, because this machine is shared and single passes swing.
    let rounds: usize = std::env::var("DRIFT_BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5)
        .max(1);
    let (mut raw, mut floor, mut p2p) = (vec![], vec![], vec![]);
    // (CPU seconds, wall seconds) of each kind, summed over the rounds.
    let mut busy = [(0.0, 0.0); 3];
    let mut timed = |kind: usize, d: Duration, cpu: f64| {
        busy[kind].0 += cpu;
        busy[kind].1 += d.as_secs_f64();
        gbps(bytes, d)
    };
    for _ in 0..rounds {
        let c = cpu_seconds();
        let d = rt.block_on(raw_tcp(bytes));
        raw.push(timed(0, d, cpu_seconds() - c));
        let c = cpu_seconds();
        let d = rt.block_on(sealed_tcp(bytes));
        floor.push(timed(1, d, cpu_seconds() - c));
        let c = cpu_seconds();
        let d = rt.block_on(transport(&pair, bytes));
        p2p.push(timed(2, d, cpu_seconds() - c));
    }
    let (raw_rate, floor_rate, p2p_rate) = (median(raw), median(floor), median(p2p));
    let cores = |k: usize| busy[k].0 / busy[k].1;
    println!(
        "cores busy: raw tcp {:.2}, floor {:.2}, drift-p2p {:.2}",
        cores(0),
        cores(1),
        cores(2)
    );
    println!(
        "transport: {bytes} bytes, median of {rounds} rounds: raw tcp {raw_rate:.2} GB/s, \
         drift-p2p {p2p_rate:.2} GB/s, ratio {:.2}",
        p2p_rate / raw_rate
    );
    println!(
        "floor: tcp + in-place AES-256-GCM (ring), no framing or streams: {floor_rate:.2} GB/s, \
         {:.2} of raw tcp; drift-p2p reaches {:.2} of it",
        floor_rate / raw_rate,
        p2p_rate / floor_rate
    );

    if std::env::var_os("DRIFT_BENCH_HEADLINE_ONLY").is_some() {
        return;
    }
    let mut c = Criterion::default()
        .configure_from_args()
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(1));
    let mut group = c.benchmark_group("loopback");
    group
        .sampling_mode(SamplingMode::Flat)
        .throughput(Throughput::Bytes(bytes));
    group.bench_function("raw_tcp", |b| {
        b.iter_custom(|iters| (0..iters).map(|_| rt.block_on(raw_tcp(bytes))).sum())
    });
    group.bench_function("sealed_tcp_floor", |b| {
        b.iter_custom(|iters| (0..iters).map(|_| rt.block_on(sealed_tcp(bytes))).sum())
    });
    group.bench_function("drift_p2p", |b| {
        b.iter_custom(|iters| {
            (0..iters)
                .map(|_| rt.block_on(transport(&pair, bytes)))
                .sum()
        })
    });
    group.finish();
    c.final_summary();
    rt.block_on(async {
        pair.client.shutdown().await;
        pair.server.shutdown().await;
    });
}
