//! Sessions this instance has recently found live, so a burst of data requests with
//! one access token costs one session lookup rather than one each.
//!
//! A revocation made through this instance (sign-out, refresh-token reuse, a ban,
//! a deleted user) forgets every remembered answer at once; one made through
//! another instance is seen here within `ttl`. A `ttl` of zero checks every time.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

pub(crate) struct LiveSessions {
    ttl: Duration,
    /// Bumped by every revocation; an answer from an older generation is stale.
    generation: AtomicU64,
    checked: quick_cache::sync::Cache<String, Checked>,
}

#[derive(Clone)]
struct Checked {
    user_id: String,
    at: Instant,
    generation: u64,
}

impl LiveSessions {
    pub(crate) fn new(ttl: Duration, capacity: usize) -> Self {
        Self {
            ttl,
            generation: AtomicU64::new(0),
            checked: quick_cache::sync::Cache::new(capacity.max(1)),
        }
    }

    /// Whether `session_id` was found live for `user_id` recently enough to trust.
    pub(crate) fn recently_live(&self, session_id: &str, user_id: &str) -> bool {
        self.checked.get(session_id).is_some_and(|checked| {
            checked.user_id == user_id
                && checked.generation == self.generation.load(Ordering::Acquire)
                && checked.at.elapsed() < self.ttl
        })
    }

    /// Records a lookup that found the session live. `generation` is the value of
    /// [`LiveSessions::generation`] read before the lookup began, so a revocation
    /// racing the lookup leaves the answer stale rather than trusted.
    pub(crate) fn found_live(&self, session_id: &str, user_id: &str, generation: u64) {
        if self.ttl.is_zero() {
            return;
        }
        self.checked.insert(
            session_id.to_owned(),
            Checked {
                user_id: user_id.to_owned(),
                at: Instant::now(),
                generation,
            },
        );
    }

    pub(crate) fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Something that ends sessions happened: trust no remembered answer.
    pub(crate) fn revoked(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_answer_is_trusted_for_its_ttl_only() {
        let live = LiveSessions::new(Duration::from_millis(50), 8);
        assert!(!live.recently_live("s1", "u1"));
        live.found_live("s1", "u1", live.generation());
        assert!(live.recently_live("s1", "u1"));
        assert!(!live.recently_live("s1", "someone else"));
        std::thread::sleep(Duration::from_millis(60));
        assert!(!live.recently_live("s1", "u1"));
    }

    #[test]
    fn a_revocation_forgets_every_answer() {
        let live = LiveSessions::new(Duration::from_secs(60), 8);
        live.found_live("s1", "u1", live.generation());
        live.revoked();
        assert!(!live.recently_live("s1", "u1"));
    }

    #[test]
    fn a_lookup_that_raced_a_revocation_is_not_trusted() {
        let live = LiveSessions::new(Duration::from_secs(60), 8);
        let before = live.generation();
        live.revoked();
        live.found_live("s1", "u1", before);
        assert!(!live.recently_live("s1", "u1"));
    }

    #[test]
    fn zero_ttl_checks_every_time() {
        let live = LiveSessions::new(Duration::ZERO, 8);
        live.found_live("s1", "u1", live.generation());
        assert!(!live.recently_live("s1", "u1"));
    }
}
