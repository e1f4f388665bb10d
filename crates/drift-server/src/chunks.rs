//! Moving sealed chunks: replicated writes to a quorum, verified reads from any replica.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use drift_crypto::{
    ChunkHasher, ChunkId, ChunkRef, MAX_CHUNK_SIZE, TransferDigest, TransferHasher,
};
use drift_p2p::{Connection, PeerId, Stream};
use futures_util::future::join_all;

use crate::node::{Shared, blocking};
use crate::placement::{rank, write_quorum};
use crate::proto::{FailKind, Msg, PIECE_LEN};

/// Where a chunk should live: (ranked nodes, R in force).
pub(crate) fn placement(shared: &Shared, id: &ChunkId) -> (Vec<PeerId>, usize) {
    let table = shared.members();
    let nodes = table.placement_nodes();
    let r = table.effective_replicas();
    (rank(id, &nodes), r)
}

/// Why a chunk write fell short of its quorum.
#[derive(Debug, Clone)]
pub(crate) struct Shortfall {
    /// Replicas that fsynced the chunk.
    pub acks: usize,
    /// Replicas needed (a majority of R).
    pub needed: usize,
    /// Replicas that refused it for lack of space.
    pub full: usize,
    /// Why this node could not write it, if it was one of the nodes tried.
    pub local: Option<String>,
}

/// How putting a chunk on one node ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Put {
    Stored,
    NoSpace,
    Failed,
    /// This node's own write failed, for this reason.
    LocalFailed(String),
}

/// Stores a sealed chunk on its replicas. Succeeds once a majority of R
/// replicas have fsynced it, falling back to further-ranked nodes when a
/// replica is down or full; otherwise reports how many acknowledged.
/// `digest` is the bytes' transfer digest if the seal computed it.
pub(crate) async fn write(
    shared: &Arc<Shared>,
    id: ChunkId,
    sealed: Bytes,
    digest: Option<TransferDigest>,
) -> Result<(), Shortfall> {
    let (ranked, r) = placement(shared, &id);
    let needed = write_quorum(r);
    let (targets, fallbacks) = ranked.split_at(r.min(ranked.len()));
    let results = join_all(
        targets
            .iter()
            .map(|node| try_put(shared, *node, id, sealed.clone(), digest)),
    )
    .await;
    let mut acks = results.iter().filter(|p| **p == Put::Stored).count();
    let mut full = results.iter().filter(|p| **p == Put::NoSpace).count();
    let mut local = results.into_iter().find_map(|p| match p {
        Put::LocalFailed(why) => Some(why),
        _ => None,
    });
    for node in fallbacks {
        if acks >= needed {
            break;
        }
        match try_put(shared, *node, id, sealed.clone(), digest).await {
            Put::Stored => acks += 1,
            Put::NoSpace => full += 1,
            Put::Failed => {}
            Put::LocalFailed(why) => local = Some(why),
        }
    }
    if acks >= needed {
        Ok(())
    } else {
        Err(Shortfall {
            acks,
            needed,
            full,
            local,
        })
    }
}

/// Puts one chunk on one node (this one, or a peer over the network).
/// `sealed` must be authenticated already (sealed here, or its id checked).
pub(crate) async fn put_on(shared: &Arc<Shared>, node: PeerId, id: ChunkId, sealed: Bytes) -> bool {
    try_put(shared, node, id, sealed, None).await == Put::Stored
}

async fn try_put(
    shared: &Arc<Shared>,
    node: PeerId,
    id: ChunkId,
    sealed: Bytes,
    digest: Option<TransferDigest>,
) -> Put {
    if node == shared.me {
        // These bytes were sealed moments ago, so their id is already known good.
        return match store_local(shared, id, sealed).await {
            Ok(Ok(_)) => {
                shared.touch(&[id]);
                Put::Stored
            }
            Ok(Err(e @ drift_store::PutError::NoSpace { .. })) => {
                tracing::warn!(chunk = %id, "local chunk write failed: {e}");
                Put::NoSpace
            }
            Ok(Err(e)) => {
                tracing::warn!(chunk = %id, "local chunk write failed: {e}");
                Put::LocalFailed(e.to_string())
            }
            Err(e) => {
                tracing::warn!(chunk = %id, "{e}");
                Put::LocalFailed(e)
            }
        };
    }
    let Some(conn) = shared.members().conn(&node) else {
        return Put::Failed;
    };
    // Computed here only for a chunk sealed without it (a one-replica
    // cluster's, or a repair's): one more pass over the bytes.
    let digest = digest.unwrap_or_else(|| TransferDigest::of(&sealed));
    match put_remote(&conn, id, &sealed, digest).await {
        Ok(put) => put,
        Err(e) => {
            tracing::debug!(peer = %node.short(), chunk = %id, "remote chunk write failed: {e}");
            Put::Failed
        }
    }
}

