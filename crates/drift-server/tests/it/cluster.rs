//! A test cluster of in-process nodes and bounded waits.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use drift_crypto::ClusterSecret;
use drift_server::proto::Msg;
use drift_server::{Node, NodeConfig, PeerState};
use tempfile::TempDir;

/// Waits for `cond` to hold, checking every 20 ms, failing the test after `limit`.
pub async fn wait_for<F, Fut>(what: &str, limit: Duration, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if cond().await {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub const LIMIT: Duration = Duration::from_secs(20);

/// A node's config with test-sized timeouts.
pub fn config(
    dir: &std::path::Path,
    secret: &ClusterSecret,
    listen: SocketAddr,
    peers: Vec<SocketAddr>,
) -> NodeConfig {
    let mut c = NodeConfig::new(listen, dir, secret.clone());
    c.bootstrap = peers;
    c.request_timeout = Duration::from_secs(5);
    c.heartbeat_interval = Duration::from_millis(100);
    c.idle_timeout = Duration::from_secs(2);
    c.min_backoff = Duration::from_millis(50);
    c.max_backoff = Duration::from_millis(400);
    c.anti_entropy_interval = Duration::from_millis(300);
    c.repair_interval = Duration::from_millis(500);
    c.scrub_interval = Duration::from_secs(3600);
    c.lost_after = Duration::from_secs(3600);
    c
}

/// Nodes with their data directories; slot `i` may be stopped and restarted.
pub struct Cluster {
    pub secret: ClusterSecret,
    pub dirs: Vec<TempDir>,
    pub addrs: Vec<SocketAddr>,
    pub nodes: Vec<Option<Node>>,
}

impl Cluster {
    /// Starts `n` nodes; node 0 has no peers, each later node bootstraps from node 0
    /// (or from all earlier nodes if `full_bootstrap`).
    pub async fn start(n: usize, tweak: impl Fn(&mut NodeConfig)) -> Cluster {
        // RUST_LOG=debug shows what the nodes do when a test fails.
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
        let secret = ClusterSecret::generate().unwrap();
        let mut c = Cluster {
            secret,
            dirs: Vec::new(),
            addrs: Vec::new(),
            nodes: Vec::new(),
        };
        for _ in 0..n {
            let peers = c.addrs.first().copied().into_iter().collect();
            c.add(peers, &tweak).await;
        }
        c.wait_connected().await;
        c
    }

    /// Adds one node that bootstraps from `peers`.
    pub async fn add(&mut self, peers: Vec<SocketAddr>, tweak: &impl Fn(&mut NodeConfig)) -> usize {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = config(
            dir.path(),
            &self.secret,
            "127.0.0.1:0".parse().unwrap(),
            peers,
        );
        tweak(&mut cfg);
        let node = Node::start(cfg).await.unwrap();
        self.addrs.push(node.listen_addr());
        self.dirs.push(dir);
        self.nodes.push(Some(node));
        self.nodes.len() - 1
    }

    pub fn node(&self, i: usize) -> &Node {
        self.nodes[i].as_ref().expect("node is stopped")
    }

    pub async fn stop(&mut self, i: usize) {
        if let Some(n) = self.nodes[i].take() {
            n.shutdown().await;
        }
    }

    pub async fn restart(&mut self, i: usize, tweak: impl Fn(&mut NodeConfig)) {
        let mut cfg = config(self.dirs[i].path(), &self.secret, self.addrs[i], vec![]);
        tweak(&mut cfg);
        self.nodes[i] = Some(Node::start(cfg).await.unwrap());
    }

    /// Waits until every running node sees every other running node up.
    pub async fn wait_connected(&self) {
        let running: Vec<&Node> = self.nodes.iter().flatten().collect();
        let want = running.len() - 1;
        wait_for("full mesh", LIMIT, || async {
            for n in &running {
                let up = n
                    .status()
                    .await
                    .peers
                    .iter()
                    .filter(|p| p.state == PeerState::Up)
                    .count();
                if up < want {
                    return false;
                }
            }
            true
        })
        .await;
    }

    pub async fn shutdown(mut self) {
        for i in 0..self.nodes.len() {
            self.stop(i).await;
        }
    }
}

/// Deterministic pseudo-random bytes.
pub fn bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// The names `node` lists, sorted.
pub async fn names(node: &Node) -> Vec<String> {
    let files = node.list().await.unwrap();
    files.into_iter().map(|f| f.name).collect()
}

/// Reads a whole file from a node.
pub async fn read(node: &Node, name: &str) -> Result<Vec<u8>, drift_server::GetError> {
    node.get(name).await?.read_to_end().await
}

/// Every chunk file under a node's data directory.
pub fn chunk_files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.join("chunks")];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.len() == 40)
            {
                out.push(p);
            }
        }
    }
    out
}

/// Connects to the node at `addr` as an outsider holding the secret, in
/// `role` (a member, or a client), without a node of its own. The events are
/// returned so the endpoint keeps reporting while the test runs.
pub async fn dial_as(
    secret: &ClusterSecret,
    addr: std::net::SocketAddr,
    role: drift_p2p::Role,
) -> (
    drift_p2p::Endpoint<Msg>,
    drift_p2p::Events<Msg>,
    drift_p2p::Connection<Msg>,
) {
    use drift_p2p::{Config, Endpoint, NodeKey};
    let (ep, events) = Endpoint::<Msg>::client(Config::new(secret, NodeKey::generate(), role));
    let conn = tokio::time::timeout(LIMIT, ep.connect(addr))
        .await
        .unwrap()
        .unwrap();
    (ep, events, conn)
}
