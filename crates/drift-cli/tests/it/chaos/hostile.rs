//! Scenario 4: a member holding the right secret answers every chunk request
//! with wrong, truncated or padded data. Reads must still return the right
//! bytes, from an honest replica, and nothing it sent may be stored.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use drift_crypto::{ChunkId, ClusterSecret};
use drift_p2p::{Config, Endpoint, Event, NodeKey, Role, Stream};
use drift_server::proto::{FailKind, Msg};

use super::{Lab, Report, Rng, Scale, bad_chunk_files, content, wait_until};

/// What the hostile member keeps and how often it lied.
#[derive(Default)]
struct Liar {
    chunks: Mutex<HashMap<ChunkId, Vec<u8>>>,
    wrong: AtomicU64,
    truncated: AtomicU64,
    padded: AtomicU64,
    other_chunk: AtomicU64,
    stored: AtomicU64,
}

impl Liar {
    fn lies(&self) -> u64 {
        [
            &self.wrong,
            &self.truncated,
            &self.padded,
            &self.other_chunk,
        ]
        .iter()
        .map(|c| c.load(Ordering::Relaxed))
        .sum()
    }
}

async fn send_all(s: &mut Stream<Msg>, first: Msg, bytes: &[u8]) {
    if s.send(&first).await.is_err() {
        return;
    }
    for piece in bytes.chunks(drift_server::proto::PIECE_LEN) {
        if s.send(&Msg::Data(piece.to_vec().into())).await.is_err() {
            return;
        }
    }
    let _ = s.finish().await;
}

async fn reply(s: &mut Stream<Msg>, msg: Msg) {
    if s.send(&msg).await.is_ok() {
        let _ = s.finish().await;
    }
}

/// Answers one stream the way a faulty or malicious node would.
async fn serve(liar: Arc<Liar>, mut s: Stream<Msg>) {
    let Ok(Some(request)) = s.recv().await else {
        return;
    };
    match request {
        Msg::PutChunk { id, len } | Msg::PutSealed { id, len, .. } => {
            // Takes the chunk (and so counts towards the write quorum).
            let mut buf = Vec::new();
            while let Ok(Some(Msg::Data(piece))) = s.recv().await {
                if buf.len() + piece.len() > len as usize {
                    break;
                }
                buf.extend_from_slice(&piece);
            }
            liar.chunks.lock().unwrap().insert(id, buf);
            liar.stored.fetch_add(1, Ordering::Relaxed);
            reply(&mut s, Msg::Done).await;
        }
        Msg::GetChunk { id } => {
            let (real, other) = {
                let chunks = liar.chunks.lock().unwrap();
                let other = chunks
                    .iter()
                    .find(|(k, _)| **k != id)
                    .map(|(_, v)| v.clone());
                // Asked for a chunk it never got: it answers anyway.
                (
                    chunks.get(&id).cloned().unwrap_or_else(|| vec![0x5a; 4096]),
                    other,
                )
            };
            let len = real.len() as u32;
            match liar.lies() % 4 {
                0 => {
                    let mut wrong = real;
                    let mid = wrong.len() / 2;
                    wrong[mid] ^= 0x01;
                    liar.wrong.fetch_add(1, Ordering::Relaxed);
                    send_all(&mut s, Msg::ChunkFollows { len }, &wrong).await;
                }
                1 => {
                    liar.truncated.fetch_add(1, Ordering::Relaxed);
                    send_all(&mut s, Msg::ChunkFollows { len }, &real[..real.len() / 2]).await;
                }
                2 => {
                    liar.padded.fetch_add(1, Ordering::Relaxed);
                    let mut padded = real;
                    padded.extend_from_slice(&[0u8; 1000]);
                    // Announces the padded length, so only the id can catch it.
                    let len = padded.len() as u32;
                    send_all(&mut s, Msg::ChunkFollows { len }, &padded).await;
                }
                _ => {
                    // A genuine sealed chunk, but another one.
                    liar.other_chunk.fetch_add(1, Ordering::Relaxed);
                    let other = other.unwrap_or_else(|| vec![0xa5; 100]);
                    let len = other.len() as u32;
                    send_all(&mut s, Msg::ChunkFollows { len }, &other).await;
                }
            }
        }
        Msg::HasChunks { ids } => {
            let bits = {
                let chunks = liar.chunks.lock().unwrap();
                ids.iter().map(|id| chunks.contains_key(id)).collect()
            };
            reply(&mut s, Msg::Have { bits }).await;
        }
        Msg::Peers => reply(&mut s, Msg::PeerList { peers: vec![] }).await,
        Msg::IndexDigest => {
            reply(
                &mut s,
                Msg::Digest {
                    digest: [0; 32],
                    n_entries: 0,
                },
            )
            .await
        }
        Msg::IndexVersions => {
            let _ = s.finish().await;
        }
        Msg::GetEntries { .. } => reply(&mut s, Msg::Entries { entries: vec![] }).await,
        Msg::PushEntries { .. } => reply(&mut s, Msg::Done).await,
        _ => {
            reply(
                &mut s,
                Msg::Failed {
                    kind: FailKind::BadRequest,
                    message: "no".into(),
                },
            )
            .await
        }
    }
}

