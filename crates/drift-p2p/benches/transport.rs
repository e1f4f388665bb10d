//! Streams `DRIFT_BENCH_BYTES` (default 1 GiB) over loopback through drift-p2p
//! and through raw tokio TCP, in the same run, and reports both rates and their ratio.
//!
//! `DRIFT_BENCH_BYTES=268435456 cargo bench -p drift-p2p --bench transport`
//! (`DRIFT_BENCH_HEADLINE_ONLY=1` skips the criterion samples after the headline line).

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
    Chunk(Bytes),
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

fn gbps(bytes: u64, d: Duration) -> f64 {
    bytes as f64 / d.as_secs_f64() / 1e9
}

fn main() {
    let rt = Runtime::new().expect("runtime");
    let bytes = total_bytes();
    let pair = rt.block_on(pair());

    // The headline: one pass of each, same process, same runtime.
    let raw = match std::env::var_os("DRIFT_BENCH_SKIP_RAW") {
        Some(_) => Duration::from_secs(1),
        None => rt.block_on(raw_tcp(bytes)),
    };
    let p2p = rt.block_on(transport(&pair, bytes));
    let (raw_rate, p2p_rate) = (gbps(bytes, raw), gbps(bytes, p2p));
    println!(
        "transport: {bytes} bytes: raw tcp {raw_rate:.2} GB/s, drift-p2p {p2p_rate:.2} GB/s, ratio {:.2}",
        p2p_rate / raw_rate
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
