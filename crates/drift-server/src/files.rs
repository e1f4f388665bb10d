//! Files: store, get, delete and list over chunks and the replicated name index.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use drift_crypto::ChunkRef;
use drift_store::{NameEntry, Version};
use std::collections::VecDeque;

use futures_util::stream::StreamExt;
use futures_util::{Stream, future::join_all};
use tokio::sync::{OwnedSemaphorePermit, mpsc};
use tokio_util::task::AbortOnDropHandle;

use crate::chunks;
use crate::error::check_name;
use crate::manifest::{INLINE_MAX_CHUNKS, MAX_PARTS, Manifest, decode_parts};
use crate::node::{ReadPermit, Shared, blocking};
use crate::proto::{FailKind, Msg};
use crate::status::{FileInfo, NodeStatus};
use crate::{DeleteError, GetError, StoreError};

/// Chunks up to this size are sealed on the async thread.
const INLINE_SEAL_MAX: usize = 64 * 1024;

/// Seals one chunk and writes it to its replicas. `_held` is the buffer's
/// share of the node's transfer memory, given back when this ends.
async fn seal_and_write(
    shared: Arc<Shared>,
    mut buf: BytesMut,
    _held: Option<OwnedSemaphorePermit>,
) -> Result<ChunkRef, StoreError> {
    // Copies for peers carry a digest computed in the sealing pass; a
    // one-replica cluster skips it (a chunk placed on a peer then gets it in
    // a pass of its own).
    let keys = shared.keys.convergence.clone();
    let for_peers = shared.members().effective_replicas() > 1;
    let seal = move |buf: &mut BytesMut| {
        if for_peers {
            let (chunk, digest) = keys.seal_for_transfer(buf);
            (chunk, Some(digest))
        } else {
            (keys.seal(buf), None)
        }
    };
    // Sealing a small chunk takes microseconds, less than handing it to the
    // blocking pool and waking up again.
    let ((chunk, digest), buf) = if buf.len() <= INLINE_SEAL_MAX {
        (seal(&mut buf), buf)
    } else {
        blocking(move || (seal(&mut buf), buf))
            .await
            .map_err(|_| StoreError::ShuttingDown)?
    };
    chunks::write(&shared, chunk.id, buf.freeze(), digest)
        .await
        .map_err(|short| {
            if shared.cancel.is_cancelled() {
                StoreError::ShuttingDown
            } else if short.full > 0 {
                StoreError::NoSpace {
                    chunk: chunk.id,
                    acks: short.acks,
                    needed: short.needed,
                    full: short.full,
                }
            } else if let Some(reason) = short.local {
                StoreError::LocalWrite {
                    chunk: chunk.id,
                    acks: short.acks,
                    needed: short.needed,
                    reason,
                }
            } else {
                StoreError::Unavailable {
                    chunk: chunk.id,
                    acks: short.acks,
                    needed: short.needed,
                }
            }
        })?;
    Ok(chunk)
}

