//! Bounded resources and slow parties: the transfer budget, upload and read
//! deadlines, clients that pause or stall, and connection storms.

use std::time::Duration;

use drift_server::GetError;
use drift_server::client::{Client, ClientError};
use drift_server::proto::{FailKind, Msg};
use futures_util::StreamExt;

use crate::cluster::{Cluster, LIMIT, bytes, dial_as, names, read, wait_for};

/// Sends each stream a byte about every 100 ms until it answers; returns
/// each answer and how many bytes that stream was sent.
async fn trickle_until_answered(
    streams: &mut [drift_p2p::Stream<Msg>],
) -> Vec<(Option<Msg>, usize)> {
    let mut answers: Vec<Option<(Option<Msg>, usize)>> = streams.iter().map(|_| None).collect();
    for sent in 0..200 {
        for (s, answer) in streams.iter_mut().zip(answers.iter_mut()) {
            if answer.is_some() {
                continue;
            }
            let wait = Duration::from_millis(100 / 3 + 1);
            if let Ok(got) = tokio::time::timeout(wait, s.recv()).await {
                *answer = Some((got.ok().flatten(), sent));
            } else {
                let _ = s.send(&Msg::Data(vec![7u8].into())).await;
            }
        }
        if answers.iter().all(Option::is_some) {
            return answers.into_iter().flatten().collect();
        }
    }
    panic!("no answer from every stream after about 20 s of a byte every 100 ms");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_cannot_hold_memory_beyond_the_budget_or_the_deadline() {
    let c = Cluster::start(1, |cfg| {
        cfg.replicas = 1;
        cfg.transfer_memory = 16 << 20;
        cfg.request_timeout = Duration::from_millis(500);
    })
    .await;
    let addr = c.node(0).listen_addr();
    // A member announces three 8 MiB chunks: two fit the 16 MiB budget.
    let (ep, _events, conn) = dial_as(&c.secret, addr, drift_p2p::Role::Node).await;
    let mut uploads = Vec::new();
    for i in 0..3u8 {
        let mut s = conn.open().await.unwrap();
        s.send(&Msg::PutChunk {
            id: drift_crypto::ChunkId::from_bytes([i; 20]),
            len: 8 << 20,
        })
        .await
        .unwrap();
        uploads.push(s);
    }
    let answers = trickle_until_answered(&mut uploads).await;
    // One (whichever the node took last) is refused as busy once a request
    // timeout has passed; the two holding the memory, a byte at a time, are
    // cut off at the upload deadline (six request timeouts), well before
    // they could finish.
    let busy = |m: &Option<Msg>| matches!(m, Some(Msg::Failed { kind: FailKind::Unavailable, message }) if message.contains("busy"));
    let late = |m: &Option<Msg>| matches!(m, Some(Msg::Failed { message, .. }) if message.contains("did not arrive within"));
    assert_eq!(
        answers.iter().filter(|(m, _)| busy(m)).count(),
        1,
        "{answers:?}"
    );
    assert_eq!(
        answers.iter().filter(|(m, _)| late(m)).count(),
        2,
        "{answers:?}"
    );
    assert!(answers.iter().all(|(_, sent)| *sent < 100), "{answers:?}");
    ep.shutdown().await;

    // A client's upload trickling the same way is cut off too.
    let (client_ep, _client_events, conn) = dial_as(&c.secret, addr, drift_p2p::Role::Client).await;
    let mut put = conn.open().await.unwrap();
    put.send(&Msg::Put {
        name: "slow".into(),
    })
    .await
    .unwrap();
    let answers = trickle_until_answered(std::slice::from_mut(&mut put)).await;
    assert!(
        matches!(&answers[0].0, Some(Msg::Failed { message, .. }) if message.contains("did not arrive within")),
        "{answers:?}"
    );
    assert!(answers[0].1 < 100, "cut off after {} bytes", answers[0].1);
    // The node still stores: its budget came back.
    c.node(0).store("fine", &b"ok"[..]).await.unwrap();
    assert_eq!(read(c.node(0), "fine").await.unwrap(), b"ok");
    client_ep.shutdown().await;
    c.shutdown().await;
}

/// A get's reads ahead count against the node's transfer budget. A reader
/// left open and unread is given up after an upload's deadline (6 request
/// timeouts): its memory comes back without the caller dropping it, and it
/// then says why it ended.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_ahead_count_against_the_transfer_budget() {
    let c = Cluster::start(1, |cfg| {
        cfg.transfer_memory = 8 << 20; // eight 1 MiB chunks
        cfg.request_timeout = Duration::from_millis(500);
    })
    .await;
    let data = bytes(21, 12 << 20);
    c.node(0).store("big", &data[..]).await.unwrap();
    // A reader that takes nothing: its reads ahead fill the budget.
    let mut idle = c.node(0).get("big").await.unwrap();
    let mut got = idle.next_chunk().await.unwrap().unwrap().to_vec();
    assert_eq!(got.len(), 1 << 20);
    // Another read finds no memory left within a request timeout: busy.
    let err = read(c.node(0), "big").await.unwrap_err();
    assert!(matches!(err, GetError::Busy), "{err}");
    // Without dropping the idle reader, reads work again once it is given up.
    wait_for("reads to work beside the idle reader", LIMIT, || async {
        read(c.node(0), "big").await.is_ok_and(|b| b == data)
    })
    .await;
    let err = loop {
        match idle.next_chunk().await {
            Some(Ok(piece)) => got.extend_from_slice(&piece),
            Some(Err(e)) => break e,
            None => panic!("an abandoned reader ended as if the file were whole"),
        }
    };
    assert!(matches!(err, GetError::Idle(_)), "{err}");
    assert!(err.to_string().contains("open it again"), "{err}");
    assert_eq!(got[..], data[..got.len()]);
    c.shutdown().await;
}

