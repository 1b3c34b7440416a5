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
