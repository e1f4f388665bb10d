//! Files the bench is done with are set aside and deleted when it ends.
//!
//! On ext4 without a journal (the bench machine's root file system), creating
//! a file passes over every inode freed in roughly the last minute (longer
//! while its inode table block is unwritten), at a buffer-cache lookup each.
//! Measured on this machine (kernel 6.18), after deleting 20,000 empty files:
//! creating a file took 10 us of CPU in the same second, 250–300 us from
//! 10 s to 50 s later, 130 us at 70 s and 30 us at 100 s. Chunk puts from 16
//! threads took 79 us of CPU each after 40 s without deletions, and 153 and
//! 208 us right after deleting 4,800 files.
//!
//! A node does not see thousands of deletions between its writes, so the
//! bench does not cause them either: its clusters' files are kept until it
//! ends, and a run starts only once the last run's deletions are [`SETTLE`]
//! old. (The reference section deletes and rewrites its probe files: see
//! refs.rs for why.)

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// How long after a mass deletion file creation is back to its usual cost.
pub const SETTLE: Duration = Duration::from_secs(100);

/// Records when the bench last deleted what it set aside (Unix seconds).
fn deleted_at(work: &Path) -> PathBuf {
    work.join("deleted-at")
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

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
    /// Also waits, if needed, until the last deletion is [`SETTLE`] old.
    pub fn new(work: &Path) -> EmptyOnDrop {
        empty(work);
        let last = std::fs::read_to_string(deleted_at(work))
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok());
        let ago = Duration::from_secs(now_secs().saturating_sub(last.unwrap_or(0)));
        if let Some(wait) = SETTLE.checked_sub(ago).filter(|w| !w.is_zero()) {
            println!(
                "waiting {} s: files were deleted {} s ago, and for a while after a mass \
                 deletion ext4 makes every file creation slow (see xtask/src/bench/trash.rs)",
                wait.as_secs(),
                ago.as_secs()
            );
            std::thread::sleep(wait);
        }
        EmptyOnDrop(work.to_path_buf())
    }
}

/// Deletes what is set aside under `work`, noting when if there was any.
fn empty(work: &Path) {
    let dir = trash(work);
    if dir.exists() {
        let _ = std::fs::remove_dir_all(&dir);
        let _ = std::fs::write(deleted_at(work), now_secs().to_string());
    }
}

impl Drop for EmptyOnDrop {
    fn drop(&mut self) {
        empty(&self.0);
    }
}
