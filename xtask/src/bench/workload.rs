//! What the bench asks of the nodes: big puts and gets through the client
//! library, small files from 16 concurrent clients, and content placed off a
//! chosen node.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use bytes::Bytes;
use drift_crypto::{ChunkId, ClusterSecret, DEFAULT_CHUNK_SIZE};
use drift_server::client::Client;
use futures_util::{Stream, stream};

pub const CHUNK: usize = DEFAULT_CHUNK_SIZE;
const CLIENT_TIMEOUT: Duration = Duration::from_secs(30);

/// Fills `buf` with xorshift64* output (incompressible, reproducible).
pub fn fill_random(buf: &mut [u8], seed: u64) {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    for word in buf.chunks_mut(8) {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        let v = x.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes();
        word.copy_from_slice(&v[..word.len()]);
    }
}

/// A file's bytes, made on the fly: every chunk-sized block is one random
/// block with its first 16 bytes replaced by (tag, nonce of the block), so
/// no two blocks of a run, or of different runs, dedup.
pub struct Source {
    base: Bytes,
    len: u64,
    tag: u64,
    nonces: Option<Arc<Vec<u64>>>,
}

impl Source {
    pub fn new(base: Bytes, len: u64, tag: u64) -> Source {
        Source {
            base,
            len,
            tag,
            nonces: None,
        }
    }

    fn header(&self, block: u64) -> [u8; 16] {
        let nonce = self
            .nonces
            .as_ref()
            .and_then(|n| n.get(block as usize).copied())
            .unwrap_or(block);
        let mut h = [0u8; 16];
        h[..8].copy_from_slice(&self.tag.to_le_bytes());
        h[8..].copy_from_slice(&nonce.to_le_bytes());
        h
    }

    /// The bytes, for [`Client::put_blocks`]: each chunk-sized block goes
    /// out as its header and a slice of the shared base block, so making
    /// the file copies none of its bytes. That is how a client whose data
    /// is already in memory sends it, and how `drift put` sends a file (it
    /// reads straight into the blocks it sends); copying every block here
    /// would charge drift for the bench's own data generation.
    pub fn blocks(self) -> impl Stream<Item = std::io::Result<Bytes>> + Unpin {
        let n_blocks = self.len.div_ceil(CHUNK as u64);
        let blocks = (0..n_blocks).flat_map(move |block| {
            let n = (self.len - block * CHUNK as u64).min(CHUNK as u64) as usize;
            let head = n.min(16);
            [
                Bytes::copy_from_slice(&self.header(block)[..head]),
                self.base.slice(head..n),
            ]
        });
        stream::iter(blocks.filter(|b| !b.is_empty()).map(Ok))
    }
}

/// A random chunk-sized block to build sources from.
pub fn base_block(seed: u64) -> Bytes {
    let mut b = vec![0u8; CHUNK];
    fill_random(&mut b, seed);
    Bytes::from(b)
}

pub async fn connect(addr: SocketAddr, secret: &ClusterSecret) -> Result<Client> {
    Client::connect(addr, secret, CLIENT_TIMEOUT)
        .await
        .with_context(|| format!("cannot connect to node {addr}"))
}

/// Stores `source` as `name`; returns the seconds it took.
pub async fn put(client: &Client, name: &str, source: Source) -> Result<f64> {
    let len = source.len;
    let start = Instant::now();
    let (_, size) = client
        .put_blocks(name, source.blocks(), |_| {})
        .await
        .with_context(|| format!("put {name}"))?;
    let secs = start.elapsed().as_secs_f64();
    if size != len {
        bail!("put {name}: the node stored {size} of {len} bytes");
    }
    Ok(secs)
}

/// Reads `name` into a sink; returns the seconds it took.
pub async fn get(client: &Client, name: &str, len: u64) -> Result<f64> {
    let start = Instant::now();
    let size = client
        .get(name, tokio::io::sink(), |_, _| {})
        .await
        .with_context(|| format!("get {name}"))?;
    let secs = start.elapsed().as_secs_f64();
    if size != len {
        bail!("get {name}: {size} bytes, expected {len}");
    }
    Ok(secs)
}

