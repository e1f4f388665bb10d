//! Integration tests: real endpoints (and a hand-driven raw peer) on 127.0.0.1.
//! Every wait is bounded by a timeout.

mod hostile;
mod limits;

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use drift_crypto::ClusterSecret;
use drift_p2p::{Config, Endpoint, Event, Events, NodeKey, Role, StreamError};
use tokio::time::timeout;

pub(crate) type Ep = Endpoint<String>;

/// A generous bound for things that should happen "at once".
pub(crate) const SOON: Duration = Duration::from_secs(5);

pub(crate) fn secret() -> ClusterSecret {
    ClusterSecret::generate().unwrap()
}

/// Short timeouts so failure tests run quickly.
pub(crate) fn config(secret: &ClusterSecret, role: Role) -> Config {
    let mut c = Config::new(secret, NodeKey::generate(), role);
    c.handshake_timeout = Duration::from_secs(2);
    c.request_timeout = Duration::from_secs(2);
    c.heartbeat_interval = Duration::from_millis(100);
    c.idle_timeout = Duration::from_secs(1);
    c
}

pub(crate) fn any_port() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

pub(crate) async fn within<T>(d: Duration, f: impl Future<Output = T>) -> T {
    timeout(d, f).await.expect("timed out")
}

/// The next event, or `None` if none arrives within `d`.
pub(crate) async fn next_event(events: &mut Events<String>, d: Duration) -> Option<Event<String>> {
    timeout(d, events.recv()).await.ok().flatten()
}

/// Serves streams: replies "echo <msg>"; a message "hold" parks the stream
/// unread; "slow:<ms>:<x>" replies after a delay; "silent" never replies.
pub(crate) fn serve(mut events: Events<String>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut parked = Vec::new();
        while let Some(event) = events.recv().await {
            let Event::Stream { mut stream, .. } = event else {
                continue;
            };
            let Ok(Some(msg)) = stream.recv().await else {
                continue;
            };
            if msg == "hold" || msg == "silent" {
                parked.push(stream);
                continue;
            }
            tokio::spawn(async move {
                if let Some(rest) = msg.strip_prefix("slow:") {
                    let (ms, _) = rest.split_once(':').unwrap();
                    tokio::time::sleep(Duration::from_millis(ms.parse().unwrap())).await;
                }
                let _ = stream.send(&format!("echo {msg}")).await;
                let _ = stream.finish().await;
            });
        }
    })
}

