//! What `list()` and `status()` report.

use serde::{Deserialize, Serialize};

/// One live file, as `list()` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileInfo {
    /// The file's name.
    pub name: String,
    /// Its size in bytes.
    pub size: u64,
    /// The version of its entry, `time` then `node`.
    pub version: drift_store::Version,
}

/// A node's transfer memory at one moment ([`crate::Node::transfer_use`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TransferUse {
    /// Bytes its transfers hold now (at most its `transfer_memory`).
    pub held: usize,
    /// Reservations of transfer memory made since it started (a transfer
    /// makes one per chunk): a change means transfers ran in between.
    pub begun: u64,
}

/// How a node sees one peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PeerState {
    /// Connected and answering heartbeats.
    Up,
    /// Not connected; still a replica target until declared lost.
    Down,
    /// Down for longer than the lost timeout: its replicas are re-created elsewhere.
    Lost,
}

impl std::fmt::Display for PeerState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            PeerState::Up => "up",
            PeerState::Down => "down",
            PeerState::Lost => "lost",
        })
    }
}

/// One peer in a status report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerStatus {
    /// The peer's id, hex.
    pub id: String,
    /// Its listen address.
    pub addr: std::net::SocketAddr,
    /// Up, down or lost.
    pub state: PeerState,
    /// Seconds since the state last changed.
    pub since_secs: u64,
}

/// A `--peer` address this node has not reached yet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Unreached {
    /// The address given.
    pub addr: std::net::SocketAddr,
    /// Dials that failed in a row.
    pub failures: u32,
    /// Why the last one failed.
    pub error: String,
}

/// A node's view of itself and the cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeStatus {
    /// This node's id, hex.
    pub node_id: String,
    /// Where it listens.
    pub listen: std::net::SocketAddr,
    /// The replication factor in force (configured, capped by cluster size).
    pub replicas: u32,
    /// Every other member it knows.
    pub peers: Vec<PeerStatus>,
    /// Live names in the index.
    pub names: u64,
    /// Tombstones in the index.
    pub tombstones: u64,
    /// Chunk files on this node's disk.
    pub chunks: u64,
    /// Bytes of chunk files on this node's disk.
    pub bytes: u64,
    /// Live chunks held here that had fewer than R replicas at the last repair pass.
    pub under_replicated: u64,
    /// Chunk files found corrupt and moved to quarantine.
    pub quarantined: u64,
    /// Live chunks no reachable node had a good copy of at the last repair
    /// pass, among those this node quarantined and should hold and those a
    /// read through this node could not find: the files they belong to
    /// cannot be read until a copy comes back (a node returns, or the same
    /// content is stored again).
    pub missing: u64,
    /// Bootstrap addresses (`--peer`) whose dials have failed so far: a
    /// mistyped address, or a node with another cluster secret, shows here
    /// rather than only in the node's log.
    pub unreached: Vec<Unreached>,
}
