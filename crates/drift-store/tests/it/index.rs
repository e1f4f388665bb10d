//! NameIndex: round trips, last writer wins, tombstones, meta, reopen, wrong secret.

use std::collections::HashMap;

use drift_store::{IndexError, NameEntry, NameIndex, StoreError, Version};
use proptest::prelude::*;

use crate::keys;

fn entry(name: &str, time: u64, node: u64, deleted: bool) -> NameEntry {
    NameEntry {
        name: name.into(),
        version: Version { time, node },
        deleted,
        size: time * 10,
        content: format!("manifest of {name} at {time}/{node}").into_bytes(),
    }
}

fn entry_names(index: &NameIndex) -> Vec<String> {
    index
        .entries()
        .unwrap()
        .into_iter()
        .map(|e| e.name)
        .collect()
}

fn arb_entry() -> impl Strategy<Value = NameEntry> {
    (
        any::<String>(),
        any::<(u64, u64)>(),
        any::<bool>(),
        any::<u64>(),
        proptest::collection::vec(any::<u8>(), 0..2000),
    )
        .prop_map(|(name, (time, node), deleted, size, content)| NameEntry {
            name,
            version: Version { time, node },
            deleted,
            size,
            content,
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    #[test]
    fn apply_get_round_trip(entries in proptest::collection::vec(arb_entry(), 1..6)) {
        let dir = tempfile::tempdir().unwrap();
        let index = NameIndex::open(dir.path(), &keys(1)).unwrap();
        // Distinct names, so every entry is applied.
        let mut by_name = HashMap::new();
        for e in entries {
            by_name.insert(e.name.clone(), e);
        }
        let entries: Vec<NameEntry> = by_name.into_values().collect();
        prop_assert!(index.apply(&entries).unwrap().iter().all(|&a| a));
        for e in &entries {
            prop_assert_eq!(index.get(&e.name).unwrap(), Some(e.clone()));
            prop_assert_eq!(index.get_by_hash(&index.name_hash(&e.name)).unwrap(), Some(e.clone()));
        }
        prop_assert_eq!(index.entries().unwrap().len(), entries.len());
    }

    /// Whatever order writes arrive in, one by one or batched, every name ends
    /// at its greatest version.
    #[test]
    fn last_writer_wins_converges(
        writes in proptest::collection::vec((0usize..4, 0u64..6, 0u64..3, any::<bool>()), 1..24)
            .prop_flat_map(|w| { let n = w.len(); (Just(w.clone()), Just(w).prop_shuffle(), 1..=n) }),
    ) {
        let (in_order, shuffled, batch) = writes;
        let names = ["a", "b", "c", "d"];
        let to_entry = |&(n, t, node, del): &(usize, u64, u64, bool)| entry(names[n], t, node, del);
        let dir = tempfile::tempdir().unwrap();
        let one = NameIndex::open(&dir.path().join("one"), &keys(1)).unwrap();
        let two = NameIndex::open(&dir.path().join("two"), &keys(1)).unwrap();
        for w in &in_order {
            one.apply(&[to_entry(w)]).unwrap();
        }
        let shuffled: Vec<NameEntry> = shuffled.iter().map(to_entry).collect();
        for part in shuffled.chunks(batch) {
            two.apply(part).unwrap();
        }
        prop_assert_eq!(one.versions().unwrap(), two.versions().unwrap());
        for name in names {
            let max = in_order.iter().filter(|w| names[w.0] == name).map(|w| Version { time: w.1, node: w.2 }).max();
            prop_assert_eq!(one.get(name).unwrap().map(|e| e.version), max);
            prop_assert_eq!(two.get(name).unwrap().map(|e| e.version), max);
        }
    }
}

#[test]
fn apply_reports_what_it_applied() {
    let dir = tempfile::tempdir().unwrap();
    let index = NameIndex::open(dir.path(), &keys(1)).unwrap();
    assert_eq!(index.apply(&[entry("f", 5, 1, false)]).unwrap(), [true]);
    let batch = [
        entry("f", 4, 9, false), // older
        entry("f", 5, 1, false), // equal: not newer
        entry("f", 5, 2, false), // same time, higher node
        entry("g", 1, 1, false), // new name
        entry("f", 5, 2, true),  // equal to the one just applied
    ];
    assert_eq!(
        index.apply(&batch).unwrap(),
        [false, false, true, true, false]
    );
    assert_eq!(index.get("f").unwrap(), Some(entry("f", 5, 2, false)));
    assert_eq!(index.apply(&[]).unwrap(), Vec::<bool>::new());
    assert_eq!(index.get("never").unwrap(), None);
}

#[test]
fn withdraw_removes_only_the_version_it_names() {
    let dir = tempfile::tempdir().unwrap();
    let index = NameIndex::open(dir.path(), &keys(1)).unwrap();
    index.apply(&[entry("f", 5, 1, false)]).unwrap();
    // Another version of the name stays.
    assert!(!index.withdraw(&entry("f", 4, 1, false)).unwrap());
    assert_eq!(index.get("f").unwrap(), Some(entry("f", 5, 1, false)));
    assert!(index.withdraw(&entry("f", 5, 1, false)).unwrap());
    assert_eq!(index.get("f").unwrap(), None);
    assert!(!index.withdraw(&entry("f", 5, 1, false)).unwrap());
    // An older version is taken again once the withdrawn one is gone.
    assert_eq!(index.apply(&[entry("f", 3, 2, false)]).unwrap(), [true]);
}

/// A damaged index file never panics its opener: whatever the damage, the
/// error says the index is damaged and what to do about it.
#[test]
fn a_damaged_index_file_is_an_error_that_says_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let index = NameIndex::open(dir.path(), &keys(1)).unwrap();
    let many: Vec<NameEntry> = (0..200)
        .map(|i| entry(&format!("name {i}"), i + 1, 1, false))
        .collect();
    index.apply(&many).unwrap();
    drop(index);
    let path = dir.path().join("index.redb");
    let good = std::fs::read(&path).unwrap();
    let mut cuts = vec![512, 4096, good.len() / 2, good.len() - 1];
    cuts.retain(|&n| n < good.len());
    for cut in cuts {
        std::fs::write(&path, &good[..cut]).unwrap();
        let e = NameIndex::open(dir.path(), &keys(1))
            .err()
            .unwrap_or_else(|| panic!("a cut at {cut} bytes opened"))
            .to_string();
        assert!(
            e.contains("damaged") && e.contains("move it aside"),
            "cut at {cut}: {e}"
        );
    }
    // Garbage where the file was: redb's own error, with the same advice.
    std::fs::write(&path, vec![0xab; good.len()]).unwrap();
    let e = NameIndex::open(dir.path(), &keys(1))
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("move it aside"), "{e}");
}