pub(crate) async fn server(
    secret: &ClusterSecret,
    tweak: impl FnOnce(&mut Config),
) -> (Ep, SocketAddr) {
    let mut c = config(secret, Role::Node);
    tweak(&mut c);
    let (ep, events) = Ep::bind(any_port(), c).await.unwrap();
    serve(events);
    let addr = ep.local_addr().unwrap();
    (ep, addr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_response_and_events() {
    let secret = secret();
    let mut node_cfg = config(&secret, Role::Node);
    node_cfg.advertise = Some("127.0.0.1:3000".parse().unwrap());
    let (node, mut node_events) = Ep::bind(any_port(), node_cfg).await.unwrap();
    let (client, mut client_events) = Ep::client(config(&secret, Role::Client));
    let conn = within(SOON, client.connect(node.local_addr().unwrap()))
        .await
        .unwrap();
    assert!(conn.is_outbound());
    assert_eq!(conn.peer_id(), node.peer_id());
    assert_eq!(conn.role(), Role::Node);
    assert_eq!(conn.listen_addr(), Some("127.0.0.1:3000".parse().unwrap()));
    let Some(Event::Connected(c)) = next_event(&mut client_events, SOON).await else {
        panic!("no connected event")
    };
    assert_eq!(c.id(), conn.id());
    let Some(Event::Connected(inbound)) = next_event(&mut node_events, SOON).await else {
        panic!("no inbound event")
    };
    assert_eq!(inbound.peer_id(), client.peer_id());
    assert_eq!(inbound.role(), Role::Client);
    assert!(!inbound.is_outbound());
    assert_eq!(node.connections().len(), 1);
    serve(node_events);
    assert_eq!(conn.request("a".into()).await.unwrap(), "echo a");

    // A long stream both ways on one stream.
    let mut s = conn.open().await.unwrap();
    for i in 0..3 {
        s.send(&format!("{i}")).await.unwrap();
    }
    s.finish().await.unwrap();
    assert_eq!(s.recv().await.unwrap().as_deref(), Some("echo 0"));
    assert_eq!(s.recv().await.unwrap(), None);
    assert_eq!(s.recv().await.unwrap(), None);

    let too_big = "x".repeat(drift_p2p::MAX_MESSAGE_LEN + 1);
    let mut s = conn.open().await.unwrap();
    assert!(matches!(
        s.send(&too_big).await,
        Err(StreamError::TooLarge { .. })
    ));
    drop(s);

    conn.close("done");
    within(SOON, conn.closed()).await;
    assert!(conn.is_closed());
    assert!(matches!(
        conn.request("b".into()).await,
        Err(StreamError::Disconnected(_))
    ));
    let Some(Event::Disconnected { reason, .. }) = next_event(&mut client_events, SOON).await
    else {
        panic!("no disconnected event")
    };
    assert_eq!(reason, "done");
    within(SOON, client.shutdown()).await;
    assert!(
        next_event(&mut client_events, SOON).await.is_none(),
        "events end after shutdown"
    );
    within(SOON, node.shutdown()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_concurrent_requests_each_get_their_reply() {
    let secret = secret();
    let (node, addr) = server(&secret, |_| {}).await;
    let (client, _events) = Ep::client(config(&secret, Role::Client));
    let conn = within(SOON, client.connect(addr)).await.unwrap();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..1000u32 {
        let conn = conn.clone();
        let delay = rand::random::<u32>() % 21;
        tasks.spawn(async move {
            let msg = format!("slow:{delay}:{i}");
            let reply = conn.request(msg.clone()).await.unwrap();
            assert_eq!(reply, format!("echo {msg}"));
        });
    }
    within(Duration::from_secs(60), async {
        while let Some(r) = tasks.join_next().await {
            r.unwrap();
        }
    })
    .await;
    client.shutdown().await;
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_secret_fails_the_handshake_and_the_listener_sees_nothing() {
    let (node, mut node_events) = Ep::bind(any_port(), config(&secret(), Role::Node))
        .await
        .unwrap();
    let (client, _events) = Ep::client(config(&secret(), Role::Client));
    let err = within(SOON, client.connect(node.local_addr().unwrap()))
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(
        matches!(err, drift_p2p::ConnectError::Handshake(_)),
        "{err:?}"
    );
    assert!(text.contains("cluster secret is probably wrong"), "{text}");
    assert!(
        next_event(&mut node_events, Duration::from_millis(500))
            .await
            .is_none()
    );
    assert!(node.connections().is_empty());
    client.shutdown().await;
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_and_unanswered_streams_time_out() {
    let secret = secret();
    let (node, mut node_events) = Ep::bind(any_port(), config(&secret, Role::Node))
        .await
        .unwrap();
    let (client, _events) = Ep::client(config(&secret, Role::Client));
    let conn = within(SOON, client.connect(node.local_addr().unwrap()))
        .await
        .unwrap();

    // The sender stops mid-stream but keeps the connection (heartbeats flow).
    let mut s = conn.open().await.unwrap();
    s.send(&"first".to_string()).await.unwrap();
    let mut incoming = loop {
        match next_event(&mut node_events, SOON).await {
            Some(Event::Stream { stream, .. }) => break stream,
            Some(_) => continue,
            None => panic!("no stream"),
        }
    };
    incoming.set_timeout(Duration::from_millis(300));
    assert_eq!(incoming.recv().await.unwrap().as_deref(), Some("first"));
    let started = std::time::Instant::now();
    assert_eq!(incoming.recv().await, Err(StreamError::Timeout));
    assert!(started.elapsed() < Duration::from_secs(2));
    assert!(
        !conn.is_closed(),
        "a stalled stream does not close the connection"
    );

    // The peer never answers a request.
    let started = std::time::Instant::now();
    assert_eq!(
        conn.request("never".into()).await,
        Err(StreamError::Timeout)
    );
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(1900) && took < Duration::from_secs(4),
        "{took:?}"
    );
    drop(s);
    client.shutdown().await;
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flow_control_keeps_other_streams_moving() {
    let secret = secret();
    let (node, addr) = server(&secret, |c| c.stream_window = 256 * 1024).await;
    let (client, _events) = Ep::client(config(&secret, Role::Client));
    let conn = within(SOON, client.connect(addr)).await.unwrap();
    let mut held = conn.open().await.unwrap();
    held.set_timeout(Duration::from_millis(300));
    held.send(&"hold".to_string()).await.unwrap();
    let chunk = "z".repeat(60 * 1024);
    let mut sent = 0usize;
    let err = loop {
        match held.send(&chunk).await {
            Ok(()) => sent += chunk.len(),
            Err(e) => break e,
        }
        assert!(sent < 16 << 20, "credit never ran out");
    };
    assert_eq!(err, StreamError::Timeout);
    assert!(sent <= 256 * 1024, "sent {sent} beyond the window");
    // The stuck stream does not block another one on the same connection.
    let reply = within(SOON, conn.request("other".into())).await.unwrap();
    assert_eq!(reply, "echo other");
    client.shutdown().await;
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_fails_pending_requests_with_disconnected() {
    let secret = secret();
    let (node, addr) = server(&secret, |c| c.request_timeout = Duration::from_secs(30)).await;
    let mut cfg = config(&secret, Role::Client);
    cfg.request_timeout = Duration::from_secs(30);
    let (client, _events) = Ep::client(cfg);
    let conn = within(SOON, client.connect(addr)).await.unwrap();
    let pending = tokio::spawn({
        let conn = conn.clone();
        async move { conn.request("silent".into()).await }
    });
    // Wait until the server has the stream, then kill the server.
    within(SOON, async {
        while node.connections().is_empty() {
            tokio::task::yield_now().await;
        }
    })
    .await;
    let started = std::time::Instant::now();
    node.shutdown().await;
    let result = within(SOON, pending).await.unwrap();
    assert!(
        matches!(result, Err(StreamError::Disconnected(_))),
        "{result:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(4));
    client.shutdown().await;
}

/// Sends the hello a proper peer would, on a raw connection.
pub async fn send_hello(raw: &mut drift_p2p::testing::RawPeer, cfg: &Config) {
    let hello = drift_p2p::testing::RawPeer::hello(cfg);
    raw.send(&drift_p2p::proto::Envelope {
        stream: 0,
        body: drift_p2p::proto::Body::Hello(hello),
    })
    .await
    .unwrap();
}
