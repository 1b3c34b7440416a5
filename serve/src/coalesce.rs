//! Write coalescing for multiplexed connections.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

/// Polls a connection only after every other task that was ready when it was
/// woken has run. On an HTTP/2 connection each request's task wakes the
/// connection to send its frames; polled at once, the connection would write each
/// request (or response) alone. Deferred, it sends what all of them queued in one
/// write. On HTTP/1.1, with one message at a time, it costs one extra poll.
#[derive(Debug)]
pub struct Coalesce<F> {
    inner: Pin<Box<F>>,
    yielded: bool,
}

impl<F> Coalesce<F> {
    pub fn new(inner: F) -> Self {
        Self {
            inner: Box::pin(inner),
            yielded: false,
        }
    }
}

impl<F: Future> Future for Coalesce<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        if !self.yielded {
            self.yielded = true;
            // A task that wakes itself goes to the back of the run queue.
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        self.yielded = false;
        self.inner.as_mut().poll(cx)
    }
}

#[cfg(test)]
mod tests {
    use tokio::sync::{mpsc, oneshot};

    use super::Coalesce;

    /// The order in which spawned tasks report, once all have.
    async fn order(mut reports: mpsc::UnboundedReceiver<&'static str>) -> Vec<&'static str> {
        let mut order = Vec::new();
        while let Some(report) = reports.recv().await {
            order.push(report);
        }
        order
    }

    #[tokio::test]
    async fn a_future_first_polled_runs_after_the_tasks_already_ready() {
        let (report, reports) = mpsc::unbounded_channel();
        let first = report.clone();
        tokio::spawn(async move { first.send("plain, spawned first") });
        let coalesced = report.clone();
        let output = tokio::spawn(Coalesce::new(async move {
            coalesced.send("coalesced, spawned second").map(|()| 7)
        }));
        tokio::spawn(async move { report.send("plain, spawned third") });
        assert_eq!(output.await.ok().and_then(Result::ok), Some(7));
        assert_eq!(
            order(reports).await,
            [
                "plain, spawned first",
                "plain, spawned third",
                "coalesced, spawned second"
            ]
        );
    }

    #[tokio::test]
    async fn every_wake_lets_the_tasks_woken_with_it_run_first() {
        let (report, reports) = mpsc::unbounded_channel();
        let (wake, woken) = oneshot::channel::<()>();
        let coalesced = report.clone();
        let waiting = tokio::spawn(Coalesce::new(async move {
            let _ = woken.await;
            let _ = coalesced.send("coalesced, woken first");
        }));
        // Parked on `woken` now.
        tokio::task::yield_now().await;
        let _ = wake.send(());
        let other = report;
        tokio::spawn(async move { other.send("other, spawned after the wake") });
        waiting.await.expect("the coalesced task ends");
        assert_eq!(
            order(reports).await,
            ["other, spawned after the wake", "coalesced, woken first"]
        );
    }
}
