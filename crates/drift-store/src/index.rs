//! [`NameIndex`]: the encrypted, last-writer-wins map from names to entries, in redb.
//!
//! `<data>/index.redb` holds three tables:
//!
//! ```text
//! entries: [u8; 32] name hash -> sealed NameEntry     (see the entry module)
//! meta:    &str key           -> RecordKey::seal(ad = "drift meta\0" || key, value)
//! format:  "check"            -> RecordKey::seal(ad = CHECK_AD, CHECK_PLAIN)
//! ```
//!
//! The `format` record is written at the first open; later opens check it, so
//! a node started with the wrong cluster secret fails at once with
//! [`IndexError::WrongSecret`] instead of reading every record as corrupt.
//! Every write is one redb transaction with `Durability::Immediate`: durable
//! when the call returns, all or nothing after a crash.
//!
//! [`NameIndex::apply`] commits in groups: while one transaction is being made
//! durable, concurrent callers queue their entries, and the next transaction
//! carries all of them with one commit (one set of fsyncs). Each caller still
//! returns only once its own entries are durable, and each caller's entries
//! are still all or nothing.
//!
//! After an I/O error (a full disk, say), redb refuses every later call until
//! the database is opened again. The index then reopens it, so the call that
//! failed reports the error, and calls after it work again once the cause
//! is gone, without restarting the node.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError, RwLock};

use drift_crypto::{Keys, RecordError};
use redb::{Database, ReadableTable, TableDefinition};

use crate::entry::{NameEntry, Sealer, Version, hex_key};
use crate::error::{IndexError, StoreError};

const ENTRIES: TableDefinition<&[u8], &[u8]> = TableDefinition::new("entries");
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
const FORMAT: TableDefinition<&str, &[u8]> = TableDefinition::new("format");
const CHECK_KEY: &str = "check";
const CHECK_AD: &[u8] = b"drift name index check";
const CHECK_PLAIN: &[u8] = b"drift name index v1";

/// The name index of one node, at `<data>/index.redb`.
///
/// Keys are keyed hashes of names and values are sealed, so the file reveals
/// no names and no manifests to anyone without the cluster secret.
/// `Send + Sync`; every method takes `&self`.
pub struct NameIndex {
    /// `None` while it cannot be reopened after an I/O error.
    db: RwLock<Option<Database>>,
    open_db: Box<OpenDb>,
    sealer: Sealer,
    group: Mutex<Group>,
    group_done: Condvar,
}

/// The group commit of [`NameIndex::apply`]: callers queue their entries; one
/// of them (the leader) commits everything queued, then the next group.
#[derive(Default)]
struct Group {
    queue: Vec<(u64, Vec<NameEntry>)>,
    next_ticket: u64,
    leader: bool,
    results: HashMap<u64, Result<Vec<bool>, IndexError>>,
}

/// Opens (or creates) the database file.
type OpenDb = dyn Fn() -> Result<Database, redb::DatabaseError> + Send + Sync;

/// Most callers one group transaction carries; bounds its size and latency.
const MAX_GROUP: usize = 256;

impl std::fmt::Debug for NameIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NameIndex").finish_non_exhaustive()
    }
}

impl NameIndex {
    /// Opens (creating if needed) the index in `data_dir`, checking that it
    /// was written with the same cluster secret as `keys`.
    pub fn open(data_dir: &Path, keys: &Keys) -> Result<NameIndex, StoreError> {
        let path = data_dir.join("index.redb");
        NameIndex::open_with(data_dir, keys, move || Database::create(&path))
    }

