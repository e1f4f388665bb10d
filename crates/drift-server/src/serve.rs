//! Serving the streams peers and clients open.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use drift_crypto::MAX_CHUNK_SIZE;
use drift_p2p::{Connection, Role, Stream};
use futures_util::stream;

use crate::chunks::{BAD_COPY, Check, failed, recv_chunk, send_pieces};
use crate::node::{Shared, blocking};
use crate::proto::{FailKind, MAX_IDS_PER_REQUEST, MAX_VERSIONS_PER_MESSAGE, Msg};
use crate::{DeleteError, GetError, StoreError};

/// Most bytes of entries in one `Entries` or `Listing` message.
const ENTRY_BATCH_BYTES: usize = 40 * 1024;

/// Answers one stream. Errors are answered with `Failed` where the stream is
/// still usable; the stream is simply dropped (reset) otherwise.
pub(crate) async fn handle(shared: Arc<Shared>, conn: Connection<Msg>, mut s: Stream<Msg>) {
    let request = match s.recv().await {
        Ok(Some(m)) => m,
        Ok(None) | Err(_) => return,
    };
    let node_only = matches!(
        request,
        Msg::PutChunk { .. }
            | Msg::PutSealed { .. }
            | Msg::GetChunk { .. }
            | Msg::HasChunks { .. }
            | Msg::PushEntries { .. }
            | Msg::IndexDigest
            | Msg::IndexVersions
            | Msg::GetEntries { .. }
            | Msg::Peers
            | Msg::TouchChunks { .. }
            | Msg::CheckChunk { .. }
    );
    if conn.role() != Role::Node && shared.draining.load(Ordering::SeqCst) {
        let _ = reply(
            &mut s,
            failed(
                FailKind::Unavailable,
                "node is shutting down; retry, or ask another node",
            ),
        )
        .await;
        return;
    }
    if node_only && conn.role() != Role::Node {
        let _ = reply(
            &mut s,
            failed(FailKind::BadRequest, "clients may not send node requests"),
        )
        .await;
        return;
    }
    let result = match request {
        Msg::PutChunk { id, len } => put_chunk(&shared, &mut s, id, len, Check::Id).await,
        Msg::PutSealed { id, len, digest } => {
            put_chunk(&shared, &mut s, id, len, Check::Digest(digest)).await
        }
        Msg::GetChunk { id } => get_chunk(&shared, &mut s, id).await,
        Msg::HasChunks { ids } => {
            if ids.len() > MAX_IDS_PER_REQUEST {
                reply(&mut s, failed(FailKind::BadRequest, "too many ids")).await
            } else {
                let store = shared.chunks.clone();
                let bits = blocking(move || ids.iter().map(|id| store.has(id)).collect())
                    .await
                    .unwrap_or_default();
                reply(&mut s, Msg::Have { bits }).await
            }
        }
        Msg::TouchChunks { ids } => {
            if ids.len() > MAX_IDS_PER_REQUEST {
                reply(&mut s, failed(FailKind::BadRequest, "too many ids")).await
            } else {
                shared.touch(&ids);
                reply(&mut s, Msg::Done).await
            }
        }
        Msg::CheckChunk { id } => {
            let store = shared.chunks.clone();
            // `get` hashes the copy and quarantines it if its bytes are bad;
            // repair then brings a good one back.
            if let Ok(Err(drift_store::GetError::Corrupt { .. })) =
                blocking(move || store.get(&id)).await
            {
                tracing::warn!(chunk = %id, peer = %conn.peer_id().short(), "a peer found this node's copy corrupt; quarantined");
            }
            reply(&mut s, Msg::Done).await
        }
        // `Done` means every entry is committed here (or older than what is):
        // a writer counts it toward the name's quorum. A refused one is not.
        Msg::PushEntries { entries } => match crate::sync::apply_entries(&shared, entries).await {
            Ok(a) if a.refused == 0 => reply(&mut s, Msg::Done).await,
            Ok(a) => {
                let why = format!(
                    "{} entries refused: an invalid name, or a version over {} s ahead of this node's clock (is a clock wrong?)",
                    a.refused,
                    crate::clock::MAX_AHEAD.as_secs()
                );
                reply(&mut s, failed(FailKind::BadRequest, why)).await
            }
            Err(e) => reply(&mut s, failed(FailKind::Internal, e)).await,
        },
        Msg::IndexDigest => {
            let (digest, n_entries) = crate::sync::local_digest(&shared).await;
            reply(&mut s, Msg::Digest { digest, n_entries }).await
        }
        Msg::IndexVersions => index_versions(&shared, &mut s).await,
        Msg::GetEntries { hashes } => get_entries(&shared, &mut s, hashes).await,
        Msg::Peers => {
            let mut peers = shared.members().peer_addrs();
            peers.push(crate::proto::PeerAddr {
                id: shared.me.0,
                addr: shared.config.listen,
            });
            reply(&mut s, Msg::PeerList { peers }).await
        }
        Msg::Put { name } => client_put(&shared, &mut s, &name).await,
        Msg::Get { name } => client_get(&shared, &mut s, &name).await,
        Msg::Delete { name } => {
            let answer = match crate::files::delete(&shared, &name).await {
                Ok(()) => Msg::Done,
                Err(DeleteError::NotFound(_)) => Msg::NotFound,
                Err(e @ DeleteError::InvalidName(_)) => failed(FailKind::BadRequest, e.to_string()),
                Err(e) => failed(FailKind::Internal, e.to_string()),
            };
            reply(&mut s, answer).await
        }
        Msg::List => list(&shared, &mut s).await,
        Msg::Status => {
            let status = crate::files::status(&shared).await;
            reply(&mut s, Msg::StatusReport { status }).await
        }
        other => {
            let name = format!("{other:?}");
            let name = name.split([' ', '(', '{']).next().unwrap_or("message");
            reply(
                &mut s,
                failed(FailKind::BadRequest, format!("{name} is not a request")),
            )
            .await
        }
    };
    if let Err(e) = result {
        tracing::debug!(peer = %conn.peer_id().short(), "stream ended early: {e}");
        if matches!(e, drift_p2p::StreamError::Timeout) {
            // Said rather than a bare "stream dropped": a client whose output
            // stalled (a pager left open) learns why its transfer ended.
            s.reset("the node gave up: the other side read or sent nothing for too long");
        }
    }
}

