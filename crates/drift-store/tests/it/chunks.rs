//! ChunkStore: round trips, idempotence, concurrency, crash leftovers, corruption, quota.

use std::collections::{BTreeSet, HashMap};
use std::fs;
use std::sync::{Arc, Barrier};
use std::thread;

use drift_crypto::ChunkId;
use drift_store::{ChunkStore, GetError, PutError, StoreOptions, StoreUsage};
use proptest::prelude::*;

use crate::{files_under, sealed, temp_files};

fn chunk_file(dir: &std::path::Path, id: &ChunkId) -> std::path::PathBuf {
    let hex = id.to_hex();
    dir.join("chunks")
        .join(&hex[0..2])
        .join(&hex[2..4])
        .join(&hex)
}

#[test]
fn put_get_round_trip_and_idempotent_put() {
    let dir = tempfile::tempdir().unwrap();
    let store = ChunkStore::open(dir.path()).unwrap();
    let (id, bytes) = sealed(b"some file content");
    assert!(store.put(&id, &bytes).unwrap());
    assert_eq!(store.get(&id).unwrap(), bytes);
    assert!(!store.put(&id, &bytes).unwrap(), "second put is a no-op");
    assert_eq!(store.get(&id).unwrap(), bytes);
    let usage = store.usage().unwrap();
    assert_eq!(
        usage,
        StoreUsage {
            chunks: 1,
            bytes: bytes.len() as u64
        }
    );
    assert_eq!(fs::read(chunk_file(dir.path(), &id)).unwrap(), bytes);

    let (empty_id, empty) = sealed(b"");
    assert!(store.put(&empty_id, &empty).unwrap());
    assert_eq!(store.get(&empty_id).unwrap(), Vec::<u8>::new());
}

#[test]
fn put_with_wrong_id_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = ChunkStore::open(dir.path()).unwrap();
    let (id, bytes) = sealed(b"the real bytes");
    let (_, other) = sealed(b"other bytes");
    let err = store.put(&id, &other).unwrap_err();
    assert!(
        matches!(err, PutError::IdMismatch { expected, .. } if expected == id),
        "{err}"
    );
    assert!(err.to_string().contains("nothing was written"));
    assert!(!store.has(&id));
    assert!(files_under(&dir.path().join("chunks")).is_empty());
    assert!(store.put(&id, &bytes).is_ok());

    let huge = vec![0u8; drift_crypto::MAX_CHUNK_SIZE + 1];
    let err = store.put(&ChunkId::of(&huge), &huge).unwrap_err();
    assert!(matches!(err, PutError::TooLarge { .. }), "{err}");
}

#[test]
fn concurrent_puts_of_one_chunk_leave_one_file() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(ChunkStore::open(dir.path()).unwrap());
    let (id, bytes) = sealed(&vec![7u8; 300_000]);
    let bytes = Arc::new(bytes);
    let barrier = Arc::new(Barrier::new(8));
    let handles: Vec<_> = (0..8)
        .map(|_| {
            let (store, bytes, barrier) = (store.clone(), bytes.clone(), barrier.clone());
            thread::spawn(move || {
                barrier.wait();
                store.put(&id, &bytes).unwrap()
            })
        })
        .collect();
    let created: Vec<bool> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    assert_eq!(created.iter().filter(|&&c| c).count(), 1, "{created:?}");
    assert_eq!(
        files_under(&dir.path().join("chunks")),
        vec![chunk_file(dir.path(), &id)]
    );
    assert_eq!(store.usage().unwrap().chunks, 1);
    assert_eq!(store.get(&id).unwrap(), *bytes);
}

