//! Slots per API token, below a daemon-wide total.
//!
//! **Why.** Event streams and upload slots are capped per daemon
//! (`[api] max_event_streams`, `[uploads] max_in_flight`); without a cap per
//! caller one team's token can hold them all and lock every other team out.
//! A caller holds at most `per_token` slots of a kind at once; the total
//! still applies on top.
//!
//! Callers of an API without tokens (loopback only) are one party: the
//! total is their cap.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::auth::Principal;

/// Slots held per token digest.
#[derive(Clone, Debug)]
pub struct PerToken {
    per_token: usize,
    held: Arc<Mutex<HashMap<String, usize>>>,
}

/// One slot of one token; released when dropped.
#[derive(Debug)]
pub struct TokenSlot {
    key: String,
    held: Arc<Mutex<HashMap<String, usize>>>,
}

impl PerToken {
    pub fn new(per_token: usize) -> Self {
        PerToken {
            per_token: per_token.max(1),
            held: Arc::default(),
        }
    }

    pub fn per_token(&self) -> usize {
        self.per_token
    }

    /// A slot for `caller`: `Ok(None)` when the caller has no token (no
    /// per-token cap), `Err(())` when its token holds `per_token` already.
    #[allow(clippy::result_unit_err)]
    pub fn try_acquire(&self, caller: &Principal) -> Result<Option<TokenSlot>, ()> {
        let Some(key) = caller.token_key() else {
            return Ok(None);
        };
        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        let count = held.entry(key.to_string()).or_default();
        if *count >= self.per_token {
            return Err(());
        }
        *count += 1;
        Ok(Some(TokenSlot {
            key: key.to_string(),
            held: Arc::clone(&self.held),
        }))
    }
}

impl Drop for TokenSlot {
    fn drop(&mut self) {
        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        // Invariant: the map holds only tokens with slots out, so it stays
        // as small as the callers active at once.
        if let Some(count) = held.get_mut(&self.key) {
            *count -= 1;
            if *count == 0 {
                held.remove(&self.key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_holds_at_most_its_share_and_gets_it_back() {
        let quota = PerToken::new(2);
        let team_a = Principal::for_token("digest-a");
        let team_b = Principal::for_token("digest-b");
        let first = quota.try_acquire(&team_a).unwrap().unwrap();
        let _second = quota.try_acquire(&team_a).unwrap().unwrap();
        assert!(quota.try_acquire(&team_a).is_err());
        assert!(quota.try_acquire(&team_b).unwrap().is_some());
        drop(first);
        assert!(quota.try_acquire(&team_a).unwrap().is_some());
        // No token, no per-token cap.
        assert!(quota.try_acquire(&Principal::loopback()).unwrap().is_none());
    }
}
