//! The node: its shared state, start-up, shutdown and public API.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use drift_crypto::{ChunkId, Keys};
use drift_p2p::{Config as P2pConfig, Endpoint, NodeKey, PeerId, Role};
use drift_store::{ChunkStore, IndexError, NameEntry, NameIndex, PutError, StoreOptions};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::batch::Batcher;
use crate::clock::Clock;
use crate::config::NodeConfig;
use crate::error::StartError;
use crate::files::FileReader;
use crate::members::Members;
use crate::proto::Msg;
use crate::status::{FileInfo, NodeStatus, TransferUse};
use crate::{DeleteError, GetError, StoreError, members, sync};

const META_NODE_KEY: &str = "node_key";

/// Entry lists committed in one index transaction, at most.
const MAX_INDEX_BATCH: usize = 256;

/// Small chunks sharing one durability barrier, at most.
const MAX_CHUNK_BATCH: usize = 256;
/// How long `shutdown` waits for clients' requests under way to finish.
const SHUTDOWN_DRAIN: Duration = Duration::from_secs(5);
/// Most chunks [`Shared::suspect`] remembers between repair passes.
const MAX_SUSPECTS: usize = 4096;

/// State shared by the node's tasks. Locks are std mutexes, never held across an await.
pub(crate) struct Shared {
    pub config: NodeConfig,
    pub keys: Keys,
    pub me: PeerId,
    pub chunks: Arc<ChunkStore>,
    /// Writes small chunks to `chunks`, many at a time (see `batch`).
    pub chunk_writer: Batcher<(ChunkId, Bytes), Result<bool, PutError>>,
    pub index: Arc<NameIndex>,
    /// Applies entry lists to `index`, many at a time (see `batch`).
    pub index_writer: Batcher<Vec<NameEntry>, Result<Vec<bool>, IndexError>>,
    pub endpoint: Endpoint<Msg>,
    pub members: Mutex<Members>,
    pub clock: Mutex<Clock>,
    /// Bumped whenever the name index changes, so its digest can be cached.
    pub index_generation: AtomicU64,
    pub digest_cache: Mutex<Option<(u64, [u8; 32], u64)>>,
    pub under_replicated: AtomicU64,
    /// Live chunks with no good copy on any reachable node at the last repair
    /// pass: ones this node quarantined and should hold, and ones a read here
    /// found no good copy of (`suspects`).
    pub missing: AtomicU64,
    /// Chunks a read found no good copy of, checked again by the next repair pass.
    pub suspects: Mutex<HashSet<ChunkId>>,
    /// Chunks seen unreferenced, and since when (the GC grace clock).
    pub gc_candidates: Mutex<HashMap<ChunkId, Instant>>,
    /// Data chunk ids listed by indirect manifests, by their parts (see `maintenance`).
    pub part_lists: Mutex<HashMap<Vec<ChunkId>, Arc<Vec<ChunkId>>>>,
    pub wake_repair: Notify,
    pub wake_dialer: Notify,
    pub cancel: CancellationToken,
    /// `config.transfer_memory` in KiB, held by uploads' chunk buffers and
    /// gets' reads ahead.
    pub transfer_budget: Arc<Semaphore>,
    /// The share of `transfer_budget` gets' reads ahead may hold at most.
    pub read_budget: Arc<Semaphore>,
    /// Reservations of transfer memory asked for since the node started.
    pub transfers_begun: AtomicU64,
    /// Held while the member list is saved (see `members::remember`).
    pub members_saving: Mutex<()>,
    /// Clients' requests being answered; `shutdown` lets them finish first.
    pub client_requests: AtomicU64,
    /// Notified when `client_requests` falls to zero.
    pub client_requests_done: Notify,
    /// Set once `shutdown` began: clients' new requests are refused.
    pub draining: AtomicBool,
}

