//! [`ChunkStore`]: sealed chunks as files, written atomically and verified on every read.
//!
//! Crash guarantees (with `fsync` on, the default):
//! 1. A chunk file is visible only complete: its bytes are written to a temp
//!    file in the same directory and made durable before it is renamed into
//!    place (with `RENAME_NOREPLACE`, or a hard link where that is not
//!    supported).
//! 2. When `put` returns, the bytes are durable, under the temp file's name
//!    (`.tmp-<40 hex>-*`, which names the chunk) or the chunk's own; the
//!    rename is made durable by the next barrier of any put.
//! 3. A crash leaves at worst `.tmp-*` files. The next `open` renames into
//!    place each one whose bytes hash to the id its name carries (a put that
//!    returned, whose rename the crash lost) and removes the rest.
//! 4. A file whose bytes no longer hash to its name is never returned; `get`
//!    moves it to `<data>/quarantine/`.
//!
//! "Durable" is a barrier shared by concurrent puts: one `syncfs` of the
//! store's file system, which covers every write finished before it began,
//! instead of an fsync per file and per directory (see `group_sync`). Where
//! `syncfs` is missing, each put fsyncs its file and directory itself.

use std::collections::HashSet;
use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};
use drift_crypto::{ChunkId, MAX_CHUNK_SIZE};

use crate::direct::{self, drop_from_cache};
use crate::error::{GetError, PutError, StoreError, is_no_space};
use crate::fanout::{self, Entry, TEMP_PREFIX, Walk};
use crate::group_sync::GroupSync;

/// How a [`ChunkStore`] behaves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreOptions {
    /// The most bytes of chunks to hold (sealed bytes, not disk blocks);
    /// `None` means no limit but the disk's.
    pub max_bytes: Option<u64>,
    /// Whether to make every put durable before it returns (`syncfs`, or
    /// `fsync` of files and directories; turn off only for tests and
    /// throw-away nodes: a crash may then lose acknowledged chunks).
    pub fsync: bool,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            max_bytes: None,
            fsync: true,
        }
    }
}

/// What a store holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoreUsage {
    /// Number of chunk files.
    pub chunks: u64,
    /// Their total size in bytes.
    pub bytes: u64,
}

#[derive(Debug, Default)]
struct Counters {
    usage: StoreUsage,
    /// Bytes of `put`s in progress, held against the quota.
    reserved: u64,
}

/// A content-addressed store of sealed chunks under `<data>/chunks/`.
///
/// Every method takes `&self`; the store is `Send + Sync` and is meant to be
/// shared between threads. It never sees plaintext: chunks arrive sealed (a
/// read buffer handed back with [`ChunkStore::recycle`] may hold what its
/// caller decrypted in it, which the next read only overwrites).
#[derive(Debug)]
pub struct ChunkStore {
    chunks: PathBuf,
    quarantine: PathBuf,
    opts: StoreOptions,
    counters: Mutex<Counters>,
    quarantined: AtomicU64,
    /// The chunks with a file in quarantine (listed at open, and added as
    /// files are moved there), so asking costs no directory scan.
    quarantined_set: Mutex<HashSet<ChunkId>>,
    /// Chunks whose rename a crash lost, renamed into place at open.
    finished_at_open: u64,
    sync: GroupSync,
    spares: Spares,
    /// The data directory's lock, held while the store lives.
    _lock: File,
}

/// The file whose lock marks a data directory in use.
const LOCK_FILE: &str = "lock";

/// Takes the data directory's exclusive lock (`flock`), or says that another store holds it.
/// The lock goes with the file: on drop, or when the process ends however it ends.
fn lock_dir(dir: &Path) -> Result<File, StoreError> {
    let path = dir.join(LOCK_FILE);
    let file = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| StoreError::io("create", &path, e))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(fs::TryLockError::WouldBlock) => Err(StoreError::InUse { lock: path }),
        Err(fs::TryLockError::Error(e)) => Err(StoreError::io("lock", &path, e)),
    }
}