#[test]
fn has_delete_ids_usage() {
    let dir = tempfile::tempdir().unwrap();
    let store = ChunkStore::open(dir.path()).unwrap();
    let chunks: Vec<_> = (0..20u8)
        .map(|i| sealed(&vec![i; 100 + i as usize]))
        .collect();
    for (id, bytes) in &chunks {
        store.put(id, bytes).unwrap();
    }
    let total: u64 = chunks.iter().map(|(_, b)| b.len() as u64).sum();
    assert_eq!(
        store.usage().unwrap(),
        StoreUsage {
            chunks: 20,
            bytes: total
        }
    );
    let listed: BTreeSet<ChunkId> = store.ids().map(Result::unwrap).collect();
    assert_eq!(listed, chunks.iter().map(|(id, _)| *id).collect());

    let (gone, gone_bytes) = &chunks[3];
    assert!(store.has(gone));
    assert!(store.delete(gone).unwrap());
    assert!(!store.has(gone));
    assert!(!store.delete(gone).unwrap(), "second delete finds nothing");
    assert!(matches!(store.get(gone), Err(GetError::NotFound { id }) if id == *gone));
    let after = store.usage().unwrap();
    assert_eq!(
        after,
        StoreUsage {
            chunks: 19,
            bytes: total - gone_bytes.len() as u64
        }
    );
    assert_eq!(store.ids().count(), 19);

    // Stray files do not show up as chunks and do not count after reopening.
    let (id0, _) = &chunks[0];
    let fan = chunk_file(dir.path(), id0).parent().unwrap().to_path_buf();
    fs::write(fan.join("notes.txt"), b"x").unwrap();
    fs::write(fan.join(id0.to_hex().to_uppercase()), b"x").unwrap();
    fs::write(dir.path().join("chunks/README"), b"x").unwrap();
    assert_eq!(store.ids().count(), 19);
    drop(store);
    let store = ChunkStore::open(dir.path()).unwrap();
    assert_eq!(store.usage().unwrap(), after, "usage is recounted at open");
}

/// A put returns once its bytes are durable under the temp file's name, before
/// the rename is: a crash that loses the rename leaves the chunk as a temp file
/// named by its id, which open renames into place. A temp file cut short is
/// removed.
#[test]
fn a_temp_file_holding_the_chunk_its_name_says_is_finished_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let store = ChunkStore::open(dir.path()).unwrap();
    let (id, bytes) = sealed(b"acknowledged");
    let (torn, torn_bytes) = sealed(b"cut short");
    store.put(&id, &bytes).unwrap();
    drop(store);
    let path = chunk_file(dir.path(), &id);
    let fan = path.parent().unwrap();
    fs::rename(&path, fan.join(format!(".tmp-{}-a1b2c3", id.to_hex()))).unwrap();
    let torn_fan = chunk_file(dir.path(), &torn)
        .parent()
        .unwrap()
        .to_path_buf();
    fs::create_dir_all(&torn_fan).unwrap();
    let half = &torn_bytes[..torn_bytes.len() / 2];
    fs::write(
        torn_fan.join(format!(".tmp-{}-d4e5f6", torn.to_hex())),
        half,
    )
    .unwrap();
    assert_eq!(temp_files(dir.path()).len(), 2);

    let store = ChunkStore::open(dir.path()).unwrap();
    assert!(temp_files(dir.path()).is_empty());
    assert_eq!(store.get(&id).unwrap(), bytes);
    assert!(!store.has(&torn));
    assert_eq!(store.usage().unwrap().chunks, 1);
    assert_eq!(store.finished_at_open(), 1);
}

#[test]
fn leftover_temp_files_are_removed_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let store = ChunkStore::open(dir.path()).unwrap();
    let (id, bytes) = sealed(b"kept");
    store.put(&id, &bytes).unwrap();
    drop(store);
    let fan = chunk_file(dir.path(), &id).parent().unwrap().to_path_buf();
    fs::write(fan.join(".tmp-crashed1"), b"half a chu").unwrap();
    fs::create_dir_all(dir.path().join("chunks/ff/ee")).unwrap();
    fs::write(dir.path().join("chunks/ff/ee/.tmp-crashed2"), b"").unwrap();
    fs::write(dir.path().join("chunks/.tmp-probe"), b"").unwrap();
    assert_eq!(temp_files(dir.path()).len(), 3);

    let store = ChunkStore::open(dir.path()).unwrap();
    assert!(temp_files(dir.path()).is_empty());
    assert_eq!(store.get(&id).unwrap(), bytes);
    assert_eq!(store.usage().unwrap().chunks, 1);
}

