//! The original demo and the promises it broke: any-node reads, joins, restarts, scale.

use std::time::Duration;

use drift_server::{GetError, PeerState};

use crate::cluster::{Cluster, LIMIT, bytes, chunk_files, config, read, wait_for};

fn picture(i: usize) -> Vec<u8> {
    format!("This is the content of file {i} - distributed file system data!").into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn original_demo_three_nodes_store_get_delete() {
    // :3000 and :7000 start alone; :5000 bootstraps from both.
    let mut c = Cluster::start(2, |_| {}).await;
    let both = c.addrs.clone();
    c.add(both, &|_| {}).await;
    c.wait_connected().await;
    let third = c.node(2).clone();
    for i in 0..10 {
        third
            .store(&format!("picture_{i}.png"), &picture(i)[..])
            .await
            .unwrap();
    }
    for i in 0..10 {
        for n in 0..3 {
            assert_eq!(
                read(c.node(n), &format!("picture_{i}.png")).await.unwrap(),
                picture(i)
            );
        }
    }
    for i in 0..10 {
        third.delete(&format!("picture_{i}.png")).await.unwrap();
    }
    for n in 0..3 {
        for i in 0..10 {
            let name = format!("picture_{i}.png");
            let node = c.node(n);
            wait_for("the delete to reach every node", LIMIT, || async {
                matches!(node.get(&name).await, Err(GetError::NotFound(_)))
            })
            .await;
        }
        assert!(c.node(n).list().await.unwrap().is_empty());
    }
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn get_on_a_node_that_never_had_the_file() {
    // Five nodes with R = 3: two of them hold no replica of the data.
    let c = Cluster::start(5, |_| {}).await;
    let data = bytes(1, 3 * 1024 * 1024 + 17);
    c.node(0).store("big.bin", &data[..]).await.unwrap();
    for n in 0..5 {
        assert_eq!(read(c.node(n), "big.bin").await.unwrap(), data, "node {n}");
    }
    let holders = (0..5)
        .filter(|&n| !chunk_files(c.dirs[n].path()).is_empty())
        .count();
    assert!(holders >= 3, "data sits on at least R nodes");
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn missing_name_is_not_found_at_once() {
    let c = Cluster::start(3, |_| {}).await;
    let started = std::time::Instant::now();
    let err = c.node(1).get("never-stored").await.err().unwrap();
    assert_eq!(err, GetError::NotFound("never-stored".into()));
    assert_eq!(err.to_string(), "no such file: never-stored");
    // Bounded by the request timeout, not hanging like the original.
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(c.node(0).delete("never-stored").await.is_err());
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fourth_node_joins_through_one_peer_and_reads_everything() {
    let mut c = Cluster::start(3, |_| {}).await;
    let files: Vec<(String, Vec<u8>)> = (0..20)
        .map(|i| (format!("f{i}"), bytes(i, 1000 + i as usize * 5000)))
        .collect();
    for (name, data) in &files {
        c.node((name.len()) % 3)
            .store(name, &data[..])
            .await
            .unwrap();
    }
    let via = vec![c.addrs[2]];
    let d = c.add(via, &|_| {}).await;
    c.wait_connected().await;
    let status = c.node(d).status().await;
    assert_eq!(
        status
            .peers
            .iter()
            .filter(|p| p.state == PeerState::Up)
            .count(),
        3
    );
    let node = c.node(d).clone();
    wait_for("the new node to learn every name", LIMIT, || async {
        node.list().await.unwrap().len() == files.len()
    })
    .await;
    // Before the old nodes have pushed the new one its share, none of it is
    // missing: the old nodes still hold it.
    node.repair_now().await;
    assert_eq!(node.status().await.missing, 0);
    for (name, data) in &files {
        assert_eq!(&read(&node, name).await.unwrap(), data);
    }
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn restart_keeps_identity_and_data() {
    let mut c = Cluster::start(3, |_| {}).await;
    let data = bytes(7, 200_000);
    c.node(0).store("keep.bin", &data[..]).await.unwrap();
    let id = c.node(1).id();
    c.stop(1).await;
    c.restart(1, |_| {}).await;
    assert_eq!(c.node(1).id(), id);
    // Its own index and chunks, before it even reconnects.
    assert_eq!(c.node(1).list().await.unwrap().len(), 1);
    assert!(!chunk_files(c.dirs[1].path()).is_empty());
    c.wait_connected().await;
    assert_eq!(read(c.node(1), "keep.bin").await.unwrap(), data);
    c.shutdown().await;
}

/// A second node on a data directory in use is refused before it touches
/// the directory: the running node's stores, made meanwhile, all succeed.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_second_node_on_a_live_data_directory_is_refused_and_disturbs_nothing() {
    let c = Cluster::start(1, |_| {}).await;
    let node = c.node(0).clone();
    let stores = tokio::spawn(async move {
        for i in 0..40u8 {
            let data = bytes(u64::from(i), 300_000);
            node.store(&format!("f{i}"), &data[..]).await?;
        }
        Ok::<_, drift_server::StoreError>(())
    });
    let mut refused = 0;
    while !stores.is_finished() && refused < 200 {
        let cfg = config(
            c.dirs[0].path(),
            &c.secret,
            "127.0.0.1:0".parse().unwrap(),
            vec![],
        );
        let err = drift_server::Node::start(cfg)
            .await
            .expect_err("a second node started");
        assert!(
            err.to_string()
                .contains("another drift node is using this data directory"),
            "{err}"
        );
        refused += 1;
    }
    tokio::time::timeout(LIMIT, stores)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(refused > 0);
    for i in 0..40u8 {
        assert_eq!(
            read(c.node(0), &format!("f{i}")).await.unwrap(),
            bytes(u64::from(i), 300_000)
        );
    }
    c.shutdown().await;
}

/// Values a node cannot run with are refused at start with what is wrong.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_config_a_node_cannot_run_with_is_refused_at_start() {
    let secret = drift_crypto::ClusterSecret::generate().unwrap();
    let dir = tempfile::tempdir().unwrap();
    type Tweak = fn(&mut drift_server::NodeConfig);
    let cases: [(&str, Tweak); 4] = [
        ("chunk_size", |c| c.chunk_size = 0),
        ("chunk_size", |c| {
            c.chunk_size = drift_crypto::MAX_CHUNK_SIZE + 1
        }),
        ("replicas", |c| c.replicas = 0),
        ("repair_interval", |c| c.repair_interval = Duration::ZERO),
    ];
    for (what, tweak) in cases {
        let mut cfg = config(dir.path(), &secret, "127.0.0.1:0".parse().unwrap(), vec![]);
        tweak(&mut cfg);
        let err = tokio::time::timeout(LIMIT, drift_server::Node::start(cfg))
            .await
            .unwrap()
            .expect_err("the node started");
        assert!(
            matches!(err, drift_server::StartError::Config(ref m) if m.contains(what)),
            "{err}"
        );
    }
    let mut cfg = config(dir.path(), &secret, "127.0.0.1:0".parse().unwrap(), vec![]);
    cfg.chunk_size = drift_crypto::MAX_CHUNK_SIZE;
    let node = drift_server::Node::start(cfg).await.unwrap();
    let data = bytes(9, drift_crypto::MAX_CHUNK_SIZE + 10);
    node.store("big chunks", &data[..]).await.unwrap();
    assert_eq!(read(&node, "big chunks").await.unwrap(), data);
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn dedup_same_content_under_two_names_is_stored_once() {
    let c = Cluster::start(1, |_| {}).await;
    let data = bytes(3, 2 * 1024 * 1024);
    c.node(0).store("a", &data[..]).await.unwrap();
    let after_one = chunk_files(c.dirs[0].path()).len();
    c.node(0).store("b", &data[..]).await.unwrap();
    assert_eq!(chunk_files(c.dirs[0].path()).len(), after_one);
    assert_eq!(read(c.node(0), "b").await.unwrap(), data);
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_stores_to_one_name_converge() {
    let c = Cluster::start(3, |_| {}).await;
    for round in 0..5u64 {
        let name = format!("contested-{round}");
        let (a, b) = (bytes(round * 2, 5000), bytes(round * 2 + 1, 7000));
        let (n0, n1) = (c.node(0).clone(), c.node(1).clone());
        let (na, nb) = (name.clone(), name.clone());
        let (ra, rb) = (a.clone(), b.clone());
        let (va, vb) = tokio::join!(
            async move { n0.store(&na, &ra[..]).await.unwrap() },
            async move { n1.store(&nb, &rb[..]).await.unwrap() }
        );
        let winner = if va > vb { a } else { b };
        for n in 0..3 {
            let node = c.node(n);
            let name = name.clone();
            let winner = winner.clone();
            wait_for("every node to agree on the latest version", LIMIT, || {
                let name = name.clone();
                let winner = winner.clone();
                async move { read(node, &name).await.ok() == Some(winner) }
            })
            .await;
        }
    }
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_stores_of_same_content_store_it_once() {
    let c = Cluster::start(3, |_| {}).await;
    let data = bytes(11, 3 * 1024 * 1024);
    let futs: Vec<_> = (0..6)
        .map(|i| {
            let node = c.node(i % 3).clone();
            let data = data.clone();
            tokio::spawn(async move { node.store(&format!("copy-{i}"), &data[..]).await.unwrap() })
        })
        .collect();
    for f in futs {
        f.await.unwrap();
    }
    for n in 0..3 {
        // 3 data chunks, each at most once per node.
        assert!(chunk_files(c.dirs[n].path()).len() <= 3);
    }
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn many_small_files_and_one_large_file_round_trip() {
    let c = Cluster::start(3, |_| {}).await;
    let nodes: Vec<_> = (0..3).map(|i| c.node(i).clone()).collect();
    let mut tasks = Vec::new();
    for worker in 0..8usize {
        let node = nodes[worker % 3].clone();
        tasks.push(tokio::spawn(async move {
            for i in (worker..1000).step_by(8) {
                node.store(&format!("small/{i:04}"), &bytes(i as u64, 100 + i)[..])
                    .await
                    .unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let reader = nodes[1].clone();
    for i in (0..1000).step_by(7) {
        assert_eq!(
            read(&reader, &format!("small/{i:04}")).await.unwrap(),
            bytes(i as u64, 100 + i)
        );
    }
    assert_eq!(reader.list().await.unwrap().len(), 1000);

    // 256 MiB streamed from a generator, never held whole in memory by the node.
    const BIG: usize = 256 * 1024 * 1024;
    let pattern = bytes(99, 1 << 20);
    let reader_stream = PatternReader {
        pattern: pattern.clone(),
        left: BIG,
    };
    nodes[0].store("big", reader_stream).await.unwrap();
    let mut file = nodes[2].get("big").await.unwrap();
    assert_eq!(file.size(), BIG as u64);
    let mut offset = 0usize;
    while let Some(piece) = file.next_chunk().await {
        let piece = piece.unwrap();
        for (i, b) in piece.iter().enumerate() {
            if *b != pattern[(offset + i) % pattern.len()] {
                panic!("byte {} differs", offset + i);
            }
        }
        offset += piece.len();
    }
    assert_eq!(offset, BIG);
    c.shutdown().await;
}

/// An `AsyncRead` of `left` bytes repeating `pattern`.
struct PatternReader {
    pattern: Vec<u8>,
    left: usize,
}

impl tokio::io::AsyncRead for PatternReader {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let done = 256 * 1024 * 1024 - self.left;
        let start = done % self.pattern.len();
        let n = buf
            .remaining()
            .min(self.left)
            .min(self.pattern.len() - start);
        buf.put_slice(&self.pattern[start..start + n]);
        self.left -= n;
        std::task::Poll::Ready(Ok(()))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn empty_files_odd_names_and_async_read() {
    use tokio::io::AsyncReadExt;
    let c = Cluster::start(2, |_| {}).await;
    let node = c.node(0);
    node.store("empty", &b""[..]).await.unwrap();
    assert_eq!(read(c.node(1), "empty").await.unwrap(), b"");
    assert_eq!(node.list().await.unwrap()[0].size, 0);
    let odd = "dir/ünïcødé name with spaces/../x.txt";
    node.store(odd, &b"odd"[..]).await.unwrap();
    assert_eq!(read(c.node(1), odd).await.unwrap(), b"odd");
    for bad in ["", "nul\0byte"] {
        assert!(matches!(
            node.store(bad, &b"x"[..]).await,
            Err(drift_server::StoreError::InvalidName(_))
        ));
    }
    let long = "n".repeat(1025);
    assert!(node.store(&long, &b"x"[..]).await.is_err());
    node.store(&"n".repeat(1024), &b"max"[..]).await.unwrap();
    let data = bytes(77, 2_500_000);
    node.store("as-reader", &data[..]).await.unwrap();
    let mut out = Vec::new();
    c.node(1)
        .get("as-reader")
        .await
        .unwrap()
        .into_async_read()
        .read_to_end(&mut out)
        .await
        .unwrap();
    assert_eq!(out, data);
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn large_manifests_are_stored_as_parts_and_collected_whole() {
    // 4 KiB chunks make a 2 MiB file list 512 chunks: more than fit inline, so
    // its chunk list is itself stored as sealed parts.
    let c = Cluster::start(3, |cfg| {
        cfg.chunk_size = 4096;
        cfg.gc_grace = Duration::from_millis(300);
    })
    .await;
    let data = bytes(21, 2 * 1024 * 1024 + 100);
    c.node(0).store("many-chunks", &data[..]).await.unwrap();
    let n_data_chunks = data.len().div_ceil(4096);
    for n in 0..3 {
        assert_eq!(
            read(c.node(n), "many-chunks").await.unwrap(),
            data,
            "node {n}"
        );
        // Every node holds the data chunks and the manifest parts (R = 3).
        assert!(chunk_files(c.dirs[n].path()).len() > n_data_chunks);
    }
    // Repair and GC read the parts to know which chunks are live: nothing of
    // a live file is collected, and everything of a deleted one is.
    for n in 0..3 {
        c.node(n).repair_now().await;
    }
    assert!(chunk_files(c.dirs[0].path()).len() > n_data_chunks);
    c.node(1).delete("many-chunks").await.unwrap();
    for n in 0..3 {
        let dir = c.dirs[n].path().to_path_buf();
        wait_for("every chunk and part to be collected", LIMIT, || async {
            chunk_files(&dir).is_empty()
        })
        .await;
    }
    c.shutdown().await;
}