#[test]
fn hostile_member_cannot_corrupt_reads() {
    let scale = Scale::get();
    let n_files = scale.pick(24u64, 120);
    let seed = Rng::seed();
    // R = 2 of 4 members, so nodes often lack a chunk and ask others, the liar among them.
    let lab = Lab::start("hostile", 3, false, |_| {
        vec!["--replicas".into(), "2".into()]
    });
    let mut report = Report::new("hostile member");
    report.method =
        "in-process member with the cluster secret (drift-p2p Endpoint, node protocol)".into();
    report.figure("seed", seed);

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let liar = Arc::new(Liar::default());
    let secret = ClusterSecret::from_hex(&lab.clients.secret).unwrap();
    let mut config = Config::new(&secret, NodeKey::generate(), Role::Node);
    config.advertise = Some("127.0.0.1:0".parse().unwrap());
    let (endpoint, mut events) = rt
        .block_on(Endpoint::<Msg>::bind(
            "127.0.0.1:0".parse().unwrap(),
            config,
        ))
        .unwrap();
    {
        let liar = liar.clone();
        rt.spawn(async move {
            while let Some(ev) = events.recv().await {
                if let Event::Stream { stream, .. } = ev {
                    tokio::spawn(serve(liar.clone(), stream));
                }
            }
        });
    }
    // A real node would learn the others from the first one's peer list and
    // dial them; the liar just dials everyone.
    for addr in &lab.clients.addrs {
        rt.block_on(endpoint.connect(*addr)).unwrap();
    }
    for i in 0..3 {
        let ok = wait_until(Duration::from_secs(30), Duration::from_millis(200), || {
            lab.clients.peers_up(i) == 3
        });
        assert!(ok, "node {i} did not meet the hostile member");
    }

    let size = |i: u64| 20_000 + (i as usize * 123_457) % 700_000;
    for i in 0..n_files {
        let out = lab.put(
            (i % 3) as usize,
            &format!("h/{i}"),
            &content(seed, i, size(i)),
        );
        assert!(out.status.success(), "{}", super::stderr_line(&out));
    }
    report.figure(
        "chunks the liar accepted",
        liar.stored.load(Ordering::Relaxed),
    );
    let mut lost = 0;
    let mut reads = 0;
    for i in 0..n_files {
        let mut ok = true;
        for node in 0..3 {
            let out = lab.clients.run(node, &["get", &format!("h/{i}")]);
            reads += 1;
            if !out.status.success() || out.stdout != content(seed, i, size(i)) {
                ok = false;
                report.check(false, || {
                    format!("h/{i} via node {node}: {}", super::stderr_line(&out))
                });
            }
        }
        lost += u64::from(!ok);
    }
    let lies = liar.lies();
    report.figure(
        "bad answers served",
        format!(
            "{lies} (wrong byte {}, truncated {}, padded {}, another chunk {})",
            liar.wrong.load(Ordering::Relaxed),
            liar.truncated.load(Ordering::Relaxed),
            liar.padded.load(Ordering::Relaxed),
            liar.other_chunk.load(Ordering::Relaxed)
        ),
    );
    report.check(lies > 0, || {
        "the hostile member was never asked for a chunk".into()
    });
    for (i, node) in lab.nodes.iter().enumerate() {
        let bad = bad_chunk_files(&node.dir);
        report.check(bad.is_empty(), || {
            format!(
                "node {i} stored {} chunk file(s) that do not match their id",
                bad.len()
            )
        });
        let q = lab
            .clients
            .status(i)
            .and_then(|s| s["quarantined"].as_u64());
        report.check(q == Some(0), || {
            format!("node {i} quarantined {q:?} chunks")
        });
    }
    rt.block_on(endpoint.shutdown());
    report.operations = n_files + reads;
    report.faults = lies;
    report.files_checked = n_files;
    report.files_lost = lost;
    report.did = format!(
        "3 honest nodes and 1 lying member (R = 2); {n_files} files stored, each read through every honest node"
    );
    report.finish(lab);
}
