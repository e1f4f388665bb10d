//! Storage writes from many tasks, done in batches by one blocking worker.
//!
//! The node has two: name-index entry lists, committed in one transaction
//! per batch, and chunks up to 64 KiB, written with one durability barrier
//! per batch (`ChunkStore::put_many_id_checked`).
//!
//! Why: every hand-off to the blocking pool wakes a thread and wakes the
//! runtime again when it is done, and concurrent commits then wait on each
//! other's group commit or barrier. On the bench machine (a VM where a
//! cross-CPU wakeup costs ~15 us of CPU) perf counted ~14 context switches
//! per small put on each node, a fifth of them around index commits. One
//! worker that takes every write queued while it was busy and does them
//! together needs one wakeup per batch, and the runtime threads, busy anyway
//! under load, pick the replies up as they pass.
//!
//! `cargo xtask bench --only small` (4 KiB puts, 16 clients, 3 nodes; each
//! figure one bench run's median of three 4 s runs): 1535, 1511 and 1536
//! puts/s with every write on the blocking pool; 1818, 1840 and 1776
//! with the index writer; 2051 and 1920 with the chunk writer too.

use std::panic::AssertUnwindSafe;
use std::sync::mpsc;
use std::sync::{Mutex, PoisonError};

use tokio::sync::oneshot;

/// The sending side: tasks queue work and await its result.
#[derive(Debug)]
pub(crate) struct Batcher<J, R> {
    /// `None` once closed.
    queue: Mutex<Option<mpsc::Sender<Job<J, R>>>>,
}

#[derive(Debug)]
struct Job<J, R> {
    work: J,
    /// The job's result, or why its batch failed as a whole.
    reply: oneshot::Sender<Result<R, String>>,
}

/// The receiving side, run on a blocking thread by [`Worker::serve`].
#[derive(Debug)]
pub(crate) struct Worker<J, R> {
    queue: mpsc::Receiver<Job<J, R>>,
    max_batch: usize,
}

/// Why queued work got no result.
pub(crate) const STOPPED: &str = "the node is shutting down";

impl<J: Send + 'static, R: Send + 'static> Batcher<J, R> {
    /// A batcher and the worker that serves it, with at most `max_batch`
    /// jobs per batch. The queue needs no bound of its own: each job is a
    /// task awaiting its result, and tasks are bounded by the connections.
    pub(crate) fn new(max_batch: usize) -> (Batcher<J, R>, Worker<J, R>) {
        let (tx, rx) = mpsc::channel();
        let batcher = Batcher {
            queue: Mutex::new(Some(tx)),
        };
        let worker = Worker {
            queue: rx,
            max_batch: max_batch.max(1),
        };
        (batcher, worker)
    }

    /// Queues `work` and waits for its result. Fails once the batcher is
    /// closed or its worker has stopped, and if the batch it joined panicked.
    pub(crate) async fn run(&self, work: J) -> Result<R, String> {
        let (reply, result) = oneshot::channel();
        {
            let queue = self.queue.lock().unwrap_or_else(PoisonError::into_inner);
            let sent = queue.as_ref().map(|q| q.send(Job { work, reply }));
            if !matches!(sent, Some(Ok(()))) {
                return Err(STOPPED.into());
            }
        }
        result.await.map_err(|_| STOPPED.to_string())?
    }

    /// Takes no more work; the worker finishes what is queued and returns.
    pub(crate) fn close(&self) {
        self.queue
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
    }
}

