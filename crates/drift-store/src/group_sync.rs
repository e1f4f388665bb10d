//! Durability barriers shared by concurrent writers: one `syncfs` makes every
//! write that finished before it started durable, so writers that reach a
//! barrier together pay for one flush between them.
//!
//! Why: a chunk `put` needs a barrier (its temp file's bytes and name before
//! the rename and the ack), and done with `fsync` per file and per directory
//! that is two or three cache flushes per chunk. On the bench machine (ext4
//! without a journal, where every fsync flushes on its own), 8 threads
//! putting 4 KiB files spent 94 us of CPU per file with fsyncs and 41 us with
//! the barriers shared (measured when a put also waited for a second barrier
//! after its rename); 1 MiB chunks spend most of their put waiting for
//! flushes.
//!
//! `syncfs` covers the whole file system, so other programs' unwritten data
//! on the same disk is flushed too: a barrier may wait for it. Where `syncfs`
//! does not exist or is refused, each barrier runs the caller's own fsync.

use std::fs::File;
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};

/// A barrier shared by everyone writing under one directory.
#[derive(Debug)]
pub(crate) struct GroupSync {
    /// Any open handle on the file system to flush.
    dir: File,
    state: Mutex<Rounds>,
    /// Where callers needing round `n` wait: `round_done[n % 2]`. Callers
    /// only ever need the running round or the next, so ending a round
    /// wakes exactly its own callers, plus one caller of the next to lead it.
    round_done: [Condvar; 2],
    /// Set once `syncfs` is refused; from then on each caller fsyncs alone.
    unsupported: AtomicBool,
    /// `syncfs`, or a stand-in in tests.
    flush: fn(&File) -> io::Result<()>,
}

#[derive(Debug, Default)]
struct Rounds {
    /// Rounds begun so far; round `n` is the `n`th `syncfs` call.
    started: u64,
    /// Rounds finished so far (the last started one may still run).
    finished: u64,
    /// The newest failed round and its error.
    failed: Option<(u64, io::ErrorKind, String)>,
}

impl GroupSync {
    pub(crate) fn new(dir: File) -> GroupSync {
        GroupSync {
            dir,
            state: Mutex::new(Rounds::default()),
            round_done: [Condvar::new(), Condvar::new()],
            unsupported: AtomicBool::new(false),
            flush: syncfs,
        }
    }

    /// Returns once everything written under the directory before this call
    /// is durable. `fsync_alone` is what makes the caller's own change durable
    /// without the shared flush; it runs only if `syncfs` cannot.
    pub(crate) fn barrier(&self, fsync_alone: impl FnOnce() -> io::Result<()>) -> io::Result<()> {
        if self.unsupported.load(Ordering::Relaxed) {
            return fsync_alone();
        }
        let mut rounds = self.lock();
        // A round already running may have started before our write ended:
        // only one that starts after now covers it.
        let needed = rounds.started + 1;
        loop {
            if rounds.finished >= needed {
                return match &rounds.failed {
                    Some((round, kind, msg)) if *round >= needed => {
                        Err(io::Error::new(*kind, msg.clone()))
                    }
                    _ => Ok(()),
                };
            }
            if rounds.started == rounds.finished {
                // None running: lead the next round.
                rounds.started += 1;
                let round = rounds.started;
                drop(rounds);
                let result = (self.flush)(&self.dir);
                rounds = self.lock();
                rounds.finished = round;
                if let Err(e) = &result {
                    if is_unsupported(e) {
                        self.unsupported.store(true, Ordering::Relaxed);
                        self.round_done.iter().for_each(Condvar::notify_all);
                        drop(rounds);
                        return fsync_alone();
                    }
                    rounds.failed = Some((round, e.kind(), e.to_string()));
                }
                // This round's callers return; one of the next's leads it.
                self.round_done[parity(round)].notify_all();
                self.round_done[parity(round + 1)].notify_one();
                continue;
            }
            rounds = self.round_done[parity(needed)]
                .wait(rounds)
                .unwrap_or_else(PoisonError::into_inner);
            if self.unsupported.load(Ordering::Relaxed) {
                drop(rounds);
                return fsync_alone();
            }
        }
    }