/// Something other than a file at a chunk's path (here a directory) is set
/// aside when read, and the usage the quota counts stays what is on disk.
#[test]
fn a_directory_at_a_chunks_path_does_not_skew_the_usage() {
    let dir = tempfile::tempdir().unwrap();
    let store = ChunkStore::open(dir.path()).unwrap();
    let (kept, kept_bytes) = sealed(&vec![1u8; 100_000]);
    store.put(&kept, &kept_bytes).unwrap();
    let (odd, _) = sealed(b"a directory stands here");
    fs::create_dir_all(chunk_file(dir.path(), &odd)).unwrap();
    for _ in 0..3 {
        assert!(store.get(&odd).is_err());
    }
    let usage = store.usage().unwrap();
    assert_eq!((usage.chunks, usage.bytes), (1, kept_bytes.len() as u64));
    drop(store);
    let usage = ChunkStore::open(dir.path()).unwrap().usage().unwrap();
    assert_eq!((usage.chunks, usage.bytes), (1, kept_bytes.len() as u64));
}

/// Chunks removed by hand while the store is open (the whole `chunks/`
/// directory) do not stop later puts.
#[test]
fn puts_work_after_the_chunks_directory_is_removed() {
    let dir = tempfile::tempdir().unwrap();
    let store = ChunkStore::open(dir.path()).unwrap();
    let (first, first_bytes) = sealed(b"before");
    store.put(&first, &first_bytes).unwrap();
    fs::remove_dir_all(dir.path().join("chunks")).unwrap();
    let (id, bytes) = sealed(b"after the chunks directory went");
    store.put(&id, &bytes).unwrap();
    assert_eq!(store.get(&id).unwrap(), bytes);
}

/// A FIFO at a chunk's path is set aside as corrupt when read, and the read
/// does not wait for a writer that never comes (scrub and every get of the
/// chunk used to hang on it).
#[test]
fn a_fifo_at_a_chunks_path_is_quarantined_without_blocking() {
    let dir = tempfile::tempdir().unwrap();
    let store = ChunkStore::open(dir.path()).unwrap();
    let (id, _) = sealed(b"a fifo stands here");
    let path = chunk_file(dir.path(), &id);
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    let made = std::process::Command::new("mkfifo").arg(&path).status();
    assert!(made.unwrap().success(), "mkfifo failed");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(store.get(&id).map(|_| ()));
    });
    let result = rx
        .recv_timeout(std::time::Duration::from_secs(20))
        .expect("reading a chunk path holding a FIFO blocked");
    assert!(
        matches!(result, Err(drift_store::GetError::Corrupt { .. })),
        "{result:?}"
    );
    assert!(!path.exists(), "the FIFO is still at the chunk's path");
}

/// A second store on a directory in use is refused before it touches
/// anything: the first store's writes in progress (temp files) stay, and the
/// directory opens again once the first store is gone.
#[test]
fn a_directory_in_use_is_refused_without_touching_its_writes() {
    let dir = tempfile::tempdir().unwrap();
    let store = ChunkStore::open(dir.path()).unwrap();
    let (id, bytes) = sealed(b"in use");
    store.put(&id, &bytes).unwrap();
    let fan = chunk_file(dir.path(), &id).parent().unwrap().to_path_buf();
    let in_progress = fan.join(".tmp-being-written");
    fs::write(&in_progress, b"half a chu").unwrap();

    let err = ChunkStore::open(dir.path()).unwrap_err();
    assert!(
        matches!(err, drift_store::StoreError::InUse { .. }),
        "{err}"
    );
    assert!(
        err.to_string()
            .contains("another drift node is using this data directory"),
        "{err}"
    );
    assert!(
        in_progress.exists(),
        "a refused open removed a write in progress"
    );
    assert_eq!(store.get(&id).unwrap(), bytes);

    drop(store);
    let store = ChunkStore::open(dir.path()).unwrap();
    assert!(!in_progress.exists());
    assert_eq!(store.get(&id).unwrap(), bytes);
}