/// The `r` nodes drift-server places `id` on, by its own rendezvous hashing.
fn replicas_of(id: &ChunkId, nodes: &[[u8; 32]], r: usize) -> Vec<[u8; 32]> {
    let ids: Vec<drift_server::PeerId> = nodes.iter().map(|n| drift_server::PeerId(*n)).collect();
    drift_server::placement::rank(id, &ids)
        .into_iter()
        .take(r)
        .map(|p| p.0)
        .collect()
}

pub fn parse_id(hex_id: &str) -> Result<[u8; 32]> {
    let mut id = [0u8; 32];
    if hex_id.len() != 64 {
        bail!("node id {hex_id:?} is not 64 hex characters");
    }
    for (i, b) in id.iter_mut().enumerate() {
        *b = u8::from_str_radix(&hex_id[2 * i..2 * i + 2], 16)?;
    }
    Ok(id)
}

/// A source of `n_chunks` whole chunks none of which is placed on `avoid`.
pub fn source_avoiding(
    secret: &ClusterSecret,
    base: &Bytes,
    tag: u64,
    n_chunks: usize,
    nodes: &[[u8; 32]],
    avoid: [u8; 32],
    r: usize,
) -> Source {
    let keys = secret.keys();
    let next = AtomicU64::new(0);
    let mut nonces = vec![0u64; n_chunks];
    let slots: Vec<std::sync::Mutex<u64>> = (0..n_chunks).map(|_| Default::default()).collect();
    std::thread::scope(|scope| {
        for _ in 0..2 {
            scope.spawn(|| {
                let mut buf = vec![0u8; CHUNK];
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed) as usize;
                    if i >= n_chunks {
                        break;
                    }
                    let mut nonce = i as u64;
                    loop {
                        buf.copy_from_slice(base);
                        buf[..8].copy_from_slice(&tag.to_le_bytes());
                        buf[8..16].copy_from_slice(&nonce.to_le_bytes());
                        let id = keys.convergence.seal(&mut buf).id;
                        if !replicas_of(&id, nodes, r).contains(&avoid) {
                            break;
                        }
                        // Stay clear of the nonces other blocks start from.
                        nonce += 1 << 32;
                    }
                    if let Ok(mut s) = slots[i].lock() {
                        *s = nonce;
                    }
                }
            });
        }
    });
    for (n, s) in nonces.iter_mut().zip(slots) {
        *n = s.into_inner().unwrap_or(0);
    }
    Source {
        base: base.clone(),
        len: (n_chunks * CHUNK) as u64,
        tag,
        nonces: Some(Arc::new(nonces)),
    }
}

/// One phase of [`small_files`]: requests done, its wall time, and the CPU
/// ticks spent in it by the nodes, the client and the whole machine.
pub struct Phase {
    pub ops: u64,
    pub secs: f64,
    pub ticks: Ticks,
}

/// CPU clock ticks: the nodes', the client's, and the whole machine's busy ones.
#[derive(Clone, Copy)]
pub struct Ticks {
    pub nodes: u64,
    pub client: u64,
    pub machine: u64,
}

impl std::ops::Sub for Ticks {
    type Output = Ticks;

    fn sub(self, before: Ticks) -> Ticks {
        Ticks {
            nodes: self.nodes.saturating_sub(before.nodes),
            client: self.client.saturating_sub(before.client),
            machine: self.machine.saturating_sub(before.machine),
        }
    }
}

impl Phase {
    pub fn per_sec(&self) -> f64 {
        self.ops as f64 / self.secs
    }
}

