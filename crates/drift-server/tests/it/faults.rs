//! Failures: dead nodes, deletes while down, corrupt chunks, outsiders, lost quorum.

use std::collections::HashMap;
use std::time::Duration;

use drift_crypto::ClusterSecret;
use drift_server::client::{Client, ClientError};
use drift_server::proto::{FailKind, Msg};
use drift_server::{GetError, PeerState, StoreError};

use crate::cluster::{Cluster, LIMIT, bytes, chunk_files, dial_as, names, read, wait_for};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_one_of_three_reads_and_writes_still_work() {
    let mut c = Cluster::start(3, |_| {}).await;
    let files: Vec<_> = (0..10)
        .map(|i| (format!("k{i}"), bytes(i, 50_000 + i as usize)))
        .collect();
    for (name, data) in &files {
        c.node(0).store(name, &data[..]).await.unwrap();
    }
    c.stop(2).await;
    for n in 0..2 {
        let node = c.node(n).clone();
        wait_for("the dead node to be marked down", LIMIT, || async {
            node.status()
                .await
                .peers
                .iter()
                .any(|p| p.state == PeerState::Down)
        })
        .await;
        for (name, data) in &files {
            assert_eq!(&read(&node, name).await.unwrap(), data);
        }
    }
    // 2 of 3 replicas are a majority.
    let data = bytes(42, 1_500_000);
    c.node(1).store("after-kill", &data[..]).await.unwrap();
    assert_eq!(read(c.node(0), "after-kill").await.unwrap(), data);
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn store_without_a_quorum_fails_and_writes_no_name() {
    let mut c = Cluster::start(3, |_| {}).await;
    c.stop(1).await;
    c.stop(2).await;
    let node = c.node(0).clone();
    wait_for("both peers down", LIMIT, || async {
        node.status()
            .await
            .peers
            .iter()
            .filter(|p| p.state == PeerState::Down)
            .count()
            == 2
    })
    .await;
    let err = node
        .store("doomed", &bytes(1, 10_000)[..])
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::Unavailable {
                acks: 1,
                needed: 2,
                ..
            }
        ),
        "{err}"
    );
    assert!(matches!(
        node.get("doomed").await,
        Err(GetError::NotFound(_))
    ));
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn delete_while_a_node_is_down_does_not_come_back() {
    let mut c = Cluster::start(3, |_| {}).await;
    c.node(0)
        .store("doomed.txt", &b"delete me"[..])
        .await
        .unwrap();
    c.node(0).store("kept.txt", &b"keep me"[..]).await.unwrap();
    {
        // A clone keeps the node's database open, so it must be gone before the restart.
        let n2 = c.node(2).clone();
        wait_for("node 2 to learn both names", LIMIT, || async {
            n2.list().await.unwrap().len() == 2
        })
        .await;
    }
    c.stop(2).await;
    c.node(1).delete("doomed.txt").await.unwrap();
    c.node(1)
        .store("new.txt", &b"written while down"[..])
        .await
        .unwrap();
    c.restart(2, |_| {}).await;
    c.wait_connected().await;
    let n2 = c.node(2).clone();
    wait_for("the returning node to catch up", LIMIT, || async {
        names(&n2).await == ["kept.txt", "new.txt"]
    })
    .await;
    // Let several anti-entropy rounds pass in both directions: the old entry
    // on node 2 must not win anywhere.
    for n in 0..3 {
        c.node(n).sync_now().await;
    }
    for n in 0..3 {
        assert!(matches!(
            c.node(n).get("doomed.txt").await,
            Err(GetError::NotFound(_))
        ));
        assert_eq!(
            read(c.node(n), "new.txt").await.unwrap(),
            b"written while down"
        );
    }
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn corrupt_chunk_is_read_around_and_repaired() {
    let c = Cluster::start(3, |_| {}).await;
    let data = bytes(5, 2 * 1024 * 1024 + 5);
    c.node(0).store("precious", &data[..]).await.unwrap();
    let files = chunk_files(c.dirs[1].path());
    assert!(!files.is_empty());
    files.iter().for_each(|f| flip_a_byte(f));
    // The read never returns wrong bytes: it goes to another replica.
    assert_eq!(read(c.node(1), "precious").await.unwrap(), data);
    // The bad copies were quarantined and replaced by verified ones.
    let (found, _) = c.node(1).scrub_now().await;
    assert_eq!(found, 0, "the read already repaired every corrupt chunk");
    for f in &files {
        let b = std::fs::read(f).unwrap();
        assert_eq!(
            drift_crypto::ChunkId::of(&b).to_hex(),
            f.file_name().unwrap().to_str().unwrap()
        );
    }
    assert!(c.node(1).status().await.quarantined >= files.len() as u64);
    c.shutdown().await;
}

/// Flips one byte in the middle of a chunk file (its size stays the same).
fn flip_a_byte(file: &std::path::Path) {
    let mut b = std::fs::read(file).unwrap();
    let mid = b.len() / 2;
    b[mid] ^= 0x40;
    std::fs::write(file, b).unwrap();
}

/// Where the one chunk of a small file landed in a four-node cluster (R = 3).
struct Placed {
    holders: Vec<usize>,
    /// The node without a copy.
    reader: usize,
    /// The holder a reader asks first.
    first: usize,
}

fn placed(c: &Cluster) -> Placed {
    let holders: Vec<usize> = (0..4)
        .filter(|&i| !chunk_files(c.dirs[i].path()).is_empty())
        .collect();
    assert_eq!(holders.len(), 3, "one chunk, three replicas");
    let reader = (0..4).find(|i| !holders.contains(i)).unwrap();
    let id: drift_crypto::ChunkId = chunk_files(c.dirs[holders[0]].path())[0]
        .file_name()
        .unwrap()
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let ids: Vec<_> = (0..4).map(|i| c.node(i).id()).collect();
    let first = drift_server::placement::rank(&id, &ids)[0];
    let first = (0..4).find(|&i| ids[i] == first).unwrap();
    Placed {
        holders,
        reader,
        first,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_copies_served_to_a_reader_are_reported_and_quarantined() {
    // Serving nodes send chunks without hashing them; the reader checks.
    // The chunk spans several transport pieces.
    let c = Cluster::start(4, |_| {}).await;
    let data = bytes(12, 3 * drift_server::proto::PIECE_LEN + 1000);
    c.node(0).store("rot", &data[..]).await.unwrap();
    let Placed { reader, first, .. } = placed(&c);

    // The replica the reader asks first has rotted: the read goes around it,
    // and that replica learns its copy is bad.
    flip_a_byte(&chunk_files(c.dirs[first].path())[0]);
    assert_eq!(read(c.node(reader), "rot").await.unwrap(), data);
    let node = c.node(first).clone();
    wait_for("the bad copy quarantined", LIMIT, || async {
        node.status().await.quarantined == 1
    })
    .await;

    // Every copy rotten: a clear integrity error, never wrong bytes, and
    // every holder of a bad copy quarantines it.
    let rotten: Vec<usize> = (0..4)
        .filter(|&i| !chunk_files(c.dirs[i].path()).is_empty())
        .collect();
    for &i in &rotten {
        flip_a_byte(&chunk_files(c.dirs[i].path())[0]);
    }
    let err = read(c.node(reader), "rot").await.unwrap_err();
    assert!(matches!(err, GetError::Corrupt { .. }), "{err}");
    for &i in &rotten {
        let dir = c.dirs[i].path().to_path_buf();
        wait_for("every bad copy quarantined", LIMIT, || async {
            chunk_files(&dir).is_empty()
        })
        .await;
    }
    // With no copy left anywhere, later reads still say why: through a
    // node that never held it, and through one that quarantined its copy.
    for i in [reader, rotten[0]] {
        let err = read(c.node(i), "rot").await.unwrap_err();
        assert!(matches!(err, GetError::Corrupt { .. }), "node {i}: {err}");
    }
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lone_node_keeps_reporting_a_chunk_it_quarantined_as_corrupt() {
    // No repair pass runs during the test: status must know without one.
    let c = Cluster::start(1, |cfg| cfg.repair_interval = Duration::from_secs(3600)).await;
    let data = bytes(14, 20_000);
    c.node(0).store("alone", &data[..]).await.unwrap();
    flip_a_byte(&chunk_files(c.dirs[0].path())[0]);
    // The first read finds the bad copy and quarantines it; the second finds
    // none, and says why rather than "unavailable".
    for attempt in 0..2 {
        let err = read(c.node(0), "alone").await.unwrap_err();
        assert!(
            matches!(err, GetError::Corrupt { .. }),
            "read {attempt}: {err}"
        );
    }
    assert!(chunk_files(c.dirs[0].path()).is_empty());
    // Status says so at once, not only after the next repair pass.
    assert_eq!(c.node(0).status().await.missing, 1);
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_chunk_with_no_good_copy_left_is_reported_until_it_is_stored_again() {
    let c = Cluster::start(4, |_| {}).await;
    let data = bytes(13, 30_000);
    c.node(0).store("lost", &data[..]).await.unwrap();
    let Placed {
        holders,
        reader,
        first,
    } = placed(&c);

    // The copy a reader elsewhere gets first has rotted: its holder
    // quarantines it when told, and its own next repair pass fetches a good
    // copy back (no other holder's pass has to run).
    flip_a_byte(&chunk_files(c.dirs[first].path())[0]);
    assert_eq!(read(c.node(reader), "lost").await.unwrap(), data);
    let dir = c.dirs[first].path().to_path_buf();
    wait_for("the bad copy quarantined", LIMIT, || async {
        chunk_files(&dir).is_empty()
    })
    .await;
    c.node(first).repair_now().await;
    assert_eq!(chunk_files(&dir).len(), 1, "fetched back");
    assert_eq!(c.node(first).status().await.missing, 0);

    // Every copy rots: the read fails, every holder quarantines its copy, and
    // each then reports the chunk missing rather than "healthy".
    for &i in &holders {
        flip_a_byte(&chunk_files(c.dirs[i].path())[0]);
    }
    let err = read(c.node(reader), "lost").await.unwrap_err();
    assert!(matches!(err, GetError::Corrupt { .. }), "{err}");
    for &i in &holders {
        let dir = c.dirs[i].path().to_path_buf();
        wait_for("every bad copy quarantined", LIMIT, || async {
            chunk_files(&dir).is_empty()
        })
        .await;
    }
    for &i in &holders {
        c.node(i).repair_now().await;
        let status = c.node(i).status().await;
        assert_eq!(
            (status.missing, status.under_replicated),
            (1, 0),
            "node {i}"
        );
    }

    // The same content stored again, under any name, brings it back.
    c.node(reader).store("found", &data[..]).await.unwrap();
    for &i in &holders {
        c.node(i).repair_now().await;
        assert_eq!(c.node(i).status().await.missing, 0, "node {i}");
    }
    assert_eq!(read(c.node(reader), "lost").await.unwrap(), data);
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_chunk_whose_holders_are_all_down_is_reported_until_one_returns() {
    let mut c = Cluster::start(4, |_| {}).await;
    let data = bytes(14, 20_000);
    c.node(0).store("away", &data[..]).await.unwrap();
    let Placed {
        holders, reader, ..
    } = placed(&c);
    for &i in &holders {
        c.stop(i).await;
    }
    // Reported at the next repair pass, before any read has tried it.
    c.node(reader).repair_now().await;
    assert_eq!(c.node(reader).status().await.missing, 1);
    let err = read(c.node(reader), "away").await.unwrap_err();
    assert!(matches!(err, GetError::Unavailable { .. }), "{err}");
    c.node(reader).repair_now().await;
    assert_eq!(c.node(reader).status().await.missing, 1);
    // Still missing at the next pass, until a holder is back.
    c.node(reader).repair_now().await;
    assert_eq!(c.node(reader).status().await.missing, 1);
    c.restart(holders[0], |_| {}).await;
    let reader_node = c.node(reader).clone();
    wait_for("the returning holder reconnected", LIMIT, || async {
        let status = reader_node.status().await;
        status.peers.iter().any(|p| p.state == PeerState::Up)
    })
    .await;
    c.node(reader).repair_now().await;
    assert_eq!(c.node(reader).status().await.missing, 0);
    assert_eq!(read(c.node(reader), "away").await.unwrap(), data);
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn scrub_finds_and_repairs_bit_rot() {
    let c = Cluster::start(3, |_| {}).await;
    for i in 0..5 {
        c.node(0)
            .store(&format!("s{i}"), &bytes(i + 50, 100_000)[..])
            .await
            .unwrap();
    }
    let files = chunk_files(c.dirs[2].path());
    for f in &files {
        let mut b = std::fs::read(f).unwrap();
        b[0] ^= 1;
        std::fs::write(f, b).unwrap();
    }
    let (found, repaired) = c.node(2).scrub_now().await;
    assert_eq!((found, repaired), (files.len() as u64, files.len() as u64));
    assert_eq!(c.node(2).scrub_now().await, (0, 0));
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_client_with_the_wrong_secret_can_neither_read_nor_write() {
    let c = Cluster::start(1, |_| {}).await;
    c.node(0)
        .store("private", &b"top secret"[..])
        .await
        .unwrap();
    let wrong = ClusterSecret::generate().unwrap();
    let err = Client::connect(c.addrs[0], &wrong, Duration::from_secs(3))
        .await
        .err()
        .unwrap();
    assert!(matches!(err, ClientError::Connect { .. }), "{err}");
    // The right secret works, through the same path.
    let client = Client::connect(c.addrs[0], &c.secret, Duration::from_secs(3))
        .await
        .unwrap();
    let mut out = Vec::new();
    client.get("private", &mut out, |_, _| {}).await.unwrap();
    assert_eq!(out, b"top secret");
    client.close().await;
    assert_eq!(c.node(0).list().await.unwrap().len(), 1);
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_bootstrap_peer_with_another_secret_shows_as_unreached_with_the_reason() {
    let mut c = Cluster::start(1, |_| {}).await;
    // A node given the wrong secret, told to join through node 0.
    let dir = tempfile::tempdir().unwrap();
    let wrong = ClusterSecret::generate().unwrap();
    let cfg = crate::cluster::config(
        dir.path(),
        &wrong,
        "127.0.0.1:0".parse().unwrap(),
        vec![c.addrs[0]],
    );
    let stray = drift_server::Node::start(cfg).await.unwrap();
    wait_for(
        "the bootstrap address reported unreached",
        LIMIT,
        || async { !stray.status().await.unreached.is_empty() },
    )
    .await;
    let status = stray.status().await;
    assert!(status.peers.is_empty(), "{:?}", status.peers);
    let unreached = &status.unreached[0];
    assert_eq!(unreached.addr, c.addrs[0]);
    assert!(unreached.failures >= 1);
    assert!(unreached.error.contains("secret"), "{}", unreached.error);
    // A node that reaches its bootstrap peer reports nothing unreached.
    let joined = c.add(vec![c.addrs[0]], &|_| {}).await;
    c.wait_connected().await;
    assert!(c.node(joined).status().await.unreached.is_empty());
    stray.shutdown().await;
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_put_from_blocks_of_any_size_stores_exactly_their_bytes() {
    use drift_server::proto::PIECE_LEN;
    let c = Cluster::start(1, |_| {}).await;
    let client = Client::connect(c.addrs[0], &c.secret, Duration::from_secs(3))
        .await
        .unwrap();
    // Blocks shorter than a piece, a piece and a byte, empty ones, and
    // several pieces long, so pieces are cut across block boundaries.
    let sizes = [
        1,
        PIECE_LEN - 1,
        0,
        PIECE_LEN + 1,
        3 * 1024 * 1024 + 7,
        0,
        5,
    ];
    let data = bytes(21, sizes.iter().sum());
    let mut at = 0;
    let blocks: Vec<std::io::Result<bytes::Bytes>> = sizes
        .iter()
        .map(|n| {
            at += n;
            Ok(bytes::Bytes::copy_from_slice(&data[at - n..at]))
        })
        .collect();
    let mut seen = Vec::new();
    let (_, size) = client
        .put_blocks("blocks", futures_util::stream::iter(blocks), |sent| {
            seen.push(sent)
        })
        .await
        .unwrap();
    assert_eq!(size, data.len() as u64);
    assert_eq!(seen.last(), Some(&(data.len() as u64)));
    let mut out = Vec::new();
    client.get("blocks", &mut out, |_, _| {}).await.unwrap();
    assert!(
        out == data,
        "the file read back differs from the blocks put"
    );

    // A read error ends the put with that error and stores nothing.
    let failing = futures_util::stream::iter(vec![
        Ok(bytes::Bytes::from(vec![1u8; 2 * PIECE_LEN])),
        Err(std::io::Error::other("disk went away")),
    ]);
    let err = client
        .put_blocks("broken", failing, |_| {})
        .await
        .unwrap_err();
    assert!(matches!(err, ClientError::Read(_)), "{err}");
    assert_eq!(names(c.node(0)).await, ["blocks"]);
    client.close().await;
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_lost_node_has_its_replicas_recreated() {
    let mut c = Cluster::start(4, |cfg| cfg.lost_after = Duration::from_millis(800)).await;
    let data = bytes(8, 4 * 1024 * 1024);
    c.node(0).store("spread", &data[..]).await.unwrap();
    c.stop(3).await;
    // Once node 3 is lost, every chunk gets back to 3 copies on the survivors.
    let dirs: Vec<_> = (0..3).map(|i| c.dirs[i].path().to_path_buf()).collect();
    wait_for(
        "three copies of every chunk on the survivors",
        LIMIT,
        || async {
            let total: usize = dirs.iter().map(|d| chunk_files(d).len()).sum();
            total == 3 * 4
        },
    )
    .await;
    let node = c.node(0).clone();
    wait_for("no under-replicated chunks", LIMIT, || async {
        node.status().await.under_replicated == 0
    })
    .await;
    c.shutdown().await;
}

/// How `node` sees peer `id`, if it knows it.
async fn peer_state(node: &drift_server::Node, id: drift_server::PeerId) -> Option<PeerState> {
    let id = id.to_string();
    let status = node.status().await;
    status.peers.iter().find(|p| p.id == id).map(|p| p.state)
}

/// A node gone for good stays lost when the others restart: it does not come
/// back as down, and a replica target, for `lost_after` after every restart.
/// A peer down for less than that is still down, its time counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_lost_node_stays_lost_when_the_others_restart() {
    let tweak = |cfg: &mut drift_server::NodeConfig| cfg.lost_after = Duration::from_secs(4);
    let mut c = Cluster::start(3, tweak).await;
    let gone = c.node(2).id();
    c.stop(2).await;
    let node = c.node(0).clone();
    wait_for("the stopped node to be lost", LIMIT, || async {
        peer_state(&node, gone).await == Some(PeerState::Lost)
    })
    .await;
    drop(node); // a live clone keeps the data directory locked
    c.stop(0).await;
    c.restart(0, tweak).await;
    assert_eq!(
        peer_state(c.node(0), gone).await,
        Some(PeerState::Lost),
        "right after the restart"
    );
    let placed = c.node(0).status().await.replicas;
    assert_eq!(placed, 2, "R in force counts only the nodes not lost");
    c.wait_connected().await;

    // A peer down for less than `lost_after` is down after a restart, with
    // the time it was down before counted.
    let other = c.node(1).id();
    c.stop(1).await;
    let node = c.node(0).clone();
    wait_for("node 1 to be down for 2 s", LIMIT, || async {
        let status = node.status().await;
        status
            .peers
            .iter()
            .any(|p| p.id == other.to_string() && p.state == PeerState::Down && p.since_secs >= 2)
    })
    .await;
    drop(node);
    c.stop(0).await;
    c.restart(0, tweak).await;
    let status = c.node(0).status().await;
    let seen = status
        .peers
        .iter()
        .find(|p| p.id == other.to_string())
        .unwrap();
    assert_eq!(seen.state, PeerState::Down, "{seen:?}");
    assert!(seen.since_secs >= 2, "{seen:?}");
    c.restart(1, tweak).await;
    let node = c.node(0).clone();
    wait_for("node 1 to be up again", LIMIT, || async {
        peer_state(&node, other).await == Some(PeerState::Up)
    })
    .await;
    c.shutdown().await;
}

/// A peer going down is counted in `status` at once: its chunks are
/// under-replicated from then, not from the next periodic repair pass.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_peer_going_down_shows_in_the_under_replicated_count_at_once() {
    let tweak =
        |cfg: &mut drift_server::NodeConfig| cfg.repair_interval = Duration::from_secs(3600);
    let mut c = Cluster::start(3, tweak).await;
    c.node(0).store("f", &bytes(31, 3 << 20)[..]).await.unwrap();
    let node = c.node(0).clone();
    c.stop(2).await;
    wait_for(
        "the stopped node's chunks to count as under-replicated",
        LIMIT,
        || async { node.status().await.under_replicated == 3 },
    )
    .await;
    drop(node);
    c.shutdown().await;
}

/// A node restarted on a fresh data directory (a replaced disk) comes back
/// under a new id at its old address: the others take the old id for lost
/// at once, instead of keeping it as a down replica target for `lost_after`
/// (an hour here), and the new node never lists its old self as a peer.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_on_a_fresh_data_directory_replaces_its_old_identity() {
    let mut c = Cluster::start(3, |_| {}).await;
    let (old, addr) = (c.node(2).id(), c.addrs[2]);
    c.stop(2).await;
    let (zero, one) = (c.node(0).clone(), c.node(1).clone());
    wait_for("node 2 to be seen down", LIMIT, || async {
        peer_state(&zero, old).await == Some(PeerState::Down)
            && peer_state(&one, old).await == Some(PeerState::Down)
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let fresh = drift_server::Node::start(crate::cluster::config(
        dir.path(),
        &c.secret,
        addr,
        vec![c.addrs[0]],
    ))
    .await
    .unwrap();
    assert_ne!(fresh.id(), old);
    wait_for("the old identity to be lost on both", LIMIT, || async {
        peer_state(&zero, old).await == Some(PeerState::Lost)
            && peer_state(&one, old).await == Some(PeerState::Lost)
    })
    .await;
    wait_for("the new node to see both others up", LIMIT, || async {
        let status = fresh.status().await;
        status
            .peers
            .iter()
            .filter(|p| p.state == PeerState::Up)
            .count()
            == 2
    })
    .await;
    let status = fresh.status().await;
    assert!(status.peers.iter().all(|p| p.addr != addr), "{status:?}");
    assert_eq!(zero.status().await.replicas, 3);
    fresh.shutdown().await;
    drop((zero, one));
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn deleted_files_chunks_are_collected_after_the_grace_period() {
    let c = Cluster::start(2, |cfg| cfg.gc_grace = Duration::from_millis(300)).await;
    c.node(0)
        .store("keep", &bytes(1, 300_000)[..])
        .await
        .unwrap();
    c.node(0)
        .store("drop", &bytes(2, 300_000)[..])
        .await
        .unwrap();
    let before = chunk_files(c.dirs[0].path()).len();
    assert_eq!(before, 2);
    c.node(0).delete("drop").await.unwrap();
    for n in 0..2 {
        let dir = c.dirs[n].path().to_path_buf();
        wait_for(
            "the deleted file's chunk to be collected",
            LIMIT,
            || async { chunk_files(&dir).len() == 1 },
        )
        .await;
        assert_eq!(read(c.node(n), "keep").await.unwrap(), bytes(1, 300_000));
    }
    c.shutdown().await;
}

/// A member that takes chunks but refuses every name entry.
async fn entry_refusing_member(
    secret: &ClusterSecret,
) -> (drift_p2p::Endpoint<Msg>, std::net::SocketAddr) {
    use drift_p2p::{Config, Endpoint, Event, NodeKey, Role};
    let mut cfg = Config::new(secret, NodeKey::generate(), Role::Node);
    cfg.advertise = Some("127.0.0.1:0".parse().unwrap());
    let (ep, mut events) = Endpoint::<Msg>::bind("127.0.0.1:0".parse().unwrap(), cfg)
        .await
        .unwrap();
    let addr = ep.local_addr().unwrap();
    tokio::spawn(async move {
        while let Some(ev) = events.recv().await {
            let Event::Stream { mut stream, .. } = ev else {
                continue;
            };
            tokio::spawn(async move {
                let answer = match stream.recv().await {
                    Ok(Some(Msg::PutChunk { .. } | Msg::PutSealed { .. })) => {
                        while let Ok(Some(_)) = stream.recv().await {}
                        Msg::Done
                    }
                    Ok(Some(Msg::Peers)) => Msg::PeerList { peers: vec![] },
                    Ok(Some(Msg::IndexDigest)) => Msg::Digest {
                        digest: [0; 32],
                        n_entries: 0,
                    },
                    _ => Msg::Failed {
                        kind: FailKind::Internal,
                        message: "refused".into(),
                    },
                };
                let _ = stream.send(&answer).await;
                let _ = stream.finish().await;
            });
        }
    });
    (ep, addr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_name_that_reaches_too_few_nodes_is_reported() {
    let secret = ClusterSecret::generate().unwrap();
    let (fake, fake_addr) = entry_refusing_member(&secret).await;
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = crate::cluster::config(
        dir.path(),
        &secret,
        "127.0.0.1:0".parse().unwrap(),
        vec![fake_addr],
    );
    cfg.replicas = 2;
    let node = drift_server::Node::start(cfg).await.unwrap();
    wait_for("the member to be up", LIMIT, || async {
        node.status()
            .await
            .peers
            .iter()
            .any(|p| p.state == PeerState::Up)
    })
    .await;
    // Both replicas take the chunk, but only this node keeps the name.
    let err = node
        .store("half-done", &bytes(3, 1000)[..])
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::NameUnreplicated {
                written: 1,
                needed: 2
            }
        ),
        "{err}"
    );
    assert!(
        err.to_string().contains("reached only 1 of the 2 nodes"),
        "{err}"
    );
    node.shutdown().await;
    fake.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_store_that_outlasts_the_gc_grace_keeps_its_chunks() {
    use bytes::Bytes;
    let c = Cluster::start(2, |cfg| {
        cfg.chunk_size = 4096;
        cfg.gc_grace = Duration::from_millis(300);
        cfg.repair_interval = Duration::from_millis(50);
    })
    .await;
    // A slow client: 40 chunks over about 1.2 s, four GC graces.
    let pieces = futures_util::stream::unfold(0u64, |i| async move {
        if i == 40 {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(30)).await;
        Some((Ok::<_, std::io::Error>(Bytes::from(bytes(i, 4096))), i + 1))
    });
    let reader = tokio_util::io::StreamReader::new(Box::pin(pieces));
    c.node(0).store("slow-upload", reader).await.unwrap();
    let want: Vec<u8> = (0..40).flat_map(|i| bytes(i, 4096)).collect();
    for n in 0..2 {
        c.node(n).repair_now().await;
        assert_eq!(
            read(c.node(n), "slow-upload").await.unwrap(),
            want,
            "node {n}"
        );
    }
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_chunk_whose_bytes_fail_their_check_is_refused() {
    let c = Cluster::start(1, |_| {}).await;
    let (member, _events, conn) = dial_as(&c.secret, c.addrs[0], drift_p2p::Role::Node).await;
    let named = b"the bytes the id and the digest name";
    let claimed = drift_crypto::ChunkId::of(named);
    let sent = bytes(3, 100_000);
    let len = sent.len() as u32;
    // A plain put is checked against the id; a sealed put against the
    // digest its sender computed: both name other bytes here.
    let requests = [
        Msg::PutChunk { id: claimed, len },
        Msg::PutSealed {
            id: claimed,
            len,
            digest: drift_crypto::TransferDigest::of(named),
        },
    ];
    for request in requests {
        let mut s = conn.open().await.unwrap();
        s.send(&request).await.unwrap();
        for piece in sent.chunks(drift_server::proto::PIECE_LEN) {
            s.send(&Msg::Data(bytes::Bytes::copy_from_slice(piece)))
                .await
                .unwrap();
        }
        s.finish().await.unwrap();
        let answer = s.recv().await.unwrap();
        assert!(
            matches!(
                answer,
                Some(Msg::Failed {
                    kind: FailKind::Corrupt,
                    ..
                })
            ),
            "{request:?}: {answer:?}"
        );
        assert!(chunk_files(c.dirs[0].path()).is_empty(), "nothing stored");
    }
    member.shutdown().await;
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_far_ahead_of_the_clock_is_refused_and_later_writes_still_win() {
    use drift_store::{NameEntry, Version};
    // One replica: the pushing member joins the cluster, and stores must not
    // wait on it.
    let c = Cluster::start(1, |cfg| cfg.replicas = 1).await;
    c.node(0).store("k", &b"first"[..]).await.unwrap();
    // A member (it holds the secret) pushes a tombstone from the far future.
    let (ep, _events, conn) =
        dial_as(&c.secret, c.node(0).listen_addr(), drift_p2p::Role::Node).await;
    let far = NameEntry {
        name: "k".into(),
        version: Version {
            time: u64::MAX,
            node: 7,
        },
        deleted: true,
        size: 0,
        content: Vec::new(),
    };
    // The refusal is the answer: a writer must not count it as a commit.
    let answer = conn
        .request(Msg::PushEntries { entries: vec![far] })
        .await
        .unwrap();
    assert!(
        matches!(answer, Msg::Failed { kind: FailKind::BadRequest, ref message } if message.contains("ahead of this node's clock")),
        "{answer:?}"
    );
    assert_eq!(read(c.node(0), "k").await.unwrap(), b"first");
    ep.shutdown().await;
    // The node's own versions did not jump: a store, then a delete, win.
    c.node(0).store("k", &b"second"[..]).await.unwrap();
    assert_eq!(read(c.node(0), "k").await.unwrap(), b"second");
    c.node(0).delete("k").await.unwrap();
    let err = read(c.node(0), "k").await.unwrap_err();
    assert!(matches!(err, GetError::NotFound(_)), "{err}");
    c.shutdown().await;
}

/// A node whose clock runs over 10 minutes ahead has its writes refused by
/// the others. The refused write must not stay on it either: kept, it would
/// reach them once their clocks caught up, and win over the writes made
/// meanwhile (an audit saw a failed put override a later successful one,
/// and undo a later delete, about a minute on).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_write_refused_for_a_fast_clock_leaves_nothing_behind() {
    use drift_store::{NameEntry, NameIndex, Version};
    let mut c = Cluster::start(3, |_| {}).await;
    // Node 2 comes back with a version 11 minutes ahead in its index: its
    // clock issues versions past it, as a clock that fast would.
    c.stop(2).await;
    let ahead_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
        + 11 * 60 * 1000;
    let index = NameIndex::open(c.dirs[2].path(), &c.secret.keys()).unwrap();
    let future = NameEntry {
        name: "from the future".into(),
        version: Version {
            time: ahead_ms << 16,
            node: 1,
        },
        deleted: true,
        size: 0,
        content: Vec::new(),
    };
    index.apply(&[future]).unwrap();
    drop(index);
    c.restart(2, |_| {}).await;
    c.wait_connected().await;

    let err = c.node(2).store("k", &b"refused"[..]).await.unwrap_err();
    assert!(
        matches!(err, StoreError::NameRefused { refused: 2, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("clock"), "{err}");
    // A later store through another node is what every node reads, the
    // fast one included.
    c.node(0).store("k", &b"later"[..]).await.unwrap();
    for n in 0..3 {
        c.node(n).sync_now().await;
        assert_eq!(read(c.node(n), "k").await.unwrap(), b"later", "node {n}");
    }
    // So is a later delete: a refused overwrite does not bring the file back.
    let err = c
        .node(2)
        .store("k", &b"refused again"[..])
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::NameRefused { .. }), "{err}");
    c.node(0).delete("k").await.unwrap();
    for n in 0..3 {
        c.node(n).sync_now().await;
        let err = read(c.node(n), "k").await.unwrap_err();
        assert!(matches!(err, GetError::NotFound(_)), "node {n}: {err}");
    }
    // A delete through the fast node is refused the same way.
    c.node(0).store("j", &b"kept"[..]).await.unwrap();
    let err = c.node(2).delete("j").await.unwrap_err();
    assert!(
        matches!(err, drift_server::DeleteError::Refused { .. }),
        "{err}"
    );
    for n in 0..3 {
        assert_eq!(read(c.node(n), "j").await.unwrap(), b"kept", "node {n}");
    }
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_with_a_smaller_r_keeps_the_copies_the_others_count_on() {
    let mut c = Cluster::start(3, |_| {}).await;
    // A fourth node, started (by mistake) with R = 1 in an R = 3 cluster.
    let n = c.add(vec![c.addrs[0]], &|cfg| cfg.replicas = 1).await;
    c.wait_connected().await;
    let data = bytes(31, 10 << 20);
    c.node(0).store("ten", &data[..]).await.unwrap();
    // Everyone's repair pass, the R = 1 node's last.
    for i in [0, 1, 2, n] {
        c.node(i).repair_now().await;
    }
    let mut copies: HashMap<std::ffi::OsString, usize> = HashMap::new();
    for dir in &c.dirs {
        for f in chunk_files(dir.path()) {
            *copies.entry(f.file_name().unwrap().to_owned()).or_default() += 1;
        }
    }
    assert!(copies.len() >= 10, "{copies:?}");
    assert!(copies.values().all(|&k| k >= 3), "{copies:?}");
    c.shutdown().await;
}

/// A chunk this node cannot write to its own disk is reported with the
/// disk's reason, not as missing peers; once the disk is fixed, stores work.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failed_local_write_is_reported_with_its_cause() {
    let c = Cluster::start(1, |cfg| cfg.replicas = 1).await;
    let chunks = c.dirs[0].path().join("chunks");
    // A file where each first-level fan-out directory would go.
    for b in 0..=255u8 {
        let p = chunks.join(format!("{b:02x}"));
        if !p.exists() {
            std::fs::write(&p, b"").unwrap();
        }
    }
    let data = bytes(21, 5000);
    let err = c.node(0).store("blocked", &data[..]).await.unwrap_err();
    assert!(matches!(err, StoreError::LocalWrite { .. }), "{err}");
    assert!(
        err.to_string().contains("this node could not write it"),
        "{err}"
    );
    assert!(!err.to_string().contains("are the other nodes up"), "{err}");
    assert!(names(c.node(0)).await.is_empty());

    for b in 0..=255u8 {
        let p = chunks.join(format!("{b:02x}"));
        if p.is_file() {
            std::fs::remove_file(&p).unwrap();
        }
    }
    c.node(0).store("blocked", &data[..]).await.unwrap();
    assert_eq!(read(c.node(0), "blocked").await.unwrap(), data);
    c.shutdown().await;
}

/// After shutdown, every operation says so, rather than blaming peers or the index.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn operations_after_shutdown_say_the_node_is_shutting_down() {
    let c = Cluster::start(1, |cfg| cfg.replicas = 1).await;
    let node = c.node(0).clone();
    node.store("kept", &b"kept"[..]).await.unwrap();
    node.shutdown().await;
    let shown = format!("{node:?}");
    assert!(shown.contains("shut_down: true"), "{shown}");
    let store = node.store("after", &b"x"[..]).await.unwrap_err();
    assert!(matches!(store, StoreError::ShuttingDown), "{store}");
    let delete = node.delete("kept").await.unwrap_err();
    assert!(
        matches!(delete, drift_server::DeleteError::ShuttingDown),
        "{delete}"
    );
    let list = node.list().await.unwrap_err();
    assert!(matches!(list, GetError::ShuttingDown), "{list}");
    assert!(matches!(
        node.get("kept").await,
        Err(GetError::ShuttingDown)
    ));
    drop(node);
    c.shutdown().await;
}

/// A file deleted while it is read stays readable to the end of that read,
/// however slow the reader, even where the GC grace is zero: the read keeps
/// the chunks it has yet to reach. Once it is over they are collected.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_file_deleted_while_it_is_read_stays_readable_to_the_end() {
    let c = Cluster::start(3, |cfg| {
        cfg.chunk_size = 4096;
        cfg.gc_grace = Duration::ZERO;
        cfg.repair_interval = Duration::from_millis(500);
    })
    .await;
    let data = bytes(21, 40 * 4096);
    c.node(0).store("slow", &data[..]).await.unwrap();
    let mut reader = c.node(1).get("slow").await.unwrap();
    let mut got = reader.next_chunk().await.unwrap().unwrap().to_vec();
    c.node(2).delete("slow").await.unwrap();
    wait_for("the delete to reach every node", LIMIT, || async {
        for n in 0..3 {
            if !names(c.node(n)).await.is_empty() {
                return false;
            }
        }
        true
    })
    .await;
    // The reader's pace: 75 ms a chunk, about 3 s in all, so six repair passes.
    while let Some(piece) = reader.next_chunk().await {
        got.extend_from_slice(&piece.unwrap());
        tokio::time::sleep(Duration::from_millis(75)).await;
    }
    assert!(got == data, "the read returned other bytes");
    for n in 0..3 {
        let dir = c.dirs[n].path().to_path_buf();
        wait_for(
            "the chunks to be collected after the read",
            LIMIT,
            || async { chunk_files(&dir).is_empty() },
        )
        .await;
    }
    c.shutdown().await;
}

/// Nodes do not share their GC grace. A store that outlasts several repair
/// passes keeps its chunks on peers whose grace is zero (shorter than the
/// storing node's): once it returns, every replica holds them, and the file
/// reads without the node that took it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_long_store_keeps_its_chunks_on_peers_with_a_shorter_gc_grace() {
    use bytes::Bytes;
    let tweak = |grace_ms: u64| {
        move |cfg: &mut drift_server::NodeConfig| {
            cfg.chunk_size = 4096;
            cfg.gc_grace = Duration::from_millis(grace_ms);
            cfg.repair_interval = Duration::from_millis(500);
        }
    };
    let mut c = Cluster::start(1, tweak(900)).await;
    for _ in 0..2 {
        c.add(vec![c.addrs[0]], &tweak(0)).await;
    }
    c.wait_connected().await;
    // The client's pace: 40 chunks over about 3 s, six repair passes.
    let pieces = futures_util::stream::unfold(0u64, |i| async move {
        if i == 40 {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(75)).await;
        Some((
            Ok::<_, std::io::Error>(Bytes::from(bytes(i + 100, 4096))),
            i + 1,
        ))
    });
    let reader = tokio_util::io::StreamReader::new(Box::pin(pieces));
    c.node(0).store("long", reader).await.unwrap();
    for n in 1..3 {
        let held = chunk_files(c.dirs[n].path()).len();
        assert!(held >= 40, "node {n} holds {held} chunk files of 40");
    }
    c.stop(0).await;
    let want: Vec<u8> = (0..40).flat_map(|i| bytes(i + 100, 4096)).collect();
    for n in 1..3 {
        c.node(n).repair_now().await;
        assert_eq!(read(c.node(n), "long").await.unwrap(), want, "node {n}");
    }
    c.shutdown().await;
}