/// Chunks up to this size are written by the node's chunk writer, many
/// to a barrier; larger ones go to the blocking pool one by one, where
/// their direct writes run in parallel.
const BATCHED_MAX: usize = 64 * 1024;

/// Writes an authenticated sealed chunk (its id computed from these bytes,
/// or its digest checked) to this node's store.
pub(crate) async fn store_local(
    shared: &Arc<Shared>,
    id: ChunkId,
    sealed: Bytes,
) -> Result<Result<bool, drift_store::PutError>, String> {
    if sealed.len() <= BATCHED_MAX {
        return shared.chunk_writer.run((id, sealed)).await;
    }
    let store = shared.chunks.clone();
    blocking(move || store.put_id_checked(&id, &sealed)).await
}

async fn put_remote(
    conn: &Connection<Msg>,
    id: ChunkId,
    sealed: &Bytes,
    digest: TransferDigest,
) -> Result<Put, String> {
    let mut s = conn.open().await.map_err(|e| e.to_string())?;
    let len = u32::try_from(sealed.len()).map_err(|_| "chunk too large".to_string())?;
    s.send(&Msg::PutSealed { id, len, digest })
        .await
        .map_err(|e| e.to_string())?;
    send_pieces(&mut s, sealed)
        .await
        .map_err(|e| e.to_string())?;
    s.finish().await.map_err(|e| e.to_string())?;
    match s.recv().await.map_err(|e| e.to_string())? {
        Some(Msg::Done) => Ok(Put::Stored),
        Some(Msg::Failed {
            kind: FailKind::NoSpace,
            ..
        }) => Ok(Put::NoSpace),
        Some(Msg::Failed { message, .. }) => Err(message),
        other => Err(format!("unexpected answer {other:?}")),
    }
}

/// Sends `bytes` as `Data` pieces (slices of one buffer; no copies).
pub(crate) async fn send_pieces(
    s: &mut Stream<Msg>,
    bytes: &Bytes,
) -> Result<(), drift_p2p::StreamError> {
    let mut at = 0;
    while at < bytes.len() {
        let end = (at + PIECE_LEN).min(bytes.len());
        s.send(&Msg::Data(bytes.slice(at..end))).await?;
        at = end;
    }
    Ok(())
}

/// What received chunk bytes are checked against as they land.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Check {
    /// Their SHA-1 must be the chunk's id.
    Id,
    /// Their BLAKE3 must be the digest the sender computed beside the id.
    Digest(TransferDigest),
    /// Nothing here: the caller authenticates them by opening them.
    Nothing,
}

/// A hash being computed over arriving pieces (BLAKE3's state is ~2 KiB).
enum Running {
    Id(ChunkHasher),
    Digest(Box<TransferHasher>, TransferDigest),
    Nothing,
}

/// Receives the `len` bytes of chunk `id` as `Data` pieces until the peer
/// finishes, refusing more. Each piece is hashed as it lands, as `check`
/// says (still in the cache, which makes the hash markedly cheaper than
/// hashing the whole chunk afterwards); bytes that fail are [`BAD_COPY`].
pub(crate) async fn recv_chunk(
    shared: &Shared,
    s: &mut Stream<Msg>,
    id: ChunkId,
    len: usize,
    check: Check,
) -> Result<Bytes, String> {
    // Aligned, so the store can write it to disk directly.
    let mut buf = shared.chunks.receive_buffer(len);
    let mut running = match check {
        Check::Id => Running::Id(ChunkId::hasher()),
        Check::Digest(d) => Running::Digest(Box::new(TransferDigest::hasher()), d),
        Check::Nothing => Running::Nothing,
    };
    loop {
        match s.recv().await.map_err(|e| e.to_string())? {
            Some(Msg::Data(piece)) => {
                if buf.len() + piece.len() > len {
                    return Err(format!("peer sent more than the {len} bytes it announced"));
                }
                buf.extend_from_slice(&piece);
                let landed = &buf[buf.len() - piece.len()..];
                match &mut running {
                    Running::Id(h) => h.update(landed),
                    Running::Digest(h, _) => h.update(landed),
                    Running::Nothing => {}
                }
            }
            None => break,
            Some(other) => return Err(format!("unexpected message {other:?} in a data stream")),
        }
    }
    if buf.len() != len {
        return Err(format!(
            "peer sent {} of the {len} bytes it announced",
            buf.len()
        ));
    }
    let good = match running {
        Running::Id(h) => h.finish() == id,
        Running::Digest(h, expected) => h.finish() == expected,
        Running::Nothing => true,
    };
    if !good {
        return Err(BAD_COPY.into());
    }
    Ok(buf.freeze())
}

