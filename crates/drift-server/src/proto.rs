//! The node protocol: the messages nodes and clients exchange over drift-p2p streams.
//!
//! # Participants
//! - **Nodes** (role `Node`): store chunks, hold the replicated name index, serve clients.
//! - **Clients** (role `Client`, e.g. the `drift` CLI): hold the cluster secret but store nothing.
//!
//! # Goals
//! - Every exchange is one drift-p2p stream: the opener sends a request message, optionally
//!   followed by [`Msg::Data`] pieces, and finishes; the answer is one message, optionally
//!   followed by [`Msg::Data`] pieces. Replies are correlated by the stream, never by timing.
//! - Bulk bytes (sealed chunks, file contents) travel as `Data` pieces of at most
//!   [`PIECE_LEN`] bytes, so one message always fits one transport frame and memory per
//!   transfer is bounded by the chunk size.
//!
//! # Non-goals
//! - Authentication and encryption: drift-p2p's Noise session provides both; every peer
//!   that can send these messages holds the cluster secret.
//! - Trusting peers' bytes: a chunk from a peer is checked against its SHA-1 id and its key
//!   before use, so a faulty or hostile member can cause a retry, never wrong data. The one
//!   exception is a replica write (`PutSealed`): the replica checks a BLAKE3 digest that the
//!   sender computed in the pass that computed the id, which catches any change between the
//!   seal and the replica's disk; whether the id itself is right rests on the sender, as it
//!   does for the sender's own copy. A wrong copy still never reaches a reader: every read
//!   checks the id and the key, quarantines a bad copy and uses another. A node
//!   serves `GetChunk` without hashing the chunk first (the asker checks); an asker that
//!   received bad bytes says so with `CheckChunk`, and the holder re-reads its copy with the
//!   SHA-1 check, which quarantines it if it is bad.
//!
//! # Requests and responses
//! ```text
//! node -> node
//!   PutChunk { id, len }, Data*, fin       -> Done | Failed
//!   PutSealed { id, len, digest }, Data*, fin -> Done | Failed
//!   GetChunk { id }                        -> ChunkFollows { len }, Data*, fin | NotFound
//!                                             | Quarantined | Failed
//!   HasChunks { ids }                      -> Have { bits }
//!   PushEntries { entries }                -> Done
//!   IndexDigest                            -> Digest { digest, n_entries }
//!   IndexVersions                          -> Versions { batch }* , fin
//!   GetEntries { hashes }                  -> Entries { entries }*, fin
//!   Peers                                  -> PeerList { peers }
//!   TouchChunks { ids }                    -> Done
//!   CheckChunk { id }                      -> Done
//! client -> node
//!   Put { name }, Data*, fin               -> Stored { version, size } | Failed
//!   Get { name }                           -> FileFollows { size }, Data*, fin | NotFound | Failed
//!   Delete { name }                        -> Done | NotFound | Failed
//!   List                                   -> Listing { files }*, fin
//!   Status                                 -> StatusReport { status }
//! ```
//! **API boundary:** the variant order of [`Msg`] is the wire format (postcard encodes the
//! variant index as a varint); variants are only ever appended.

use bytes::Bytes;
use drift_crypto::{ChunkId, TransferDigest};
use drift_store::{NameEntry, Version};
use serde::{Deserialize, Serialize};

use crate::status::{FileInfo, NodeStatus};

/// Largest `Data` piece, chosen to fit one transport frame with room for the envelope.
pub const PIECE_LEN: usize = 60 * 1024;

/// Most ids in one `HasChunks` request, so the request fits one frame.
pub const MAX_IDS_PER_REQUEST: usize = 1024;

/// Most (hash, version) pairs in one `Versions` message.
pub const MAX_VERSIONS_PER_MESSAGE: usize = 1024;

/// A peer's listen address as shared by peer exchange.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerAddr {
    /// The peer's id (hex of its static key's hash).
    pub id: [u8; 32],
    /// Where it listens.
    pub addr: std::net::SocketAddr,
}

/// Why a request failed, as told to the requester.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum FailKind {
    /// The request was malformed or not allowed.
    BadRequest,
    /// Not enough replicas could be reached or written.
    Unavailable,
    /// A chunk or record failed verification everywhere.
    Corrupt,
    /// The node's disk is full.
    NoSpace,
    /// Anything else on the node's side.
    Internal,
}

