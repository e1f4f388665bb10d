//! Hostile and broken peers: garbage, oversized frames, spoofed hellos, version
//! mismatches, silence, dead peers.

use std::time::Duration;

use drift_p2p::proto::{Body, Envelope, Hello};
use drift_p2p::testing::RawPeer;
use drift_p2p::{ConnectError, Event, NodeKey, PROTOCOL_VERSION, Role, StreamError};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::{Ep, SOON, any_port, config, next_event, secret, server, within};

/// Writes `bytes` and waits until the listener closes the connection.
async fn closed_after(addr: std::net::SocketAddr, bytes: &[u8]) {
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(bytes).await.unwrap();
    let mut sink = [0u8; 4096];
    within(SOON, async {
        loop {
            match tcp.read(&mut sink).await {
                Ok(0) | Err(_) => break,
                Ok(_) => continue,
            }
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_and_bad_frames_close_the_connection_and_the_listener_survives() {
    let secret = secret();
    let (node, mut events) = Ep::bind(any_port(), config(&secret, Role::Node))
        .await
        .unwrap();
    let addr = node.local_addr().unwrap();
    let garbage: Vec<u8> = (0..10_000).map(|_| rand::random::<u8>()).collect();
    closed_after(addr, &garbage).await;
    closed_after(addr, &[0xff, 0xff, 0xff, 0xff, 1, 2, 3]).await; // claims 4 GiB
    closed_after(addr, &65_536u32.to_be_bytes()).await; // MAX_FRAME_LEN + 1
    closed_after(addr, &[0, 0, 0, 100, 1, 2, 3]).await; // truncated: closed by the handshake timeout
    closed_after(addr, &[0, 0, 0, 0]).await; // empty handshake message
    assert!(
        next_event(&mut events, Duration::from_millis(200))
            .await
            .is_none()
    );

    // After the handshake: an oversized frame header from an authenticated peer.
    let cfg = config(&secret, Role::Node);
    let mut raw = within(SOON, RawPeer::connect(addr, &cfg)).await.unwrap();
    crate::send_hello(&mut raw, &cfg).await;
    let Some(Event::Connected(_)) = next_event(&mut events, SOON).await else {
        panic!("no connected")
    };
    raw.send_raw(&u32::MAX.to_be_bytes()).await.unwrap();
    let Some(Event::Disconnected { reason, .. }) = next_event(&mut events, SOON).await else {
        panic!("not disconnected")
    };
    assert!(reason.contains("frame"), "{reason}");

    // Still serving a proper client.
    crate::serve(events);
    let (client, _ev) = Ep::client(config(&secret, Role::Client));
    let conn = within(SOON, client.connect(addr)).await.unwrap();
    assert_eq!(conn.request("ok".into()).await.unwrap(), "echo ok");
    client.shutdown().await;
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spoofed_hello_is_rejected() {
    let secret = secret();
    let (node, mut events) = Ep::bind(any_port(), config(&secret, Role::Node))
        .await
        .unwrap();
    let cfg = config(&secret, Role::Node);
    let mut raw = within(SOON, RawPeer::connect(node.local_addr().unwrap(), &cfg))
        .await
        .unwrap();
    let mut hello = RawPeer::hello(&cfg);
    hello.peer_id = NodeKey::generate().peer_id();
    raw.send(&Envelope {
        stream: 0,
        body: Body::Hello(hello),
    })
    .await
    .unwrap();
    let reason = read_close(&mut raw).await;
    assert!(reason.contains("noise key proves"), "{reason}");
    assert!(
        next_event(&mut events, Duration::from_millis(300))
            .await
            .is_none()
    );
    node.shutdown().await;
}

/// Reads until a `Close` (its reason) or the end of the connection.
async fn read_close(raw: &mut RawPeer) -> String {
    within(SOON, async {
        loop {
            match raw.recv().await {
                Ok(Some(Envelope {
                    body: Body::Close(reason),
                    ..
                })) => return reason,
                Ok(Some(_)) => continue,
                Ok(None) | Err(_) => return String::new(),
            }
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn version_mismatch_is_a_clear_error_on_both_sides() {
    let secret = secret();
    // A newer peer dials us.
    let (node, mut events) = Ep::bind(any_port(), config(&secret, Role::Node))
        .await
        .unwrap();
    let cfg = config(&secret, Role::Node);
    let mut raw = within(SOON, RawPeer::connect(node.local_addr().unwrap(), &cfg))
        .await
        .unwrap();
    let future = Hello {
        protocol_version: PROTOCOL_VERSION + 1,
        ..RawPeer::hello(&cfg)
    };
    raw.send(&Envelope {
        stream: 0,
        body: Body::Hello(future.clone()),
    })
    .await
    .unwrap();
    let reason = read_close(&mut raw).await;
    assert_eq!(
        reason,
        format!(
            "protocol version mismatch: ours {PROTOCOL_VERSION}, theirs {}",
            PROTOCOL_VERSION + 1
        )
    );
    assert!(
        next_event(&mut events, Duration::from_millis(300))
            .await
            .is_none()
    );
    node.shutdown().await;

    // We dial a newer peer.
    let listener = TcpListener::bind(any_port()).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (client, mut client_events) = Ep::client(config(&secret, Role::Client));
    let peer = async {
        let mut raw = RawPeer::accept(&listener, &cfg).await.unwrap();
        raw.send(&Envelope {
            stream: 0,
            body: Body::Hello(future),
        })
        .await
        .unwrap();
        read_close(&mut raw).await
    };
    let (dialed, peer_saw) = within(SOON, async { tokio::join!(client.connect(addr), peer) }).await;
    match dialed {
        Err(ConnectError::Version { ours, theirs }) => {
            assert_eq!((ours, theirs), (PROTOCOL_VERSION, PROTOCOL_VERSION + 1));
        }
        other => panic!("expected a version error, got {other:?}"),
    }
    assert!(peer_saw.contains("protocol version mismatch"), "{peer_saw}");
    assert!(
        next_event(&mut client_events, Duration::from_millis(100))
            .await
            .is_none()
    );
    client.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_connection_is_closed_after_the_idle_timeout() {
    let secret = secret();
    let (node, mut events) = Ep::bind(any_port(), config(&secret, Role::Node))
        .await
        .unwrap();
    let cfg = config(&secret, Role::Node);
    let mut raw = within(SOON, RawPeer::connect(node.local_addr().unwrap(), &cfg))
        .await
        .unwrap();
    crate::send_hello(&mut raw, &cfg).await;
    let started = std::time::Instant::now();
    let Some(Event::Connected(_)) = next_event(&mut events, SOON).await else {
        panic!("no connected")
    };
    // The raw peer never answers pings.
    let Some(Event::Disconnected { reason, .. }) = next_event(&mut events, SOON).await else {
        panic!("not closed")
    };
    assert!(reason.contains("idle timeout"), "{reason}");
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(3),
        "{took:?}"
    );
    let said = read_close(&mut raw).await;
    assert!(said.contains("idle timeout"), "{said}");
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_peer_fails_pending_requests_quickly() {
    let secret = secret();
    let listener = TcpListener::bind(any_port()).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let cfg = config(&secret, Role::Node);
    let (client, _events) = Ep::client(config(&secret, Role::Client));
    let peer = async {
        let mut raw = RawPeer::accept(&listener, &cfg).await.unwrap();
        crate::send_hello(&mut raw, &cfg).await;
        raw
    };
    let (conn, mut raw) = within(SOON, async { tokio::join!(client.connect(addr), peer) }).await;
    let conn = conn.unwrap();
    let pending = tokio::spawn({
        let conn = conn.clone();
        async move { conn.request("anyone?".into()).await }
    });
    // The peer sees the request, then its process dies (the socket closes).
    within(SOON, async {
        loop {
            if let Some(Envelope {
                body: Body::Data(_),
                ..
            }) = raw.recv().await.unwrap()
            {
                break;
            }
        }
    })
    .await;
    let started = std::time::Instant::now();
    drop(raw);
    let result = within(SOON, pending).await.unwrap();
    assert!(
        matches!(result, Err(StreamError::Disconnected(_))),
        "{result:?}"
    );
    assert!(started.elapsed() < Duration::from_millis(1500));
    client.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_beyond_the_credit_closes_the_connection() {
    let secret = secret();
    let (node, addr) = server(&secret, |c| c.stream_window = 256 * 1024).await;
    let cfg = config(&secret, Role::Node);
    let mut raw = within(SOON, RawPeer::connect(addr, &cfg)).await.unwrap();
    crate::send_hello(&mut raw, &cfg).await;
    raw.send(&Envelope {
        stream: 1,
        body: Body::Open,
    })
    .await
    .unwrap();
    let hold = postcard::to_allocvec(&"hold".to_string()).unwrap();
    raw.send(&Envelope {
        stream: 1,
        body: Body::Data(hold.into()),
    })
    .await
    .unwrap();
    let chunk = vec![0u8; 60_000];
    let reason = within(SOON, async {
        for _ in 0..10 {
            if raw
                .send(&Envelope {
                    stream: 1,
                    body: Body::Data(chunk.clone().into()),
                })
                .await
                .is_err()
            {
                break;
            }
        }
        read_close(&mut raw).await
    })
    .await;
    assert!(reason.contains("credit"), "{reason}");
    node.shutdown().await;
}