/// Stores the bytes of `pieces` under `name`: chunks are sealed and written
/// with at most `pipeline_depth` in flight, then the entry is written and
/// pushed to every peer.
pub(crate) async fn store<S>(
    shared: &Arc<Shared>,
    name: &str,
    mut pieces: S,
) -> Result<(Version, u64), StoreError>
where
    S: Stream<Item = std::io::Result<Bytes>> + Unpin,
{
    check_name(name).map_err(StoreError::InvalidName)?;
    if shared.cancel.is_cancelled() {
        return Err(StoreError::ShuttingDown);
    }
    let chunk_size = shared.config.chunk_size;
    let depth = shared.config.pipeline_depth.max(1);
    // Each chunk is its own task, so sealing and replication go on while the
    // next chunk is read; dropping the queue (an error, a cancelled store)
    // aborts whatever is still in flight.
    let mut in_flight: VecDeque<AbortOnDropHandle<Result<ChunkRef, StoreError>>> = VecDeque::new();
    let spawn_chunk = |buf: BytesMut, held: Option<OwnedSemaphorePermit>| {
        AbortOnDropHandle::new(tokio::spawn(seal_and_write(shared.clone(), buf, held)))
    };
    let mut refs: Vec<ChunkRef> = Vec::new();
    let mut size: u64 = 0;
    // Each chunk buffer holds its share of the node's transfer memory, and
    // must fill (or the input end) within the upload deadline, counting only
    // time spent waiting for input: an uploader cannot hold memory by
    // sending a byte at a time.
    let reserve = || async {
        shared
            .reserve_transfer(chunk_size)
            .await
            .ok_or(StoreError::Busy)
    };
    let deadline = crate::serve::upload_deadline(shared);
    // Chunk buffers are aligned, so the store can write them to disk directly.
    let new_buf = || drift_store::aligned_buffer(chunk_size);
    let mut held = Some(reserve().await?);
    let mut buf = new_buf();
    let mut waited = std::time::Duration::ZERO;
    let mut input_done = false;
    // Peers may have a shorter grace than this node: touch often enough
    // for any of them (see `TOUCH_EVERY_MAX`).
    let touch_period = touch_every(shared);
    let mut last_touch = tokio::time::Instant::now();
    while !input_done || !in_flight.is_empty() {
        // Collect finished chunks in order as soon as they are done, not only
        // when the pipeline is full: the periodic touch below covers only
        // collected chunks, so one left waiting could outlive its GC grace.
        while in_flight.front().is_some_and(|h| h.is_finished()) {
            collect(&mut in_flight, &mut refs).await?;
        }
        if last_touch.elapsed() >= touch_period {
            touch_everywhere(shared, &refs).await;
            last_touch = tokio::time::Instant::now();
        }
        if !input_done && in_flight.len() < depth {
            let started = tokio::time::Instant::now();
            let give_up = started + deadline.saturating_sub(waited);
            // Input may pause for up to the deadline; the touches go on meanwhile.
            let next = loop {
                tokio::select! {
                    next = tokio::time::timeout_at(give_up, pieces.next()) => break next,
                    _ = tokio::time::sleep_until(last_touch + touch_period) => {
                        touch_everywhere(shared, &refs).await;
                        last_touch = tokio::time::Instant::now();
                    }
                }
            };
            waited += started.elapsed();
            let Ok(next) = next else {
                return Err(StoreError::Read(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!(
                        "a chunk's worth of input did not arrive within {} s",
                        deadline.as_secs()
                    ),
                )));
            };
            match next {
                Some(Ok(mut piece)) => {
                    size += piece.len() as u64;
                    while !piece.is_empty() {
                        let take = (chunk_size - buf.len()).min(piece.len());
                        buf.extend_from_slice(&piece.split_to(take));
                        if buf.len() == chunk_size {
                            let full_held = held.replace(reserve().await?);
                            let full = std::mem::replace(&mut buf, new_buf());
                            in_flight.push_back(spawn_chunk(full, full_held));
                            waited = std::time::Duration::ZERO;
                        }
                    }
                    continue;
                }
                Some(Err(e)) => return Err(StoreError::Read(e)),
                None => {
                    input_done = true;
                    if !buf.is_empty() {
                        let last = std::mem::take(&mut buf);
                        in_flight.push_back(spawn_chunk(last, held.take()));
                    }
                    continue;
                }
            }
        }
        collect(&mut in_flight, &mut refs).await?;
    }
    let manifest = build_manifest(shared, chunk_size, refs).await?;
    let version = shared.clock().next();
    let entry = NameEntry {
        name: name.to_string(),
        version,
        deleted: false,
        size,
        content: manifest.encode(),
    };
    publish(shared, entry).await.map_err(|e| match e {
        PublishError::Local(m) => StoreError::Index(m),
        PublishError::Unreplicated { written, needed } => {
            StoreError::NameUnreplicated { written, needed }
        }
        PublishError::Refused { refused, reason } => StoreError::NameRefused { refused, reason },
    })?;
    Ok((version, size))
}

