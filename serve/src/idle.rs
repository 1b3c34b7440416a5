//! An HTTP/2 connection lives until its client closes it, the listener stops,
//! or it goes quiet (no bytes either way): HTTP/1.1 connections have the header
//! read timeout between requests, HTTP/2 ones have no such pause, so without this
//! a client that sent its preface and then nothing would hold one of the
//! listener's connections for good.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

/// Runs `conn` to its end. It is asked to `finish` (HTTP/2's GOAWAY: streams in
/// flight complete, no new ones are taken) when `closing` turns true or when
/// `moved` (bytes read or written) did not grow for `idle`. Its requests in
/// flight then get `drain` to finish, as at a stop; a connection still open
/// after that is dropped (a client that reads nothing cannot even be told to go).
///
/// Checked lazily, so that reads and writes cost one counter increment and no
/// timer: a quiet connection is asked to close between `idle` and twice `idle`
/// after its last bytes.
pub(crate) async fn serve_until_quiet<C, E>(
    conn: C,
    finish: impl FnOnce(Pin<&mut C>),
    moved: &AtomicU64,
    idle: Duration,
    drain: Duration,
    mut closing: watch::Receiver<bool>,
) -> Result<(), E>
where
    C: Future<Output = Result<(), E>>,
{
    tokio::pin!(conn);
    let mut last = moved.load(Ordering::Relaxed);
    let check = tokio::time::sleep(idle);
    tokio::pin!(check);
    loop {
        tokio::select! {
            biased;
            ended = conn.as_mut() => return ended,
            () = check.as_mut() => {
                let now = moved.load(Ordering::Relaxed);
                if now == last {
                    tracing::debug!(idle_ms = idle.as_millis() as u64, "closing a quiet HTTP/2 connection");
                    break;
                }
                last = now;
                check.as_mut().reset(Instant::now() + idle);
            }
            // Or the listener is gone, which means the same.
            _ = closing.wait_for(|closing| *closing) => break,
        }
    }
    finish(conn.as_mut());
    tokio::time::timeout(drain, conn).await.unwrap_or_else(|_| {
        tracing::debug!(
            drain_ms = drain.as_millis() as u64,
            "dropping an HTTP/2 connection still open at the drain deadline"
        );
        Ok(())
    })
}
