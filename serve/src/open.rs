//! The connections a listener has open: at most a bound of them, and when a new
//! one arrives at the bound, the one that has been quiet longest makes room.
//! Stalled clients in any number then cannot keep a router (whose connections
//! move bytes) from being let in.
//!
//! Reads and writes cost one counter increment, as for the HTTP/2 idle check
//! (`idle.rs`); a sweep every [`SWEEP`] notes which counters moved, so "quiet
//! since" is known to that grain.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

/// How often the counters are looked at.
const SWEEP: Duration = Duration::from_millis(500);

/// The open connections of one listener.
#[derive(Debug)]
pub(crate) struct Open {
    max: usize,
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    next: u64,
    conns: HashMap<u64, Entry>,
}

#[derive(Debug)]
struct Entry {
    moved: Arc<AtomicU64>,
    /// `moved` at the last sweep, and since when it has not changed.
    seen: u64,
    quiet_since: Instant,
    evict: Arc<Notify>,
}

/// A connection let in: its activity counter, the signal that it must close to
/// make room, and its place, given up when dropped.
#[derive(Debug)]
pub(crate) struct Admitted {
    id: u64,
    pub(crate) moved: Arc<AtomicU64>,
    pub(crate) evict: Arc<Notify>,
    open: Arc<Open>,
}

impl Open {
    /// A listener's table of at most `max` connections, swept while it lives.
    pub(crate) fn new(max: usize) -> Arc<Self> {
        let open = Arc::new(Self {
            max: max.max(1),
            inner: Mutex::default(),
        });
        tokio::spawn(sweep(Arc::downgrade(&open)));
        open
    }

    /// Lets a new connection in, first asking the quietest to close if the table is
    /// full.
    pub(crate) fn admit(self: &Arc<Self>) -> Admitted {
        let mut inner = self.lock();
        if inner.conns.len() >= self.max {
            let quietest = inner
                .conns
                .iter()
                .min_by_key(|(id, entry)| (entry.quiet_since, **id))
                .map(|(id, _)| *id);
            if let Some(entry) = quietest.and_then(|id| inner.conns.remove(&id)) {
                tracing::debug!(
                    quiet_ms = entry.quiet_since.elapsed().as_millis() as u64,
                    "connection limit reached: closing the connection quiet longest"
                );
                entry.evict.notify_one();
            }
        }
        let id = inner.next;
        inner.next += 1;
        let (moved, evict) = (Arc::<AtomicU64>::default(), Arc::new(Notify::new()));
        inner.conns.insert(
            id,
            Entry {
                moved: moved.clone(),
                seen: 0,
                quiet_since: Instant::now(),
                evict: evict.clone(),
            },
        );
        Admitted {
            id,
            moved,
            evict,
            open: self.clone(),
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().conns.len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // The table stays consistent whatever panicked while holding it.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        self.open.lock().conns.remove(&self.id);
    }
}

/// Notes, every [`SWEEP`], which connections moved bytes since the last time.
async fn sweep(open: Weak<Open>) {
    let mut ticks = tokio::time::interval(SWEEP);
    loop {
        ticks.tick().await;
        let Some(open) = open.upgrade() else {
            return;
        };
        let now = Instant::now();
        for entry in open.lock().conns.values_mut() {
            let moved = entry.moved.load(Ordering::Relaxed);
            if moved != entry.seen {
                entry.seen = moved;
                entry.quiet_since = now;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_full_table_closes_the_connection_quiet_longest() {
        let open = Open::new(3);
        let first = open.admit();
        let second = open.admit();
        let third = open.admit();
        // The first keeps moving bytes; the other two fall quiet.
        for _ in 0..4 {
            first.moved.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(SWEEP).await;
        }
        let _fourth = open.admit();
        assert_eq!(open.len(), 3);
        let evicted = |admitted: &Admitted| {
            let notified = admitted.evict.notified();
            tokio::pin!(notified);
            notified.as_mut().enable()
        };
        assert!(!evicted(&first), "the busy connection was closed");
        assert!(evicted(&second), "the quietest (and oldest of them) stays");
        assert!(!evicted(&third));
        drop(third);
        assert_eq!(open.len(), 2, "a closed connection gives its place back");
    }
}