impl Shared {
    pub fn members(&self) -> MutexGuard<'_, Members> {
        // A poisoned lock means a task panicked while holding it; the table
        // itself is still consistent (every update is a single assignment).
        self.members.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn clock(&self) -> MutexGuard<'_, Clock> {
        self.clock.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Restarts the GC grace of chunks a store is using: a chunk is collected
    /// only after it has been unreferenced *and untouched* for `gc_grace`.
    pub fn touch(&self, ids: &[ChunkId]) {
        let mut candidates = self.gc_candidates.lock().unwrap_or_else(|p| p.into_inner());
        if !candidates.is_empty() {
            for id in ids {
                candidates.remove(id);
            }
        }
    }

    /// Notes a chunk no copy of which could be read, for the next repair
    /// pass to check again (and count, if it is still missing). Bounded: past
    /// `MAX_SUSPECTS`, more are not noted until the pass has drained them.
    pub fn suspect(&self, id: ChunkId) {
        let mut suspects = self.suspects.lock().unwrap_or_else(|p| p.into_inner());
        if suspects.len() < MAX_SUSPECTS {
            suspects.insert(id);
        }
    }

    pub fn index_changed(&self) {
        self.index_generation.fetch_add(1, Ordering::Relaxed);
    }

    /// Holds `bytes` of the node's transfer memory until the permit drops;
    /// `None` if they are not free within the request timeout.
    pub async fn reserve_transfer(&self, bytes: usize) -> Option<OwnedSemaphorePermit> {
        self.transfers_begun.fetch_add(1, Ordering::Relaxed);
        let kib = self.transfer_kib(bytes)?;
        tokio::time::timeout(
            self.config.request_timeout,
            self.transfer_budget.clone().acquire_many_owned(kib),
        )
        .await
        .ok()?
        .ok()
    }

    /// `bytes` in the budget's units (KiB), never more than the whole
    /// budget, which would wait forever.
    fn transfer_kib(&self, bytes: usize) -> Option<u32> {
        u32::try_from(bytes.div_ceil(1024).min(budget_kib(&self.config))).ok()
    }

    /// As [`Shared::transfer_kib`], within the reads' share.
    fn read_kib(&self, bytes: usize) -> Option<u32> {
        u32::try_from(bytes.div_ceil(1024).min(read_budget_kib(&self.config))).ok()
    }

    /// Holds `bytes` for a chunk a get reads ahead: from the transfer budget
    /// and from the half of it reads may hold, so readers (idle ones too,
    /// until they are given up) always leave half to uploads and replica
    /// writes. `None` if they are not free within the request timeout.
    pub async fn reserve_read(&self, bytes: usize) -> Option<ReadPermit> {
        self.transfers_begun.fetch_add(1, Ordering::Relaxed);
        let kib = self.read_kib(bytes)?;
        tokio::time::timeout(self.config.request_timeout, async {
            let read = self
                .read_budget
                .clone()
                .acquire_many_owned(kib)
                .await
                .ok()?;
            let total = self
                .transfer_budget
                .clone()
                .acquire_many_owned(kib)
                .await
                .ok()?;
            Some(ReadPermit {
                _read: read,
                _total: total,
            })
        })
        .await
        .ok()?
    }

    /// [`Shared::reserve_read`] without waiting.
    pub fn try_reserve_read(&self, bytes: usize) -> Option<ReadPermit> {
        self.transfers_begun.fetch_add(1, Ordering::Relaxed);
        let kib = self.read_kib(bytes)?;
        let read = self.read_budget.clone().try_acquire_many_owned(kib).ok()?;
        let total = self
            .transfer_budget
            .clone()
            .try_acquire_many_owned(kib)
            .ok()?;
        Some(ReadPermit {
            _read: read,
            _total: total,
        })
    }
}

/// A get's share of the transfer budget for one chunk read ahead.
#[derive(Debug)]
pub(crate) struct ReadPermit {
    _read: OwnedSemaphorePermit,
    _total: OwnedSemaphorePermit,
}

/// The whole transfer budget in KiB: `transfer_memory`, raised to one
/// largest chunk.
fn budget_kib(config: &NodeConfig) -> usize {
    config.transfer_memory.max(drift_crypto::MAX_CHUNK_SIZE) >> 10
}

/// What reads ahead may hold: half the budget, raised to one largest chunk.
fn read_budget_kib(config: &NodeConfig) -> usize {
    (budget_kib(config) / 2).max(drift_crypto::MAX_CHUNK_SIZE >> 10)
}