/// Fetches a sealed chunk from a peer; with `check_id`, checks it against its
/// id (without, the caller authenticates it by opening it).
async fn get_remote(
    shared: &Shared,
    conn: &Connection<Msg>,
    id: ChunkId,
    check_id: bool,
) -> Result<Option<Bytes>, String> {
    let mut s = conn.open().await.map_err(|e| e.to_string())?;
    s.send(&Msg::GetChunk { id })
        .await
        .map_err(|e| e.to_string())?;
    s.finish().await.map_err(|e| e.to_string())?;
    let len = match s.recv().await.map_err(|e| e.to_string())? {
        Some(Msg::ChunkFollows { len }) => len as usize,
        Some(Msg::NotFound) => return Ok(None),
        Some(Msg::Quarantined) => return Err(QUARANTINED.into()),
        other => return Err(format!("unexpected answer {other:?}")),
    };
    if len > MAX_CHUNK_SIZE {
        return Err(format!("peer announced a {len}-byte chunk, over the limit"));
    }
    let check = if check_id { Check::Id } else { Check::Nothing };
    recv_chunk(shared, &mut s, id, len, check).await.map(Some)
}

/// How a fetch reports a copy whose bytes are not the chunk's.
pub(crate) const BAD_COPY: &str = "peer sent bytes that do not match the chunk id";

/// How a fetch reports a peer whose copy was found bad before.
const QUARANTINED: &str = "the peer's copy is in quarantine";

/// Why no verified copy of a chunk could be found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Missing {
    /// Some copy existed but failed verification.
    Corrupt,
    /// No reachable node had it.
    Unavailable,
}

/// The peers to ask for a chunk, its replicas first, and whether this node
/// is one of its replicas.
fn sources(shared: &Shared, id: &ChunkId) -> (Vec<Connection<Msg>>, bool) {
    let (ranked, r) = placement(shared, id);
    let i_hold_it = ranked[..r.min(ranked.len())].contains(&shared.me);
    let table = shared.members();
    let mut conns: Vec<_> = ranked.iter().filter_map(|n| table.conn(n)).collect();
    for c in table.up_conns() {
        if !conns.iter().any(|k| k.id() == c.id()) {
            conns.push(c);
        }
    }
    (conns, i_hold_it)
}

/// Tells the peer that the copy of `id` it sent failed its check, so it
/// verifies (and quarantines) its own. Best effort, bounded by the request timeout.
async fn report_bad_copy(conn: &Connection<Msg>, id: ChunkId) {
    if let Err(e) = conn.request(Msg::CheckChunk { id }).await {
        tracing::debug!(peer = %conn.peer_id().short(), chunk = %id, "cannot report a bad copy: {e}");
    }
}

/// Logs a failed fetch and reports a bad copy to its sender; true if the
/// copy was bad (sent bad, or quarantined by the peer before).
async fn fetch_failed(conn: &Connection<Msg>, id: ChunkId, error: &str) -> bool {
    tracing::debug!(peer = %conn.peer_id().short(), chunk = %id, "fetch failed: {error}");
    let bad = error == BAD_COPY;
    if bad {
        report_bad_copy(conn, id).await;
    }
    bad || error == QUARANTINED
}

/// Whether this node quarantined a copy of `id`. Every holder quarantines a
/// chunk whose every copy went bad, and later reads should still say
/// "corrupt" rather than "unavailable".
async fn quarantined_here(shared: &Shared, id: ChunkId) -> bool {
    let store = shared.chunks.clone();
    blocking(move || store.was_quarantined(&id))
        .await
        .unwrap_or(false)
}

/// Writes a fetched copy of a chunk this node should hold (read repair).
/// `sealed` must be authenticated already (its id or its key checked).
async fn keep_copy(shared: &Arc<Shared>, id: ChunkId, sealed: Bytes) {
    if let Ok(Err(e)) = store_local(shared, id, sealed).await {
        tracing::warn!(chunk = %id, "read repair failed: {e}");
    }
}

/// Finds a verified sealed copy of `id`: locally, then from its replicas, then
/// from any other peer. A copy fetched for a chunk this node should hold is
/// written locally (read repair).
pub(crate) async fn fetch_sealed(shared: &Arc<Shared>, id: ChunkId) -> Result<Bytes, Missing> {
    let store = shared.chunks.clone();
    let mut saw_corrupt = false;
    match blocking(move || store.get(&id)).await {
        Ok(Ok(bytes)) => return Ok(bytes.freeze()),
        Ok(Err(drift_store::GetError::Corrupt { .. })) => saw_corrupt = true,
        Ok(Err(_)) | Err(_) => {}
    }
    let (conns, i_hold_it) = sources(shared, &id);
    for conn in conns {
        match get_remote(shared, &conn, id, true).await {
            Ok(Some(sealed)) => {
                if i_hold_it || saw_corrupt {
                    keep_copy(shared, id, sealed.clone()).await;
                }
                return Ok(sealed);
            }
            Ok(None) => {}
            Err(e) => saw_corrupt |= fetch_failed(&conn, id, &e).await,
        }
    }
    shared.suspect(id);
    saw_corrupt = saw_corrupt || quarantined_here(shared, id).await;
    Err(if saw_corrupt {
        Missing::Corrupt
    } else {
        Missing::Unavailable
    })
}