#[test]
fn a_flipped_byte_is_detected_and_quarantined() {
    let dir = tempfile::tempdir().unwrap();
    let store = ChunkStore::open(dir.path()).unwrap();
    let (id, bytes) = sealed(&vec![3u8; 5000]);
    let (other, other_bytes) = sealed(b"untouched");
    store.put(&id, &bytes).unwrap();
    store.put(&other, &other_bytes).unwrap();
    let path = chunk_file(dir.path(), &id);
    let mut on_disk = fs::read(&path).unwrap();
    on_disk[1234] ^= 0x01;
    fs::write(&path, &on_disk).unwrap();

    assert!(matches!(store.get(&id), Err(GetError::Corrupt { id: c }) if c == id));
    assert!(!store.has(&id));
    assert!(matches!(store.get(&id), Err(GetError::NotFound { .. })));
    assert_eq!(store.quarantined(), 1);
    let quarantined = files_under(&dir.path().join("quarantine"));
    assert_eq!(quarantined.len(), 1);
    assert_eq!(
        fs::read(&quarantined[0]).unwrap(),
        on_disk,
        "evidence is kept"
    );
    assert_eq!(store.usage().unwrap().chunks, 1);
    assert_eq!(store.get(&other).unwrap(), other_bytes);
    assert_eq!(store.quarantined_ids().unwrap(), vec![id]);
    assert!(store.was_quarantined(&id));
    assert!(!store.was_quarantined(&other));

    // A good copy can be stored again; the count and the list survive a
    // reopen, and files in quarantine that are not chunks are not listed.
    assert!(store.put(&id, &bytes).unwrap());
    assert_eq!(store.get(&id).unwrap(), bytes);
    drop(store);
    assert_eq!(ChunkStore::open(dir.path()).unwrap().quarantined(), 1);
    fs::write(dir.path().join("quarantine").join("notes.txt"), b"x").unwrap();
    let store = ChunkStore::open(dir.path()).unwrap();
    assert_eq!(store.quarantined_ids().unwrap(), vec![id]);
    assert!(store.was_quarantined(&id) && !store.was_quarantined(&other));
    assert!(store.has(&id));
}

#[test]
fn put_replaces_a_truncated_file() {
    let dir = tempfile::tempdir().unwrap();
    let store = ChunkStore::open(dir.path()).unwrap();
    let (id, bytes) = sealed(&vec![9u8; 4096]);
    store.put(&id, &bytes).unwrap();
    fs::write(chunk_file(dir.path(), &id), &bytes[..100]).unwrap();
    assert!(
        store.put(&id, &bytes).unwrap(),
        "a short file is not the chunk"
    );
    assert_eq!(store.get(&id).unwrap(), bytes);
    assert_eq!(store.quarantined(), 1);
}

#[test]
fn put_replaces_a_file_of_the_right_length_whose_bytes_differ() {
    let dir = tempfile::tempdir().unwrap();
    let store = ChunkStore::open(dir.path()).unwrap();
    // Below and above the size written with direct I/O.
    for (n, len) in [(1u8, 4096usize), (2, 300_000)] {
        let (id, bytes) = sealed(&vec![n; len]);
        store.put(&id, &bytes).unwrap();
        // Rot, or a faulty peer's bytes, under the chunk's name.
        let mut bad = bytes.clone();
        bad[len / 2] ^= 0x40;
        fs::write(chunk_file(dir.path(), &id), &bad).unwrap();
        assert!(
            store.put(&id, &bytes).unwrap(),
            "a file of the right length with other bytes is not the chunk"
        );
        assert_eq!(store.get(&id).unwrap(), bytes);
        assert_eq!(store.quarantined(), u64::from(n));
        // The same bytes again are a dedup hit: nothing written.
        assert!(!store.put(&id, &bytes).unwrap());
        assert_eq!(store.quarantined(), u64::from(n));
    }
}

#[test]
fn quota_refuses_what_does_not_fit() {
    let dir = tempfile::tempdir().unwrap();
    let opts = StoreOptions {
        max_bytes: Some(1000),
        fsync: true,
    };
    let store = ChunkStore::open_with(dir.path(), opts).unwrap();
    let (a, a_bytes) = sealed(&[1u8; 600]);
    let (b, b_bytes) = sealed(&[2u8; 600]);
    store.put(&a, &a_bytes).unwrap();
    let err = store.put(&b, &b_bytes).unwrap_err();
    let msg = err.to_string();
    assert!(
        matches!(err, PutError::NoSpace { id, .. } if id == b),
        "{msg}"
    );
    assert!(
        msg.starts_with(&format!("disk full: no space left for chunk {b} in ")),
        "{msg}"
    );
    assert!(msg.contains("quota"), "{msg}");
    assert!(temp_files(dir.path()).is_empty());
    assert!(!store.has(&b));
    assert_eq!(store.get(&a).unwrap(), a_bytes);
    assert!(
        !store.put(&a, &a_bytes).unwrap(),
        "a stored chunk is still accepted when full"
    );
    store.delete(&a).unwrap();
    assert!(store.put(&b, &b_bytes).unwrap(), "deleting frees quota");
}