/// `transfer_use` shows the memory transfers hold while they run, none once
/// they end, and counts them (what the `drift` binary watches to give memory
/// back once a node is quiet).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transfer_use_follows_the_transfers() {
    let c = Cluster::start(1, |_| {}).await;
    let node = c.node(0);
    let quiet = node.transfer_use();
    assert_eq!(quiet.held, 0);
    let data = bytes(24, 6 << 20);
    node.store("f", &data[..]).await.unwrap();
    let stored = node.transfer_use();
    assert!(stored.begun > quiet.begun, "{quiet:?} then {stored:?}");
    wait_for("the store's memory to be given back", LIMIT, || async {
        node.transfer_use().held == 0
    })
    .await;
    // A reader that stops after one chunk holds the chunks it read ahead.
    let mut reader = node.get("f").await.unwrap();
    let first = reader.next_chunk().await.unwrap().unwrap();
    assert_eq!(first[..], data[..first.len()]);
    wait_for("reads ahead to hold memory", LIMIT, || async {
        node.transfer_use().held >= 1 << 20
    })
    .await;
    assert!(node.transfer_use().begun > stored.begun);
    drop(reader);
    wait_for("the reader's memory to be given back", LIMIT, || async {
        node.transfer_use().held == 0
    })
    .await;
    c.shutdown().await;
}

/// A slow reader that keeps reading, pausing longer than a request timeout
/// before each chunk, is not given up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_reader_that_keeps_reading_gets_the_whole_file() {
    let c = Cluster::start(1, |cfg| cfg.request_timeout = Duration::from_millis(500)).await;
    let small = bytes(23, 4 << 20);
    c.node(0).store("small", &small[..]).await.unwrap();
    let mut slow = c.node(0).get("small").await.unwrap();
    let mut got = Vec::new();
    while let Some(piece) = slow.next_chunk().await {
        got.extend_from_slice(&piece.unwrap());
        tokio::time::sleep(Duration::from_millis(700)).await; // the consumer's pace, not a wait for state
    }
    assert_eq!(got, small);
    c.shutdown().await;
}

/// One node with a 500 ms request timeout (so 3 s for a chunk's worth of
/// input or output), and a client connected to it.
async fn impatient_node_and_client() -> (Cluster, Client) {
    let c = Cluster::start(1, |cfg| {
        cfg.replicas = 1;
        cfg.request_timeout = Duration::from_millis(500);
    })
    .await;
    let client = Client::connect(c.addrs[0], &c.secret, Duration::from_secs(3))
        .await
        .unwrap();
    (c, client)
}