/// Every message of the node protocol. Append-only.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Msg {
    /// Store a sealed chunk of `len` bytes, sent as `Data` pieces.
    PutChunk {
        /// The chunk's SHA-1 id; the receiver checks it.
        id: ChunkId,
        /// Total length of the pieces that follow.
        len: u32,
    },
    /// Ask for a sealed chunk.
    GetChunk {
        /// Which chunk.
        id: ChunkId,
    },
    /// Ask which of these chunks the node holds.
    HasChunks {
        /// At most [`MAX_IDS_PER_REQUEST`] ids.
        ids: Vec<ChunkId>,
    },
    /// Offer name-index entries (new writes and tombstones).
    PushEntries {
        /// Entries; the receiver keeps each if it is newer than its own.
        entries: Vec<NameEntry>,
    },
    /// Ask for a digest of the whole name index.
    IndexDigest,
    /// Ask for every (name hash, version) pair.
    IndexVersions,
    /// Ask for the entries with these name hashes.
    GetEntries {
        /// Keyed hashes of names.
        hashes: Vec<[u8; 32]>,
    },
    /// Ask for the peers the node knows.
    Peers,
    /// Client: store a file under `name`; its bytes follow as `Data` pieces.
    Put {
        /// The file's name.
        name: String,
    },
    /// Client: read a file.
    Get {
        /// The file's name.
        name: String,
    },
    /// Client: delete a file.
    Delete {
        /// The file's name.
        name: String,
    },
    /// Client: list the live files.
    List,
    /// Client: ask for the node's status.
    Status,
    /// A piece of bulk bytes.
    Data(#[serde(with = "drift_p2p::payload")] Bytes),
    /// Success without a value.
    Done,
    /// The request failed.
    Failed {
        /// What kind of failure.
        kind: FailKind,
        /// One line for a person.
        message: String,
    },
    /// The named file or chunk does not exist.
    NotFound,
    /// A sealed chunk of `len` bytes follows as `Data` pieces.
    ChunkFollows {
        /// Its length.
        len: u32,
    },
    /// Answer to `HasChunks`: one flag per asked id, in order.
    Have {
        /// Whether each id is held.
        bits: Vec<bool>,
    },
    /// Answer to `IndexDigest`.
    Digest {
        /// BLAKE3 over the sorted (hash, version) pairs.
        digest: [u8; 32],
        /// How many entries the index holds.
        n_entries: u64,
    },
    /// Part of the answer to `IndexVersions`.
    Versions {
        /// (name hash, version) pairs.
        batch: Vec<([u8; 32], Version)>,
    },
    /// Part of the answer to `GetEntries`.
    Entries {
        /// Entries.
        entries: Vec<NameEntry>,
    },
    /// Answer to `Peers`.
    PeerList {
        /// Known peers and their listen addresses.
        peers: Vec<PeerAddr>,
    },
    /// Answer to `Put`.
    Stored {
        /// The version the new entry got.
        version: Version,
        /// Bytes stored.
        size: u64,
    },
    /// The file's bytes follow as `Data` pieces.
    FileFollows {
        /// Total size.
        size: u64,
    },
    /// Part of the answer to `List`.
    Listing {
        /// Files.
        files: Vec<FileInfo>,
    },
    /// Answer to `Status`.
    StatusReport {
        /// The node's view.
        status: NodeStatus,
    },
    /// A store still in progress uses these chunks: restart their GC grace.
    TouchChunks {
        /// At most [`MAX_IDS_PER_REQUEST`] ids.
        ids: Vec<ChunkId>,
    },
    /// The copy of this chunk the peer sent failed its check: verify it and
    /// quarantine it if it is bad.
    CheckChunk {
        /// The chunk.
        id: ChunkId,
    },
    /// `PutChunk` from a sender that vouches for `id`: it sealed the bytes
    /// (or read them back verified) and computed `digest` over them; the
    /// receiver checks the digest instead of the SHA-1.
    PutSealed {
        /// The chunk's SHA-1 id, as the sender computed it.
        id: ChunkId,
        /// Total length of the pieces that follow.
        len: u32,
        /// BLAKE3 of the pieces, in order.
        digest: TransferDigest,
    },
    /// Answer to `GetChunk`: no copy here, because the copy this node had
    /// failed its check and is in quarantine.
    Quarantined,
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn version() -> impl Strategy<Value = Version> {
        (any::<u64>(), any::<u64>()).prop_map(|(time, node)| Version { time, node })
    }

    fn entry() -> impl Strategy<Value = NameEntry> {
        (
            ".{1,40}",
            version(),
            any::<bool>(),
            any::<u64>(),
            proptest::collection::vec(any::<u8>(), 0..200),
        )
            .prop_map(|(name, version, deleted, size, content)| NameEntry {
                name,
                version,
                deleted,
                size,
                content,
            })
    }

    fn msg() -> impl Strategy<Value = Msg> {
        let id = any::<[u8; 20]>().prop_map(ChunkId::from_bytes);
        prop_oneof![
            (id.clone(), any::<u32>()).prop_map(|(id, len)| Msg::PutChunk { id, len }),
            id.clone().prop_map(|id| Msg::GetChunk { id }),
            proptest::collection::vec(id, 0..10).prop_map(|ids| Msg::HasChunks { ids }),
            proptest::collection::vec(entry(), 0..3)
                .prop_map(|entries| Msg::PushEntries { entries }),
            Just(Msg::IndexDigest),
            Just(Msg::IndexVersions),
            proptest::collection::vec(any::<[u8; 32]>(), 0..4)
                .prop_map(|hashes| Msg::GetEntries { hashes }),
            Just(Msg::Peers),
            ".{0,64}".prop_map(|name| Msg::Put { name }),
            ".{0,64}".prop_map(|name| Msg::Get { name }),
            ".{0,64}".prop_map(|name| Msg::Delete { name }),
            Just(Msg::List),
            Just(Msg::Status),
            proptest::collection::vec(any::<u8>(), 0..2000).prop_map(|b| Msg::Data(b.into())),
            Just(Msg::Done),
            ".{0,64}".prop_map(|message| Msg::Failed {
                kind: FailKind::Unavailable,
                message
            }),
            Just(Msg::NotFound),
            Just(Msg::Quarantined),
            any::<u32>().prop_map(|len| Msg::ChunkFollows { len }),
            proptest::collection::vec(any::<bool>(), 0..50).prop_map(|bits| Msg::Have { bits }),
            (any::<[u8; 32]>(), any::<u64>())
                .prop_map(|(digest, n_entries)| Msg::Digest { digest, n_entries }),
            proptest::collection::vec((any::<[u8; 32]>(), version()), 0..5)
                .prop_map(|batch| Msg::Versions { batch }),
            proptest::collection::vec(entry(), 0..3).prop_map(|entries| Msg::Entries { entries }),
            (version(), any::<u64>()).prop_map(|(version, size)| Msg::Stored { version, size }),
            any::<u64>().prop_map(|size| Msg::FileFollows { size }),
            proptest::collection::vec(any::<[u8; 20]>().prop_map(ChunkId::from_bytes), 0..10)
                .prop_map(|ids| Msg::TouchChunks { ids }),
            any::<[u8; 20]>().prop_map(|b| Msg::CheckChunk {
                id: ChunkId::from_bytes(b)
            }),
            (any::<[u8; 20]>(), any::<u32>(), any::<[u8; 8]>()).prop_map(|(id, len, seed)| {
                Msg::PutSealed {
                    id: ChunkId::from_bytes(id),
                    len,
                    digest: TransferDigest::of(&seed),
                }
            }),
        ]
    }

    proptest! {
        #[test]
        fn every_message_round_trips(m in msg()) {
            let bytes = postcard::to_allocvec(&m).unwrap();
            let back: Msg = postcard::from_bytes(&bytes).unwrap();
            prop_assert_eq!(back, m);
        }

        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = postcard::from_bytes::<Msg>(&bytes);
        }
    }

    #[test]
    fn a_full_piece_fits_a_frame() {
        let m = Msg::Data(Bytes::from(vec![0u8; PIECE_LEN]));
        let len = postcard::to_allocvec(&m).unwrap().len();
        assert!(len <= drift_p2p::MAX_MESSAGE_LEN, "{len}");
        let ids = vec![ChunkId::from_bytes([0xff; 20]); MAX_IDS_PER_REQUEST];
        let len = postcard::to_allocvec(&Msg::HasChunks { ids })
            .unwrap()
            .len();
        assert!(len <= drift_p2p::MAX_MESSAGE_LEN, "{len}");
    }
}