    /// Makes every later barrier run the caller's own fsync, as where
    /// `syncfs` is missing.
    #[cfg(test)]
    pub(crate) fn fall_back_to_fsync(&self) {
        self.unsupported.store(true, Ordering::Relaxed);
    }

    fn lock(&self) -> MutexGuard<'_, Rounds> {
        // Only counters live here; a panic elsewhere leaves them consistent.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

fn parity(round: u64) -> usize {
    (round % 2) as usize
}

#[cfg(any(target_os = "linux", target_os = "android"))]
fn syncfs(dir: &File) -> io::Result<()> {
    rustix::fs::syncfs(dir).map_err(io::Error::from)
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn syncfs(_: &File) -> io::Result<()> {
    Err(io::Error::from(io::ErrorKind::Unsupported))
}

/// Errors that mean "no `syncfs` here", not "the flush failed".
fn is_unsupported(e: &io::Error) -> bool {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    if let Some(code) = e.raw_os_error() {
        let errno = rustix::io::Errno::from_raw_os_error(code);
        return errno == rustix::io::Errno::NOSYS || errno == rustix::io::Errno::OPNOTSUPP;
    }
    e.kind() == io::ErrorKind::Unsupported
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, AtomicUsize};

    fn group(dir: &std::path::Path) -> GroupSync {
        GroupSync::new(File::open(dir).unwrap())
    }

    #[test]
    fn a_lone_caller_gets_its_own_round() {
        let dir = tempfile::tempdir().unwrap();
        let g = group(dir.path());
        for _ in 0..3 {
            g.barrier(|| panic!("syncfs works here")).unwrap();
        }
        let rounds = g.lock();
        assert_eq!((rounds.started, rounds.finished), (3, 3));
    }

    static STARTED: AtomicU64 = AtomicU64::new(0);
    static DONE: AtomicU64 = AtomicU64::new(0);

    /// A flush that counts its rounds and takes a moment, like a disk.
    fn counting_flush(_: &File) -> io::Result<()> {
        STARTED.fetch_add(1, Ordering::SeqCst);
        for _ in 0..100 {
            std::thread::yield_now();
        }
        DONE.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }

    #[test]
    fn every_caller_waits_for_a_round_that_started_after_it_came() {
        let dir = tempfile::tempdir().unwrap();
        let mut g = group(dir.path());
        g.flush = counting_flush;
        let g = Arc::new(g);
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let g = g.clone();
                std::thread::spawn(move || {
                    for _ in 0..50 {
                        let before = STARTED.load(Ordering::SeqCst);
                        g.barrier(|| panic!("the flush works")).unwrap();
                        // Rounds run one at a time: round `before + 1` began
                        // after this call, and it is done.
                        assert!(DONE.load(Ordering::SeqCst) > before);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let rounds = g.lock();
        assert_eq!(rounds.started, rounds.finished);
        assert_eq!(rounds.started, DONE.load(Ordering::SeqCst));
    }

    #[test]
    fn a_failed_round_fails_its_callers_and_not_later_ones() {
        let dir = tempfile::tempdir().unwrap();
        let mut g = group(dir.path());
        g.flush = |_| Err(io::Error::other("disk on fire"));
        let err = g.barrier(|| Ok(())).unwrap_err();
        assert!(err.to_string().contains("disk on fire"), "{err}");
        g.flush = |_| Ok(());
        g.barrier(|| Ok(())).unwrap();
    }

    #[test]
    fn a_refused_syncfs_falls_back_to_the_callers_fsync() {
        let dir = tempfile::tempdir().unwrap();
        let mut g = group(dir.path());
        g.flush = |_| Err(io::Error::from(io::ErrorKind::Unsupported));
        let ran = AtomicUsize::new(0);
        for _ in 0..2 {
            g.barrier(|| {
                ran.fetch_add(1, Ordering::Relaxed);
                Ok(())
            })
            .unwrap();
        }
        assert_eq!(ran.load(Ordering::Relaxed), 2);
        assert!(g.unsupported.load(Ordering::Relaxed));
    }
}