/// A client whose input stalls mid-put hears the node give up on the upload
/// (after its chunk deadline) instead of waiting on its input for ever.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_client_put_whose_input_stalls_ends_with_the_nodes_reason() {
    let (c, client) = impatient_node_and_client().await;
    let stalled = futures_util::stream::iter([Ok(bytes::Bytes::from(vec![7u8; 1000]))])
        .chain(futures_util::stream::pending());
    let err = tokio::time::timeout(LIMIT, client.put_blocks("stalled", stalled, |_| {}))
        .await
        .expect("the put waited on its stalled input past the node's deadline")
        .unwrap_err();
    assert!(matches!(err, ClientError::Failed { .. }), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains("did not arrive within") || msg.contains("sent no data for"),
        "{msg}"
    );
    assert!(names(c.node(0)).await.is_empty());
    client.close().await;
    c.shutdown().await;
}

/// Clients may pause longer than a request timeout (a slow pipe in, a pager
/// out): a put whose input pauses, and a get whose output pauses, complete.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_client_may_pause_longer_than_a_request_timeout() {
    let (c, client) = impatient_node_and_client().await;
    // The input's pace, not a wait for state: 100 kB, a 1.5 s pause, 100 kB.
    let data = bytes(24, 200_000);
    let halves = [
        bytes::Bytes::copy_from_slice(&data[..100_000]),
        bytes::Bytes::copy_from_slice(&data[100_000..]),
    ];
    let paused = futures_util::stream::iter(halves)
        .enumerate()
        .then(|(i, b)| async move {
            if i == 1 {
                tokio::time::sleep(Duration::from_millis(1500)).await;
            }
            Ok(b)
        });
    let paused = Box::pin(paused);
    tokio::time::timeout(LIMIT, client.put_blocks("paused in", paused, |_| {}))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(read(c.node(0), "paused in").await.unwrap(), data);

    // The output's pace: 64 KiB, then a 1.5 s pause with the node's window full.
    let big = bytes(25, 8 << 20);
    c.node(0).store("paused out", &big[..]).await.unwrap();
    let (writer, mut out) = tokio::io::duplex(64 * 1024);
    let consumer = tokio::spawn(async move {
        use tokio::io::AsyncReadExt;
        let mut got = vec![0u8; 64 * 1024];
        out.read_exact(&mut got).await.unwrap();
        tokio::time::sleep(Duration::from_millis(1500)).await;
        out.read_to_end(&mut got).await.unwrap();
        got
    });
    let size = tokio::time::timeout(LIMIT, client.get("paused out", writer, |_, _| {}))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(size, big.len() as u64);
    assert_eq!(consumer.await.unwrap(), big);
    client.close().await;
    c.shutdown().await;
}

/// Many clients connecting at once (more than the node's handshake table
/// holds) all get in: a handshake dropped for load is tried again.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn many_clients_connecting_at_once_all_get_in() {
    let c = Cluster::start(1, |cfg| cfg.replicas = 1).await;
    c.node(0).store("small", &b"hello"[..]).await.unwrap();
    let clients = (0..256).map(|_| {
        let (addr, secret) = (c.addrs[0], c.secret.clone());
        tokio::spawn(async move {
            let client = Client::connect(addr, &secret, Duration::from_secs(10)).await?;
            let mut out = Vec::new();
            client.get("small", &mut out, |_, _| {}).await?;
            client.close().await;
            Ok::<_, ClientError>(out)
        })
    });
    let results = tokio::time::timeout(LIMIT, futures_util::future::join_all(clients))
        .await
        .unwrap();
    let failed: Vec<String> = results
        .into_iter()
        .filter_map(|r| match r.unwrap() {
            Ok(out) if out == b"hello" => None,
            Ok(_) => Some("wrong bytes".to_string()),
            Err(e) => Some(e.to_string()),
        })
        .collect();
    assert!(
        failed.is_empty(),
        "{} of 256 failed: {:?}",
        failed.len(),
        &failed[..failed.len().min(3)]
    );
    c.shutdown().await;
}

