//! One-time WebSocket tickets: `POST /v1/ws/ticket` hands out a random ticket bound to the caller's
//! principal (key id, scopes, limits); `GET /v1/ws?ticket=…` redeems it once, within 30 seconds.
//!
//! In cluster mode tickets live in Redis (`ticket:<sha256>`, expiring after 30 s, taken with `GETDEL`),
//! so a ticket issued by one replica is redeemed once on any replica. Without Redis — or while it is
//! unavailable — the store is in memory, per replica. The `Sec-WebSocket-Protocol: bearer.<credential>`
//! form works on every replica either way.

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
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
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
    shared: Option<Arc<crate::cluster::Shared>>,
}

fn digest(ticket: &str) -> [u8; 32] {
    Sha256::digest(ticket.as_bytes()).into()
}

impl TicketStore {
    pub fn new(clock: Arc<dyn Clock>, shared: Option<Arc<crate::cluster::Shared>>) -> Self {
        Self {
            clock,
            entries: Mutex::new(HashMap::new()),
            shared,
        }
    }

    /// A new ticket for `grant`: in Redis in cluster mode, else (or while Redis is unavailable) here.
    pub async fn issue(&self, grant: Grant) -> Result<String, IssueError> {
        if let Some(shared) = &self.shared {
            let ticket = hex::encode(rand::random::<[u8; 32]>());
            let key = shared.key(&format!("ticket:{}", hex::encode(digest(&ticket))));
            let per_key = shared.key(&format!("tickets:{}", grant.principal.key_id));
            let value = serde_json::to_string(&grant).unwrap_or_default();
            let stored = shared
                .run("ws_ticket", |mut c| async move {
                    let (n,): (i64,) = redis::pipe()
                        .atomic()
                        .cmd("INCR")
                        .arg(&per_key)
                        .cmd("EXPIRE")
                        .arg(&per_key)
                        .arg(TTL_SECS)
                        .ignore()
                        .query_async(&mut c)
                        .await?;
                    if n > MAX_PER_KEY as i64 {
                        return Ok(false);
                    }
                    redis::cmd("SET")
                        .arg(key)
                        .arg(value)
                        .arg("EX")
                        .arg(TTL_SECS)
                        .query_async::<()>(&mut c)
                        .await?;
                    Ok(true)
                })
                .await;
            match stored {
                Ok(true) => return Ok(ticket),
                Ok(false) => return Err(IssueError::PerKey),
                Err(_) => {}
            }
        }
        self.issue_local(grant)
    }

    /// Redeem a ticket: `None` when unknown, already used or expired. A ticket is removed on its first
    /// redemption attempt, so it can never be used twice.
    pub async fn redeem(&self, ticket: &str) -> Option<Grant> {
        if let Some(shared) = &self.shared {
            let key = shared.key(&format!("ticket:{}", hex::encode(digest(ticket))));
            let taken = shared
                .run("ws_ticket", |mut c| async move {
                    redis::cmd("GETDEL")
                        .arg(key)
                        .query_async::<Option<String>>(&mut c)
                        .await
                })
                .await;
            if let Ok(Some(json)) = taken {
                let grant: Grant = serde_json::from_str(&json).ok()?;
                // One outstanding ticket fewer for this key.
                let per_key = shared.key(&format!("tickets:{}", grant.principal.key_id));
                let _ = shared
                    .run("ws_ticket", |mut c| async move {
                        redis::cmd("DECR").arg(per_key).query_async::<i64>(&mut c).await
                    })
                    .await;
                return Some(grant);
            }
        }
        self.redeem_local(ticket)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], Entry>> {
        self.entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A new ticket for `grant` (32 random bytes, hex), in this process.
    fn issue_local(&self, grant: Grant) -> Result<String, IssueError> {
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

    fn redeem_local(&self, ticket: &str) -> Option<Grant> {
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
        let store = TicketStore::new(clock.clone(), None);
        let t = store.issue_local(grant("key_a")).unwrap();
        assert_eq!(t.len(), 64);
        assert_eq!(store.redeem_local(&t).unwrap().principal.key_id, "key_a");
        assert!(store.redeem_local(&t).is_none(), "second use");
        let t = store.issue_local(grant("key_a")).unwrap();
        clock.advance(std::time::Duration::from_secs(30));
        assert!(store.redeem_local(&t).is_none(), "expired");
        assert!(store.redeem_local("nope").is_none());
    }

    #[test]
    fn bounded_per_key_and_expired_entries_are_purged() {
        let clock = Arc::new(ManualClock::new(0));
        let store = TicketStore::new(clock.clone(), None);
        for _ in 0..MAX_PER_KEY {
            store.issue_local(grant("key_a")).unwrap();
        }
        assert_eq!(store.issue_local(grant("key_a")), Err(IssueError::PerKey));
        store.issue_local(grant("key_b")).unwrap();
        clock.advance(std::time::Duration::from_secs(31));
        store.issue_local(grant("key_a")).unwrap();
        assert_eq!(store.len(), 1);
    }
}