    /// [`NameIndex::open`] with the database opened by `open_db`, which is
    /// called again to reopen it after an I/O error. For tests that need a
    /// storage backend that fails.
    #[doc(hidden)]
    pub fn open_with(
        data_dir: &Path,
        keys: &Keys,
        open_db: impl Fn() -> Result<Database, redb::DatabaseError> + Send + Sync + 'static,
    ) -> Result<NameIndex, StoreError> {
        std::fs::create_dir_all(data_dir)
            .map_err(|e| StoreError::io("create data directory", data_dir, e))?;
        let path = data_dir.join("index.redb");
        // redb asserts on some damage it meets while opening (a truncated
        // file, say) instead of returning an error. The panic is then the
        // file's doing, and becomes an error that says so.
        let opened = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let db = open_db().map_err(|e| StoreError::Database {
                path: path.clone(),
                source: Box::new(e.into()),
            })?;
            let index = NameIndex {
                db: RwLock::new(Some(db)),
                open_db: Box::new(open_db),
                sealer: Sealer::new(keys),
                group: Mutex::default(),
                group_done: Condvar::new(),
            };
            index.check_or_init(path.clone())?;
            Ok(index)
        }));
        opened.unwrap_or_else(|panic| {
            Err(StoreError::IndexDamaged {
                path,
                detail: panic_detail(&*panic),
            })
        })
    }

    /// Creates the tables and the secret check on first use; checks it after.
    fn check_or_init(&self, path: PathBuf) -> Result<(), IndexError> {
        self.with_db(|db| self.check_or_init_in(db, path))
    }

    fn check_or_init_in(&self, db: &Database, path: PathBuf) -> Result<(), IndexError> {
        let txn = db.begin_write().map_err(IndexError::db)?;
        {
            txn.open_table(ENTRIES).map_err(IndexError::db)?;
            txn.open_table(META).map_err(IndexError::db)?;
            let mut format = txn.open_table(FORMAT).map_err(IndexError::db)?;
            let stored = format
                .get(CHECK_KEY)
                .map_err(IndexError::db)?
                .map(|v| v.value().to_vec());
            match stored {
                Some(sealed) => match self.sealer.record().open(CHECK_AD, &sealed) {
                    Ok(plain) if plain == CHECK_PLAIN => {}
                    Err(RecordError::BadTag) => return Err(IndexError::WrongSecret { path }),
                    Ok(_) => {
                        return Err(IndexError::Corrupt {
                            key: "format check".into(),
                            reason: "unknown index format".into(),
                        });
                    }
                    Err(e) => {
                        return Err(IndexError::Corrupt {
                            key: "format check".into(),
                            reason: e.to_string(),
                        });
                    }
                },
                None => {
                    let sealed = self.sealer.record().seal(CHECK_AD, CHECK_PLAIN)?;
                    format
                        .insert(CHECK_KEY, &sealed[..])
                        .map_err(IndexError::db)?;
                }
            }
        }
        txn.commit().map_err(IndexError::db)
    }

    /// The entry for `name`, tombstones included.
    pub fn get(&self, name: &str) -> Result<Option<NameEntry>, IndexError> {
        self.get_by_hash(&self.name_hash(name))
    }

    /// The entry whose name hashes to `hash` (see [`NameIndex::name_hash`]).
    pub fn get_by_hash(&self, hash: &[u8; 32]) -> Result<Option<NameEntry>, IndexError> {
        self.with_db(|db| {
            let txn = db.begin_read().map_err(IndexError::db)?;
            let table = txn.open_table(ENTRIES).map_err(IndexError::db)?;
            let Some(value) = table.get(&hash[..]).map_err(IndexError::db)? else {
                return Ok(None);
            };
            self.sealer.open_entry(hash, value.value()).map(Some)
        })
    }

    /// Runs `f` on the database, and reopens it if `f` failed on an I/O
    /// error (after which redb refuses every call until it is reopened). A
    /// database left closed by a reopen that failed is reopened first.
    fn with_db<T>(
        &self,
        f: impl FnOnce(&Database) -> Result<T, IndexError>,
    ) -> Result<T, IndexError> {
        let closed = self.read_db().is_none();
        if closed && let Err(e) = self.reopen() {
            return Err(IndexError::db(e));
        }
        let result = match self.read_db().as_ref() {
            Some(db) => f(db),
            None => Err(IndexError::db(redb::Error::PreviousIo)),
        };
        if let Err(IndexError::Database(e)) = &result
            && matches!(**e, redb::Error::Io(_) | redb::Error::PreviousIo)
        {
            // Its error is this call's; the next call retries a failed reopen.
            let _ = self.reopen();
        }
        result
    }

    fn read_db(&self) -> std::sync::RwLockReadGuard<'_, Option<Database>> {
        self.db.read().unwrap_or_else(PoisonError::into_inner)
    }

    /// Closes the database and opens it again; leaves it closed if that fails.
    /// An assertion redb meets while opening it (damage done to the file
    /// since it was first opened) is an error, as at the first open.
    fn reopen(&self) -> Result<(), redb::DatabaseError> {
        let mut db = self.db.write().unwrap_or_else(PoisonError::into_inner);
        // Closed first: redb allows one open handle per file.
        *db = None;
        let opened = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| (self.open_db)()))
            .unwrap_or_else(|panic| {
                Err(redb::DatabaseError::Storage(redb::StorageError::Corrupted(
                    panic_detail(&*panic),
                )))
            });
        *db = Some(opened?);
        Ok(())
    }

    /// The index key of a name: its keyed hash under the cluster's name key.
    pub fn name_hash(&self, name: &str) -> [u8; 32] {
        self.sealer.name_hash(name)
    }

    /// Last writer wins: stores each entry iff its name has no entry yet or
    /// `entry.version` is greater than the stored one. Entries are applied in
    /// order, in one transaction, durable on return. Returns, per entry,
    /// whether it was applied.
    ///
    /// Concurrent calls share a transaction (group commit, see the module
    /// docs); a call whose entries make the shared commit fail is retried
    /// alone, so one caller's error never fails another.
    ///
    /// A stored record that no longer opens is replaced: its version cannot
    /// be compared, and the new entry is the only readable one.
    pub fn apply(&self, entries: &[NameEntry]) -> Result<Vec<bool>, IndexError> {
        let mut group = self.lock_group();
        let ticket = group.next_ticket;
        group.next_ticket += 1;
        group.queue.push((ticket, entries.to_vec()));
        loop {
            if let Some(result) = group.results.remove(&ticket) {
                return result;
            }
            if !group.leader {
                break;
            }
            group = self
                .group_done
                .wait(group)
                .unwrap_or_else(PoisonError::into_inner);
        }
        // Lead: commit groups until our own result is in, then hand over.
        group.leader = true;
        loop {
            let take = group.queue.len().min(MAX_GROUP);
            let batch: Vec<(u64, Vec<NameEntry>)> = group.queue.drain(..take).collect();
            drop(group);
            let results = self.commit_group(&batch);
            group = self.lock_group();
            for (ticket, result) in results {
                group.results.insert(ticket, result);
            }
            self.group_done.notify_all();
            if let Some(result) = group.results.remove(&ticket) {
                group.leader = false;
                // A caller queued after our batch waits for a leader: wake one up.
                self.group_done.notify_all();
                return result;
            }
        }
    }

    fn lock_group(&self) -> MutexGuard<'_, Group> {
        // The group state is only queues and results; a panic elsewhere
        // leaves it consistent.
        self.group.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// [`NameIndex::apply`] for several callers' lists at once, from one
    /// thread: one transaction (one fsync) for all of them, durable on
    /// return. If it fails, each list is applied alone, so an error lands on
    /// the list that caused it. Returns one result per list, in order.
    pub fn apply_lists(&self, lists: &[&[NameEntry]]) -> Vec<Result<Vec<bool>, IndexError>> {
        if lists.len() > 1
            && let Ok(applied) = self.apply_txn(lists)
        {
            return applied.into_iter().map(Ok).collect();
        }
        lists
            .iter()
            .map(|entries| {
                self.apply_txn(&[entries])
                    .map(|mut v| v.pop().unwrap_or_default())
            })
            .collect()
    }

    /// Commits a group of callers' entries (see [`NameIndex::apply_lists`]).
    fn commit_group(
        &self,
        batch: &[(u64, Vec<NameEntry>)],
    ) -> Vec<(u64, Result<Vec<bool>, IndexError>)> {
        let lists: Vec<&[NameEntry]> = batch.iter().map(|(_, e)| &e[..]).collect();
        let tickets = batch.iter().map(|(t, _)| *t);
        tickets.zip(self.apply_lists(&lists)).collect()
    }

    /// Applies several callers' entries, in order, in one transaction.
    fn apply_txn(&self, lists: &[&[NameEntry]]) -> Result<Vec<Vec<bool>>, IndexError> {
        self.with_db(|db| self.apply_txn_in(db, lists))
    }

    fn apply_txn_in(
        &self,
        db: &Database,
        lists: &[&[NameEntry]],
    ) -> Result<Vec<Vec<bool>>, IndexError> {
        let txn = db.begin_write().map_err(IndexError::db)?;
        let mut all = Vec::with_capacity(lists.len());
        {
            let mut table = txn.open_table(ENTRIES).map_err(IndexError::db)?;
            for entries in lists {
                let mut applied = Vec::with_capacity(entries.len());
                for entry in entries.iter() {
                    let key = self.name_hash(&entry.name);
                    let newer = match table.get(&key[..]).map_err(IndexError::db)? {
                        None => true,
                        Some(stored) => self
                            .sealer
                            .open_entry(&key, stored.value())
                            .map_or(true, |old| entry.version > old.version),
                    };
                    if newer {
                        let sealed = self.sealer.seal_entry(&key, entry)?;
                        table
                            .insert(&key[..], &sealed[..])
                            .map_err(IndexError::db)?;
                    }
                    applied.push(newer);
                }
                all.push(applied);
            }
        }
        if all.iter().flatten().any(|a| *a) {
            txn.commit().map_err(IndexError::db)?;
        } else {
            txn.abort().map_err(IndexError::db)?;
        }
        Ok(all)
    }

    /// Every entry, tombstones included, in name-hash order.
    pub fn entries(&self) -> Result<Vec<NameEntry>, IndexError> {
        self.scan(|_, entry| entry)
    }

    /// `(name hash, version)` of every entry, sorted by hash: the digest
    /// anti-entropy compares between nodes.
    pub fn versions(&self) -> Result<Vec<([u8; 32], Version)>, IndexError> {
        self.scan(|key, entry| (key, entry.version))
    }

    /// Opens every entry in key order and maps it with `f`.
    fn scan<T>(&self, f: impl FnMut([u8; 32], NameEntry) -> T) -> Result<Vec<T>, IndexError> {
        self.with_db(|db| self.scan_in(db, f))
    }

    fn scan_in<T>(
        &self,
        db: &Database,
        mut f: impl FnMut([u8; 32], NameEntry) -> T,
    ) -> Result<Vec<T>, IndexError> {
        let txn = db.begin_read().map_err(IndexError::db)?;
        let table = txn.open_table(ENTRIES).map_err(IndexError::db)?;
        let mut out = Vec::new();
        for item in table.iter().map_err(IndexError::db)? {
            let (key, value) = item.map_err(IndexError::db)?;
            let entry = self.sealer.open_entry(key.value(), value.value())?;
            let hash = <[u8; 32]>::try_from(key.value()).map_err(|_| IndexError::Corrupt {
                key: hex_key(key.value()),
                reason: "its key is not 32 bytes".into(),
            })?;
            out.push(f(hash, entry));
        }
        Ok(out)
    }

    /// Removes `entry` if the index still holds exactly its version, and
    /// returns whether it did: a writer takes back an entry no other node
    /// would take. A newer entry for the name, written meanwhile, stays.
    pub fn withdraw(&self, entry: &NameEntry) -> Result<bool, IndexError> {
        let key = self.name_hash(&entry.name);
        self.with_db(|db| {
            let txn = db.begin_write().map_err(IndexError::db)?;
            let removed = {
                let mut table = txn.open_table(ENTRIES).map_err(IndexError::db)?;
                let held = match table.get(&key[..]).map_err(IndexError::db)? {
                    Some(value) => self.sealer.open_entry(&key, value.value()).ok(),
                    None => None,
                };
                let ours = held.is_some_and(|held| held.version == entry.version);
                ours && table.remove(&key[..]).map_err(IndexError::db)?.is_some()
            };
            if removed {
                txn.commit().map_err(IndexError::db)?;
            } else {
                txn.abort().map_err(IndexError::db)?;
            }
            Ok(removed)
        })
    }

    /// Removes tombstones with `version.time < older_than_time`, returning how
    /// many. Live entries and unreadable records are left alone.
    pub fn purge_tombstones(&self, older_than_time: u64) -> Result<usize, IndexError> {
        self.with_db(|db| self.purge_tombstones_in(db, older_than_time))
    }

    fn purge_tombstones_in(
        &self,
        db: &Database,
        older_than_time: u64,
    ) -> Result<usize, IndexError> {
        let txn = db.begin_write().map_err(IndexError::db)?;
        let mut n_purged = 0;
        {
            let mut table = txn.open_table(ENTRIES).map_err(IndexError::db)?;
            let mut doomed = Vec::new();
            for item in table.iter().map_err(IndexError::db)? {
                let (key, value) = item.map_err(IndexError::db)?;
                if let Ok(entry) = self.sealer.open_entry(key.value(), value.value())
                    && entry.deleted
                    && entry.version.time < older_than_time
                {
                    doomed.push(key.value().to_vec());
                }
            }
            for key in &doomed {
                if table.remove(&key[..]).map_err(IndexError::db)?.is_some() {
                    n_purged += 1;
                }
            }
        }
        if n_purged > 0 {
            txn.commit().map_err(IndexError::db)?;
        } else {
            txn.abort().map_err(IndexError::db)?;
        }
        Ok(n_purged)
    }

    /// A small piece of node state stored under `key` (sealed on disk).
    pub fn get_meta(&self, key: &str) -> Result<Option<Vec<u8>>, IndexError> {
        self.with_db(|db| {
            let txn = db.begin_read().map_err(IndexError::db)?;
            let table = txn.open_table(META).map_err(IndexError::db)?;
            let Some(value) = table.get(key).map_err(IndexError::db)? else {
                return Ok(None);
            };
            self.sealer.open_meta(key, value.value()).map(Some)
        })
    }

    /// Stores a small piece of node state under `key`, durable on return.
    pub fn set_meta(&self, key: &str, value: &[u8]) -> Result<(), IndexError> {
        let sealed = self.sealer.seal_meta(key, value)?;
        self.with_db(|db| {
            let txn = db.begin_write().map_err(IndexError::db)?;
            {
                let mut table = txn.open_table(META).map_err(IndexError::db)?;
                table.insert(key, &sealed[..]).map_err(IndexError::db)?;
            }
            txn.commit().map_err(IndexError::db)
        })
    }
}

