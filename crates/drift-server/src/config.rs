//! The node's configuration.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use drift_crypto::{ClusterSecret, DEFAULT_CHUNK_SIZE};

/// Everything `Node::start` needs. [`NodeConfig::new`] fills in production
/// defaults; tests shorten the timeouts and grace periods.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// Where to listen (port 0 picks a free port).
    pub listen: SocketAddr,
    /// The node's data directory (chunks, index, identity).
    pub data_dir: PathBuf,
    /// Peers to contact at start; the rest are found through peer exchange.
    pub bootstrap: Vec<SocketAddr>,
    /// Replication factor R, capped by the number of members.
    pub replicas: usize,
    /// The cluster secret.
    pub secret: ClusterSecret,
    /// Bytes per chunk for new files.
    pub chunk_size: usize,
    /// Deadline for one request to a peer.
    pub request_timeout: Duration,
    /// How often connections exchange heartbeats.
    pub heartbeat_interval: Duration,
    /// A connection silent for this long is closed and its peer marked down.
    pub idle_timeout: Duration,
    /// A peer down for this long is declared lost and its replicas re-created elsewhere.
    pub lost_after: Duration,
    /// The first reconnect delay; it doubles up to `max_backoff`.
    pub min_backoff: Duration,
    /// The longest reconnect delay.
    pub max_backoff: Duration,
    /// How often nodes compare name indexes.
    pub anti_entropy_interval: Duration,
    /// How often the repair worker runs (it also runs on membership changes).
    /// Keep it over 5 s, the longest a store or a read in progress goes
    /// between touches of its chunks: a node running passes faster than
    /// that, with a grace under 5 s, could collect them from under it.
    pub repair_interval: Duration,
    /// How often the scrub worker re-verifies every local chunk.
    pub scrub_interval: Duration,
    /// How long an unreferenced chunk is kept before it is collected (at
    /// least until two repair passes have seen it unreferenced).
    pub gc_grace: Duration,
    /// How long tombstones are kept. A node down longer than this may bring a
    /// deleted file back, so it is long.
    pub tombstone_ttl: Duration,
    /// An optional cap on the bytes of chunk files on this node.
    pub max_bytes: Option<u64>,
    /// Most chunks one store or get keeps in flight.
    pub pipeline_depth: usize,
    /// Most bytes the chunk buffers of uploads (clients' puts, chunks sent
    /// by peers) and gets' reads ahead hold at once, over the whole node;
    /// raised to at least one largest chunk. Reads ahead may hold half of it
    /// at most. A transfer that finds none free within `request_timeout`
    /// fails as busy. Default 256 MiB.
    pub transfer_memory: usize,
}

impl NodeConfig {
    /// A configuration with production defaults.
    pub fn new(listen: SocketAddr, data_dir: impl Into<PathBuf>, secret: ClusterSecret) -> Self {
        Self {
            listen,
            data_dir: data_dir.into(),
            bootstrap: Vec::new(),
            replicas: 3,
            secret,
            chunk_size: DEFAULT_CHUNK_SIZE,
            request_timeout: Duration::from_secs(10),
            heartbeat_interval: Duration::from_secs(1),
            idle_timeout: Duration::from_secs(5),
            lost_after: Duration::from_secs(300),
            min_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(10),
            anti_entropy_interval: Duration::from_secs(10),
            repair_interval: Duration::from_secs(30),
            scrub_interval: Duration::from_secs(3600),
            gc_grace: Duration::from_secs(600),
            tombstone_ttl: Duration::from_secs(30 * 24 * 3600),
            max_bytes: None,
            pipeline_depth: 8,
            transfer_memory: 256 << 20,
        }
    }

    /// Checks the values a node cannot run with: a chunk size outside
    /// `1..=MAX_CHUNK_SIZE`, no replicas, no pipeline, or a zero period or
    /// deadline (a zero period would spin, a zero deadline fail everything).
    pub fn check(&self) -> Result<(), String> {
        let max = drift_crypto::MAX_CHUNK_SIZE;
        if !(1..=max).contains(&self.chunk_size) {
            return Err(format!(
                "chunk_size must be 1 to {max} bytes, not {}",
                self.chunk_size
            ));
        }
        if self.replicas == 0 {
            return Err("replicas must be at least 1".to_string());
        }
        if self.pipeline_depth == 0 {
            return Err("pipeline_depth must be at least 1".to_string());
        }
        let periods = [
            ("request_timeout", self.request_timeout),
            ("heartbeat_interval", self.heartbeat_interval),
            ("idle_timeout", self.idle_timeout),
            ("anti_entropy_interval", self.anti_entropy_interval),
            ("repair_interval", self.repair_interval),
            ("scrub_interval", self.scrub_interval),
            ("min_backoff", self.min_backoff),
            ("max_backoff", self.max_backoff),
        ];
        if let Some((name, _)) = periods.iter().find(|(_, d)| d.is_zero()) {
            return Err(format!("{name} must be longer than zero"));
        }
        Ok(())
    }
}