/// Read buffers handed back with [`ChunkStore::recycle`], at most about the
/// chunks a serving node reads at once. Their old contents (a local get
/// leaves plaintext) never show: not in `Debug`, and every read overwrites
/// or truncates what it returns.
#[derive(Default)]
struct Spares(Mutex<Vec<BytesMut>>);

const SPARE_READ_BUFFERS: usize = 8;

impl std::fmt::Debug for Spares {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let n = self.0.lock().map_or(0, |s| s.len());
        write!(f, "Spares({n})")
    }
}

impl ChunkStore {
    /// Opens (creating if needed) the store in `data_dir` with default options.
    pub fn open(data_dir: &Path) -> Result<ChunkStore, StoreError> {
        ChunkStore::open_with(data_dir, StoreOptions::default())
    }

    /// Opens (creating if needed) the store in `data_dir`: finishes or
    /// removes the temp files a crash left behind and counts what is stored.
    ///
    /// A `put` returns once its bytes are durable under the temp file's name,
    /// and the rename to the chunk's name is made durable by the next barrier
    /// (see [`ChunkStore::put_many_id_checked`]). So a crash may leave an
    /// acknowledged chunk as a temp file: one whose name carries a chunk id
    /// and whose bytes hash to it is renamed into place here; any other is
    /// removed.
    pub fn open_with(data_dir: &Path, opts: StoreOptions) -> Result<ChunkStore, StoreError> {
        let dir = std::path::absolute(data_dir)
            .map_err(|e| StoreError::io("resolve data directory", data_dir, e))?;
        fs::create_dir_all(&dir).map_err(|e| StoreError::io("create data directory", &dir, e))?;
        // Before anything is touched: the clean-up below would otherwise
        // remove or rename another store's writes in progress.
        let lock = lock_dir(&dir)?;
        let chunks = dir.join("chunks");
        let quarantine = dir.join("quarantine");
        for sub in [&chunks, &quarantine] {
            fs::create_dir_all(sub).map_err(|e| StoreError::io("create directory", sub, e))?;
        }
        // The write probe below is the only temp file outside the fan-out
        // directories; a crash during it leaves one here.
        for de in fs::read_dir(&chunks).map_err(|e| StoreError::io("read", &chunks, e))? {
            let de = de.map_err(|e| StoreError::io("read", &chunks, e))?;
            if de.file_name().to_string_lossy().starts_with(TEMP_PREFIX) {
                let _ = fs::remove_file(de.path());
            }
        }
        // Root may write anywhere, but a read-only mount or a directory owned
        // by another user should fail here, not at the first `put`.
        tempfile::Builder::new()
            .prefix(TEMP_PREFIX)
            .tempfile_in(&chunks)
            .map_err(|e| StoreError::io("write to directory", &chunks, e))?;

        let mut usage = StoreUsage::default();
        // Temp files are dealt with after the walk, which might otherwise
        // meet a finished one again under its chunk's name.
        let mut temps = Vec::new();
        let walk = Walk::new(&chunks).map_err(|e| StoreError::io("read", &chunks, e))?;
        for entry in walk {
            match entry.map_err(|(path, e)| StoreError::io("read", &path, e))? {
                Entry::Chunk { path, .. } => {
                    let meta = fs::symlink_metadata(&path)
                        .map_err(|e| StoreError::io("read", &path, e))?;
                    if meta.is_file() {
                        usage.chunks += 1;
                        usage.bytes += meta.len();
                    }
                }
                Entry::Temp { path, id } => temps.push((path, id)),
                Entry::Stray => {}
            }
        }
        let mut finished_at_open = 0;
        for (path, id) in temps {
            if let Some(len) = finish_temp(&chunks, &path, id, opts.fsync)? {
                usage.chunks += 1;
                usage.bytes += len;
                finished_at_open += 1;
            }
        }
        let sync =
            GroupSync::new(File::open(&chunks).map_err(|e| StoreError::io("open", &chunks, e))?);
        let names: Vec<std::ffi::OsString> = fs::read_dir(&quarantine)
            .map_err(|e| StoreError::io("read", &quarantine, e))?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<Result<_, _>>()
            .map_err(|e| StoreError::io("read", &quarantine, e))?;
        let n_quarantined = names.len() as u64;
        let quarantined_set = names.iter().filter_map(|n| quarantined_id(n)).collect();
        Ok(ChunkStore {
            chunks,
            quarantine,
            opts,
            counters: Mutex::new(Counters { usage, reserved: 0 }),
            quarantined: AtomicU64::new(n_quarantined),
            quarantined_set: Mutex::new(quarantined_set),
            finished_at_open,
            sync,
            spares: Spares::default(),
            _lock: lock,
        })
    }