#[test]
fn concurrent_puts_never_overrun_the_quota() {
    let dir = tempfile::tempdir().unwrap();
    let opts = StoreOptions {
        max_bytes: Some(450),
        fsync: false,
    };
    let store = Arc::new(ChunkStore::open_with(dir.path(), opts).unwrap());
    let barrier = Arc::new(Barrier::new(8));
    let handles: Vec<_> = (0..8u8)
        .map(|i| {
            let (store, barrier) = (store.clone(), barrier.clone());
            thread::spawn(move || {
                let (id, bytes) = sealed(&[i; 100]);
                barrier.wait();
                store.put(&id, &bytes)
            })
        })
        .collect();
    let results: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    let ok = results.iter().filter(|r| r.is_ok()).count();
    let full = results
        .iter()
        .filter(|r| matches!(r, Err(PutError::NoSpace { .. })))
        .count();
    assert_eq!((ok, full), (4, 4));
    assert_eq!(
        store.usage().unwrap(),
        StoreUsage {
            chunks: 4,
            bytes: 400
        }
    );
    assert!(temp_files(dir.path()).is_empty());
}

#[derive(Debug, Clone)]
enum Op {
    Put(u8),
    Delete(u8),
}

fn arb_op() -> impl Strategy<Value = Op> {
    prop_oneof![(0u8..12).prop_map(Op::Put), (0u8..12).prop_map(Op::Delete)]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// Random puts and deletes agree with a map, through a reopen.
    #[test]
    fn store_matches_a_model(ops in proptest::collection::vec(arb_op(), 0..40)) {
        let dir = tempfile::tempdir().unwrap();
        let opts = StoreOptions { max_bytes: None, fsync: false };
        let store = ChunkStore::open_with(dir.path(), opts.clone()).unwrap();
        let mut model: HashMap<ChunkId, Vec<u8>> = HashMap::new();
        for op in ops {
            match op {
                Op::Put(k) => {
                    let (id, bytes) = sealed(&vec![k; 50 * k as usize]);
                    let created = store.put(&id, &bytes).unwrap();
                    prop_assert_eq!(created, model.insert(id, bytes).is_none());
                }
                Op::Delete(k) => {
                    let (id, _) = sealed(&vec![k; 50 * k as usize]);
                    prop_assert_eq!(store.delete(&id).unwrap(), model.remove(&id).is_some());
                }
            }
        }
        let store = { drop(store); ChunkStore::open_with(dir.path(), opts).unwrap() };
        let ids: BTreeSet<ChunkId> = store.ids().map(Result::unwrap).collect();
        prop_assert_eq!(&ids, &model.keys().copied().collect::<BTreeSet<_>>());
        let bytes: u64 = model.values().map(|b| b.len() as u64).sum();
        prop_assert_eq!(store.usage().unwrap(), StoreUsage { chunks: model.len() as u64, bytes });
        for (id, b) in &model {
            prop_assert_eq!(&store.get(id).unwrap(), b);
        }
    }
}

#[test]
fn put_id_checked_stores_and_a_wrong_id_is_caught_at_read() {
    let dir = tempfile::tempdir().unwrap();
    let store = ChunkStore::open(dir.path()).unwrap();
    let good = b"sealed bytes".to_vec();
    let id = ChunkId::of(&good);
    assert!(store.put_id_checked(&id, &good).unwrap());
    assert_eq!(store.get(&id).unwrap(), good);
    // A caller that breaks the contract gets a quarantined chunk, never wrong bytes.
    let liar = ChunkId::of(b"other bytes");
    assert!(store.put_id_checked(&liar, &good).unwrap());
    assert!(matches!(store.get(&liar), Err(GetError::Corrupt { .. })));
}