async fn reply(s: &mut Stream<Msg>, msg: Msg) -> Result<(), drift_p2p::StreamError> {
    s.send(&msg).await?;
    s.finish().await
}

/// Why an upload was refused for want of transfer memory.
pub(crate) const BUSY: &str = "the node is busy: its memory for transfers is in use; retry later";

/// A chunk upload, or a client's upload between two chunks, must arrive
/// within this many request timeouts (60 s by default).
const UPLOAD_DEADLINE_FACTOR: u32 = 6;

/// How long a transfer waits on its client or its caller: 6 request timeouts.
pub(crate) fn upload_deadline(shared: &Shared) -> Duration {
    shared.config.request_timeout * UPLOAD_DEADLINE_FACTOR
}

async fn put_chunk(
    shared: &Arc<Shared>,
    s: &mut Stream<Msg>,
    id: drift_crypto::ChunkId,
    len: u32,
    check: Check,
) -> Result<(), drift_p2p::StreamError> {
    if len as usize > MAX_CHUNK_SIZE {
        return reply(
            s,
            failed(FailKind::BadRequest, "chunk larger than the limit"),
        )
        .await;
    }
    // The buffer counts against the node's transfer memory until the chunk
    // is stored, and the whole chunk must arrive in time: a peer cannot hold
    // memory by announcing chunks and sending them a byte at a time.
    let Some(_held) = shared.reserve_transfer(len as usize).await else {
        return reply(s, failed(FailKind::Unavailable, BUSY)).await;
    };
    let deadline = upload_deadline(shared);
    // The bytes are hashed as they arrive; only bytes that pass are stored.
    let received = tokio::time::timeout(deadline, recv_chunk(shared, s, id, len as usize, check));
    let sealed = match received.await {
        Ok(Ok(b)) => b,
        Ok(Err(e)) if e == BAD_COPY => return reply(s, failed(FailKind::Corrupt, e)).await,
        Ok(Err(e)) => return reply(s, failed(FailKind::BadRequest, e)).await,
        Err(_) => {
            let why = format!("the chunk did not arrive within {} s", deadline.as_secs());
            return reply(s, failed(FailKind::BadRequest, why)).await;
        }
    };
    let answer = match crate::chunks::store_local(shared, id, sealed).await {
        Ok(Ok(_)) => {
            shared.touch(&[id]);
            Msg::Done
        }
        Ok(Err(e @ drift_store::PutError::NoSpace { .. })) => {
            failed(FailKind::NoSpace, e.to_string())
        }
        Ok(Err(e)) => failed(FailKind::Internal, e.to_string()),
        Err(e) => failed(FailKind::Internal, e),
    };
    reply(s, answer).await
}