impl<J, R> Worker<J, R> {
    /// Blocks, handing `batch` everything queued (up to the batch limit)
    /// each time work arrives, until the batcher is closed and the queue is
    /// empty. `batch` returns one result per job, in order. A batch that
    /// panics fails its own jobs and no others, as a panic in one
    /// `spawn_blocking` call did: the worker goes on with the next batch.
    pub(crate) fn serve(self, mut batch: impl FnMut(Vec<J>) -> Vec<R>) {
        while let Ok(first) = self.queue.recv() {
            let mut jobs = vec![first];
            while jobs.len() < self.max_batch {
                match self.queue.try_recv() {
                    Ok(job) => jobs.push(job),
                    Err(_) => break,
                }
            }
            let (work, replies): (Vec<J>, Vec<_>) =
                jobs.into_iter().map(|j| (j.work, j.reply)).unzip();
            // A caller that gave up (its task was dropped) is not waiting.
            match std::panic::catch_unwind(AssertUnwindSafe(|| batch(work))) {
                Ok(results) => {
                    for (reply, result) in replies.into_iter().zip(results) {
                        let _ = reply.send(Ok(result));
                    }
                }
                Err(panic) => {
                    let why = panic
                        .downcast_ref::<&str>()
                        .map(|s| s.to_string())
                        .or_else(|| panic.downcast_ref::<String>().cloned())
                        .unwrap_or_else(|| "a panic".into());
                    for reply in replies {
                        let _ = reply.send(Err(format!("storage task failed: {why}")));
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_job_gets_its_own_result() {
        let (batcher, worker) = Batcher::<u32, u32>::new(8);
        let most = Arc::new(AtomicUsize::new(0));
        let seen = most.clone();
        let served = tokio::task::spawn_blocking(move || {
            worker.serve(|jobs| {
                seen.fetch_max(jobs.len(), Ordering::SeqCst);
                jobs.into_iter().map(|j| j * 2).collect()
            })
        });
        let batcher = Arc::new(batcher);
        let mut tasks = tokio::task::JoinSet::new();
        for t in 0..16u32 {
            let batcher = batcher.clone();
            tasks.spawn(async move {
                for i in 0..50u32 {
                    let job = t * 1000 + i;
                    assert_eq!(batcher.run(job).await.unwrap(), job * 2);
                }
            });
        }
        while let Some(done) = tasks.join_next().await {
            done.unwrap();
        }
        batcher.close();
        tokio::time::timeout(std::time::Duration::from_secs(10), served)
            .await
            .expect("the worker stops once closed")
            .unwrap();
        assert!(most.load(Ordering::SeqCst) <= 8, "a batch over the limit");
        assert_eq!(batcher.run(1).await.unwrap_err(), STOPPED);
    }

    #[tokio::test]
    async fn a_worker_that_stopped_fails_the_jobs_it_left() {
        let (batcher, worker) = Batcher::<u32, u32>::new(4);
        drop(worker);
        assert_eq!(batcher.run(7).await.unwrap_err(), STOPPED);
    }

    #[tokio::test]
    async fn a_panicking_batch_fails_its_jobs_and_the_worker_goes_on() {
        let (batcher, worker) = Batcher::<u32, u32>::new(4);
        let served = tokio::task::spawn_blocking(move || {
            worker.serve(|jobs| {
                assert!(jobs[0] != 13, "unlucky job");
                jobs
            })
        });
        let failed = batcher.run(13).await.unwrap_err();
        assert!(failed.contains("unlucky job"), "{failed}");
        assert_eq!(batcher.run(14).await.unwrap(), 14);
        batcher.close();
        tokio::time::timeout(std::time::Duration::from_secs(10), served)
            .await
            .expect("the worker stops once closed")
            .unwrap();
    }

    #[tokio::test]
    async fn a_short_answer_fails_only_the_unanswered_jobs() {
        let (batcher, worker) = Batcher::<u32, u32>::new(4);
        // Both jobs are queued by their first poll, before the worker runs,
        // so they form one batch.
        let a = batcher.run(1);
        let b = batcher.run(2);
        tokio::pin!(a, b);
        assert!(futures_util::poll!(&mut a).is_pending());
        assert!(futures_util::poll!(&mut b).is_pending());
        batcher.close();
        tokio::task::spawn_blocking(move || worker.serve(|jobs| vec![jobs[0] + 10]))
            .await
            .unwrap();
        assert_eq!(a.await.unwrap(), 11);
        assert_eq!(b.await.unwrap_err(), STOPPED);
    }
}
