//! The last N request summaries of the dialog listener, for `/debug/requests`. Summaries carry no
//! prompts, bodies, headers or keys: only what the access log has.

use std::collections::VecDeque;
use std::sync::Mutex;

use serde::Serialize;

#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct RequestSummary {
    pub request_id: String,
    /// RFC 3339, when the request arrived.
    pub started_at: String,
    pub method: String,
    /// The path without the query string.
    pub path: String,
    /// The matched route (`<unmatched>` otherwise).
    pub route: String,
    pub status: u16,
    pub stream: bool,
    /// Until the response body ended.
    pub duration_ms: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backend: Option<String>,
}

/// A ring buffer of [`RequestSummary`]s.
#[derive(Debug)]
pub struct RecentRequests {
    capacity: usize,
    items: Mutex<VecDeque<RequestSummary>>,
}

impl RecentRequests {
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity,
            items: Mutex::new(VecDeque::with_capacity(capacity.min(1024))),
        }
    }

    pub fn push(&self, summary: RequestSummary) {
        if self.capacity == 0 {
            return;
        }
        let mut items = self.items.lock().unwrap_or_else(|e| e.into_inner());
        if items.len() == self.capacity {
            items.pop_front();
        }
        items.push_back(summary);
    }

    /// Newest first.
    pub fn snapshot(&self) -> Vec<RequestSummary> {
        let items = self.items.lock().unwrap_or_else(|e| e.into_inner());
        items.iter().rev().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary(id: &str) -> RequestSummary {
        RequestSummary {
            request_id: id.to_owned(),
            ..RequestSummary::default()
        }
    }

    #[test]
    fn keeps_the_newest_n_newest_first() {
        let r = RecentRequests::new(2);
        r.push(summary("a"));
        r.push(summary("b"));
        r.push(summary("c"));
        let ids: Vec<String> = r.snapshot().into_iter().map(|s| s.request_id).collect();
        assert_eq!(ids, ["c", "b"]);
    }

    #[test]
    fn capacity_zero_keeps_nothing() {
        let r = RecentRequests::new(0);
        r.push(summary("a"));
        assert!(r.snapshot().is_empty());
    }
}