    /// Stores a sealed chunk under its id. Verifies `ChunkId::of(sealed) ==
    /// *id` first (else [`PutError::IdMismatch`], nothing written). Idempotent
    /// and atomic, safe to call concurrently for one id. Returns true if this
    /// call created the file.
    pub fn put(&self, id: &ChunkId, sealed: &[u8]) -> Result<bool, PutError> {
        if sealed.len() > MAX_CHUNK_SIZE {
            // Checked again below; first, so an oversized input is not hashed.
            return self.put_id_checked(id, sealed);
        }
        let actual = ChunkId::of(sealed);
        if actual != *id {
            return Err(PutError::IdMismatch {
                expected: *id,
                actual,
            });
        }
        self.put_id_checked(id, sealed)
    }

    /// [`ChunkStore::put`] for bytes whose id the caller computed from these
    /// very bytes (it just sealed them with `ConvergenceKey::seal`, or just
    /// checked a fetched copy): skips the SHA-1 of the whole chunk, which is
    /// most of a put's CPU.
    ///
    /// Nothing unverified can be read back: every `get` re-checks the SHA-1,
    /// so a caller that broke this rule would see its chunk quarantined as
    /// corrupt, never wrong bytes. Bytes from a peer go through `put`.
    pub fn put_id_checked(&self, id: &ChunkId, sealed: &[u8]) -> Result<bool, PutError> {
        let mut results = self.put_many_id_checked(&[(*id, sealed)]);
        results.pop().unwrap_or(Ok(false))
    }

