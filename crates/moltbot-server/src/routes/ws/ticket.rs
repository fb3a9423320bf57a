//! One-time WebSocket tickets: `POST /v1/ws/ticket` hands out a random ticket bound to the caller's
//! principal (key id, scopes, limits); `GET /v1/ws?ticket=…` redeems it once, within 30 seconds.
//!
//! The store is in memory, **per replica**: behind a load balancer a ticket only works on the replica
//! that issued it, until tickets are shared through Redis (the cluster issue). The
//! `Sec-WebSocket-Protocol: bearer.<credential>` form works on every replica.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use moltbot_core::{Clock, Principal};
use sha2::{Digest, Sha256};

/// How long a ticket may be redeemed.
pub const TTL_SECS: i64 = 30;
/// Most outstanding tickets per replica, and per API key.
const MAX_TICKETS: usize = 10_000;
const MAX_PER_KEY: usize = 32;

/// What a redeemed ticket grants.
#[derive(Debug, Clone)]
pub struct Grant {
    pub principal: Principal,
    /// When the credential that asked for the ticket stops being valid (an access token's `exp`).
    pub valid_until: Option<i64>,
}

struct Entry {
    grant: Grant,
    expires_ms: i64,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum IssueError {
    #[error("too many outstanding WebSocket tickets for this API key")]
    PerKey,
    #[error("too many outstanding WebSocket tickets on this server")]
    Full,
}

/// Tickets by the SHA-256 of their value (lookups never compare secrets byte by byte).
pub struct TicketStore {
    clock: Arc<dyn Clock>,
    entries: Mutex<HashMap<[u8; 32], Entry>>,
}

fn digest(ticket: &str) -> [u8; 32] {
    Sha256::digest(ticket.as_bytes()).into()
}

impl TicketStore {
    pub fn new(clock: Arc<dyn Clock>) -> Self {
        Self {
            clock,
            entries: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], Entry>> {
        self.entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A new ticket for `grant` (32 random bytes, hex).
    pub fn issue(&self, grant: Grant) -> Result<String, IssueError> {
        let now = self.clock.now_millis();
        let mut entries = self.lock();
        entries.retain(|_, e| e.expires_ms > now);
        if entries.len() >= MAX_TICKETS {
            return Err(IssueError::Full);
        }
        let key_id = &grant.principal.key_id;
        if entries
            .values()
            .filter(|e| &e.grant.principal.key_id == key_id)
            .count()
            >= MAX_PER_KEY
        {
            return Err(IssueError::PerKey);
        }
        let ticket = hex::encode(rand::random::<[u8; 32]>());
        entries.insert(
            digest(&ticket),
            Entry {
                grant,
                expires_ms: now + TTL_SECS * 1000,
            },
        );
        Ok(ticket)
    }

    /// Redeem a ticket: `None` when unknown, already used or expired. A ticket is removed on its first
    /// redemption attempt, so it can never be used twice.
    pub fn redeem(&self, ticket: &str) -> Option<Grant> {
        let now = self.clock.now_millis();
        let entry = self.lock().remove(&digest(ticket))?;
        (entry.expires_ms > now).then_some(entry.grant)
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use moltbot_core::{Credential, KeyLimits, ManualClock, Scope};

    fn grant(key: &str) -> Grant {
        Grant {
            principal: Principal {
                key_id: key.into(),
                key_name: "k".into(),
                scopes: vec![Scope::Chat],
                limits: KeyLimits::default(),
                credential: Credential::ApiKey,
                key_expires_at: None,
            },
            valid_until: None,
        }
    }

    #[test]
    fn single_use_and_expiry() {
        let clock = Arc::new(ManualClock::new(1_000_000));
        let store = TicketStore::new(clock.clone());
        let t = store.issue(grant("key_a")).unwrap();
        assert_eq!(t.len(), 64);
        assert_eq!(store.redeem(&t).unwrap().principal.key_id, "key_a");
        assert!(store.redeem(&t).is_none(), "second use");
        let t = store.issue(grant("key_a")).unwrap();
        clock.advance(std::time::Duration::from_secs(30));
        assert!(store.redeem(&t).is_none(), "expired");
        assert!(store.redeem("nope").is_none());
    }

    #[test]
    fn bounded_per_key_and_expired_entries_are_purged() {
        let clock = Arc::new(ManualClock::new(0));
        let store = TicketStore::new(clock.clone());
        for _ in 0..MAX_PER_KEY {
            store.issue(grant("key_a")).unwrap();
        }
        assert_eq!(store.issue(grant("key_a")), Err(IssueError::PerKey));
        store.issue(grant("key_b")).unwrap();
        clock.advance(std::time::Duration::from_secs(31));
        store.issue(grant("key_a")).unwrap();
        assert_eq!(store.len(), 1);
    }
}