/// Runs a blocking store or index call off the async runtime.
pub(crate) async fn blocking<T, F>(f: F) -> Result<T, String>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| format!("storage task failed: {e}"))
}

/// Runs `pass` every `every` (and whenever `wake` is notified) until the node
/// shuts down; a pass in progress is abandoned at shutdown.
pub(crate) async fn periodically<F, Fut>(
    shared: &Shared,
    every: Duration,
    wake: Option<&Notify>,
    mut pass: F,
) where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let never = Notify::new();
    let wake = wake.unwrap_or(&never);
    loop {
        tokio::select! {
            _ = shared.cancel.cancelled() => break,
            _ = wake.notified() => {}
            _ = tokio::time::sleep(every) => {}
        }
        tokio::select! {
            _ = shared.cancel.cancelled() => break,
            _ = pass() => {}
        }
    }
}

/// A running drift node. Cheap to clone; every clone drives the same node.
#[derive(Clone)]
pub struct Node {
    pub(crate) shared: Arc<Shared>,
    tasks: Arc<tokio::sync::Mutex<JoinSet<()>>>,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("id", &self.shared.me)
            .field("listen", &self.shared.config.listen)
            .field("data_dir", &self.shared.config.data_dir)
            .field("shut_down", &self.shared.cancel.is_cancelled())
            .finish_non_exhaustive()
    }
}

