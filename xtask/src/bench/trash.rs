//! Files the bench is done with are set aside and deleted when it ends.
//!
//! On ext4 without a journal (the bench machine's root file system), creating
//! a file skips every inode freed in the last 5 s (35 s while its inode table
//! block is unwritten), and checking each costs a buffer-cache lookup.
//! Deleting one section's thousands of chunk files right before the next
//! section made that section's file creations 2–3× as costly: chunk puts
//! from 16 threads took 79 us of CPU each after 40 s without deletions, and
//! 153 and 208 us right after deleting 4,800 files. A node does not see
//! thousands of deletions between its writes, so the bench does not cause
//! them either.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Where set-aside files wait, under the bench's work directory.
fn trash(work: &Path) -> PathBuf {
    work.join("set-aside")
}

/// Moves `path` (a file or a directory) under `work`'s trash; deletes it
/// now only if that fails.
pub fn set_aside(work: &Path, path: &Path) {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let dir = trash(work);
    let dest = dir.join(NEXT.fetch_add(1, Ordering::Relaxed).to_string());
    let moved = std::fs::create_dir_all(&dir).and_then(|()| std::fs::rename(path, &dest));
    if moved.is_err() {
        let _ = std::fs::remove_dir_all(path).or_else(|_| std::fs::remove_file(path));
    }
}

/// Deletes what an interrupted bench left set aside now, and everything set
/// aside under `work` when dropped (at the end of the bench, or on an error).
pub struct EmptyOnDrop(PathBuf);

impl EmptyOnDrop {
    pub fn new(work: &Path) -> EmptyOnDrop {
        let _ = std::fs::remove_dir_all(trash(work));
        EmptyOnDrop(work.to_path_buf())
    }
}

impl Drop for EmptyOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(trash(&self.0));
    }
}