/// Waits for the oldest chunk in flight (if any) and adds its reference to `refs`.
async fn collect(
    in_flight: &mut VecDeque<AbortOnDropHandle<Result<ChunkRef, StoreError>>>,
    refs: &mut Vec<ChunkRef>,
) -> Result<(), StoreError> {
    if let Some(done) = in_flight.pop_front() {
        refs.push(done.await.map_err(|_| StoreError::ShuttingDown)??);
    }
    Ok(())
}

/// How often a store in progress (or a read) renews its chunks' GC grace
/// everywhere, at most: a third of this node's grace, but no longer than
/// this. Nodes do not share their grace, so a peer's may be far shorter;
/// what holds for every node is that a chunk is collected only once it was
/// unreferenced at two repair passes (30 s apart) with no touch in between.
const TOUCH_EVERY_MAX: std::time::Duration = std::time::Duration::from_secs(5);
/// A floor on that period, for a grace of (near) zero.
const TOUCH_EVERY_MIN: std::time::Duration = std::time::Duration::from_millis(100);

/// How often a transfer renews its chunks' GC grace.
fn touch_every(shared: &Shared) -> std::time::Duration {
    (shared.config.gc_grace / 3).clamp(TOUCH_EVERY_MIN, TOUCH_EVERY_MAX)
}

/// Restarts the GC grace of `refs` on this node and every connected peer.
/// A store calls it every `TOUCH_EVERY_MAX` or a third of its grace, so its
/// chunks are not collected before its entry exists; a read does too, so
/// the chunks it has yet to reach outlive a delete or an overwrite.
async fn touch_everywhere(shared: &Arc<Shared>, refs: &[ChunkRef]) {
    let ids: Vec<drift_crypto::ChunkId> = refs.iter().map(|r| r.id).collect();
    shared.touch(&ids);
    let conns = shared.members().up_conns();
    join_all(conns.iter().map(|c| async {
        for batch in ids.chunks(crate::proto::MAX_IDS_PER_REQUEST) {
            if c.request(Msg::TouchChunks {
                ids: batch.to_vec(),
            })
            .await
            .is_err()
            {
                return;
            }
        }
    }))
    .await;
}

/// Small files list their chunks inline; larger ones store the list as sealed parts.
async fn build_manifest(
    shared: &Arc<Shared>,
    chunk_size: usize,
    refs: Vec<ChunkRef>,
) -> Result<Manifest, StoreError> {
    let chunk_size_u32 = chunk_size as u32;
    if refs.len() <= INLINE_MAX_CHUNKS {
        return Ok(Manifest::Inline {
            chunk_size: chunk_size_u32,
            chunks: refs,
        });
    }
    let n_chunks = refs.len() as u64;
    let list = postcard::to_allocvec(&refs).map_err(|e| StoreError::Index(e.to_string()))?;
    let n_parts = list.len().div_ceil(chunk_size);
    if n_parts > MAX_PARTS {
        return Err(StoreError::TooLarge(n_chunks * chunk_size as u64));
    }
    let parts = join_all(
        list.chunks(chunk_size)
            .map(|part| seal_and_write(shared.clone(), BytesMut::from(part), None)),
    )
    .await
    .into_iter()
    .collect::<Result<Vec<_>, _>>()?;
    Ok(Manifest::Indirect {
        chunk_size: chunk_size_u32,
        n_chunks,
        parts,
    })
}

