//! Verified tokens, remembered until their `exp` in a bounded map, so that a token's
//! signature is checked once and not on each of its requests.
//!
//! The map is split into shards, each behind its own mutex held only for a lookup or
//! an insert, so concurrent requests rarely wait on one another. A full shard first
//! drops its expired entries, then evicts by CLOCK (second chance): an entry hit since
//! the hand last passed stays, so users with requests in flight keep their entries
//! while tokens seen once go first.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::{Arc, Mutex, PoisonError};

use http::HeaderValue;

/// Shards of a cache (fewer for a cache of fewer entries): enough that two workers
/// seldom meet on one.
const SHARDS: usize = 16;

pub(crate) struct Cache {
    shards: Box<[Mutex<Shard>]>,
    hasher: RandomState,
}

impl std::fmt::Debug for Cache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cache")
            .field("shards", &self.shards.len())
            .finish_non_exhaustive()
    }
}

struct Shard {
    /// Token to its place in `entries`.
    index: HashMap<Arc<str>, usize>,
    entries: Vec<Entry>,
    capacity: usize,
    /// The CLOCK hand: the next entry eviction looks at.
    hand: usize,
    /// No entry expires before this, so a full shard with nothing expired is not
    /// scanned for expired entries on every insert.
    next_exp: u64,
}

struct Entry {
    token: Arc<str>,
    user_id: HeaderValue,
    exp: u64,
    /// Hit since the hand last passed.
    referenced: bool,
}

impl Cache {
    /// A cache that never holds more than `entries` tokens (at least 1).
    pub(crate) fn new(entries: usize) -> Self {
        let entries = entries.max(1);
        let shards = SHARDS.min(entries);
        let (each, left) = (entries / shards, entries % shards);
        Self {
            shards: (0..shards)
                .map(|i| Mutex::new(Shard::new(each + usize::from(i < left))))
                .collect(),
            hasher: RandomState::new(),
        }
    }

    /// The user id of `token` if it is here and `now` (Unix seconds) is before its `exp`.
    pub(crate) fn get(&self, token: &str, now: u64) -> Option<HeaderValue> {
        self.shard(token).get(token, now)
    }

    /// Remembers a verified token until `exp`; one already expired at `now` is not kept.
    pub(crate) fn insert(&self, token: &str, user_id: HeaderValue, exp: u64, now: u64) {
        if now < exp {
            self.shard(token).insert(token, user_id, exp, now);
        }
    }

    fn shard(&self, token: &str) -> std::sync::MutexGuard<'_, Shard> {
        let at = self.hasher.hash_one(token) as usize % self.shards.len();
        // A shard is consistent between any two statements that can panic, so one
        // whose holder panicked is still sound.
        self.shards[at]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| {
                s.lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .entries
                    .len()
            })
            .sum()
    }
}

impl Shard {
    fn new(capacity: usize) -> Self {
        Self {
            index: HashMap::with_capacity(capacity),
            entries: Vec::with_capacity(capacity),
            capacity,
            hand: 0,
            next_exp: u64::MAX,
        }
    }

    fn get(&mut self, token: &str, now: u64) -> Option<HeaderValue> {
        let at = *self.index.get(token)?;
        let entry = &mut self.entries[at];
        if now >= entry.exp {
            self.remove(at);
            return None;
        }
        entry.referenced = true;
        Some(entry.user_id.clone())
    }

    fn insert(&mut self, token: &str, user_id: HeaderValue, exp: u64, now: u64) {
        if self.index.contains_key(token) {
            // Verified twice, by requests that missed at once.
            return;
        }
        if self.entries.len() >= self.capacity && now >= self.next_exp {
            self.drop_expired(now);
        }
        if self.entries.len() >= self.capacity {
            self.evict();
        }
        let token: Arc<str> = Arc::from(token);
        self.index.insert(token.clone(), self.entries.len());
        self.entries.push(Entry {
            token,
            user_id,
            exp,
            referenced: false,
        });
        self.next_exp = self.next_exp.min(exp);
    }

    fn drop_expired(&mut self, now: u64) {
        let mut at = 0;
        while at < self.entries.len() {
            if now >= self.entries[at].exp {
                // Another entry moves into `at`: look at it next.
                self.remove(at);
            } else {
                at += 1;
            }
        }
        self.next_exp = self.entries.iter().map(|e| e.exp).min().unwrap_or(u64::MAX);
    }

    /// Removes the first entry at or after the hand not hit since the hand last
    /// passed, clearing the marks it passes: at most two turns.
    fn evict(&mut self) {
        loop {
            if self.hand >= self.entries.len() {
                self.hand = 0;
            }
            let Some(entry) = self.entries.get_mut(self.hand) else {
                return;
            };
            if entry.referenced {
                entry.referenced = false;
                self.hand += 1;
            } else {
                self.remove(self.hand);
                return;
            }
        }
    }

    fn remove(&mut self, at: usize) {
        let entry = self.entries.swap_remove(at);
        self.index.remove(&entry.token);
        if let Some(moved) = self.entries.get(at) {
            self.index.insert(moved.token.clone(), at);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(id: &'static str) -> HeaderValue {
        HeaderValue::from_static(id)
    }

    #[test]
    fn an_entry_is_served_until_its_exp_and_not_after() {
        let cache = Cache::new(4);
        cache.insert("t", user("alice"), 100, 10);
        assert_eq!(cache.get("t", 99), Some(user("alice")));
        assert_eq!(cache.get("t", 100), None);
        // Gone, not merely hidden.
        assert_eq!(cache.len(), 0);
        cache.insert("late", user("bob"), 100, 100);
        assert_eq!((cache.get("late", 50), cache.len()), (None, 0));
    }

    #[test]
    fn the_cache_never_holds_more_than_its_entries() {
        for entries in [1, 3, 16, 100] {
            let cache = Cache::new(entries);
            for i in 0..10 * entries {
                cache.insert(&format!("token-{i}"), user("u"), 1_000, 1);
                assert!(cache.len() <= entries, "{} > {entries}", cache.len());
            }
            // The newest token is always kept.
            let last = format!("token-{}", 10 * entries - 1);
            assert_eq!(cache.get(&last, 1), Some(user("u")));
        }
    }

    #[test]
    fn a_full_shard_drops_expired_entries_before_evicting_live_ones() {
        // One shard of two.
        let mut shard = Shard::new(2);
        shard.insert("expires", user("a"), 50, 1);
        shard.insert("lives", user("b"), 1_000, 1);
        shard.insert("new", user("c"), 1_000, 60);
        assert_eq!(shard.get("expires", 60), None);
        assert_eq!(shard.get("lives", 60), Some(user("b")));
        assert_eq!(shard.get("new", 60), Some(user("c")));
    }

    #[test]
    fn eviction_spares_entries_hit_since_the_hand_passed() {
        let mut shard = Shard::new(3);
        for token in ["a", "b", "c"] {
            shard.insert(token, user("u"), 1_000, 1);
        }
        assert!(shard.get("a", 1).is_some());
        assert!(shard.get("c", 1).is_some());
        shard.insert("d", user("u"), 1_000, 1);
        let kept: Vec<bool> = ["a", "b", "c", "d"]
            .iter()
            .map(|t| shard.get(t, 1).is_some())
            .collect();
        assert_eq!(kept, [true, false, true, true]);
    }
}