#[test]
fn get_unverified_leaves_the_check_to_the_caller_and_get_still_quarantines() {
    let dir = tempfile::tempdir().unwrap();
    let store = ChunkStore::open(dir.path()).unwrap();
    let (id, bytes) = sealed(&vec![9u8; 3000]);
    store.put(&id, &bytes).unwrap();
    assert_eq!(store.get_unverified(&id).unwrap(), bytes);

    let path = chunk_file(dir.path(), &id);
    let mut on_disk = bytes.clone();
    on_disk[100] ^= 0x80;
    fs::write(&path, &on_disk).unwrap();
    // The bytes as stored, for a caller that authenticates them itself...
    assert_eq!(store.get_unverified(&id).unwrap(), on_disk);
    assert_eq!(store.quarantined(), 0);
    // ...which reports a failed check through get: quarantined, then gone.
    assert!(matches!(store.get(&id), Err(GetError::Corrupt { .. })));
    assert!(matches!(
        store.get_unverified(&id),
        Err(GetError::NotFound { .. })
    ));

    // Size limits hold without the hash: an oversized file is never read in.
    let (big, big_bytes) = sealed(b"small");
    store.put(&big, &big_bytes).unwrap();
    fs::write(
        chunk_file(dir.path(), &big),
        vec![0u8; drift_crypto::MAX_CHUNK_SIZE + 1],
    )
    .unwrap();
    assert!(matches!(
        store.get_unverified(&big),
        Err(GetError::Corrupt { .. })
    ));
    assert_eq!(store.quarantined(), 2);
}

/// Large chunks go around the page cache (direct I/O) whether or not the
/// caller's buffer is aligned, and a change made through the page cache (a
/// write not yet on disk) is still what a read sees.
#[test]
fn large_chunks_round_trip_and_page_cache_changes_are_seen() {
    let dir = tempfile::tempdir().unwrap();
    let store = ChunkStore::open(dir.path()).unwrap();
    let plain: Vec<u8> = (0..(1 << 20) + 100).map(|i| (i % 253) as u8).collect();
    let (id, bytes) = sealed(&plain);
    let mut aligned = drift_store::aligned_buffer(bytes.len());
    aligned.extend_from_slice(&bytes);
    assert_eq!(aligned.as_ptr() as usize % drift_store::ALIGN, 0);
    assert!(store.put(&id, &aligned).unwrap());
    assert_eq!(store.get(&id).unwrap(), bytes);

    // The same from a buffer one byte off the alignment (written buffered).
    let (other, other_bytes) = sealed(&plain[1..]);
    let mut shifted = drift_store::aligned_buffer(other_bytes.len() + 1);
    shifted.extend_from_slice(&[0]);
    shifted.extend_from_slice(&other_bytes);
    assert!(store.put(&other, &shifted[1..]).unwrap());
    assert_eq!(store.get(&other).unwrap(), other_bytes);

    let path = chunk_file(dir.path(), &id);
    let mut on_disk = bytes.clone();
    on_disk[(1 << 20) + 50] ^= 0x10;
    fs::write(&path, &on_disk).unwrap();
    assert_eq!(store.get_unverified(&id).unwrap(), on_disk);
    assert!(matches!(store.get(&id), Err(GetError::Corrupt { .. })));
    assert_eq!(store.quarantined(), 1);
}

#[test]
fn read_buffers_handed_back_are_reused_for_reads_and_receives() {
    let dir = tempfile::tempdir().unwrap();
    let store = ChunkStore::open(dir.path()).unwrap();
    let (id, bytes) = sealed(&vec![5u8; 1 << 20]);
    store.put(&id, &bytes).unwrap();
    let first = store.get(&id).unwrap().freeze();
    let at = first.as_ptr();
    store.recycle(first);
    // The next read returns the right bytes, whatever memory it used.
    let again = store.get(&id).unwrap().freeze();
    assert_eq!(again, bytes);
    let reused = again.as_ptr() == at; // where direct I/O works
    // A receive buffer comes back empty, aligned and large enough: the
    // memory a read handed back, if it could be read into directly.
    store.recycle(again);
    let buf = store.receive_buffer(bytes.len());
    assert!(buf.is_empty() && buf.capacity() >= bytes.len());
    assert_eq!(buf.as_ptr() as usize % drift_store::ALIGN, 0);
    if reused {
        assert_eq!(buf.as_ptr(), at, "the spare is reused for a receive");
    }
    // Bytes still in use elsewhere are never handed out again.
    let shared = store.get(&id).unwrap().freeze();
    let keep = shared.clone();
    store.recycle(shared);
    assert_ne!(store.receive_buffer(bytes.len()).as_ptr(), keep.as_ptr());
    // Small chunks get their own small buffer.
    assert!(store.receive_buffer(4096).capacity() < 64 * 1024);
}
