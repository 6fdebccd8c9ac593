//! Password hashing with Argon2id. Hashes run on the blocking pool behind a
//! semaphore, so a flood of sign-ins queues instead of starving other requests;
//! an unknown account is verified against a dummy hash so both cost the same.

use std::sync::Arc;

use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use argon2::{Algorithm, Argon2, Params, Version};
use tokio::sync::Semaphore;

use crate::AuthError;

/// OWASP's minimum for Argon2id: 19 MiB, 2 passes, 1 lane.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HashParams {
    pub memory_kib: u32,
    pub iterations: u32,
    pub parallelism: u32,
}

impl Default for HashParams {
    fn default() -> Self {
        Self {
            memory_kib: 19 * 1024,
            iterations: 2,
            parallelism: 1,
        }
    }
}

/// What verifying a password found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verified {
    pub matches: bool,
    /// The stored hash used other parameters than the current ones.
    pub needs_rehash: bool,
}

type Job = Box<dyn FnOnce() + Send>;

/// Runs hashes on a few dedicated threads. Each Argon2id call touches 19 MiB; on
/// the shared blocking pool, every thread's allocator arena would keep its own
/// copy, and peak memory would grow with the pool instead of with the permits.
#[derive(Clone)]
pub struct Hasher {
    params: Params,
    permits: Arc<Semaphore>,
    jobs: std::sync::mpsc::Sender<Job>,
    dummy: Arc<String>,
}

fn start_workers(count: usize) -> Result<std::sync::mpsc::Sender<Job>, AuthError> {
    let (sender, receiver) = std::sync::mpsc::channel::<Job>();
    let receiver = Arc::new(std::sync::Mutex::new(receiver));
    for index in 0..count {
        let receiver = receiver.clone();
        std::thread::Builder::new()
            .name(format!("gatehouse-hash-{index}"))
            .spawn(move || {
                loop {
                    // Ends when every Hasher (and so every sender) is gone.
                    let job = match receiver.lock() {
                        Ok(receiver) => receiver.recv(),
                        Err(_) => return,
                    };
                    match job {
                        Ok(job) => job(),
                        Err(_) => return,
                    }
                }
            })
            .map_err(|e| AuthError::Config(format!("cannot start the hashing threads: {e}")))?;
    }
    Ok(sender)
}

fn argon(params: Params) -> Argon2<'static> {
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

impl Hasher {
    pub fn new(params: HashParams, concurrent: usize) -> Result<Self, AuthError> {
        let params = Params::new(
            params.memory_kib,
            params.iterations,
            params.parallelism,
            None,
        )
        .map_err(|e| AuthError::Config(format!("argon2 parameters: {e}")))?;
        let dummy = argon(params.clone())
            .hash_password(b"gatehouse dummy password, never matched")
            .map_err(|e| AuthError::Config(e.to_string()))?
            .to_string();
        Ok(Self {
            params,
            permits: Arc::new(Semaphore::new(concurrent.max(1))),
            jobs: start_workers(concurrent.max(1))?,
            dummy: Arc::new(dummy),
        })
    }

    async fn blocking<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, AuthError> {
        // The job holds the permit until it has run, so even when callers give
        // up waiting, no more than `concurrent` hashes are queued or running.
        let permit = self
            .permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|e| AuthError::Internal(e.to_string()))?;
        let (done, result) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move || {
            let _ = done.send(work());
            drop(permit);
        });
        self.jobs
            .send(job)
            .map_err(|_| AuthError::Internal("the hashing threads stopped".into()))?;
        result
            .await
            .map_err(|_| AuthError::Internal("a hashing job was lost".into()))
    }

    pub async fn hash(&self, password: &str) -> Result<String, AuthError> {
        let params = self.params.clone();
        let password = password.as_bytes().to_vec();
        self.blocking(move || {
            argon(params)
                .hash_password(&password)
                .map(|h| h.to_string())
        })
        .await?
        .map_err(|e| AuthError::Internal(e.to_string()))
    }

    /// Checks `password` against `stored`, or against the dummy hash when there is
    /// no account, so that the answer takes as long either way.
    pub async fn verify(
        &self,
        password: &str,
        stored: Option<&str>,
    ) -> Result<Verified, AuthError> {
        let exists = stored.is_some();
        let stored = stored.map_or_else(|| self.dummy.as_str().to_owned(), str::to_owned);
        let params = self.params.clone();
        let password = password.as_bytes().to_vec();
        self.blocking(move || {
            let Ok(parsed) = PasswordHash::new(&stored) else {
                return Verified {
                    matches: false,
                    needs_rehash: false,
                };
            };
            let matches = argon(params.clone())
                .verify_password(&password, &parsed)
                .is_ok()
                && exists;
            let needs_rehash = Params::try_from(&parsed).map_or(true, |used| {
                used.m_cost() != params.m_cost()
                    || used.t_cost() != params.t_cost()
                    || used.p_cost() != params.p_cost()
            });
            Verified {
                matches,
                needs_rehash,
            }
        })
        .await
    }
}

/// The 10,000 most common passwords (see data/README.md).
const COMMON: &str = include_str!("../data/common-passwords.txt");

/// Why a new password is refused, as NIST SP 800-63B asks: too short, or (with
/// the `blocklist`) known to be common. No composition rules.
pub fn weakness(password: &str, min_length: usize, blocklist: bool) -> Option<&'static str> {
    if password.chars().count() < min_length {
        return Some("length");
    }
    let lowered = password.to_lowercase();
    if blocklist && COMMON.lines().any(|common| common == lowered) {
        return Some("pwned");
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fast() -> HashParams {
        HashParams {
            memory_kib: 1024,
            iterations: 1,
            parallelism: 1,
        }
    }

    #[tokio::test]
    async fn hashes_verify_and_report_stale_parameters() {
        let hasher = Hasher::new(fast(), 2).unwrap();
        let stored = hasher.hash("correct horse battery").await.unwrap();
        assert!(
            stored.starts_with("$argon2id$v=19$m=1024,t=1,p=1$"),
            "{stored}"
        );
        assert_ne!(
            stored,
            hasher.hash("correct horse battery").await.unwrap(),
            "unique salts"
        );
        let good = hasher
            .verify("correct horse battery", Some(&stored))
            .await
            .unwrap();
        assert_eq!(
            good,
            Verified {
                matches: true,
                needs_rehash: false
            }
        );
        assert!(!hasher.verify("wrong", Some(&stored)).await.unwrap().matches);
        assert!(
            !hasher.verify("anything", None).await.unwrap().matches,
            "the dummy never matches"
        );
        let stronger = Hasher::new(
            HashParams {
                iterations: 2,
                ..fast()
            },
            1,
        )
        .unwrap();
        let stale = stronger
            .verify("correct horse battery", Some(&stored))
            .await
            .unwrap();
        assert_eq!(
            stale,
            Verified {
                matches: true,
                needs_rehash: true
            }
        );
    }

    #[test]
    fn weak_passwords_are_named() {
        assert_eq!(weakness("short", 8, true), Some("length"));
        assert_eq!(weakness("password1", 8, true), Some("pwned"));
        assert_eq!(weakness("PASSWORD1", 8, true), Some("pwned"));
        assert_eq!(weakness("correct horse battery", 8, true), None);
        assert_eq!(weakness("password1", 8, false), None, "the list is off");
        assert_eq!(weakness("pass1", 6, false), Some("length"));
        assert_eq!(COMMON.lines().count(), 10_000);
    }
}