/// What a panic caught from the database library said.
fn panic_detail(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| panic.downcast_ref::<&str>().copied())
        .unwrap_or("the database library failed on it")
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send_sync<T: Send + Sync>() {}

    #[test]
    fn index_is_send_and_sync() {
        assert_send_sync::<NameIndex>();
    }

    fn entry(name: &str, time: u64) -> NameEntry {
        NameEntry {
            name: name.into(),
            version: Version { time, node: 1 },
            deleted: false,
            size: time,
            content: vec![time as u8],
        }
    }

    /// Several callers' lists in one call: applied in order, each list's
    /// result its own, all durable.
    #[test]
    fn lists_applied_together_keep_their_order_and_their_results() {
        let dir = tempfile::tempdir().unwrap();
        let keys = drift_crypto::ClusterSecret::from_bytes([5; 32]).keys();
        let index = NameIndex::open(dir.path(), &keys).unwrap();
        let first = [entry("a", 5), entry("b", 5)];
        let newer_a = [entry("a", 6)];
        let older_b = [entry("b", 4), entry("c", 1)];
        let results = index.apply_lists(&[&first, &newer_a, &older_b]);
        let results: Vec<Vec<bool>> = results.into_iter().map(Result::unwrap).collect();
        assert_eq!(results, [vec![true, true], vec![true], vec![false, true]]);
        // Nothing newer: nothing applied, nothing failed.
        assert_eq!(
            index.apply_lists(&[&newer_a]).pop().unwrap().unwrap(),
            [false]
        );
        drop(index);
        let index = NameIndex::open(dir.path(), &keys).unwrap();
        let version = |n: &str| index.get(n).unwrap().unwrap().version.time;
        assert_eq!((version("a"), version("b"), version("c")), (6, 5, 1));
    }

    #[test]
    fn concurrent_applies_share_commits_and_each_sees_its_own_result() {
        let dir = tempfile::tempdir().unwrap();
        let keys = drift_crypto::ClusterSecret::from_bytes([4; 32]).keys();
        let index = NameIndex::open(dir.path(), &keys).unwrap();
        std::thread::scope(|s| {
            for t in 0..8u64 {
                let index = &index;
                s.spawn(move || {
                    for i in 0..40u64 {
                        let name = format!("f{t}-{i}");
                        assert_eq!(index.apply(&[entry(&name, 5)]).unwrap(), [true]);
                        // An older version of the same name loses, a shared
                        // name is won by exactly one version.
                        assert_eq!(index.apply(&[entry(&name, 4)]).unwrap(), [false]);
                        index.apply(&[entry("shared", 100 + i)]).unwrap();
                    }
                });
            }
        });
        drop(index);
        let index = NameIndex::open(dir.path(), &keys).unwrap();
        let entries = index.entries().unwrap();
        assert_eq!(entries.len(), 8 * 40 + 1);
        assert_eq!(index.get("shared").unwrap().unwrap().version.time, 139);
        assert_eq!(index.get("f3-7").unwrap().unwrap().version.time, 5);
    }
}
