//! The bounds of realtime, from `[realtime]`: sockets per address and per
//! user, channels per socket, message size and rate, each socket's outgoing
//! queue, and how often a socket's sessions are checked again.
//!
//! Invariants: a socket counts against its address from its upgrade to its
//! end, and against a user from its first channel joined as that user to its
//! end, through guards that give the place back when dropped, however the
//! socket ends.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub struct Limits {
    pub connections_per_address: usize,
    pub connections_per_user: usize,
    pub channels_per_connection: usize,
    /// Largest frame a client may send.
    pub message_bytes: usize,
    /// Frames a client may send each second; more are refused.
    pub messages_per_second: u32,
    /// Frames waiting for a socket; a socket that falls this far behind is cut off.
    pub outbox_frames: usize,
    /// How often the sessions behind a socket's channels are checked again: a
    /// signed-out, banned or deleted user's channels close within this.
    pub session_check: Duration,
    /// A socket silent this long is closed (realtime-js beats every 25 s).
    pub silence: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            connections_per_address: 100,
            connections_per_user: 20,
            channels_per_connection: 100,
            message_bytes: 256 * 1024,
            messages_per_second: 100,
            outbox_frames: 1024,
            session_check: Duration::from_secs(30),
            silence: Duration::from_secs(60),
        }
    }
}

/// Who holds how many sockets, on this instance.
#[derive(Default)]
pub struct Admission {
    addresses: Counts<IpAddr>,
    users: Counts<String>,
}

impl Admission {
    /// A place for one more socket from `address`, if it has fewer than `most`.
    pub fn address(&self, address: IpAddr, most: usize) -> Option<Admitted> {
        self.addresses.take(address, most)
    }

    /// A place for one more socket of `user`, if it has fewer than `most`.
    pub fn user(&self, user: &str, most: usize) -> Option<Admitted> {
        self.users.take(user.to_owned(), most)
    }
}

struct Counts<K>(Arc<Mutex<HashMap<K, usize>>>);

impl<K> Default for Counts<K> {
    fn default() -> Self {
        Self(Arc::default())
    }
}

impl<K: Hash + Eq + Clone + Send + Sync + 'static> Counts<K> {
    fn take(&self, key: K, most: usize) -> Option<Admitted> {
        let mut counts = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let count = counts.entry(key.clone()).or_default();
        if *count >= most {
            return None;
        }
        *count += 1;
        let counts = self.0.clone();
        Some(Admitted(Some(Box::new(move || {
            let mut counts = counts
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if let Some(count) = counts.get_mut(&key) {
                *count -= 1;
                if *count == 0 {
                    counts.remove(&key);
                }
            }
        }))))
    }
}

/// One socket's place; dropping it gives the place back.
pub struct Admitted(Option<Box<dyn FnOnce() + Send + Sync>>);

impl Drop for Admitted {
    fn drop(&mut self) {
        if let Some(release) = self.0.take() {
            release();
        }
    }
}

/// Frames a client sent in the current second, against its allowance.
pub struct Rate {
    most: u32,
    second: Instant,
    used: u32,
}

impl Rate {
    pub fn new(most: u32) -> Self {
        Self {
            most,
            second: Instant::now(),
            used: 0,
        }
    }

    /// Whether one more frame fits in this second.
    pub fn allows(&mut self) -> bool {
        let now = Instant::now();
        if now.duration_since(self.second) >= Duration::from_secs(1) {
            self.second = now;
            self.used = 0;
        }
        self.used += 1;
        self.used <= self.most
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn places_are_counted_and_given_back() {
        let admission = Admission::default();
        let here = IpAddr::from([127, 0, 0, 1]);
        let first = admission.address(here, 2);
        let second = admission.address(here, 2);
        assert!(first.is_some() && second.is_some());
        assert!(admission.address(here, 2).is_none(), "the third is refused");
        assert!(admission.address(IpAddr::from([127, 0, 0, 2]), 2).is_some());
        drop(first);
        assert!(admission.address(here, 2).is_some(), "a place came back");
        let ada = admission.user("ada", 1);
        assert!(ada.is_some() && admission.user("ada", 1).is_none());
    }

    #[test]
    fn a_rate_allows_so_many_a_second() {
        let mut rate = Rate::new(3);
        assert_eq!((0..5).filter(|_| rate.allows()).count(), 3);
    }
}
