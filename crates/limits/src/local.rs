//! Limits held in this process, one governor keyed limiter per policy.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::{Arc, RwLock};

use governor::clock::{Clock, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::state::keyed::DefaultKeyedStateStore;
use governor::{Quota, RateLimiter};

use crate::{Decision, LimitError, Policy};

type Keyed =
    RateLimiter<String, DefaultKeyedStateStore<String>, DefaultClock, StateInformationMiddleware>;

pub(crate) struct Local {
    limiters: RwLock<HashMap<Policy, Arc<Keyed>>>,
}

fn quota(policy: &Policy) -> Result<Quota, LimitError> {
    let burst = NonZeroU32::new(policy.limit)
        .ok_or_else(|| LimitError::Policy(format!("{}: a limit of 0", policy.name)))?;
    Quota::with_period(policy.interval())
        .map(|quota| quota.allow_burst(burst))
        .ok_or_else(|| LimitError::Policy(format!("{}: an empty window", policy.name)))
}

impl Local {
    pub(crate) fn new(policies: &[Policy]) -> Result<Self, LimitError> {
        let limiters = policies
            .iter()
            .map(|policy| Ok((*policy, Arc::new(Self::limiter(policy)?))))
            .collect::<Result<_, LimitError>>()?;
        Ok(Self {
            limiters: RwLock::new(limiters),
        })
    }

    fn limiter(policy: &Policy) -> Result<Keyed, LimitError> {
        Ok(RateLimiter::keyed(quota(policy)?).with_middleware::<StateInformationMiddleware>())
    }

    pub(crate) fn check(&self, policy: &Policy, key: &str) -> Decision {
        let known = self
            .limiters
            .read()
            .ok()
            .and_then(|limiters| limiters.get(policy).cloned());
        let limiter = match known {
            Some(limiter) => limiter,
            None => match Self::limiter(policy) {
                Ok(limiter) => {
                    let limiter = Arc::new(limiter);
                    if let Ok(mut limiters) = self.limiters.write() {
                        limiters.insert(*policy, limiter.clone());
                    }
                    limiter
                }
                // A policy that cannot be built (validated at configuration) admits
                // nothing rather than everything.
                Err(_) => {
                    return Decision::Limited {
                        retry_after: policy.window,
                    };
                }
            },
        };
        let interval = policy.interval();
        match limiter.check_key(&key.to_owned()) {
            Ok(state) => {
                let remaining = state.remaining_burst_capacity();
                Decision::Allowed {
                    remaining,
                    reset: interval * policy.limit.saturating_sub(remaining),
                }
            }
            Err(not_until) => Decision::Limited {
                retry_after: not_until.wait_time_from(limiter.clock().now()),
            },
        }
    }

    pub(crate) fn forget_idle(&self) {
        if let Ok(limiters) = self.limiters.read() {
            for limiter in limiters.values() {
                limiter.retain_recent();
                limiter.shrink_to_fit();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    const FIVE_PER_SECOND: Policy = Policy {
        name: "test",
        limit: 5,
        window: Duration::from_secs(1),
    };

    #[test]
    fn admits_the_limit_then_refuses_then_recovers() {
        let local = Local::new(&[FIVE_PER_SECOND]).unwrap_or_else(|e| panic!("{e}"));
        for expected in (0..5).rev() {
            match local.check(&FIVE_PER_SECOND, "k") {
                Decision::Allowed { remaining, .. } => assert_eq!(remaining, expected),
                other => panic!("{other:?}"),
            }
        }
        let Decision::Limited { retry_after } = local.check(&FIVE_PER_SECOND, "k") else {
            panic!("the sixth request was admitted");
        };
        assert!(retry_after <= Duration::from_millis(200), "{retry_after:?}");
        // Another key has its own budget.
        assert!(matches!(
            local.check(&FIVE_PER_SECOND, "other"),
            Decision::Allowed { .. }
        ));
        std::thread::sleep(retry_after + Duration::from_millis(10));
        assert!(matches!(
            local.check(&FIVE_PER_SECOND, "k"),
            Decision::Allowed { .. }
        ));
    }

    #[test]
    fn forgetting_idle_keys_bounds_memory() {
        let fast = Policy {
            name: "fast",
            limit: 1,
            window: Duration::from_millis(10),
        };
        let local = Local::new(&[fast]).unwrap_or_else(|e| panic!("{e}"));
        for key in 0..100 {
            local.check(&fast, &key.to_string());
        }
        std::thread::sleep(Duration::from_millis(30));
        local.forget_idle();
        let limiters = local.limiters.read().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(limiters[&fast].len(), 0);
    }
}