    /// [`ChunkStore::put_id_checked`] for several chunks at once, from one
    /// thread: every temp file is written, one durability barrier covers
    /// them all (their bytes and their names), and every rename follows.
    /// A put costs one barrier however many share it: it returns before its
    /// renames are durable, which the next barrier of any put makes them, and
    /// a crash before that leaves temp files that [`ChunkStore::open_with`]
    /// finishes. Returns
    /// one result per chunk, in order; the same id twice is stored once. An
    /// error of one chunk (too large, a full disk) fails that chunk alone; a
    /// failed barrier fails every chunk it covered (where `syncfs` is
    /// missing, the barrier is every staged file's own fsync, in turn).
    pub fn put_many_id_checked(&self, chunks: &[(ChunkId, &[u8])]) -> Vec<Result<bool, PutError>> {
        let mut results: Vec<Result<bool, PutError>> = Vec::with_capacity(chunks.len());
        let mut staged: Vec<(usize, Staged<'_>)> = Vec::new();
        for (i, (id, sealed)) in chunks.iter().enumerate() {
            match self.stage(id, sealed) {
                Ok(Some(s)) => {
                    staged.push((i, s));
                    results.push(Ok(false));
                }
                Ok(None) => results.push(Ok(false)),
                Err(e) => results.push(Err(e)),
            }
        }
        if self.opts.fsync && !staged.is_empty() {
            // The shared barrier also covers the temp files' names and the
            // directories created while staging; alone, those entries need an
            // fsync of the directories holding them.
            let durable = self.sync.barrier(|| {
                for (_, s) in &staged {
                    if s.new_dirs {
                        let mid = s.dir.parent().unwrap_or(&self.chunks);
                        fanout::sync_dir(mid)?;
                        fanout::sync_dir(&self.chunks)?;
                    }
                    s.temp.as_file().sync_all()?;
                    fanout::sync_dir(&s.dir)?;
                }
                Ok(())
            });
            if let Err(e) = durable {
                for (i, s) in staged {
                    results[i] = Err(no_space(&s.id, &s.dir, clone_io(&e), "fsync temp file in"));
                }
                return results;
            }
        }
        for (i, s) in staged {
            if self.opts.fsync {
                drop_from_cache(s.temp.as_file(), s.len as usize);
            }
            match s.temp.persist_noclobber(&s.path) {
                Ok(_) => {
                    let mut c = self.counters();
                    c.usage.chunks += 1;
                    c.usage.bytes += s.len;
                    drop(c);
                    results[i] = Ok(true);
                }
                // Another `put` of the same chunk won the race: same bytes.
                Err(e) if e.error.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => results[i] = Err(no_space(&s.id, &s.dir, e.error, "rename temp file in")),
            }
            // The reservation drops with `s` here: a created chunk counts as usage now.
        }
        results
    }

    /// Writes one chunk's bytes to a temp file beside its final path, or
    /// returns `None` if the chunk is already stored.
    fn stage(&self, id: &ChunkId, sealed: &[u8]) -> Result<Option<Staged<'_>>, PutError> {
        if sealed.len() > MAX_CHUNK_SIZE {
            return Err(PutError::TooLarge {
                id: *id,
                len: sealed.len(),
                max: MAX_CHUNK_SIZE,
            });
        }
        let len = sealed.len() as u64;
        let path = fanout::chunk_path(&self.chunks, id);
        match fs::symlink_metadata(&path) {
            // Already stored, if its bytes are these: a file of the right
            // length may still have rotted, or been put there by a faulty
            // peer, and acknowledging it would count a copy that cannot be
            // read. A dedup hit costs one read of the chunk.
            Ok(meta) if meta.is_file() && meta.len() == len => match self.read(id) {
                Ok((_, stored)) if stored[..] == *sealed => {
                    self.recycle(stored.freeze());
                    return Ok(None);
                }
                Ok(_) => self.quarantine(&path, id),
                // Gone meanwhile (collected, or quarantined by a reader):
                // write it.
                Err(GetError::NotFound { .. } | GetError::Corrupt { .. }) => {}
                Err(GetError::Io(e)) => return Err(e.into()),
            },
            // Something else holds the chunk's name: a damaged file. The good
            // bytes are in hand, so set the bad ones aside and write them.
            Ok(_) => self.quarantine(&path, id),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(StoreError::io("look up the chunk file", &path, e).into()),
        }
        let reservation = self.reserve(id, len)?;
        let dir = fanout::fan_dir(&self.chunks, id);
        let mut new_dirs = false;
        let no_space = |e: io::Error, action| no_space(id, &dir, e, action);
        let mut temp = match self.temp_file(&dir, id) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                self.create_fan_dir(&dir)
                    .map_err(|e| no_space(e, "create directory"))?;
                new_dirs = true;
                self.temp_file(&dir, id)
                    .map_err(|e| no_space(e, "create temp file in"))?
            }
            Err(e) => return Err(no_space(e, "create temp file in")),
        };
        // On any error from here on, dropping `temp` deletes the temp file.
        direct::write_uncached(temp.as_file_mut(), sealed)
            .map_err(|e| no_space(e, "write temp file in"))?;
        Ok(Some(Staged {
            id: *id,
            len,
            path,
            dir,
            new_dirs,
            temp,
            _reservation: reservation,
        }))
    }

    /// Reads a chunk and checks its SHA-1. A file whose bytes do not match is
    /// moved to `<data>/quarantine/` and [`GetError::Corrupt`] returned.
    pub fn get(&self, id: &ChunkId) -> Result<BytesMut, GetError> {
        let (path, buf) = self.read(id)?;
        if ChunkId::of(&buf) != *id {
            self.quarantine(&path, id);
            return Err(GetError::Corrupt { id: *id });
        }
        Ok(buf)
    }

    /// Reads a chunk without checking its SHA-1, for a caller that is about to
    /// authenticate the bytes another way: opening a chunk checks the keyed
    /// hash of its plaintext, which fails for any change to these bytes, and
    /// the SHA-1 is most of a read's CPU. If that check fails, the caller
    /// must call [`ChunkStore::get`], which quarantines a corrupt file.
    /// Size limits are still enforced.
    pub fn get_unverified(&self, id: &ChunkId) -> Result<BytesMut, GetError> {
        self.read(id).map(|(_, buf)| buf)
    }

    /// The bytes of a chunk file, at most [`MAX_CHUNK_SIZE`]; anything else at
    /// the chunk's name is quarantined.
    fn read(&self, id: &ChunkId) -> Result<(PathBuf, BytesMut), GetError> {
        let path = fanout::chunk_path(&self.chunks, id);
        // A FIFO planted at a chunk's name is opened (and quarantined below)
        // instead of blocking this thread for ever.
        let mut file = match direct::open_nonblocking(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(GetError::NotFound { id: *id });
            }
            Err(e) => return Err(StoreError::io("open", &path, e).into()),
        };
        let meta = file
            .metadata()
            .map_err(|e| StoreError::io("read", &path, e))?;
        if !meta.is_file() || meta.len() > MAX_CHUNK_SIZE as u64 {
            self.quarantine(&path, id);
            return Err(GetError::Corrupt { id: *id });
        }
        // Bounded by the limit even if the file grows while it is read.
        let buf = direct::read_all(
            &mut file,
            meta.len() as usize,
            MAX_CHUNK_SIZE,
            self.spare(meta.len()),
        )
        .map_err(|e| StoreError::io("read", &path, e))?;
        if buf.len() > MAX_CHUNK_SIZE {
            self.quarantine(&path, id);
            return Err(GetError::Corrupt { id: *id });
        }
        Ok((path, buf))
    }

    /// Hands back the bytes a [`ChunkStore::get`] or
    /// [`ChunkStore::get_unverified`] returned, or a
    /// [`ChunkStore::receive_buffer`] was filled with, once the caller is done
    /// with them, so a later read or receive reuses the memory instead of
    /// allocating (and, for a read, zeroing) a new buffer. Bytes still
    /// shared, or too small or too large to be a chunk read directly, are
    /// simply dropped.
    pub fn recycle(&self, bytes: Bytes) {
        let Ok(buf) = bytes.try_into_mut() else {
            return;
        };
        if buf.capacity() < direct::UNCACHED_MIN || buf.capacity() > MAX_CHUNK_SIZE + direct::ALIGN
        {
            return;
        }
        let mut spares = self.spares.0.lock().unwrap_or_else(|p| p.into_inner());
        if spares.len() < SPARE_READ_BUFFERS {
            spares.push(buf);
        }
    }

    /// An empty buffer with room for `len` bytes, aligned for direct I/O
    /// (as [`aligned_buffer`](crate::aligned_buffer) makes), to receive a chunk into: a
    /// spare one (see [`ChunkStore::recycle`]) for a chunk large enough to be
    /// read and written directly, else a new one.
    pub fn receive_buffer(&self, len: usize) -> BytesMut {
        match self.spare(len as u64) {
            Some(mut b) if b.capacity() >= len && direct::is_aligned(&b) => {
                b.clear();
                b
            }
            _ => direct::aligned_buffer(len),
        }
    }

    /// A spare buffer for a read of `len` bytes, if the read goes direct.
    fn spare(&self, len: u64) -> Option<BytesMut> {
        if len < direct::UNCACHED_MIN as u64 {
            return None;
        }
        self.spares
            .0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .pop()
    }

    /// Whether the chunk is stored (a metadata lookup; the bytes are not checked).
    pub fn has(&self, id: &ChunkId) -> bool {
        fs::symlink_metadata(fanout::chunk_path(&self.chunks, id)).is_ok_and(|m| m.is_file())
    }

    /// Deletes a chunk. Returns true if it existed.
    pub fn delete(&self, id: &ChunkId) -> Result<bool, StoreError> {
        let path = fanout::chunk_path(&self.chunks, id);
        let len = match fs::symlink_metadata(&path) {
            Ok(meta) => meta.len(),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(StoreError::io("read", &path, e)),
        };
        match fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(StoreError::io("delete", &path, e)),
        }
        self.forget(len);
        if self.opts.fsync {
            let dir = fanout::fan_dir(&self.chunks, id);
            fanout::sync_dir(&dir).map_err(|e| StoreError::io("fsync directory", &dir, e))?;
        }
        Ok(true)
    }

    /// Every stored chunk, in no particular order. Files that are not chunks
    /// (temp files, strays) are skipped; unreadable directories are errors.
    pub fn ids(&self) -> impl Iterator<Item = Result<ChunkId, StoreError>> + '_ {
        let walk = Walk::new(&self.chunks).map_err(|e| StoreError::io("read", &self.chunks, e));
        let (walk, first_err) = match walk {
            Ok(w) => (Some(w), None),
            Err(e) => (None, Some(Err(e))),
        };
        first_err
            .into_iter()
            .chain(walk.into_iter().flatten().filter_map(|entry| match entry {
                Ok(Entry::Chunk { id, .. }) => Some(Ok(id)),
                Ok(Entry::Temp { .. } | Entry::Stray) => None,
                Err((path, e)) => Some(Err(StoreError::io("read", &path, e))),
            }))
    }

    /// How many chunks and bytes are stored (counted at open, kept up to date since).
    pub fn usage(&self) -> Result<StoreUsage, StoreError> {
        Ok(self.counters().usage)
    }

    /// How many chunks a crash had left as temp files, which open renamed
    /// into place (see [`ChunkStore::open_with`]).
    pub fn finished_at_open(&self) -> u64 {
        self.finished_at_open
    }

    /// How many files are in quarantine (those found at open plus those moved since).
    pub fn quarantined(&self) -> u64 {
        self.quarantined.load(Ordering::Relaxed)
    }

    /// Whether a copy of `id` was put in quarantine here (found corrupt),
    /// now or at an earlier open. Answered from memory.
    pub fn was_quarantined(&self, id: &ChunkId) -> bool {
        self.quarantined_set
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .contains(id)
    }

    /// The chunks that have a file in quarantine, each once, sorted (a
    /// chunk stored again since is listed too: check [`ChunkStore::has`]).
    /// Files the store did not name there itself are skipped.
    pub fn quarantined_ids(&self) -> Result<Vec<ChunkId>, StoreError> {
        let dir = fs::read_dir(&self.quarantine)
            .map_err(|e| StoreError::io("read", &self.quarantine, e))?;
        let mut ids = Vec::new();
        for entry in dir {
            let entry = entry.map_err(|e| StoreError::io("read", &self.quarantine, e))?;
            ids.extend(quarantined_id(&entry.file_name()));
        }
        ids.sort_unstable();
        ids.dedup();
        Ok(ids)
    }

    fn counters(&self) -> MutexGuard<'_, Counters> {
        // The counters are plain numbers updated without panicking, so a
        // poisoned lock still holds consistent values.
        self.counters.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn forget(&self, len: u64) {
        let mut c = self.counters();
        c.usage.chunks = c.usage.chunks.saturating_sub(1);
        c.usage.bytes = c.usage.bytes.saturating_sub(len);
    }

    /// Holds `len` bytes against the quota until the returned guard drops.
    fn reserve(&self, id: &ChunkId, len: u64) -> Result<Reservation<'_>, PutError> {
        let mut c = self.counters();
        if let Some(max) = self.opts.max_bytes {
            let used = c.usage.bytes + c.reserved;
            if used.saturating_add(len) > max {
                return Err(PutError::NoSpace {
                    id: *id,
                    dir: fanout::fan_dir(&self.chunks, id),
                    reason: format!(
                        "the store's quota of {max} bytes is reached ({used} used, {len} needed); raise the quota or free space"
                    ),
                });
            }
        }
        c.reserved += len;
        Ok(Reservation { store: self, len })
    }

    fn temp_file(&self, dir: &Path, id: &ChunkId) -> io::Result<tempfile::NamedTempFile> {
        tempfile::Builder::new()
            .prefix(&fanout::temp_prefix(id))
            .tempfile_in(dir)
    }

    /// Creates `<chunks>/ab/cd` (the caller's barrier makes the new entries
    /// durable). The leaf is tried first: after the first few hundred chunks
    /// its parent nearly always exists.
    fn create_fan_dir(&self, dir: &Path) -> io::Result<()> {
        match create_dir(dir) {
            // Its parent is missing too, or even `chunks/` (removed by hand
            // while the node ran): puts would fail until a restart.
            Err(e) if e.kind() == io::ErrorKind::NotFound => fs::create_dir_all(dir),
            other => other,
        }
    }

    /// Moves a bad chunk file aside. Failure to move it is not reported: the
    /// caller reports the corruption either way, and the file stays unread.
    /// Usage drops by what open counted for the path: a regular file's
    /// length, or nothing for anything else (a directory, a symlink).
    fn quarantine(&self, path: &Path, id: &ChunkId) {
        let counted = fs::symlink_metadata(path)
            .ok()
            .filter(|m| m.is_file())
            .map(|m| m.len());
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let dest = self.quarantine.join(format!("{}.{nanos}", id.to_hex()));
        if fs::rename(path, &dest).is_ok() {
            self.quarantined.fetch_add(1, Ordering::Relaxed);
            self.quarantined_set
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(*id);
            if let Some(len) = counted {
                self.forget(len);
            }
        }
    }
}

