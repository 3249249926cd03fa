//! The memory the server may spend on request bodies it has not verified yet
//! (`server.unverified_body_budget`). A webhook's body must be read whole
//! before its HMAC can be checked, so anyone can make the server buffer
//! `webhooks.max_body` bytes per request; the budget bounds the sum over every
//! request at once. A request that would go past it is refused at once (503)
//! instead of waiting: waiting would hold its connection, and the sender can
//! retry.
//!
//! This module owns the accounting only; what to answer is the caller's.

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore, TryAcquireError};

/// Bytes of unverified bodies the server may hold at once. Cheap to clone:
/// clones share the budget.
#[derive(Clone, Debug)]
pub(super) struct BodyBudget {
    bytes: Arc<Semaphore>,
}

/// What one request holds of the budget; given back when dropped.
#[derive(Debug)]
pub(super) struct Held {
    budget: BodyBudget,
    permit: Option<OwnedSemaphorePermit>,
}

impl BodyBudget {
    /// A budget of `bytes` (capped at what a semaphore can count, far above
    /// any memory).
    pub(super) fn new(bytes: u64) -> BodyBudget {
        let bytes = usize::try_from(bytes)
            .unwrap_or(usize::MAX)
            .min(Semaphore::MAX_PERMITS);
        BodyBudget {
            bytes: Arc::new(Semaphore::new(bytes)),
        }
    }

    /// Nothing held yet, for one request.
    pub(super) fn hold(&self) -> Held {
        Held {
            budget: self.clone(),
            permit: None,
        }
    }

    /// Bytes not held by any request.
    #[cfg(test)]
    fn available(&self) -> usize {
        self.bytes.available_permits()
    }
}

impl Held {
    /// Bytes held.
    pub(super) fn bytes(&self) -> u64 {
        self.permit
            .as_ref()
            .map_or(0, |permit| permit.num_permits() as u64)
    }

    /// Holds at least `total` bytes in all, taking the difference from the
    /// budget; false (and nothing more held) when the budget has less left.
    /// Never waits.
    pub(super) fn grow_to(&mut self, total: u64) -> bool {
        let Some(more) = total.checked_sub(self.bytes()).filter(|more| *more > 0) else {
            return true;
        };
        // A semaphore counts at most u32::MAX permits at a time; bodies are
        // capped far below (64 MiB).
        let Ok(more) = u32::try_from(more) else {
            return false;
        };
        match self.budget.bytes.clone().try_acquire_many_owned(more) {
            Ok(permit) => {
                match &mut self.permit {
                    Some(held) => held.merge(permit),
                    None => self.permit = Some(permit),
                }
                true
            }
            Err(TryAcquireError::NoPermits | TryAcquireError::Closed) => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_share_the_budget_and_give_it_back() {
        let budget = BodyBudget::new(100);
        let mut first = budget.hold();
        assert!(first.grow_to(60));
        assert_eq!((first.bytes(), budget.available()), (60, 40));
        // Growing to less than held takes nothing.
        assert!(first.grow_to(10));
        assert_eq!(first.bytes(), 60);

        let mut second = budget.hold();
        assert!(!second.grow_to(41), "only 40 left");
        assert_eq!((second.bytes(), budget.available()), (0, 40));
        assert!(second.grow_to(30));
        // Growing past what is left fails and keeps what was held.
        assert!(!second.grow_to(50));
        assert_eq!((second.bytes(), budget.available()), (30, 10));
        assert!(second.grow_to(40));
        assert_eq!(budget.available(), 0);

        drop(first);
        assert_eq!(budget.available(), 60);
        drop(second);
        assert_eq!(budget.available(), 100);
    }

    #[test]
    fn a_flood_of_requests_never_holds_more_than_the_budget() {
        let budget = BodyBudget::new(1 << 20);
        let mut held = Vec::new();
        let mut refused = 0;
        for _ in 0..10_000 {
            let mut request = budget.hold();
            if request.grow_to(64 << 10) {
                held.push(request);
            } else {
                refused += 1;
            }
        }
        assert_eq!((held.len(), refused), (16, 10_000 - 16));
        let total: u64 = held.iter().map(Held::bytes).sum();
        assert_eq!(total, 1 << 20);
        held.clear();
        assert_eq!(budget.available(), 1 << 20);
    }

    #[test]
    fn a_huge_budget_is_capped_not_a_panic() {
        let budget = BodyBudget::new(u64::MAX);
        assert_eq!(budget.available(), Semaphore::MAX_PERMITS);
        assert!(!budget.hold().grow_to(u64::from(u32::MAX) + 1));
    }
}
