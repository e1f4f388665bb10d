//! Confidentiality, dedup, path safety and clear errors for bad data directories.

use std::fs;
use std::path::Path;

use drift_crypto::ChunkId;
use drift_store::{ChunkStore, NameEntry, NameIndex, PutError, StoreError, StoreOptions, Version};

use crate::{files_under, keys, temp_files};

#[test]
fn identical_content_under_two_names_is_stored_once() {
    let dir = tempfile::tempdir().unwrap();
    let store = ChunkStore::open(dir.path()).unwrap();
    let index = NameIndex::open(dir.path(), &keys(1)).unwrap();
    let plain = vec![5u8; 10_000];
    let mut entries = Vec::new();
    for name in ["report.pdf", "copy of report.pdf"] {
        let mut buf = plain.clone();
        let r = keys(1).convergence.seal(&mut buf);
        store.put(&r.id, &buf).unwrap();
        entries.push(NameEntry {
            name: name.into(),
            version: Version { time: 1, node: 1 },
            deleted: false,
            size: plain.len() as u64,
            content: r.id.as_bytes().to_vec(),
        });
    }
    index.apply(&entries).unwrap();
    assert_eq!(entries[0].content, entries[1].content);
    assert_eq!(files_under(&dir.path().join("chunks")).len(), 1);
    assert_eq!(store.usage().unwrap().chunks, 1);
}

#[test]
fn no_name_and_no_plaintext_appears_on_disk() {
    let dir = tempfile::tempdir().unwrap();
    let name = "secret-plan-XYZ.txt";
    let manifest = b"MANIFEST-MARKER-1234".to_vec();
    let plain = b"PLAINTEXT-MARKER-5678 ".repeat(1000);
    {
        let store = ChunkStore::open(dir.path()).unwrap();
        let index = NameIndex::open(dir.path(), &keys(1)).unwrap();
        let mut buf = plain.clone();
        let r = keys(1).convergence.seal(&mut buf);
        store.put(&r.id, &buf).unwrap();
        let entry = |time, deleted| NameEntry {
            name: name.into(),
            version: Version { time, node: 1 },
            deleted,
            size: plain.len() as u64,
            content: manifest.clone(),
        };
        index.apply(&[entry(1, false)]).unwrap();
        index.apply(&[entry(2, true)]).unwrap();
        index.set_meta("identity", b"META-MARKER-9999").unwrap();
    }
    let files = files_under(dir.path());
    assert!(files.len() >= 2, "{files:?}");
    for file in files {
        let bytes = fs::read(&file).unwrap();
        for needle in [
            name.as_bytes(),
            &manifest,
            b"PLAINTEXT-MARKER",
            b"META-MARKER",
            b"secret-plan",
        ] {
            assert!(
                !bytes.windows(needle.len()).any(|w| w == needle),
                "{} contains {:?}",
                file.display(),
                String::from_utf8_lossy(needle)
            );
        }
    }
}

#[test]
fn ids_from_outside_cannot_name_paths() {
    for bad in [
        "../x",
        "../../../../../../etc/passwd",
        "..",
        "",
        "0123/../../..",
        &"a".repeat(41),
    ] {
        assert!(bad.parse::<ChunkId>().is_err(), "{bad:?}");
    }
    // Upper-case hex parses to the same id, which maps to the lower-case file.
    let id = ChunkId::of(b"x");
    assert_eq!(id.to_hex().to_uppercase().parse::<ChunkId>(), Ok(id));
}

