//! Group commit: one thread owns the ledger's write side and applies queued requests
//! in batches, one store transaction and one durable commit per batch.
//!
//! Requests that arrive while a commit is being made to disk queue up and form the
//! next batch, so batches grow with load by themselves; `batch_wait_us` can add a
//! short wait for more. A request is answered only after the commit that holds it
//! returned, i.e. after it is durable. A store failure fails every request of its
//! batch (none of them was acknowledged, so nothing acknowledged is ever lost).

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use prometheus::Histogram;
use tokio::sync::{mpsc, oneshot};

use crate::ledger::{self, Reply, Write, keys};
use crate::store::{Store, StoreError, Transaction};

/// What a submitter gets back.
pub type Answer = Result<Reply, StoreError>;

/// Called with every request of a batch and its reply once the batch is durable, or
/// with `None` when the batch failed, before anyone is answered. The stock cache
/// settles order reservations here, so they settle even when the submitter is gone.
pub type OnCommit = Arc<dyn Fn(&Write, Option<&Reply>) + Send + Sync>;

struct Job {
    request: Write,
    answer: oneshot::Sender<Answer>,
}

/// The submitting side. Cheap to clone.
#[derive(Clone)]
pub struct Committer {
    queue: mpsc::Sender<Job>,
}

impl std::fmt::Debug for Committer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Committer")
            .field(
                "queued",
                &(self.queue.max_capacity() - self.queue.capacity()),
            )
            .finish()
    }
}

/// Why a request got no answer from the ledger.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SubmitError {
    /// The queue is full: the cell is overloaded; retry later.
    Overloaded,
    /// The committer is gone (shutting down).
    Closed,
}

#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// Times a batch that hit a write conflict is applied again from scratch.
    pub conflict_retries: u32,
    pub batch_max: usize,
    pub batch_wait: Duration,
    pub queue_capacity: usize,
}

/// The committer's metrics, children of the process's per-shard families.
#[derive(Debug, Clone)]
pub struct CommitMetrics {
    pub commit_seconds: Histogram,
    pub batch_size: Histogram,
}

/// The cell and epoch a committer writes as; every batch checks them first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fence {
    pub owner: String,
    pub epoch: u64,
}

/// Resolves once a committer's thread has finished its last batch and dropped its
/// store (for the embedded store, the moment the data directory is free again).
#[derive(Debug)]
pub struct Stopped(oneshot::Receiver<()>);

impl Stopped {
    pub async fn wait(self) {
        // An Err means the thread ended without a word, which is the same news.
        let _ = self.0.await;
    }
}

impl Committer {
    /// Starts the committer thread over `store`, writing as `fence`. It runs until
    /// every `Committer` clone is dropped, finishing the batch in hand.
    pub fn start<S: Store>(
        store: S,
        settings: Settings,
        metrics: CommitMetrics,
        fence: Fence,
        on_commit: OnCommit,
    ) -> Result<(Self, Stopped), StoreError> {
        let (queue, jobs) = mpsc::channel(settings.queue_capacity);
        let (stopped, on_stop) = oneshot::channel();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|err| StoreError::Internal(format!("committer runtime: {err}")))?;
        std::thread::Builder::new()
            .name("ldc-committer".to_owned())
            .spawn(move || {
                runtime.block_on(run(store, settings, metrics, fence, on_commit, jobs));
                drop(runtime);
                let _ = stopped.send(());
            })
            .map_err(|err| StoreError::Internal(format!("committer thread: {err}")))?;
        Ok((Self { queue }, Stopped(on_stop)))
    }

    /// Queues `request` and waits for its durable outcome.
    pub async fn submit(&self, request: impl Into<Write>) -> Result<Answer, SubmitError> {
        let request = request.into();
        let (answer, answered) = oneshot::channel();
        self.queue
            .try_send(Job { request, answer })
            .map_err(|err| match err {
                mpsc::error::TrySendError::Full(_) => SubmitError::Overloaded,
                mpsc::error::TrySendError::Closed(_) => SubmitError::Closed,
            })?;
        answered.await.map_err(|_| SubmitError::Closed)
    }
}

