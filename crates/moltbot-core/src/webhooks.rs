//! Outbound event webhooks: subscriptions, the durable event outbox and delivery records (being written).

use async_trait::async_trait;

/// Persistence of outbound webhooks (implemented by `moltbot-store`).
#[async_trait]
pub trait WebhookStore: Send + Sync {}