#[test]
fn tombstones_and_purge() {
    let dir = tempfile::tempdir().unwrap();
    let index = NameIndex::open(dir.path(), &keys(1)).unwrap();
    index
        .apply(&[
            entry("old", 1, 1, false),
            entry("new", 1, 1, false),
            entry("live", 1, 1, false),
        ])
        .unwrap();
    index
        .apply(&[entry("old", 10, 1, true), entry("new", 50, 1, true)])
        .unwrap();
    let dead = index.get("old").unwrap().unwrap();
    assert!(dead.deleted);
    // A write older than the tombstone does not bring the file back.
    assert_eq!(index.apply(&[entry("old", 9, 7, false)]).unwrap(), [false]);
    assert_eq!(index.entries().unwrap().len(), 3, "tombstones are listed");

    assert_eq!(
        index.purge_tombstones(10).unwrap(),
        0,
        "time 10 is not older than 10"
    );
    assert_eq!(index.purge_tombstones(11).unwrap(), 1);
    assert_eq!(index.get("old").unwrap(), None);
    assert!(index.get("new").unwrap().unwrap().deleted);
    assert!(!index.get("live").unwrap().unwrap().deleted);
    assert_eq!(index.purge_tombstones(u64::MAX).unwrap(), 1);
    assert_eq!(index.entries().unwrap(), [entry("live", 1, 1, false)]);
}

#[test]
fn versions_are_sorted_by_hash() {
    let dir = tempfile::tempdir().unwrap();
    let index = NameIndex::open(dir.path(), &keys(1)).unwrap();
    let entries: Vec<NameEntry> = (0..50)
        .map(|i| entry(&format!("file-{i}"), i, 1, false))
        .collect();
    index.apply(&entries).unwrap();
    let versions = index.versions().unwrap();
    assert_eq!(versions.len(), 50);
    assert!(versions.windows(2).all(|w| w[0].0 < w[1].0));
    for (hash, version) in versions {
        assert_eq!(index.get_by_hash(&hash).unwrap().unwrap().version, version);
    }
}