impl Node {
    /// Opens the data directory, restores the node's identity and index, binds
    /// the listen address and starts membership, anti-entropy, repair and scrub.
    pub async fn start(config: NodeConfig) -> Result<Node, StartError> {
        config.check().map_err(StartError::Config)?;
        let keys = config.secret.keys();
        let dir = config.data_dir.clone();
        let opts = StoreOptions {
            max_bytes: config.max_bytes,
            ..StoreOptions::default()
        };
        let (chunks, index) = {
            let dir = dir.clone();
            let keys = keys.clone();
            let join_dir = dir.clone();
            tokio::task::spawn_blocking(move || {
                let chunks =
                    ChunkStore::open_with(&dir, opts).map_err(|source| StartError::DataDir {
                        dir: dir.clone(),
                        source,
                    })?;
                let finished = chunks.finished_at_open();
                if finished > 0 {
                    tracing::info!(
                        chunks = finished,
                        "finished chunk writes that a crash interrupted after they were durable"
                    );
                }
                let index = NameIndex::open(&dir, &keys).map_err(|source| StartError::DataDir {
                    dir: dir.clone(),
                    source,
                })?;
                Ok::<_, StartError>((chunks, index))
            })
            .await
            .map_err(|e| StartError::State {
                dir: join_dir,
                message: e.to_string(),
            })??
        };
        let state_err = |message: String| StartError::State {
            dir: dir.clone(),
            message,
        };
        let node_key = load_or_create_identity(&index).map_err(state_err)?;
        let me = node_key.peer_id();
        let known = members::load(&index).map_err(state_err)?;
        let last_version = index
            .entries()
            .map_err(|e| state_err(e.to_string()))?
            .iter()
            .map(|e| e.version.time)
            .max()
            .unwrap_or(0);

        let mut p2p = P2pConfig::new(&config.secret, node_key, Role::Node);
        p2p.advertise = Some(config.listen);
        p2p.request_timeout = config.request_timeout;
        p2p.heartbeat_interval = config.heartbeat_interval;
        p2p.idle_timeout = config.idle_timeout;
        p2p.handshake_timeout = config.request_timeout.min(Duration::from_secs(5));
        let (endpoint, events) =
            Endpoint::<Msg>::bind(config.listen, p2p)
                .await
                .map_err(|source| StartError::Bind {
                    addr: config.listen,
                    hint: if source.kind() == std::io::ErrorKind::AddrInUse {
                        " (is another drift node already running there? pick another --listen port)"
                    } else {
                        ""
                    },
                    source,
                })?;
        let mut config = config;
        if config.listen.port() == 0
            && let Some(bound) = endpoint.local_addr()
        {
            config.listen = bound;
        }
        let node_bits = u64::from_be_bytes(me.0[..8].try_into().unwrap_or([0; 8]));
        let mut table = Members::new(me, &config);
        for saved in known {
            table.restore(saved);
        }
        // Best effort: a node on a full disk still starts, to serve reads.
        if let Err(e) = members::save(&index, &table.remembered()) {
            tracing::warn!("cannot save the member list: {e}");
        }
        for addr in &config.bootstrap {
            table.add_bootstrap(*addr);
        }
        let index = Arc::new(index);
        let (index_writer, index_worker) = Batcher::new(MAX_INDEX_BATCH);
        let (chunk_writer, chunk_worker) = Batcher::new(MAX_CHUNK_BATCH);
        let chunks = Arc::new(chunks);
        let shared = Arc::new(Shared {
            keys,
            me,
            chunks: chunks.clone(),
            chunk_writer,
            index_writer,
            index: index.clone(),
            endpoint,
            members: Mutex::new(table),
            clock: Mutex::new(Clock::new(node_bits, last_version)),
            index_generation: AtomicU64::new(0),
            digest_cache: Mutex::new(None),
            under_replicated: AtomicU64::new(0),
            missing: AtomicU64::new(0),
            suspects: Mutex::new(HashSet::new()),
            gc_candidates: Mutex::new(HashMap::new()),
            part_lists: Mutex::new(HashMap::new()),
            wake_repair: Notify::new(),
            wake_dialer: Notify::new(),
            cancel: CancellationToken::new(),
            transfer_budget: Arc::new(Semaphore::new(budget_kib(&config))),
            read_budget: Arc::new(Semaphore::new(read_budget_kib(&config))),
            transfers_begun: AtomicU64::new(0),
            members_saving: Mutex::new(()),
            client_requests: AtomicU64::new(0),
            client_requests_done: Notify::new(),
            draining: AtomicBool::new(false),
            config,
        });
        let mut tasks = JoinSet::new();
        tasks.spawn_blocking(move || {
            chunk_worker.serve(|jobs| {
                let jobs: Vec<(ChunkId, &[u8])> =
                    jobs.iter().map(|(id, bytes)| (*id, &bytes[..])).collect();
                chunks.put_many_id_checked(&jobs)
            })
        });
        tasks.spawn_blocking(move || {
            index_worker.serve(|lists| {
                let lists: Vec<&[NameEntry]> = lists.iter().map(Vec::as_slice).collect();
                index.apply_lists(&lists)
            })
        });
        tasks.spawn(members::run_events(shared.clone(), events));
        tasks.spawn(members::run_dialer(shared.clone()));
        tasks.spawn(sync::run_anti_entropy(shared.clone()));
        tasks.spawn(crate::maintenance::run_repair(shared.clone()));
        tasks.spawn(crate::maintenance::run_scrub(shared.clone()));
        tracing::info!(node = %me, listen = %shared.config.listen, "node started");
        Ok(Node {
            shared,
            tasks: Arc::new(tokio::sync::Mutex::new(tasks)),
        })
    }

    /// This node's id, derived from its persistent identity key.
    pub fn id(&self) -> PeerId {
        self.shared.me
    }

    /// The address the node listens on (the bound port when 0 was asked for).
    pub fn listen_addr(&self) -> std::net::SocketAddr {
        self.shared.config.listen
    }

    /// What the node's transfers (uploads, replica writes, reads ahead) hold
    /// of its transfer memory now, and how many reservations of it they have
    /// made since it started.
    /// Cheap: a program embedding the node can poll it to give freed memory
    /// back to the system once transfers are quiet, as the `drift` binary does.
    pub fn transfer_use(&self) -> TransferUse {
        let total = budget_kib(&self.shared.config);
        let free = self.shared.transfer_budget.available_permits();
        TransferUse {
            held: total.saturating_sub(free) << 10,
            begun: self.shared.transfers_begun.load(Ordering::Relaxed),
        }
    }

