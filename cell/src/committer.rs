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
use crate::store::{Snapshot, Store, StoreError, Transaction};

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
        Ok(replies) => match txn.commit().await {
            Ok(()) => Ok(replies),
            Err(StoreError::Conflict(cause)) => Err(StoreError::Conflict(cause)),
            Err(lost) => resolve_outcome(store, batch, replies, lost).await,
        },
        Err(err) => {
            if let Err(rollback) = txn.rollback().await {
                tracing::warn!(cause = %rollback, "rollback after a failed batch failed");
            }
            Err(err)
        }
    }
}

/// A commit that failed other than by a conflict may still have been applied
/// (TiKV: the primary was committed and its reply lost). Every request of a user
/// batch has an outcome record after the batch commits (the batch writes the ones
/// it does not replay, in the same transaction), so the records decide: all there,
/// the batch committed and its replies stand; one missing, it did not, and the error
/// stands. The batch is never applied again blindly. A batch with stock writes has
/// no such witness and keeps the error, as does a failed read (`Undetermined`: the
/// client's retry with the same request id is answered from the record).
async fn resolve_outcome<S: Store>(
    store: &S,
    batch: &[Job],
    replies: Vec<Reply>,
    cause: StoreError,
) -> Result<Vec<Reply>, StoreError> {
    let outcome_keys: Vec<Vec<u8>> = batch
        .iter()
        .filter_map(|job| match &job.request {
            Write::User(request) => Some(keys::request(
                request.slot,
                &request.user,
                &request.request_id,
            )),
            Write::Stock(_) => None,
        })
        .collect();
    if outcome_keys.len() < batch.len() {
        return Err(cause);
    }
    let reported = cause.to_string();
    let undetermined = |read: StoreError| {
        StoreError::Undetermined(format!(
            "{reported}; reading the outcome back failed: {read}"
        ))
    };
    let mut snapshot = store.snapshot().await.map_err(undetermined)?;
    for key in &outcome_keys {
        if snapshot.get(key).await.map_err(undetermined)?.is_none() {
            tracing::warn!(%cause, batch = batch.len(), "ledger commit failed and was not applied");
            return Err(cause);
        }
    }
    tracing::warn!(%cause, batch = batch.len(), "ledger commit reported a failure but was applied; answering from it");
    Ok(replies)
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

    /// How [`Lossy`]'s commits fail.
    #[derive(Debug, Clone, Copy)]
    enum Loss {
        /// Applied, then reported as failed (a lost reply).
        Reply,
        /// Not applied, and reported as failed.
        Commit,
    }

    /// The embedded store with every commit failing as `loss` says.
    #[derive(Debug, Clone)]
    struct Lossy {
        inner: crate::store::EmbeddedStore,
        loss: Loss,
    }

    #[derive(Debug)]
    struct LossyTxn {
        inner: <crate::store::EmbeddedStore as Store>::Txn,
        loss: Loss,
    }

    impl Store for Lossy {
        type Txn = LossyTxn;
        type Snapshot = <crate::store::EmbeddedStore as Store>::Snapshot;

        async fn begin(&self) -> Result<LossyTxn, StoreError> {
            Ok(LossyTxn {
                inner: self.inner.begin().await?,
                loss: self.loss,
            })
        }

        async fn snapshot(&self) -> Result<Self::Snapshot, StoreError> {
            self.inner.snapshot().await
        }

        async fn clock_ms(&self) -> Result<u64, StoreError> {
            self.inner.clock_ms().await
        }
    }

    impl Transaction for LossyTxn {
        async fn get(&mut self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
            self.inner.get(key).await
        }

        async fn get_for_update(&mut self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
            self.inner.get_for_update(key).await
        }

        async fn put(&mut self, key: Vec<u8>, value: Vec<u8>) -> Result<(), StoreError> {
            self.inner.put(key, value).await
        }

        async fn delete(&mut self, key: Vec<u8>) -> Result<(), StoreError> {
            self.inner.delete(key).await
        }

        async fn scan(
            &mut self,
            range: std::ops::Range<Vec<u8>>,
            limit: usize,
            order: crate::store::ScanOrder,
        ) -> Result<crate::store::Pairs, StoreError> {
            self.inner.scan(range, limit, order).await
        }

        async fn commit(self) -> Result<(), StoreError> {
            match self.loss {
                Loss::Reply => self.inner.commit().await?,
                Loss::Commit => self.inner.rollback().await?,
            }
            Err(StoreError::Unavailable(
                "the commit reply was lost".to_owned(),
            ))
        }

        async fn rollback(self) -> Result<(), StoreError> {
            self.inner.rollback().await
        }
    }

    /// A committer over a fresh embedded store whose commits fail as `loss` says,
    /// and the store itself (commits that work) for checking.
    async fn lossy(dir: &std::path::Path, loss: Loss) -> (Committer, crate::store::EmbeddedStore) {
        let store = crate::store::EmbeddedStore::open(dir).expect("open");
        let mut txn = store.begin().await.expect("begin");
        let epoch = ledger::claim(&mut txn, "c1", 1).await.expect("claim");
        txn.commit().await.expect("commit");
        let histogram = |name: &str| {
            Histogram::with_opts(prometheus::HistogramOpts::new(name, name)).expect("histogram")
        };
        let settings = Settings {
            conflict_retries: 0,
            batch_max: 8,
            batch_wait: Duration::ZERO,
            queue_capacity: 8,
        };
        let metrics = CommitMetrics {
            commit_seconds: histogram("commit_seconds"),
            batch_size: histogram("batch_size"),
        };
        let fence = Fence {
            owner: "c1".to_owned(),
            epoch,
        };
        let lossy = Lossy {
            inner: store.clone(),
            loss,
        };
        let (committer, _stopped) =
            Committer::start(lossy, settings, metrics, fence, Arc::new(|_, _| {})).expect("start");
        (committer, store)
    }

    fn deposit(request_id: &str) -> ledger::Request {
        ledger::Request {
            user: "amy".to_owned(),
            slot: 7,
            request_id: request_id.to_owned(),
            command: ledger::Command::Deposit { amount: 500 },
        }
    }

    async fn balance(store: &crate::store::EmbeddedStore) -> i64 {
        let mut snapshot = store.snapshot().await.expect("snapshot");
        ledger::balance(&mut snapshot, 7, "amy")
            .await
            .expect("balance")
    }

    #[tokio::test]
    async fn a_commit_whose_reply_was_lost_is_answered_from_its_outcome_records() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (committer, store) = lossy(dir.path(), Loss::Reply).await;
        let reply = committer
            .submit(deposit("d1"))
            .await
            .expect("queued")
            .expect("the applied batch is confirmed, not failed");
        assert_eq!(reply.status, http::StatusCode::CREATED);
        assert!(reply.applied);
        let replay = committer
            .submit(deposit("d1"))
            .await
            .expect("queued")
            .expect("a replay");
        assert_eq!(replay.body, reply.body, "the replay answers the same");
        assert!(!replay.applied);
        assert_eq!(balance(&store).await, 500, "applied exactly once");
    }

    #[tokio::test]
    async fn a_commit_that_failed_unapplied_keeps_its_error() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (committer, store) = lossy(dir.path(), Loss::Commit).await;
        let failed = committer.submit(deposit("d1")).await.expect("queued");
        assert!(
            matches!(failed, Err(StoreError::Unavailable(_))),
            "{failed:?}"
        );
        assert_eq!(balance(&store).await, 0, "nothing was applied");
    }

    #[tokio::test]
    async fn other_failures_are_not_retried() {
        let undetermined = Err(StoreError::Undetermined("primary".to_owned()));
        assert_eq!(run(5, 0, undetermined.clone()).await, (undetermined, 1));
        let down = Err(StoreError::Unavailable("pd".to_owned()));
        assert_eq!(run(5, 1, down.clone()).await, (down, 2));
    }
}