#[test]
fn meta_round_trip_and_reopen_keeps_everything() {
    let dir = tempfile::tempdir().unwrap();
    let index = NameIndex::open(dir.path(), &keys(1)).unwrap();
    assert_eq!(index.get_meta("identity").unwrap(), None);
    index.set_meta("identity", b"node key bytes").unwrap();
    index.set_meta("clock", &42u64.to_be_bytes()).unwrap();
    index.set_meta("clock", &43u64.to_be_bytes()).unwrap();
    index.set_meta("", b"").unwrap();
    index.apply(&[entry("kept", 3, 3, false)]).unwrap();
    drop(index);

    let index = NameIndex::open(dir.path(), &keys(1)).unwrap();
    assert_eq!(
        index.get_meta("identity").unwrap().unwrap(),
        b"node key bytes"
    );
    assert_eq!(
        index.get_meta("clock").unwrap().unwrap(),
        43u64.to_be_bytes()
    );
    assert_eq!(index.get_meta("").unwrap().unwrap(), b"");
    assert_eq!(index.get("kept").unwrap(), Some(entry("kept", 3, 3, false)));
}

#[test]
fn odd_names_do_not_panic() {
    let dir = tempfile::tempdir().unwrap();
    let index = NameIndex::open(dir.path(), &keys(1)).unwrap();
    let long = "x".repeat(100_000);
    for name in ["", "\0", "../../etc/passwd", "名前/ファイル", &long] {
        assert_eq!(index.apply(&[entry(name, 1, 1, false)]).unwrap(), [true]);
        assert_eq!(index.get(name).unwrap().unwrap().name, name);
    }
}

#[test]
fn wrong_secret_is_refused_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let index = NameIndex::open(dir.path(), &keys(1)).unwrap();
    index.apply(&[entry("f", 1, 1, false)]).unwrap();
    index.set_meta("identity", b"k").unwrap();
    drop(index);
    let err = NameIndex::open(dir.path(), &keys(2)).unwrap_err();
    assert!(
        matches!(err, StoreError::Index(IndexError::WrongSecret { .. })),
        "{err:?}"
    );
    let msg = err.to_string();
    assert!(msg.contains("another cluster secret"), "{msg}");
    assert!(msg.contains("index.redb"), "{msg}");
    // The right secret still works: nothing was changed by the failed open.
    let index = NameIndex::open(dir.path(), &keys(1)).unwrap();
    assert_eq!(index.get("f").unwrap(), Some(entry("f", 1, 1, false)));
}

#[test]
fn a_second_open_of_one_index_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let _index = NameIndex::open(dir.path(), &keys(1)).unwrap();
    let err = NameIndex::open(dir.path(), &keys(1)).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, StoreError::Database { .. }), "{msg}");
    assert!(msg.contains("another drift node"), "{msg}");
}

#[test]
fn a_damaged_record_is_corrupt_not_garbage() {
    let dir = tempfile::tempdir().unwrap();
    let index = NameIndex::open(dir.path(), &keys(1)).unwrap();
    index.apply(&[entry("good", 1, 1, false)]).unwrap();
    let hash_a = index.name_hash("sealed-elsewhere");
    let hash_b = index.name_hash("garbage");
    drop(index);

    // Plant records the index did not write: one sealed under another
    // cluster's keys, one that is not a sealed record at all.
    let foreign = keys(2).record.seal(&hash_a, b"anything").unwrap();
    let db = redb::Database::open(dir.path().join("index.redb")).unwrap();
    let table_def: redb::TableDefinition<&[u8], &[u8]> = redb::TableDefinition::new("entries");
    let txn = db.begin_write().unwrap();
    {
        let mut table = txn.open_table(table_def).unwrap();
        table.insert(&hash_a[..], &foreign[..]).unwrap();
        table.insert(&hash_b[..], &b"\x01garbage"[..]).unwrap();
    }
    txn.commit().unwrap();
    drop(db);

    let index = NameIndex::open(dir.path(), &keys(1)).unwrap();
    for name in ["sealed-elsewhere", "garbage"] {
        let err = index.get(name).unwrap_err();
        assert!(matches!(err, IndexError::Corrupt { .. }), "{err:?}");
        assert!(err.to_string().contains("cannot be read"), "{err}");
    }
    assert!(matches!(index.entries(), Err(IndexError::Corrupt { .. })));
    assert!(index.get("good").unwrap().is_some());
    // A fresh write repairs the slot.
    assert_eq!(
        index.apply(&[entry("garbage", 1, 1, false)]).unwrap(),
        [true]
    );
    assert_eq!(
        index.get("garbage").unwrap(),
        Some(entry("garbage", 1, 1, false))
    );
}