async fn get_chunk(
    shared: &Arc<Shared>,
    s: &mut Stream<Msg>,
    id: drift_crypto::ChunkId,
) -> Result<(), drift_p2p::StreamError> {
    let store = shared.chunks.clone();
    // Not hashed here: the asker checks every copy it receives, and reports a
    // bad one with `CheckChunk` (see the protocol docs).
    match blocking(move || store.get_unverified(&id)).await {
        Ok(Ok(bytes)) => {
            let bytes = bytes.freeze();
            s.send(&Msg::ChunkFollows {
                len: bytes.len() as u32,
            })
            .await?;
            send_pieces(s, &bytes).await?;
            // The pieces were copied into frames: the buffer can take the next read.
            shared.chunks.recycle(bytes);
            s.finish().await
        }
        // A copy found bad earlier is in quarantine: the asker learns the
        // chunk is corrupt here, not merely absent.
        Ok(Err(_)) => {
            let store = shared.chunks.clone();
            let answer = match blocking(move || store.was_quarantined(&id)).await {
                Ok(true) => Msg::Quarantined,
                _ => Msg::NotFound,
            };
            reply(s, answer).await
        }
        Err(_) => reply(s, Msg::NotFound).await,
    }
}

async fn index_versions(
    shared: &Arc<Shared>,
    s: &mut Stream<Msg>,
) -> Result<(), drift_p2p::StreamError> {
    let index = shared.index.clone();
    let versions = match blocking(move || index.versions()).await {
        Ok(Ok(v)) => v,
        _ => return reply(s, failed(FailKind::Internal, "cannot read the name index")).await,
    };
    for batch in versions.chunks(MAX_VERSIONS_PER_MESSAGE) {
        s.send(&Msg::Versions {
            batch: batch.to_vec(),
        })
        .await?;
    }
    s.finish().await
}

async fn get_entries(
    shared: &Arc<Shared>,
    s: &mut Stream<Msg>,
    hashes: Vec<[u8; 32]>,
) -> Result<(), drift_p2p::StreamError> {
    if hashes.len() > MAX_IDS_PER_REQUEST {
        return reply(s, failed(FailKind::BadRequest, "too many hashes")).await;
    }
    let index = shared.index.clone();
    let found = blocking(move || {
        hashes
            .iter()
            .filter_map(|h| index.get_by_hash(h).ok().flatten())
            .collect::<Vec<_>>()
    })
    .await
    .unwrap_or_default();
    send_batched(
        s,
        found,
        |e| e.content.len() + e.name.len() + 64,
        |entries| Msg::Entries { entries },
    )
    .await?;
    s.finish().await
}