async fn run<S: Store>(
    store: S,
    settings: Settings,
    metrics: CommitMetrics,
    fence: Fence,
    on_commit: OnCommit,
    mut jobs: mpsc::Receiver<Job>,
) {
    let mut batch = Vec::with_capacity(settings.batch_max);
    while let Some(first) = jobs.recv().await {
        batch.push(first);
        while batch.len() < settings.batch_max {
            match jobs.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        if batch.len() < settings.batch_max && !settings.batch_wait.is_zero() {
            let deadline = tokio::time::Instant::now() + settings.batch_wait;
            while batch.len() < settings.batch_max {
                match tokio::time::timeout_at(deadline, jobs.recv()).await {
                    Ok(Some(job)) => batch.push(job),
                    _ => break,
                }
            }
        }
        let started = Instant::now();
        let size = batch.len();
        let answers =
            retry_conflicts(settings.conflict_retries, || commit(&store, &fence, &batch)).await;
        metrics
            .commit_seconds
            .observe(started.elapsed().as_secs_f64());
        metrics.batch_size.observe(size as f64);
        match answers {
            Ok(replies) => {
                for (job, reply) in batch.drain(..).zip(replies) {
                    on_commit(&job.request, Some(&reply));
                    // The submitter may have gone (client hung up); the write stands.
                    let _ = job.answer.send(Ok(reply));
                }
            }
            Err(err) => {
                tracing::error!(cause = %err, batch = size, "ledger commit failed");
                for job in batch.drain(..) {
                    on_commit(&job.request, None);
                    let _ = job.answer.send(Err(err.clone()));
                }
            }
        }
    }
}

/// Runs `attempt` until it does not fail with a write conflict, at most
/// `retries + 1` times. A conflicting commit changed nothing, so the batch can be
/// applied again from scratch; every other outcome is final.
pub async fn retry_conflicts<T, F>(
    retries: u32,
    mut attempt: impl FnMut() -> F,
) -> Result<T, StoreError>
where
    F: std::future::Future<Output = Result<T, StoreError>>,
{
    let mut left = retries;
    loop {
        match attempt().await {
            Err(StoreError::Conflict(cause)) if left > 0 => {
                left -= 1;
                tracing::warn!(%cause, retries_left = left, "write conflict; applying the batch again");
            }
            outcome => return outcome,
        }
    }
}

/// Applies and commits one batch, behind the fence; every reply or one error for all.
async fn commit<S: Store>(
    store: &S,
    fence: &Fence,
    batch: &[Job],
) -> Result<Vec<Reply>, StoreError> {
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let mut txn = store.begin().await?;
    let applied = async {
        let reads = std::iter::once(keys::owner())
            .chain(batch.iter().flat_map(|job| ledger::reads(&job.request)));
        txn.read_ahead(reads).await?;
        ledger::check_owner(&mut txn, &fence.owner, fence.epoch).await?;
        let mut replies = Vec::with_capacity(batch.len());
        for job in batch {
            replies.push(ledger::apply(&mut txn, &job.request, now_ms).await?);
        }
        Ok(replies)
    }
    .await;
    match applied {
        Ok(replies) => {
            txn.commit().await?;
            Ok(replies)
        }
        Err(err) => {
            if let Err(rollback) = txn.rollback().await {
                tracing::warn!(cause = %rollback, "rollback after a failed batch failed");
            }
            Err(err)
        }
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use super::*;

    /// An attempt that conflicts `conflicts` times, then returns `last`.
    async fn run(
        retries: u32,
        conflicts: u32,
        last: Result<u32, StoreError>,
    ) -> (Result<u32, StoreError>, u32) {
        let calls = Cell::new(0);
        let outcome = retry_conflicts(retries, || {
            calls.set(calls.get() + 1);
            let result = if calls.get() <= conflicts {
                Err(StoreError::Conflict("key".to_owned()))
            } else {
                last.clone()
            };
            async move { result }
        })
        .await;
        (outcome, calls.get())
    }

    #[tokio::test]
    async fn a_conflicting_batch_is_retried_until_it_commits() {
        assert_eq!(run(3, 2, Ok(7)).await, (Ok(7), 3));
        assert_eq!(run(3, 0, Ok(7)).await, (Ok(7), 1));
    }

    #[tokio::test]
    async fn conflicts_beyond_the_bound_fail_cleanly() {
        let (outcome, calls) = run(2, 10, Ok(7)).await;
        assert!(matches!(outcome, Err(StoreError::Conflict(_))));
        assert_eq!(calls, 3, "one attempt and two retries");
    }

    #[tokio::test]
    async fn other_failures_are_not_retried() {
        let undetermined = Err(StoreError::Undetermined("primary".to_owned()));
        assert_eq!(run(5, 0, undetermined.clone()).await, (undetermined, 1));
        let down = Err(StoreError::Unavailable("pd".to_owned()));
        assert_eq!(run(5, 1, down.clone()).await, (down, 2));
    }
}