/// Opens a sealed copy: `Err` (nothing released) if its bytes are not the chunk's.
async fn open_copy(
    shared: &Arc<Shared>,
    chunk: &ChunkRef,
    sealed: BytesMut,
) -> Result<Bytes, crate::GetError> {
    let keys = shared.keys.convergence.clone();
    let chunk = chunk.clone();
    blocking(move || {
        let mut buf = sealed;
        keys.open_id_checked(&chunk, &mut buf)
            .map(|()| buf.freeze())
            .map_err(|_| crate::GetError::Corrupt { chunk: chunk.id })
    })
    .await
    .map_err(|_| crate::GetError::ShuttingDown)?
}

/// What the local copy of a chunk gave.
enum Local {
    Opened(Bytes),
    Corrupt,
    Absent,
}

/// Reads and opens the local copy of a chunk in one trip to the blocking
/// pool (two hand-offs per chunk cost more than the open on small chunks). A
/// copy that fails to open is re-read through the store's checked `get`,
/// which quarantines it if its bytes do not match its id.
async fn read_local(shared: &Arc<Shared>, chunk: &ChunkRef) -> Result<Local, crate::GetError> {
    let store = shared.chunks.clone();
    let keys = shared.keys.convergence.clone();
    let chunk = chunk.clone();
    blocking(move || match store.get_unverified(&chunk.id) {
        Ok(mut buf) => match keys.open_id_checked(&chunk, &mut buf) {
            Ok(()) => Local::Opened(buf.freeze()),
            Err(_) => {
                let _ = store.get(&chunk.id);
                Local::Corrupt
            }
        },
        Err(drift_store::GetError::Corrupt { .. }) => Local::Corrupt,
        Err(_) => Local::Absent,
    })
    .await
    .map_err(|_| crate::GetError::ShuttingDown)
}

/// Reads a chunk's plaintext from the first copy that opens: the local one,
/// then its replicas', then any peer's.
///
/// Copies are not SHA-1-checked first: opening checks the keyed hash of the
/// plaintext, which fails for any change to the sealed bytes, and the SHA-1
/// would be the costliest step of a read. A local copy that fails to open is
/// re-read through the store's checked `get`, which quarantines it if its
/// bytes are bad. A fetched copy for a chunk this node should hold is
/// SHA-1-checked and written locally (read repair) before it is opened.
pub(crate) async fn read_plain(
    shared: &Arc<Shared>,
    chunk: &ChunkRef,
) -> Result<Bytes, crate::GetError> {
    let id = chunk.id;
    let mut saw_corrupt = false;
    match read_local(shared, chunk).await {
        Ok(Local::Opened(plain)) => return Ok(plain),
        Ok(Local::Corrupt) => saw_corrupt = true,
        Ok(Local::Absent) => {}
        Err(e) => return Err(e),
    }
    let (conns, i_hold_it) = sources(shared, &id);
    let repair = i_hold_it || saw_corrupt;
    for conn in conns {
        let sealed = match get_remote(shared, &conn, id, repair).await {
            Ok(Some(sealed)) => sealed,
            Ok(None) => continue,
            Err(e) => {
                saw_corrupt |= fetch_failed(&conn, id, &e).await;
                continue;
            }
        };
        if repair {
            keep_copy(shared, id, sealed.clone()).await;
        }
        match open_copy(shared, chunk, BytesMut::from(sealed)).await {
            Ok(plain) => return Ok(plain),
            Err(crate::GetError::ShuttingDown) => return Err(crate::GetError::ShuttingDown),
            Err(_) => {
                saw_corrupt = true;
                report_bad_copy(&conn, id).await;
                tracing::debug!(peer = %conn.peer_id().short(), chunk = %id, "a fetched copy failed to open");
            }
        }
    }
    shared.suspect(id);
    saw_corrupt = saw_corrupt || quarantined_here(shared, id).await;
    Err(if saw_corrupt {
        crate::GetError::Corrupt { chunk: id }
    } else {
        crate::GetError::Unavailable { chunk: id }
    })
}

/// A `Failed` answer for a request.
pub(crate) fn failed(kind: FailKind, message: impl Into<String>) -> Msg {
    Msg::Failed {
        kind,
        message: message.into(),
    }
}