/// A get whose output stalls past the node's deadline (a pager left open,
/// then read on) ends with the node's reason, not a bare "stream dropped".
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_get_whose_output_stalls_too_long_says_why_it_ended() {
    let (c, client) = impatient_node_and_client().await;
    let big = bytes(27, 8 << 20);
    c.node(0).store("stalled out", &big[..]).await.unwrap();
    let (writer, mut out) = tokio::io::duplex(64 * 1024);
    let consumer = tokio::spawn(async move {
        use tokio::io::AsyncReadExt;
        let mut got = vec![0u8; 64 * 1024];
        out.read_exact(&mut got).await.unwrap();
        // The consumer's pace: a pause past the node's 3 s deadline.
        tokio::time::sleep(Duration::from_secs(5)).await;
        let _ = out.read_to_end(&mut got).await;
        got.len()
    });
    let err = tokio::time::timeout(LIMIT, client.get("stalled out", writer, |_, _| {}))
        .await
        .unwrap()
        .unwrap_err();
    assert!(err.to_string().contains("read or sent nothing"), "{err}");
    assert!(consumer.await.unwrap() < big.len());
    client.close().await;
    c.shutdown().await;
}

/// Reads ahead may hold at most half the transfer budget: readers left open
/// and unread, before they are given up, still leave stores the other half.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn idle_readers_leave_half_the_transfer_budget_to_stores() {
    let c = Cluster::start(1, |cfg| {
        cfg.replicas = 1;
        cfg.transfer_memory = 16 << 20; // reads ahead: 8 MiB at most
        cfg.request_timeout = Duration::from_millis(500);
    })
    .await;
    let data = bytes(28, 12 << 20);
    c.node(0).store("big", &data[..]).await.unwrap();
    // An unread reader reads ahead as far as the reads' half allows.
    let mut idle = c.node(0).get("big").await.unwrap();
    idle.next_chunk().await.unwrap().unwrap();
    // The reads' half is taken: another read is busy...
    let err = read(c.node(0), "big").await.unwrap_err();
    assert!(matches!(err, GetError::Busy), "{err}");
    // ...and a store still finds memory.
    let more = bytes(29, 4 << 20);
    c.node(0).store("more", &more[..]).await.unwrap();
    drop(idle);
    assert_eq!(read(c.node(0), "more").await.unwrap(), more);
    c.shutdown().await;
}

/// A client's put under way when the node begins to shut down is let
/// finish; a request that comes meanwhile is refused, saying why.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn shutting_down_lets_a_clients_put_under_way_finish() {
    let c = Cluster::start(1, |cfg| cfg.replicas = 1).await;
    let node = c.node(0).clone();
    let client = Client::connect(c.addrs[0], &c.secret, Duration::from_secs(3))
        .await
        .unwrap();
    let data = bytes(25, 3 << 20);
    let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<bytes::Bytes>>(2);
    let blocks =
        futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|b| (b, rx)) });
    let put = tokio::spawn(async move {
        let put = client.put_blocks("late", Box::pin(blocks), |_| {}).await;
        client.close().await;
        put
    });
    tx.send(Ok(bytes::Bytes::copy_from_slice(&data[..1 << 20])))
        .await
        .unwrap();
    wait_for("the put to hold upload memory", LIMIT, || async {
        node.transfer_use().held > 0
    })
    .await;
    let stopping = tokio::spawn({
        let node = node.clone();
        async move { node.shutdown().await }
    });
    // Another client's request meanwhile is refused.
    wait_for("new requests to be refused", LIMIT, || async {
        let Ok(other) = Client::connect(c.addrs[0], &c.secret, Duration::from_secs(3)).await else {
            return false;
        };
        let refused = other
            .list()
            .await
            .is_err_and(|e| e.to_string().contains("shutting down"));
        other.close().await;
        refused
    })
    .await;
    assert!(!stopping.is_finished(), "shutdown did not wait for the put");
    tx.send(Ok(bytes::Bytes::copy_from_slice(&data[1 << 20..])))
        .await
        .unwrap();
    drop(tx);
    let (_, size) = tokio::time::timeout(LIMIT, put)
        .await
        .expect("the put ended")
        .unwrap()
        .expect("the put under way completed");
    assert_eq!(size, data.len() as u64);
    tokio::time::timeout(LIMIT, stopping)
        .await
        .expect("shutdown ended")
        .unwrap();
    drop(node);
    c.shutdown().await;
}