/// 4 KiB puts, then gets of them, from `clients` concurrent clients, each
/// with one connection reused for every request, spread round-robin over
/// `addrs`. Each phase runs for `time`; `cpu` reads the CPU ticks, before
/// and after each.
pub async fn small_files(
    addrs: &[SocketAddr],
    secret: &ClusterSecret,
    clients: usize,
    time: Duration,
    tag: u64,
    cpu: impl Fn() -> Result<Ticks>,
) -> Result<(Phase, Phase)> {
    let mut conns = Vec::new();
    for i in 0..clients {
        conns.push(Arc::new(connect(addrs[i % addrs.len()], secret).await?));
    }
    let base = Arc::new({
        let mut b = vec![0u8; 4096];
        fill_random(&mut b, tag ^ 0x5eed);
        b
    });
    // Puts.
    let t0 = cpu()?;
    let start = Instant::now();
    let deadline = start + time;
    let mut tasks = tokio::task::JoinSet::new();
    let mut ids = Vec::new();
    for (t, c) in conns.iter().enumerate() {
        let c = c.clone();
        let base = base.clone();
        let handle = tasks.spawn(async move {
            let mut n = 0u64;
            while Instant::now() < deadline {
                let mut body = base.to_vec();
                body[..8].copy_from_slice(&tag.to_le_bytes());
                body[8..16].copy_from_slice(&((t as u64) << 32 | n).to_le_bytes());
                let name = format!("small-{tag}-{t}-{n}");
                c.put(&name, &body[..], |_| {})
                    .await
                    .with_context(|| format!("put {name}"))?;
                n += 1;
            }
            anyhow::Ok(n)
        });
        ids.push(handle.id());
    }
    let mut counts = vec![0u64; clients];
    while let Some(r) = tasks.join_next_with_id().await {
        let (id, n) = r?;
        let t = ids.iter().position(|i| *i == id).context("unknown task")?;
        counts[t] = n?;
    }
    let put_secs = start.elapsed().as_secs_f64();
    let t1 = cpu()?;
    let put = Phase {
        ops: counts.iter().sum(),
        secs: put_secs,
        ticks: t1 - t0,
    };
    // Gets, of the files just stored, each client reading what it wrote.
    let mut per_client = Vec::new();
    let mut tasks = tokio::task::JoinSet::new();
    let start = Instant::now();
    let deadline = start + time;
    for (t, c) in conns.iter().enumerate() {
        let c = c.clone();
        let stored = counts[t].max(1);
        tasks.spawn(async move {
            let mut n = 0u64;
            while Instant::now() < deadline {
                let name = format!("small-{tag}-{t}-{}", n % stored);
                let mut out = Vec::with_capacity(4096);
                c.get(&name, &mut out, |_, _| {})
                    .await
                    .with_context(|| format!("get {name}"))?;
                n += 1;
            }
            anyhow::Ok(n)
        });
    }
    while let Some(r) = tasks.join_next().await {
        per_client.push(r??);
    }
    let get_secs = start.elapsed().as_secs_f64();
    let get = Phase {
        ops: per_client.iter().sum(),
        secs: get_secs,
        ticks: cpu()? - t1,
    };
    for c in conns {
        if let Ok(c) = Arc::try_unwrap(c) {
            c.close().await;
        }
    }
    Ok((put, get))
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt;

    /// The bytes a source stands for, built block by block the slow way.
    fn expected(base: &[u8], len: usize, tag: u64) -> Vec<u8> {
        let mut out = Vec::with_capacity(len);
        for block in 0..len.div_ceil(CHUNK) {
            let mut b = base.to_vec();
            b[..8].copy_from_slice(&tag.to_le_bytes());
            b[8..16].copy_from_slice(&(block as u64).to_le_bytes());
            let n = (len - block * CHUNK).min(CHUNK);
            out.extend_from_slice(&b[..n]);
        }
        out
    }

    #[tokio::test]
    async fn a_source_streams_its_bytes_and_no_two_chunks_match() {
        let base = base_block(7);
        for len in [0, 5, 16, 17, CHUNK - 1, CHUNK, 3 * CHUNK + 12345] {
            let blocks: Vec<Bytes> = Source::new(base.clone(), len as u64, 9)
                .blocks()
                .map(|b| b.unwrap())
                .collect()
                .await;
            assert!(blocks.iter().all(|b| !b.is_empty()), "an empty block");
            let got: Vec<u8> = blocks.concat();
            assert_eq!(got.len(), len);
            assert!(
                got == expected(&base, len, 9),
                "wrong bytes at length {len}"
            );
            let mut chunks: Vec<&[u8]> = got.chunks(CHUNK).collect();
            chunks.sort_unstable();
            chunks.dedup();
            assert_eq!(chunks.len(), len.div_ceil(CHUNK), "a chunk repeats");
        }
    }
}