    /// Stores `reader`'s bytes under `name`, replacing any earlier file of
    /// that name. Returns once a majority of every chunk's replicas have
    /// fsynced it and the entry is written; on error the name is unchanged.
    pub async fn store<R>(&self, name: &str, reader: R) -> Result<drift_store::Version, StoreError>
    where
        R: tokio::io::AsyncRead + Unpin + Send,
    {
        let pieces = tokio_util::io::ReaderStream::with_capacity(reader, 256 * 1024);
        crate::files::store(&self.shared, name, pieces)
            .await
            .map(|(version, _)| version)
    }

    /// Opens `name` for reading, from local or remote replicas, verifying
    /// every chunk. A missing or deleted name is [`GetError::NotFound`] at once.
    pub async fn get(&self, name: &str) -> Result<FileReader, GetError> {
        crate::files::get(&self.shared, name).await
    }

    /// Deletes `name` by writing a tombstone that replicates to every node.
    pub async fn delete(&self, name: &str) -> Result<(), DeleteError> {
        crate::files::delete(&self.shared, name).await
    }

    /// Every live file, sorted by name.
    pub async fn list(&self) -> Result<Vec<FileInfo>, GetError> {
        crate::files::list(&self.shared).await
    }

    /// The node's view of itself and its peers.
    pub async fn status(&self) -> NodeStatus {
        crate::files::status(&self.shared).await
    }

    /// Runs one repair pass now (it also runs periodically and on membership
    /// changes) and returns how many chunks it copied to replicas.
    pub async fn repair_now(&self) -> u64 {
        crate::maintenance::repair_pass(&self.shared).await.pushed
    }

    /// Re-verifies every local chunk now, repairing corrupt ones from
    /// replicas; returns (corrupt chunks found, chunks repaired).
    pub async fn scrub_now(&self) -> (u64, u64) {
        crate::maintenance::scrub_pass(&self.shared).await
    }

    /// Compares name indexes with every connected peer now.
    pub async fn sync_now(&self) {
        sync::sync_all(&self.shared).await
    }

    /// Stops the node: refuses clients' new requests and gives the ones under
    /// way up to 5 s to finish, then closes connections, stops its workers and
    /// waits for them (bounded). State on disk is already durable. Afterwards
    /// store, get, delete and list fail with `ShuttingDown`.
    ///
    /// The data directory stays locked until every clone of this `Node` and
    /// every [`FileReader`] it handed out are dropped: restart on the same
    /// directory only after that.
    pub async fn shutdown(&self) {
        // Clients' requests under way get a moment to finish (a rolling
        // restart then fails only the requests that come during it).
        self.shared.draining.store(true, Ordering::SeqCst);
        let drained = async {
            loop {
                let done = self.shared.client_requests_done.notified();
                if self.shared.client_requests.load(Ordering::SeqCst) == 0 {
                    break;
                }
                done.await;
            }
        };
        let _ = tokio::time::timeout(SHUTDOWN_DRAIN, drained).await;
        self.shared.cancel.cancel();
        self.shared.endpoint.shutdown().await;
        // The writers finish what is queued, then return.
        self.shared.chunk_writer.close();
        self.shared.index_writer.close();
        let mut tasks = self.tasks.lock().await;
        let drain = async { while tasks.join_next().await.is_some() {} };
        if tokio::time::timeout(Duration::from_secs(5), drain)
            .await
            .is_err()
        {
            tracing::warn!("node tasks did not stop within 5 s; aborting them");
            tasks.abort_all();
        }
    }
}

fn load_or_create_identity(index: &NameIndex) -> Result<NodeKey, String> {
    // The store seals meta values with the cluster secret, so the key is
    // never on disk in plain form.
    match index.get_meta(META_NODE_KEY).map_err(|e| e.to_string())? {
        Some(raw) => {
            let bytes: [u8; 32] = raw
                .as_slice()
                .try_into()
                .map_err(|_| "the stored node identity is malformed".to_string())?;
            Ok(NodeKey::from_private_bytes(bytes))
        }
        None => {
            let key = NodeKey::generate();
            index
                .set_meta(META_NODE_KEY, &key.private_bytes())
                .map_err(|e| e.to_string())?;
            Ok(key)
        }
    }
}