/// The chunk a quarantined file holds (`<40 hex>.<nanos>`, see
/// [`ChunkStore::quarantine`]); `None` for any other file.
fn quarantined_id(name: &std::ffi::OsStr) -> Option<ChunkId> {
    name.to_str()
        .and_then(|n| n.split_once('.'))
        .and_then(|(hex, _)| hex.parse().ok())
}

/// A chunk written to its temp file, waiting for its barrier and rename.
struct Staged<'a> {
    id: ChunkId,
    len: u64,
    path: PathBuf,
    dir: PathBuf,
    /// Whether staging created fan-out directories.
    new_dirs: bool,
    temp: tempfile::NamedTempFile,
    _reservation: Reservation<'a>,
}

/// A full disk as [`PutError::NoSpace`]; any other error as it is.
fn no_space(id: &ChunkId, dir: &Path, e: io::Error, action: &'static str) -> PutError {
    if is_no_space(&e) {
        PutError::NoSpace {
            id: *id,
            dir: dir.to_path_buf(),
            reason: "the file system is full; free space or add a disk".into(),
        }
    } else {
        StoreError::io(action, dir, e).into()
    }
}

/// One barrier's error for each chunk it covered.
fn clone_io(e: &io::Error) -> io::Error {
    match e.raw_os_error() {
        Some(code) => io::Error::from_raw_os_error(code),
        None => io::Error::new(e.kind(), e.to_string()),
    }
}