#[test]
fn every_path_the_store_creates_stays_inside_the_data_dir() {
    let root = tempfile::tempdir().unwrap();
    let data = root.path().join("data");
    let store = ChunkStore::open(&data).unwrap();
    let index = NameIndex::open(&data, &keys(1)).unwrap();
    for i in 0..=255u8 {
        let bytes = vec![i; 10];
        let id = ChunkId::of(&bytes);
        store.put(&id, &bytes).unwrap();
    }
    index
        .apply(&[NameEntry {
            name: "../../../escape".into(),
            version: Version::default(),
            deleted: false,
            size: 0,
            content: vec![],
        }])
        .unwrap();
    let (id0, _) = {
        let b = vec![0u8; 10];
        (ChunkId::of(&b), b)
    };
    let hex = id0.to_hex();
    let path = data
        .join("chunks")
        .join(&hex[..2])
        .join(&hex[2..4])
        .join(&hex);
    fs::write(&path, b"corrupt").unwrap();
    assert!(store.get(&id0).is_err());

    let outside: Vec<_> = fs::read_dir(root.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(
        outside,
        ["data"],
        "nothing was created next to the data dir"
    );
    let data = data.canonicalize().unwrap();
    for file in files_under(&data) {
        let real = file.canonicalize().unwrap();
        assert!(real.starts_with(&data), "{}", real.display());
        let rel = real.strip_prefix(&data).unwrap();
        let top = rel
            .components()
            .next()
            .unwrap()
            .as_os_str()
            .to_str()
            .unwrap();
        assert!(
            ["chunks", "quarantine", "index.redb", "lock"].contains(&top),
            "{}",
            rel.display()
        );
    }
}

/// A data directory below a regular file: the error names the path and says
/// what is wrong, for both halves of the store.
#[test]
fn a_data_dir_that_cannot_be_created_is_a_clear_error() {
    let root = tempfile::tempdir().unwrap();
    let file = root.path().join("not-a-dir");
    fs::write(&file, b"").unwrap();
    let data = file.join("data");

    let err = ChunkStore::open(&data).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, StoreError::Io { .. }), "{msg}");
    assert!(msg.contains(&*data.to_string_lossy()), "{msg}");
    assert!(msg.contains("a parent of this path is a file"), "{msg}");

    let err = NameIndex::open(&data, &keys(1)).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains(&*data.to_string_lossy()) && msg.contains("not a directory"),
        "{msg}"
    );

    // The chunk directory itself replaced by a file.
    let data = root.path().join("data2");
    fs::create_dir_all(&data).unwrap();
    fs::write(data.join("chunks"), b"").unwrap();
    let msg = ChunkStore::open(&data).unwrap_err().to_string();
    assert!(msg.contains("chunks"), "{msg}");
}

/// A real ENOSPC from a tiny tmpfs. Mounting needs root and CAP_SYS_ADMIN, so
/// this runs only when DRIFT_TEST_MOUNT=1 (CI sets it where it can).
#[test]
fn a_full_disk_is_no_space_and_leaves_no_temp_file() {
    if std::env::var_os("DRIFT_TEST_MOUNT").is_none_or(|v| v != "1") {
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let mnt = root.path();
    let status = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=256k", "tmpfs"])
        .arg(mnt)
        .status()
        .unwrap();
    assert!(status.success(), "mount failed");
    let result = std::panic::catch_unwind(|| fill_and_check(mnt));
    let unmounted = std::process::Command::new("umount")
        .arg(mnt)
        .status()
        .unwrap();
    result.unwrap();
    assert!(unmounted.success());
}

fn fill_and_check(mnt: &Path) {
    let store = ChunkStore::open_with(mnt, StoreOptions::default()).unwrap();
    let mut kept = Vec::new();
    for i in 0..100u32 {
        let bytes: Vec<u8> = (0..60_000u32).map(|j| (i ^ j) as u8).collect();
        let id = ChunkId::of(&bytes);
        match store.put(&id, &bytes) {
            Ok(_) => kept.push((id, bytes)),
            Err(err @ PutError::NoSpace { .. }) => {
                let msg = err.to_string();
                assert!(
                    msg.starts_with("disk full: no space left for chunk"),
                    "{msg}"
                );
                assert!(msg.contains("file system is full"), "{msg}");
                assert!(temp_files(mnt).is_empty(), "temp file left behind");
                assert!(!store.has(&id));
                assert!(!kept.is_empty());
                for (id, bytes) in &kept {
                    assert_eq!(&store.get(id).unwrap(), bytes);
                }
                return;
            }
            Err(other) => panic!("expected NoSpace, got {other}"),
        }
    }
    panic!("a 256 KiB tmpfs never filled up");
}

/// The original deleted every file sharing a hash prefix; here a delete
/// removes exactly one chunk, even with a neighbour in the same directory.
#[test]
fn delete_removes_only_its_own_chunk() {
    let dir = tempfile::tempdir().unwrap();
    let store = ChunkStore::open(dir.path()).unwrap();
    let first = 0u32.to_le_bytes().to_vec();
    let first_id = ChunkId::of(&first);
    let twin = (1u32..)
        .map(|i| i.to_le_bytes().to_vec())
        .find(|b| ChunkId::of(b).as_bytes()[..2] == first_id.as_bytes()[..2])
        .unwrap();
    let twin_id = ChunkId::of(&twin);
    store.put(&first_id, &first).unwrap();
    store.put(&twin_id, &twin).unwrap();
    assert!(store.delete(&first_id).unwrap());
    assert_eq!(store.get(&twin_id).unwrap(), twin);
    assert_eq!(
        store.ids().map(Result::unwrap).collect::<Vec<_>>(),
        [twin_id]
    );
}