/// Writes an entry locally and pushes it to every connected peer (best
/// effort; anti-entropy delivers it to the rest), both at once: a put waits
/// for one index commit, not for this node's and then its peers'.
pub(crate) async fn publish(shared: &Arc<Shared>, entry: NameEntry) -> Result<(), PublishError> {
    let (conns, r) = {
        let table = shared.members();
        (table.up_conns(), table.effective_replicas())
    };
    let msg = Msg::PushEntries {
        entries: vec![entry.clone()],
    };
    let local = async {
        let committed = shared.index_writer.run(vec![entry.clone()]).await;
        if matches!(committed, Ok(Ok(_))) {
            shared.index_changed();
        }
        committed
    };
    let (committed, answers) = tokio::join!(
        local,
        join_all(conns.iter().map(|c| c.request(msg.clone())))
    );
    match committed {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => return Err(PublishError::Local(e.to_string())),
        Err(why) => return Err(PublishError::Local(why)),
    }
    for (conn, answer) in conns.iter().zip(&answers) {
        if let Ok(Msg::Failed { message, .. }) = answer {
            tracing::warn!(peer = %conn.peer_id().short(), "a peer refused this node's entry: {message}");
        }
    }
    // Like a chunk, an entry counts as durable once a majority of R nodes
    // (this one included) have committed it.
    let written = 1 + answers
        .iter()
        .filter(|a| matches!(a, Ok(Msg::Done)))
        .count();
    let needed = crate::placement::write_quorum(r);
    if written < needed {
        let refusals: Vec<&String> = answers
            .iter()
            .filter_map(|a| match a {
                Ok(Msg::Failed {
                    kind: FailKind::BadRequest,
                    message,
                }) => Some(message),
                _ => None,
            })
            .collect();
        // Peers refuse a version far ahead of their clocks. Kept here, it
        // would reach them once their clocks caught up, and then win over
        // the writes made meanwhile: take it back while no one else has it.
        if written == 1 && !refusals.is_empty() {
            withdraw(shared, entry).await;
            return Err(PublishError::Refused {
                refused: refusals.len(),
                reason: refusals[0].clone(),
            });
        }
        return Err(PublishError::Unreplicated { written, needed });
    }
    Ok(())
}

/// Removes an entry this node just wrote, if it is still the one held.
async fn withdraw(shared: &Arc<Shared>, entry: NameEntry) {
    let index = shared.index.clone();
    let withdrawn = blocking(move || index.withdraw(&entry).map_err(|e| e.to_string()))
        .await
        .and_then(|r| r);
    match withdrawn {
        Ok(true) => shared.index_changed(),
        Ok(false) => {}
        Err(e) => tracing::warn!("cannot take back a refused entry: {e}"),
    }
}

/// Why an entry was not durably published.
pub(crate) enum PublishError {
    /// The local index refused it. Peers may have committed it all the
    /// same (the pushes run beside the local commit), as after
    /// `Unreplicated`: a failed write may still take effect.
    Local(String),
    /// It is written here but reached too few peers.
    Unreplicated { written: usize, needed: usize },
    /// Peers refused it and none took it; it was taken back here.
    Refused { refused: usize, reason: String },
}

/// The newest entry for `name`: the local one, or, if this node has none
/// yet, the newest any connected peer has.
async fn lookup(shared: &Arc<Shared>, name: &str) -> Result<Option<NameEntry>, String> {
    let index = shared.index.clone();
    let owned = name.to_string();
    let local = blocking(move || index.get(&owned))
        .await?
        .map_err(|e| e.to_string())?;
    if local.is_some() {
        return Ok(local);
    }
    let hash = shared.index.name_hash(name);
    let conns = shared.members().up_conns();
    let answers = join_all(
        conns
            .iter()
            .map(|c| c.request(Msg::GetEntries { hashes: vec![hash] })),
    )
    .await;
    let newest = answers
        .into_iter()
        .filter_map(|a| match a {
            Ok(Msg::Entries { entries }) => Some(entries),
            _ => None,
        })
        .flatten()
        .filter(|e| e.name == name && crate::clock::plausible(e.version))
        .max_by_key(|e| e.version);
    if let Some(e) = &newest {
        crate::sync::apply_entries(shared, vec![e.clone()]).await?;
    }
    Ok(newest)
}