/// Deals with a temp file a crash left at `path`: renames it into place if
/// its name says it holds chunk `id` (see [`fanout::temp_prefix`]), its
/// bytes hash to that id and the chunk is not stored yet, and returns its
/// length; removes it otherwise. A renamed file is made durable at once if
/// `fsync`.
fn finish_temp(
    chunks: &Path,
    path: &Path,
    id: Option<ChunkId>,
    fsync: bool,
) -> Result<Option<u64>, StoreError> {
    if let Some(id) = id {
        let dest = fanout::chunk_path(chunks, &id);
        let missing =
            matches!(fs::symlink_metadata(&dest), Err(e) if e.kind() == io::ErrorKind::NotFound);
        // Read only a temp file that could still be the chunk's one copy.
        let whole = fs::symlink_metadata(path)
            .ok()
            .filter(|m| missing && m.is_file() && m.len() <= MAX_CHUNK_SIZE as u64)
            .and_then(|_| fs::read(path).ok())
            .filter(|bytes| ChunkId::of(bytes) == id);
        if let Some(bytes) = whole {
            fs::rename(path, &dest)
                .map_err(|e| StoreError::io("finish leftover temp file", path, e))?;
            if fsync {
                let dir = dest.parent().unwrap_or(chunks);
                fanout::sync_dir(dir).map_err(|e| StoreError::io("fsync directory", dir, e))?;
            }
            return Ok(Some(bytes.len() as u64));
        }
    }
    match fs::remove_file(path) {
        Ok(()) => Ok(None),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(StoreError::io("remove leftover temp file", path, e)),
    }
}