/// A database file whose writes and flushes fail while `full` is set, as
/// on a full disk.
#[derive(Debug)]
struct FillableDisk {
    file: redb::backends::FileBackend,
    full: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl FillableDisk {
    fn check(&self) -> std::io::Result<()> {
        if self.full.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(std::io::Error::from_raw_os_error(28)); // ENOSPC
        }
        Ok(())
    }
}

impl redb::StorageBackend for FillableDisk {
    fn len(&self) -> std::io::Result<u64> {
        self.file.len()
    }
    fn read(&self, offset: u64, len: usize) -> std::io::Result<Vec<u8>> {
        self.file.read(offset, len)
    }
    fn set_len(&self, len: u64) -> std::io::Result<()> {
        self.check()?;
        self.file.set_len(len)
    }
    fn sync_data(&self, eventual: bool) -> std::io::Result<()> {
        self.check()?;
        self.file.sync_data(eventual)
    }
    fn write(&self, offset: u64, data: &[u8]) -> std::io::Result<()> {
        self.check()?;
        self.file.write(offset, data)
    }
}

/// Opens `path` as a [`FillableDisk`] filled while `full` is set: what
/// [`NameIndex::open_with`] calls to open, and to reopen, its database.
fn fillable_open(
    path: std::path::PathBuf,
    full: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> impl Fn() -> Result<redb::Database, redb::DatabaseError> + Send + Sync + 'static {
    move || {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)?;
        let disk = FillableDisk {
            file: redb::backends::FileBackend::new(file)?,
            full: full.clone(),
        };
        redb::Builder::new().create_with_backend(disk)
    }
}

#[test]
fn after_a_full_disk_the_index_works_again_once_space_is_freed() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    let dir = tempfile::tempdir().unwrap();
    let full = Arc::new(AtomicBool::new(false));
    let open_db = fillable_open(dir.path().join("index.redb"), full.clone());
    let index = NameIndex::open_with(dir.path(), &keys(1), open_db).unwrap();
    index.apply(&[entry("before", 1, 1, false)]).unwrap();

    full.store(true, Ordering::SeqCst);
    for (i, name) in ["while-full-1", "while-full-2"].iter().enumerate() {
        let err = index
            .apply(&[entry(name, 2 + i as u64, 1, false)])
            .unwrap_err();
        assert!(matches!(err, IndexError::Database(_)), "{err}");
    }
    // Space freed: the next write works, without reopening the index by hand.
    full.store(false, Ordering::SeqCst);
    index.apply(&[entry("after", 5, 1, false)]).unwrap();
    let names = entry_names(&index);
    assert!(names.contains(&"before".to_string()), "{names:?}");
    assert!(names.contains(&"after".to_string()), "{names:?}");
    assert!(
        !names.iter().any(|n| n.starts_with("while-full")),
        "{names:?}"
    );
}

/// redb asserts on some damage it meets while opening a file. When that
/// happens as the index reopens after an I/O error, the call gets an error
/// that says so (not a panic), and a later call tries the reopen again.
#[test]
fn damage_met_while_reopening_is_an_error_and_a_later_call_tries_again() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    let dir = tempfile::tempdir().unwrap();
    let full = Arc::new(AtomicBool::new(false));
    let damaged = Arc::new(AtomicBool::new(false));
    let open_db = {
        let (open, damaged) = (
            fillable_open(dir.path().join("index.redb"), full.clone()),
            damaged.clone(),
        );
        move || {
            assert!(
                !damaged.load(Ordering::SeqCst),
                "a stand-in for redb's assertions on a damaged file"
            );
            open()
        }
    };
    let index = NameIndex::open_with(dir.path(), &keys(1), open_db).unwrap();
    index.apply(&[entry("before", 1, 1, false)]).unwrap();

    // A write fails, and so does the reopen after it.
    full.store(true, Ordering::SeqCst);
    damaged.store(true, Ordering::SeqCst);
    index
        .apply(&[entry("while-full", 2, 1, false)])
        .unwrap_err();
    let err = index.apply(&[entry("still", 3, 1, false)]).unwrap_err();
    assert!(err.to_string().contains("stand-in for redb"), "{err}");
    assert!(index.entries().is_err());

    // Once the file opens again, so does the index.
    full.store(false, Ordering::SeqCst);
    damaged.store(false, Ordering::SeqCst);
    index.apply(&[entry("after", 4, 1, false)]).unwrap();
    let names = entry_names(&index);
    assert_eq!(names.len(), 2, "{names:?}");
}
