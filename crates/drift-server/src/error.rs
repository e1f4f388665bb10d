//! The errors of the node's operations, one type per operation.

use std::net::SocketAddr;
use std::path::PathBuf;

use drift_crypto::ChunkId;

/// Why a node did not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The configuration has a value a node cannot run with.
    #[error("invalid node configuration: {0}")]
    Config(String),
    /// The data directory could not be opened or created.
    #[error("cannot open data directory {dir}: {source}")]
    DataDir {
        /// The directory.
        dir: PathBuf,
        /// The store's error.
        source: drift_store::StoreError,
    },
    /// The node's stored state could not be read.
    #[error("cannot read node state in {dir}: {message}")]
    State {
        /// The directory.
        dir: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}: {source}{hint}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
        /// A suggestion, if one is known.
        hint: &'static str,
    },
}

/// Why `store` failed. When it fails, the name is not written.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The name is empty, too long, or contains NUL.
    #[error("invalid file name: {0}")]
    InvalidName(&'static str),
    /// Reading the input failed.
    #[error("cannot read the input: {0}")]
    Read(#[source] std::io::Error),
    /// Fewer than a majority of a chunk's replicas stored it.
    #[error(
        "not enough replicas for chunk {chunk}: {acks} of {needed} needed acknowledged; are the other nodes up?"
    )]
    Unavailable {
        /// The chunk.
        chunk: ChunkId,
        /// Replicas that fsynced it.
        acks: usize,
        /// Replicas needed (a majority of R).
        needed: usize,
    },
    /// Too few of a chunk's replicas stored it, and this node, one of them,
    /// could not write it to its own disk.
    #[error(
        "not enough replicas for chunk {chunk}: {acks} of {needed} needed acknowledged; this node could not write it: {reason}"
    )]
    LocalWrite {
        /// The chunk.
        chunk: ChunkId,
        /// Replicas that fsynced it.
        acks: usize,
        /// Replicas needed (a majority of R).
        needed: usize,
        /// Why the local write failed.
        reason: String,
    },
    /// Too few of a chunk's replicas stored it because nodes are out of space.
    #[error(
        "not enough space for chunk {chunk}: {full} replica(s) are out of space and {acks} of {needed} needed acknowledged; free space or add nodes"
    )]
    NoSpace {
        /// The chunk.
        chunk: ChunkId,
        /// Replicas that fsynced it.
        acks: usize,
        /// Replicas needed (a majority of R).
        needed: usize,
        /// Replicas that refused it for lack of space.
        full: usize,
    },
    /// The data is on a quorum and the name is written on this node, but the
    /// name reached fewer than a majority of R nodes: the outcome is in doubt
    /// until the peers return (anti-entropy then spreads it).
    #[error(
        "the file's name reached only {written} of the {needed} nodes needed; it is kept on this node and will spread when peers return"
    )]
    NameUnreplicated {
        /// Nodes that committed the entry, this one included.
        written: usize,
        /// A majority of R.
        needed: usize,
    },
    /// Every peer that answered refused the file's name, and none took it:
    /// it was taken back from this node too, so nothing of it remains.
    /// Peers refuse a version far ahead of their clocks, so this node's
    /// clock is the likely cause.
    #[error(
        "{refused} other node(s) refused the file's name, so it was not stored: is this node's clock more than {} minutes ahead of theirs? (they said: {reason})",
        crate::clock::MAX_AHEAD.as_secs() / 60
    )]
    NameRefused {
        /// Peers that refused it.
        refused: usize,
        /// The first refusal's reason.
        reason: String,
    },
    /// The file is larger than one entry can describe.
    #[error("file too large: {0} bytes")]
    TooLarge(u64),
    /// The local name index failed.
    #[error("name index error: {0}")]
    Index(String),
    /// The node is shutting down.
    #[error("node is shutting down")]
    ShuttingDown,
    /// The node's memory for transfers stayed in use (by other uploads) for
    /// a whole request timeout.
    #[error("{}", crate::serve::BUSY)]
    Busy,
}

/// Why `get` failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GetError {
    /// No live file has this name.
    #[error("no such file: {0}")]
    NotFound(String),
    /// The name is empty, too long, or contains NUL.
    #[error("invalid file name: {0}")]
    InvalidName(&'static str),
    /// Every reachable copy of a chunk failed verification.
    #[error("integrity error: chunk {chunk} is corrupt on every reachable replica")]
    Corrupt {
        /// The chunk.
        chunk: ChunkId,
    },
    /// No reachable node holds a chunk.
    #[error("chunk {chunk} is unavailable: no reachable node holds it")]
    Unavailable {
        /// The chunk.
        chunk: ChunkId,
    },
    /// The file's manifest is unusable.
    #[error("{0}")]
    Manifest(String),
    /// The local name index failed.
    #[error("name index error: {0}")]
    Index(String),
    /// The node is shutting down.
    #[error("node is shutting down")]
    ShuttingDown,
    /// The node's memory for transfers stayed in use (by other transfers)
    /// for a whole request timeout.
    #[error("{}", crate::serve::BUSY)]
    Busy,
    /// The reader was left unread this long, and the node gave up its read
    /// to give back the memory it held.
    #[error("the file was left unread for {} s and its read was given up; open it again", .0.as_secs())]
    Idle(std::time::Duration),
}

/// Why `delete` failed.
#[derive(Debug, thiserror::Error)]
pub enum DeleteError {
    /// No live file has this name.
    #[error("no such file: {0}")]
    NotFound(String),
    /// The name is empty, too long, or contains NUL.
    #[error("invalid file name: {0}")]
    InvalidName(&'static str),
    /// The local name index failed.
    #[error("name index error: {0}")]
    Index(String),
    /// The node is shutting down.
    #[error("node is shutting down")]
    ShuttingDown,
    /// The tombstone is written here but reached fewer than a majority of R nodes.
    #[error(
        "the delete reached only {written} of the {needed} nodes needed; it is kept on this node and will spread when peers return"
    )]
    Unreplicated {
        /// Nodes that committed the tombstone, this one included.
        written: usize,
        /// A majority of R.
        needed: usize,
    },
    /// Every peer that answered refused the tombstone, and none took it: it
    /// was taken back from this node too, so the file is not deleted.
    #[error(
        "{refused} other node(s) refused the delete, so the file is not deleted: is this node's clock more than {} minutes ahead of theirs? (they said: {reason})",
        crate::clock::MAX_AHEAD.as_secs() / 60
    )]
    Refused {
        /// Peers that refused it.
        refused: usize,
        /// The first refusal's reason.
        reason: String,
    },
}

/// Most bytes in a file name.
pub const MAX_NAME_LEN: usize = 1024;

/// Checks a file name: UTF-8 (by type), 1..=1024 bytes, no NUL.
pub fn check_name(name: &str) -> Result<(), &'static str> {
    if name.is_empty() {
        Err("names must not be empty")
    } else if name.len() > MAX_NAME_LEN {
        Err("names are at most 1024 bytes")
    } else if name.contains('\0') {
        Err("names must not contain NUL")
    } else {
        Ok(())
    }
}