/// Opens `name` for reading.
pub(crate) async fn get(shared: &Arc<Shared>, name: &str) -> Result<FileReader, GetError> {
    check_name(name).map_err(GetError::InvalidName)?;
    if shared.cancel.is_cancelled() {
        return Err(GetError::ShuttingDown);
    }
    let entry = lookup(shared, name).await.map_err(GetError::Index)?;
    let Some(entry) = entry.filter(|e| !e.deleted) else {
        return Err(GetError::NotFound(name.to_string()));
    };
    let manifest = Manifest::decode(&entry.content, entry.size)
        .map_err(|e| GetError::Manifest(e.to_string()))?;
    let chunk_size = match &manifest {
        Manifest::Inline { chunk_size, .. } | Manifest::Indirect { chunk_size, .. } => *chunk_size,
    };
    // What one chunk read ahead holds at most.
    let per_chunk = entry.size.min(u64::from(chunk_size)).max(1) as usize;
    // The reads in flight are the read-ahead; the channel only hands over.
    let (tx, rx) = mpsc::channel(1);
    let abandoned = Arc::new(AtomicBool::new(false));
    let idle_limit = crate::serve::upload_deadline(shared);
    let task_shared = shared.clone();
    let task_abandoned = abandoned.clone();
    let task = tokio::spawn(async move {
        let cancel = task_shared.cancel.clone();
        tokio::select! {
            _ = cancel.cancelled() => { let _ = tx.send(Err(GetError::ShuttingDown)).await; }
            _ = produce(task_shared, manifest, per_chunk, tx.clone(), idle_limit, &task_abandoned) => {}
        }
    });
    Ok(FileReader {
        size: entry.size,
        version: entry.version,
        delivered: 0,
        failed: false,
        rx,
        held: None,
        abandoned,
        idle_limit,
        task,
    })
}

/// A chunk's plaintext on its way to the reader, with its share of the
/// node's transfer memory (given back when the reader takes the next one).
type Piece = Result<(Bytes, ReadPermit), GetError>;

/// Resolves the chunk list and sends each chunk's plaintext in order. A
/// reader that takes no piece for `idle_limit` (as long as an upload may
/// wait for its next chunk) is given up (`abandoned` set), and its reads
/// ahead release the node's memory: readers left open and unread cannot
/// starve the node.
async fn produce(
    shared: Arc<Shared>,
    manifest: Manifest,
    per_chunk: usize,
    tx: mpsc::Sender<Piece>,
    idle_limit: std::time::Duration,
    abandoned: &AtomicBool,
) {
    let refs = match chunk_list(&shared, manifest).await {
        Ok(refs) => refs,
        Err(e) => {
            let _ = tx.send(Err(e)).await;
            return;
        }
    };
    let refs: Arc<[ChunkRef]> = refs.into();
    // The index of the next chunk to read, which the toucher starts from.
    // A file of one chunk has its only read under way at once: no toucher.
    let next = Arc::new(AtomicUsize::new(0));
    let _toucher = (refs.len() > 1).then(|| {
        AbortOnDropHandle::new(tokio::spawn(keep_touched(
            shared.clone(),
            refs.clone(),
            next.clone(),
        )))
    });
    // Reads run as their own tasks, so they go on while the consumer is slow
    // to take the previous chunk; returning drops (aborts) the rest.
    let depth = shared.config.pipeline_depth.max(1);
    let mut in_flight = VecDeque::new();
    loop {
        while in_flight.len() < depth && next.load(Ordering::Relaxed) < refs.len() {
            // Reads ahead hold memory until the reader takes the next one:
            // they count against the node's transfer budget. Only a read
            // with nothing ahead of it waits for memory; the others stop
            // reading ahead, so this get's own chunks can always drain.
            let held = if in_flight.is_empty() {
                shared.reserve_read(per_chunk).await
            } else {
                shared.try_reserve_read(per_chunk)
            };
            let Some(held) = held else {
                if in_flight.is_empty() {
                    let _ = tx.send(Err(GetError::Busy)).await;
                    return;
                }
                break;
            };
            let r = refs[next.fetch_add(1, Ordering::Relaxed)].clone();
            let shared = shared.clone();
            in_flight.push_back(AbortOnDropHandle::new(tokio::spawn(async move {
                chunks::read_plain(&shared, &r)
                    .await
                    .map(|plain| (plain, held))
            })));
        }
        let Some(next) = in_flight.pop_front() else {
            return;
        };
        let result = next.await.unwrap_or(Err(GetError::ShuttingDown));
        let failed = result.is_err();
        match tokio::time::timeout(idle_limit, tx.send(result)).await {
            Ok(Ok(())) if !failed => {}
            Ok(_) => return,
            Err(_) => {
                abandoned.store(true, Ordering::Release);
                return;
            }
        }
    }
}