async fn client_put(
    shared: &Arc<Shared>,
    s: &mut Stream<Msg>,
    name: &str,
) -> Result<(), drift_p2p::StreamError> {
    // The upload's pieces, as the byte stream `store` consumes; the stream's
    // credit window bounds how much of it is buffered. A client's input may
    // pause (a slow pipe) as long as `store` waits for a chunk's worth.
    let patience = upload_deadline(shared);
    s.set_timeout(patience);
    let pieces = stream::unfold(&mut *s, move |s| async move {
        match s.recv().await {
            Ok(Some(Msg::Data(b))) => Some((Ok(b), s)),
            Ok(None) => None,
            Ok(Some(other)) => Some((
                Err(std::io::Error::other(format!(
                    "unexpected message {other:?} in an upload"
                ))),
                s,
            )),
            Err(drift_p2p::StreamError::Timeout) => Some((
                Err(std::io::Error::other(format!(
                    "the client sent no data for {} s",
                    patience.as_secs()
                ))),
                s,
            )),
            Err(e) => Some((Err(std::io::Error::other(e.to_string())), s)),
        }
    });
    let result = crate::files::store(shared, name, Box::pin(pieces)).await;
    if let Err(e) = &result {
        // Not the name: logs may end up on disk, and names stay secret (R1).
        tracing::info!(client = %s.peer_id().short(), "a client's put failed: {e}");
    }
    let answer = match result {
        Ok((version, size)) => Msg::Stored { version, size },
        Err(e @ StoreError::InvalidName(_)) => failed(FailKind::BadRequest, e.to_string()),
        Err(
            e @ (StoreError::Unavailable { .. }
            | StoreError::LocalWrite { .. }
            | StoreError::NameUnreplicated { .. }
            | StoreError::Busy),
        ) => failed(FailKind::Unavailable, e.to_string()),
        Err(e @ StoreError::NoSpace { .. }) => failed(FailKind::NoSpace, e.to_string()),
        Err(e) => failed(FailKind::Internal, e.to_string()),
    };
    reply(s, answer).await
}

async fn client_get(
    shared: &Arc<Shared>,
    s: &mut Stream<Msg>,
    name: &str,
) -> Result<(), drift_p2p::StreamError> {
    // A client's output may stall (a pager, a slow pipe) as long as an
    // unread reader is kept: the node waits that long for flow-control credit.
    s.set_timeout(upload_deadline(shared));
    let mut reader = match crate::files::get(shared, name).await {
        Ok(r) => r,
        Err(GetError::NotFound(_)) => return reply(s, Msg::NotFound).await,
        Err(e @ GetError::InvalidName(_)) => {
            return reply(s, failed(FailKind::BadRequest, e.to_string())).await;
        }
        Err(e) => return reply(s, failed(FailKind::Internal, e.to_string())).await,
    };
    s.send(&Msg::FileFollows {
        size: reader.size(),
    })
    .await?;
    while let Some(piece) = reader.next_chunk().await {
        match piece {
            Ok(bytes) => {
                send_pieces(s, &bytes).await?;
                shared.chunks.recycle(bytes);
            }
            Err(e) => {
                let kind = match e {
                    GetError::Corrupt { .. } => FailKind::Corrupt,
                    GetError::Unavailable { .. } | GetError::Busy => FailKind::Unavailable,
                    _ => FailKind::Internal,
                };
                return reply(s, failed(kind, e.to_string())).await;
            }
        }
    }
    s.finish().await
}

async fn list(shared: &Arc<Shared>, s: &mut Stream<Msg>) -> Result<(), drift_p2p::StreamError> {
    let files = match crate::files::list(shared).await {
        Ok(f) => f,
        Err(e) => return reply(s, failed(FailKind::Internal, e.to_string())).await,
    };
    send_batched(
        s,
        files,
        |f| f.name.len() + 32,
        |files| Msg::Listing { files },
    )
    .await?;
    s.finish().await
}

/// Sends `items` as messages of at most about [`ENTRY_BATCH_BYTES`] each (by
/// `size`), always at least one message so the receiver sees an answer.
async fn send_batched<T>(
    s: &mut Stream<Msg>,
    items: Vec<T>,
    size: impl Fn(&T) -> usize,
    wrap: impl Fn(Vec<T>) -> Msg,
) -> Result<(), drift_p2p::StreamError> {
    let mut batch = Vec::new();
    let mut batch_bytes = 0;
    for item in items {
        let len = size(&item);
        if !batch.is_empty() && batch_bytes + len > ENTRY_BATCH_BYTES {
            s.send(&wrap(std::mem::take(&mut batch))).await?;
            batch_bytes = 0;
        }
        batch_bytes += len;
        batch.push(item);
    }
    s.send(&wrap(batch)).await
}
