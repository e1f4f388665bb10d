//! drift-store's integration tests: the public API against real directories.

mod chunks;
mod index;
mod safety;

use std::path::{Path, PathBuf};

use drift_crypto::{ChunkId, ClusterSecret, Keys};

/// Keys from a fixed secret, so failures reproduce.
pub fn keys(byte: u8) -> Keys {
    ClusterSecret::from_bytes([byte; 32]).keys()
}

/// Seals `plain` and returns (id, sealed bytes).
pub fn sealed(plain: &[u8]) -> (ChunkId, Vec<u8>) {
    let mut buf = plain.to_vec();
    let r = keys(1).convergence.seal(&mut buf);
    (r.id, buf)
}

/// Every file (not directory) under `dir`, recursively.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for de in std::fs::read_dir(&d).unwrap() {
            let de = de.unwrap();
            if de.file_type().unwrap().is_dir() {
                todo.push(de.path());
            } else {
                out.push(de.path());
            }
        }
    }
    out
}

/// Files under `dir` whose name starts with the temp prefix.
pub fn temp_files(dir: &Path) -> Vec<PathBuf> {
    files_under(dir)
        .into_iter()
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with(".tmp-")
        })
        .collect()
}