/// Keeps the chunks a read has yet to reach from being collected, should
/// its file be deleted or overwritten meanwhile: the read goes on to the
/// end of the version it began, however slow its reader. Touches start only
/// after a first period, so quick reads send none.
async fn keep_touched(shared: Arc<Shared>, refs: Arc<[ChunkRef]>, next: Arc<AtomicUsize>) {
    let every = touch_every(&shared);
    loop {
        tokio::time::sleep(every).await;
        let from = next.load(Ordering::Relaxed);
        let Some(ahead) = refs.get(from..).filter(|a| !a.is_empty()) else {
            return;
        };
        touch_everywhere(&shared, ahead).await;
    }
}

/// The data chunks of a file, reading an indirect manifest's parts if needed.
pub(crate) async fn chunk_list(
    shared: &Arc<Shared>,
    manifest: Manifest,
) -> Result<Vec<ChunkRef>, GetError> {
    match manifest {
        Manifest::Inline { chunks, .. } => Ok(chunks),
        Manifest::Indirect {
            n_chunks, parts, ..
        } => {
            let mut list = Vec::new();
            for part in &parts {
                list.extend_from_slice(&chunks::read_plain(shared, part).await?);
            }
            decode_parts(&list, n_chunks).map_err(|e| GetError::Manifest(e.to_string()))
        }
    }
}

/// Deletes `name` with a tombstone newer than its entry.
pub(crate) async fn delete(shared: &Arc<Shared>, name: &str) -> Result<(), DeleteError> {
    check_name(name).map_err(DeleteError::InvalidName)?;
    if shared.cancel.is_cancelled() {
        return Err(DeleteError::ShuttingDown);
    }
    let entry = lookup(shared, name).await.map_err(DeleteError::Index)?;
    let Some(entry) = entry.filter(|e| !e.deleted) else {
        return Err(DeleteError::NotFound(name.to_string()));
    };
    let version = {
        let mut clock = shared.clock();
        clock.observe(entry.version);
        clock.next()
    };
    let tombstone = NameEntry {
        name: name.to_string(),
        version,
        deleted: true,
        size: 0,
        content: Vec::new(),
    };
    publish(shared, tombstone).await.map_err(|e| match e {
        PublishError::Local(m) => DeleteError::Index(m),
        PublishError::Unreplicated { written, needed } => {
            DeleteError::Unreplicated { written, needed }
        }
        PublishError::Refused { refused, reason } => DeleteError::Refused { refused, reason },
    })
}

/// Every live file, sorted by name.
pub(crate) async fn list(shared: &Arc<Shared>) -> Result<Vec<FileInfo>, GetError> {
    if shared.cancel.is_cancelled() {
        return Err(GetError::ShuttingDown);
    }
    let index = shared.index.clone();
    let entries = blocking(move || index.entries())
        .await
        .map_err(GetError::Index)?
        .map_err(|e| GetError::Index(e.to_string()))?;
    let mut files: Vec<FileInfo> = entries
        .into_iter()
        .filter(|e| !e.deleted)
        .map(|e| FileInfo {
            name: e.name,
            size: e.size,
            version: e.version,
        })
        .collect();
    files.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(files)
}

