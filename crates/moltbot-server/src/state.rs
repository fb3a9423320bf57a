//! Typed application state shared by every route.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use moltbot_config::Config;
use moltbot_core::{ChatService, Clock, Store};

use crate::telemetry::Telemetry;

/// The handle every route and middleware gets: one reference count per clone (axum clones the state
/// for each middleware layer of each request; a struct of a dozen `Arc`s cost as many atomic updates).
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

impl AppState {
    pub fn new(shared: Shared) -> Self {
        Self(Arc::new(shared))
    }

    /// A copy of the shared parts, to build a changed state from (tests swap the clock this way).
    pub fn to_shared(&self) -> Shared {
        (*self.0).clone()
    }
}

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// What [`AppState`] points to.
#[derive(Clone)]
pub struct Shared {
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
