//! Per-chat reply rate limit (`replies_per_minute`): a sliding one-minute window per chat key. Replies
//! over the limit wait instead of failing — platforms answer floods with 429s or bans (Telegram: 20
//! messages a minute in a group). Per replica: a chat's events are processed one at a time across the
//! cluster, so one replica sends a chat's replies at any moment.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

const WINDOW: Duration = Duration::from_secs(60);

#[derive(Debug, Default)]
pub(crate) struct ChatLimiter {
    sent: Mutex<HashMap<String, VecDeque<Instant>>>,
}

impl ChatLimiter {
    /// How long to wait before the next message to `chat` may go; `ZERO` records it as sent now.
    fn reserve(&self, chat: &str, per_minute: u32) -> Duration {
        let now = Instant::now();
        let mut map = self.sent.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() > 10_000 {
            map.retain(|_, q| q.back().is_some_and(|t| now.duration_since(*t) < WINDOW));
        }
        let q = map.entry(chat.to_owned()).or_default();
        while q.front().is_some_and(|t| now.duration_since(*t) >= WINDOW) {
            q.pop_front();
        }
        if q.len() < per_minute.max(1) as usize {
            q.push_back(now);
            return Duration::ZERO;
        }
        let oldest = *q.front().expect("non-empty");
        (oldest + WINDOW)
            .saturating_duration_since(now)
            .max(Duration::from_millis(1))
    }

    /// Wait until a message to `chat` is allowed, and count it.
    pub(crate) async fn acquire(&self, chat: &str, per_minute: u32) {
        loop {
            let wait = self.reserve(chat, per_minute);
            if wait.is_zero() {
                return;
            }
            tokio::time::sleep(wait).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn third_message_in_a_minute_waits_for_the_window() {
        let l = ChatLimiter::default();
        let start = Instant::now();
        l.acquire("c", 2).await;
        tokio::time::advance(Duration::from_secs(10)).await;
        l.acquire("c", 2).await;
        l.acquire("other", 2).await;
        assert_eq!(
            start.elapsed(),
            Duration::from_secs(10),
            "other chats do not share the window"
        );
        l.acquire("c", 2).await;
        assert_eq!(
            start.elapsed(),
            Duration::from_secs(60),
            "waited until the first left the window"
        );
    }
}
