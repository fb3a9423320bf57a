//! A cached platform access token (Feishu tenant_access_token, WeCom access_token, …): fetched on first
//! use, refreshed before it expires, dropped when the platform says it is invalid. Concurrent callers
//! share one fetch.

use std::future::Future;
use std::time::Duration;

use tokio::sync::Mutex;
use tokio::time::Instant;

use crate::SendError;

#[derive(Debug)]
pub struct TokenCache {
    margin: Duration,
    slot: Mutex<Option<(String, Instant)>>,
}

impl TokenCache {
    /// A cache that refreshes a token `margin` before its expiry (Feishu, WeCom: 5 minutes).
    pub fn new(margin: Duration) -> Self {
        TokenCache {
            margin,
            slot: Mutex::new(None),
        }
    }

    /// The cached token, or a new one from `fetch` (which returns the token and its lifetime).
    pub async fn get<F, Fut>(&self, fetch: F) -> Result<String, SendError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<(String, Duration), SendError>>,
    {
        let mut slot = self.slot.lock().await;
        if let Some((token, expires)) = slot.as_ref()
            && Instant::now() + self.margin < *expires
        {
            return Ok(token.clone());
        }
        let (token, ttl) = fetch().await?;
        *slot = Some((token.clone(), Instant::now() + ttl));
        Ok(token)
    }

    /// Forget the token (the platform rejected it); the next [`get`](Self::get) fetches a new one.
    pub async fn invalidate(&self) {
        *self.slot.lock().await = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[tokio::test(start_paused = true)]
    async fn refreshes_before_expiry_and_after_invalidate() {
        let cache = TokenCache::new(Duration::from_secs(300));
        let fetches = AtomicU32::new(0);
        let fetch = || async {
            let n = fetches.fetch_add(1, Ordering::SeqCst);
            Ok((format!("t{n}"), Duration::from_secs(7200)))
        };
        assert_eq!(cache.get(fetch).await.unwrap(), "t0");
        assert_eq!(cache.get(fetch).await.unwrap(), "t0");
        tokio::time::advance(Duration::from_secs(7200 - 301)).await;
        assert_eq!(cache.get(fetch).await.unwrap(), "t0");
        tokio::time::advance(Duration::from_secs(2)).await;
        assert_eq!(
            cache.get(fetch).await.unwrap(),
            "t1",
            "refreshed inside the 5-minute margin"
        );
        cache.invalidate().await;
        assert_eq!(cache.get(fetch).await.unwrap(), "t2");
        let failed = cache
            .get(|| async { Err::<(String, Duration), _>(SendError::retryable("down")) })
            .await;
        assert!(failed.is_ok(), "a cached token is served without fetching");
    }
}