/// Creates one directory; fine if it exists.
fn create_dir(dir: &Path) -> io::Result<()> {
    match fs::create_dir(dir) {
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        other => other,
    }
}

/// Bytes held against the quota by a `put` in progress.
struct Reservation<'a> {
    store: &'a ChunkStore,
    len: u64,
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        let mut c = self.store.counters();
        c.reserved = c.reserved.saturating_sub(self.len);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send_sync<T: Send + Sync>() {}

    #[test]
    fn store_is_send_and_sync() {
        assert_send_sync::<ChunkStore>();
    }

    #[test]
    fn reservations_count_against_the_quota_until_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let opts = StoreOptions {
            max_bytes: Some(100),
            fsync: false,
        };
        let store = ChunkStore::open_with(dir.path(), opts).unwrap();
        let id = ChunkId::of(b"r");
        let r = store.reserve(&id, 60).unwrap();
        assert!(matches!(
            store.reserve(&id, 60),
            Err(PutError::NoSpace { .. })
        ));
        drop(r);
        assert!(store.reserve(&id, 100).is_ok());
        assert!(store.reserve(&id, 101).is_err());
    }

    /// A batch: new chunks are created, a chunk twice in the batch or
    /// already stored is not created again, an oversized one fails alone;
    /// with shared barriers and with each put's own fsyncs.
    #[test]
    fn a_batch_of_puts_stores_each_chunk_once() {
        for own_fsyncs in [false, true] {
            let dir = tempfile::tempdir().unwrap();
            let store = ChunkStore::open(dir.path()).unwrap();
            if own_fsyncs {
                store.sync.fall_back_to_fsync();
            }
            let old = vec![9u8; 3000];
            assert!(store.put(&ChunkId::of(&old), &old).unwrap());
            let (a, b) = (vec![1u8; 5000], vec![2u8; 70_000]);
            let huge = vec![3u8; MAX_CHUNK_SIZE + 1];
            let batch = [
                (ChunkId::of(&a), &a[..]),
                (ChunkId::of(&old), &old[..]),
                (ChunkId::of(&b), &b[..]),
                (ChunkId::of(&huge), &huge[..]),
                (ChunkId::of(&a), &a[..]),
            ];
            let results = store.put_many_id_checked(&batch);
            let created: Vec<Option<bool>> =
                results.iter().map(|r| r.as_ref().ok().copied()).collect();
            assert_eq!(
                created,
                [Some(true), Some(false), Some(true), None, Some(false)]
            );
            assert!(matches!(results[3], Err(PutError::TooLarge { .. })));
            for c in [&a, &b, &old] {
                assert_eq!(&store.get(&ChunkId::of(c)).unwrap()[..], &c[..]);
            }
            let usage = store.usage().unwrap();
            assert_eq!((usage.chunks, usage.bytes), (3, 78_000));
            // No temp file is left behind.
            let mut files = 0;
            let mut dirs = vec![store.chunks.clone()];
            while let Some(d) = dirs.pop() {
                for e in fs::read_dir(d).unwrap() {
                    let e = e.unwrap();
                    if e.file_type().unwrap().is_dir() {
                        dirs.push(e.path());
                    } else {
                        assert!(!e.file_name().to_string_lossy().starts_with(TEMP_PREFIX));
                        files += 1;
                    }
                }
            }
            assert_eq!(files, 3);
        }
    }

    #[test]
    fn puts_are_durable_without_syncfs_too() {
        let dir = tempfile::tempdir().unwrap();
        let store = ChunkStore::open(dir.path()).unwrap();
        store.sync.fall_back_to_fsync();
        // Each new chunk creates its fan-out directories; putting one again
        // finds it in place.
        let chunks: Vec<Vec<u8>> = (0..3u8).map(|i| vec![i; 5000]).collect();
        for c in &chunks {
            assert!(store.put(&ChunkId::of(c), c).unwrap());
        }
        assert!(!store.put(&ChunkId::of(&chunks[0]), &chunks[0]).unwrap());
        for c in &chunks {
            assert_eq!(&store.get(&ChunkId::of(c)).unwrap()[..], &c[..]);
        }
        assert_eq!(store.usage().unwrap().chunks, 3);
    }
}