/// The node's view of itself and the cluster.
pub(crate) async fn status(shared: &Arc<Shared>) -> NodeStatus {
    let index = shared.index.clone();
    let chunks = shared.chunks.clone();
    let (entries, usage, quarantined) =
        blocking(move || (index.entries(), chunks.usage(), chunks.quarantined()))
            .await
            .unwrap_or_else(|_| (Ok(Vec::new()), Ok(Default::default()), 0));
    let entries = entries.unwrap_or_default();
    let usage: drift_store::StoreUsage = usage.unwrap_or_default();
    let tombstones = entries.iter().filter(|e| e.deleted).count() as u64;
    let (peers, replicas, unreached) = {
        let table = shared.members();
        (
            table.statuses(),
            table.effective_replicas() as u32,
            table.unreached(),
        )
    };
    NodeStatus {
        node_id: shared.me.to_string(),
        listen: shared.config.listen,
        replicas,
        peers,
        names: entries.len() as u64 - tombstones,
        tombstones,
        chunks: usage.chunks,
        bytes: usage.bytes,
        under_replicated: shared
            .under_replicated
            .load(std::sync::atomic::Ordering::Relaxed),
        quarantined,
        // The last repair pass's count, or, if more, the chunks reads have
        // found no good copy of since (every chunk still missing at a pass
        // is a suspect again after it): a failed read shows at once, not
        // at the next pass.
        missing: shared
            .missing
            .load(std::sync::atomic::Ordering::Relaxed)
            .max(
                shared
                    .suspects
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .len() as u64,
            ),
        unreached,
    }
}

/// A file being read: its chunks' plaintext, in order, each verified before
/// it is handed out. Memory is bounded by the pipeline depth times the chunk
/// size, whatever the file's size.
pub struct FileReader {
    size: u64,
    version: Version,
    delivered: u64,
    failed: bool,
    rx: mpsc::Receiver<Piece>,
    /// The memory share of the piece handed out last.
    held: Option<ReadPermit>,
    /// Set when the reader went unread for `idle_limit` and was given up.
    abandoned: Arc<AtomicBool>,
    idle_limit: std::time::Duration,
    task: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for FileReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileReader")
            .field("size", &self.size)
            .field("version", &self.version)
            .field("delivered", &self.delivered)
            .finish_non_exhaustive()
    }
}

impl FileReader {
    /// The file's size in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The version of the entry being read.
    pub fn version(&self) -> Version {
        self.version
    }

    /// The next piece of plaintext, `None` at the end. After an error no
    /// more pieces follow.
    pub async fn next_chunk(&mut self) -> Option<Result<Bytes, GetError>> {
        std::future::poll_fn(|cx| self.poll_piece(cx)).await
    }

    /// Hands out pieces, and turns an early end (the producer stopped) into
    /// an error, so a reader can never mistake a short file for a whole one.
    fn poll_piece(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes, GetError>>> {
        if self.failed {
            return Poll::Ready(None);
        }
        let item = match self.rx.poll_recv(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(item) => item,
        };
        // The last piece handed out is the reader's now.
        self.held = None;
        let item = match item {
            Some(Ok((piece, held))) => {
                self.held = Some(held);
                self.delivered += piece.len() as u64;
                if self.delivered > self.size {
                    Some(Err(GetError::Manifest(
                        "file is longer than its entry says".into(),
                    )))
                } else {
                    Some(Ok(piece))
                }
            }
            Some(Err(e)) => Some(Err(e)),
            None if self.delivered != self.size => {
                Some(Err(if self.abandoned.load(Ordering::Acquire) {
                    GetError::Idle(self.idle_limit)
                } else {
                    GetError::ShuttingDown
                }))
            }
            None => None,
        };
        self.failed = matches!(item, Some(Err(_)));
        Poll::Ready(item)
    }

    /// The file as a `tokio::io::AsyncRead`; a verification or availability
    /// failure surfaces as an `io::Error` wrapping the [`GetError`].
    pub fn into_async_read(self) -> impl tokio::io::AsyncRead + Send + Unpin {
        tokio_util::io::StreamReader::new(self.map(|piece| piece.map_err(std::io::Error::other)))
    }

    /// Reads the whole file into memory (for small files and tests).
    pub async fn read_to_end(mut self) -> Result<Vec<u8>, GetError> {
        let mut out = Vec::with_capacity(self.size.min(64 << 20) as usize);
        while let Some(piece) = self.next_chunk().await {
            out.extend_from_slice(&piece?);
        }
        Ok(out)
    }
}

impl Stream for FileReader {
    type Item = Result<Bytes, GetError>;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.poll_piece(cx)
    }
}

impl Drop for FileReader {
    fn drop(&mut self) {
        self.task.abort();
    }
}
