//! Connection and stream limits.

use std::time::Duration;

use drift_p2p::proto::{Body, Envelope};
use drift_p2p::testing::RawPeer;
use drift_p2p::{ConnectError, Event, Role, StreamError};

use crate::{Ep, SOON, any_port, config, next_event, secret, server, within};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_limits_hold() {
    let secret = secret();
    let mut cfg = config(&secret, Role::Node);
    cfg.max_connections = 2;
    let (node, mut events) = Ep::bind(any_port(), cfg).await.unwrap();
    let addr = node.local_addr().unwrap();
    let (client, _ev) = Ep::client(config(&secret, Role::Client));
    let first = within(SOON, client.connect(addr)).await.unwrap();
    let _second = within(SOON, client.connect(addr)).await.unwrap();
    for _ in 0..2 {
        assert!(matches!(
            next_event(&mut events, SOON).await,
            Some(Event::Connected(_))
        ));
    }
    let third = within(SOON, client.connect(addr)).await;
    assert!(matches!(third, Err(ConnectError::Rejected(_))), "{third:?}");

    // A slot frees when a connection goes.
    first.close("bye");
    loop {
        match next_event(&mut events, SOON).await {
            Some(Event::Disconnected { .. }) => break,
            Some(_) => continue,
            None => panic!("no disconnect"),
        }
    }
    within(SOON, client.connect(addr)).await.unwrap();

    // Our own limit when dialing.
    let mut one = config(&secret, Role::Client);
    one.max_connections = 1;
    let (small, _ev2) = Ep::client(one);
    let (other, other_addr) = server(&secret, |_| {}).await;
    within(SOON, small.connect(other_addr)).await.unwrap();
    assert!(matches!(
        small.connect(other_addr).await,
        Err(ConnectError::Limit)
    ));
    small.shutdown().await;
    other.shutdown().await;
    client.shutdown().await;
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opening_beyond_the_stream_limit_waits_then_fails() {
    let secret = secret();
    let (node, addr) = server(&secret, |c| c.max_streams = 4).await;
    let mut cfg = config(&secret, Role::Client);
    cfg.request_timeout = Duration::from_millis(300);
    let (client, _ev) = Ep::client(cfg);
    let conn = within(SOON, client.connect(addr)).await.unwrap();
    let mut held = Vec::new();
    for _ in 0..4 {
        let mut s = conn.open().await.unwrap();
        s.send(&"hold".to_string()).await.unwrap();
        held.push(s);
    }
    let started = std::time::Instant::now();
    assert_eq!(conn.open().await.err(), Some(StreamError::Limit));
    assert!(started.elapsed() >= Duration::from_millis(250));
    // Releasing one (reset on drop) frees a slot.
    held.pop();
    let mut s = within(SOON, conn.open()).await.unwrap();
    s.send(&"x".to_string()).await.unwrap();
    s.finish().await.unwrap();
    assert_eq!(s.recv().await.unwrap().as_deref(), Some("echo x"));
    client.shutdown().await;
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_opens_too_many_streams_gets_resets() {
    let secret = secret();
    let (node, addr) = server(&secret, |c| c.max_streams = 4).await;
    let cfg = config(&secret, Role::Node);
    let mut raw = within(SOON, RawPeer::connect(addr, &cfg)).await.unwrap();
    crate::send_hello(&mut raw, &cfg).await;
    let hold = postcard::to_allocvec(&"hold".to_string()).unwrap();
    for id in (1..=11).step_by(2) {
        raw.send(&Envelope {
            stream: id,
            body: Body::Open,
        })
        .await
        .unwrap();
        raw.send(&Envelope {
            stream: id,
            body: Body::Data(hold.clone().into()),
        })
        .await
        .unwrap();
    }
    let mut reset = Vec::new();
    within(SOON, async {
        while reset.len() < 2 {
            match raw.recv().await.unwrap() {
                Some(Envelope {
                    stream,
                    body: Body::Reset(_),
                }) => reset.push(stream),
                Some(Envelope {
                    body: Body::Ping(n),
                    ..
                }) => {
                    raw.send(&Envelope {
                        stream: 0,
                        body: Body::Pong(n),
                    })
                    .await
                    .unwrap();
                }
                Some(_) => {}
                None => panic!("closed"),
            }
        }
    })
    .await;
    assert_eq!(reset, vec![9, 11]);
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_unauthenticated_connections_do_not_take_connection_slots() {
    let secret = secret();
    let mut cfg = config(&secret, Role::Node);
    cfg.max_connections = 2;
    cfg.max_pending_handshakes = 8;
    let (node, _events) = Ep::bind(any_port(), cfg).await.unwrap();
    let addr = node.local_addr().unwrap();
    // More silent sockets than connection slots, fewer than handshake slots.
    let mut silent = Vec::new();
    for _ in 0..5 {
        silent.push(
            within(SOON, tokio::net::TcpStream::connect(addr))
                .await
                .unwrap(),
        );
    }
    let (client, _ev) = Ep::client(config(&secret, Role::Client));
    within(SOON, client.connect(addr)).await.unwrap();
    within(SOON, client.connect(addr)).await.unwrap();
    drop(silent);
    client.shutdown().await;
    node.shutdown().await;
}

/// Opens a TCP connection to `to` from the loopback address `from`, and sends nothing.
async fn silent_from(from: &str, to: std::net::SocketAddr) -> tokio::net::TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(format!("{from}:0").parse().unwrap()).unwrap();
    within(SOON, socket.connect(to)).await.unwrap()
}

/// True once the node has closed `tcp` (a read returns end of file or an error).
async fn closed_by_peer(tcp: &mut tokio::net::TcpStream) -> bool {
    use tokio::io::AsyncReadExt;
    let mut buf = [0u8; 64];
    matches!(
        tokio::time::timeout(SOON, tcp.read(&mut buf)).await,
        Ok(Ok(0) | Err(_))
    )
}

/// A node whose handshake places are few and outlast the test: only
/// eviction, never a timeout, can free one.
async fn node_with_eight_handshake_places()
-> (Ep, std::net::SocketAddr, drift_crypto::ClusterSecret) {
    let secret = secret();
    let mut cfg = config(&secret, Role::Node);
    cfg.max_pending_handshakes = 8;
    cfg.handshake_timeout = Duration::from_secs(120);
    let (node, _events) = Ep::bind(any_port(), cfg).await.unwrap();
    let addr = node.local_addr().unwrap();
    (node, addr, secret)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_connections_from_other_addresses_do_not_lock_a_peer_out() {
    let (node, addr, secret) = node_with_eight_handshake_places().await;
    // Every handshake place taken, two by each of four other addresses.
    let mut silent = Vec::new();
    for from in ["127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5"] {
        for _ in 0..2 {
            silent.push(silent_from(from, addr).await);
        }
    }
    let (client, _ev) = Ep::client(config(&secret, Role::Client));
    within(SOON, client.connect(addr)).await.unwrap();
    // Its place came from the oldest silent connection, which is closed.
    assert!(closed_by_peer(&mut silent[0]).await);
    within(SOON, client.connect(addr)).await.unwrap();
    client.shutdown().await;
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_silent_connections_from_the_peers_own_address_does_not_lock_it_out() {
    let (node, addr, secret) = node_with_eight_handshake_places().await;
    let mut silent = Vec::new();
    for _ in 0..20 {
        silent.push(silent_from("127.0.0.1", addr).await);
    }
    // Past eight, each new socket of the flood evicted the oldest.
    assert!(closed_by_peer(&mut silent[0]).await);
    let (client, _ev) = Ep::client(config(&secret, Role::Client));
    within(SOON, client.connect(addr)).await.unwrap();
    client.shutdown().await;
    node.shutdown().await;
}
