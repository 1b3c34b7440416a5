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

#[cfg(test)]
mod tests {
    use std::cell::Cell;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::time::Duration;

    use tokio::sync::{oneshot, watch};
    use tokio::time::Instant;

    use super::serve_until_quiet;

    const IDLE: Duration = Duration::from_secs(10);
    const DRAIN: Duration = Duration::from_secs(3);
    const SECOND: Duration = Duration::from_secs(1);

    /// When a connection was asked to finish and when its serving ended, both
    /// counted from the start.
    #[derive(Debug, PartialEq, Eq)]
    struct Served {
        asked: Option<Duration>,
        ended: Duration,
        result: Result<(), &'static str>,
    }

    /// Serves a connection that ends `finishing` after it is asked to finish
    /// (never, when `None`), while `moved` counts its bytes.
    async fn serve(
        moved: &AtomicU64,
        closing: watch::Receiver<bool>,
        finishing: Option<Duration>,
    ) -> Served {
        let start = Instant::now();
        let (finish, finished) = oneshot::channel::<()>();
        let conn = async move {
            let _ = finished.await;
            match finishing {
                Some(after) => tokio::time::sleep(after).await,
                None => std::future::pending().await,
            }
            Ok(())
        };
        let asked = Cell::new(None);
        let result = serve_until_quiet(
            conn,
            |_| {
                asked.set(Some(start.elapsed()));
                let _ = finish.send(());
            },
            moved,
            IDLE,
            DRAIN,
            closing,
        )
        .await;
        Served {
            asked: asked.get(),
            ended: start.elapsed(),
            result,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_quiet_connection_is_asked_to_close_after_the_idle_timeout() {
        let (_listener, closing) = watch::channel(false);
        let served = serve(&AtomicU64::new(0), closing, Some(SECOND)).await;
        assert_eq!(
            served,
            Served {
                asked: Some(IDLE),
                ended: IDLE + SECOND,
                result: Ok(()),
            }
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_connection_moving_bytes_stays_open_until_quiet() {
        let (_listener, closing) = watch::channel(false);
        let moved = Arc::new(AtomicU64::new(0));
        let busy_for = Duration::from_secs(60);
        let ticker = tokio::spawn({
            let moved = moved.clone();
            async move {
                let start = Instant::now();
                while start.elapsed() < busy_for {
                    tokio::time::sleep(Duration::from_secs(4)).await;
                    moved.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
        let served = serve(&moved, closing, Some(Duration::ZERO)).await;
        let asked = served.asked.expect("asked to close once quiet");
        assert!(
            asked >= busy_for + IDLE && asked <= busy_for + 2 * IDLE,
            "asked {asked:?} after the start, quiet since {busy_for:?}"
        );
        ticker.await.expect("the ticker ends");
    }

    #[tokio::test(start_paused = true)]
    async fn a_stopping_listener_asks_at_once_and_a_gone_one_too() {
        let (listener, closing) = watch::channel(false);
        tokio::spawn(async move {
            tokio::time::sleep(2 * SECOND).await;
            listener.send_replace(true);
        });
        let served = serve(&AtomicU64::new(0), closing, Some(SECOND)).await;
        assert_eq!(served.asked, Some(2 * SECOND));
        assert_eq!(served.ended, 3 * SECOND);

        let (listener, closing) = watch::channel(false);
        tokio::spawn(async move {
            tokio::time::sleep(2 * SECOND).await;
            drop(listener);
        });
        let served = serve(&AtomicU64::new(0), closing, Some(SECOND)).await;
        assert_eq!(served.asked, Some(2 * SECOND));
    }

    #[tokio::test(start_paused = true)]
    async fn a_connection_still_open_at_the_drain_deadline_is_dropped() {
        let (_listener, closing) = watch::channel(true);
        let served = serve(&AtomicU64::new(0), closing, None).await;
        assert_eq!(
            served,
            Served {
                asked: Some(Duration::ZERO),
                ended: DRAIN,
                result: Ok(()),
            }
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_connection_that_ends_by_itself_keeps_its_outcome() {
        let (_listener, closing) = watch::channel(false);
        let start = Instant::now();
        let conn = async {
            tokio::time::sleep(IDLE * 5).await;
            Err("reset by peer")
        };
        // Bytes move, so the idle check never fires.
        let moved = Arc::new(AtomicU64::new(0));
        let ticker = tokio::spawn({
            let moved = moved.clone();
            async move {
                loop {
                    tokio::time::sleep(SECOND).await;
                    moved.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
        let served = serve_until_quiet(
            conn,
            |_| panic!("asked to finish"),
            &moved,
            IDLE,
            DRAIN,
            closing,
        )
        .await;
        ticker.abort();
        assert_eq!(served, Err("reset by peer"));
        assert_eq!(start.elapsed(), IDLE * 5);
    }
}
