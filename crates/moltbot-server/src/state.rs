//! Typed application state shared by every route.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use moltbot_config::Config;
use moltbot_core::{ChatService, Clock, Store};

use crate::telemetry::Telemetry;

#[derive(Clone)]
pub struct AppState {
    pub config: Arc<Config>,
    /// Access control: key lookups, token verification, rate limits, lockouts.
    pub auth: Arc<crate::auth::Auth>,
    pub store: Arc<dyn Store>,
    pub chat: Arc<ChatService>,
    pub clock: Arc<dyn Clock>,
    pub readiness: Arc<Readiness>,
    pub body_limit: usize,
    /// Metrics handles and the recent-request log.
    pub telemetry: Telemetry,
    /// Chat-platform accounts and generic hooks, and their pipeline settings.
    pub channels: Arc<crate::channels::Channels>,
}

/// `/ready`: this process can serve — listeners up, not draining (the database is pinged per request).
#[derive(Debug, Default)]
pub struct Readiness {
    listening: AtomicBool,
    draining: AtomicBool,
    /// Cancelled when draining starts, for long-lived connections (WebSockets) to close themselves.
    drain: tokio_util::sync::CancellationToken,
}

impl Readiness {
    pub fn set_listening(&self) {
        self.listening.store(true, Ordering::SeqCst);
    }

    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::SeqCst);
        self.drain.cancel();
    }

    /// A token cancelled when draining starts.
    pub fn drain_token(&self) -> tokio_util::sync::CancellationToken {
        self.drain.clone()
    }

    pub fn is_listening(&self) -> bool {
        self.listening.load(Ordering::SeqCst)
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }
}
