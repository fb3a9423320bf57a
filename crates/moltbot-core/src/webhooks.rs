//! Outbound event webhooks: subscriptions, the durable event outbox and delivery records.
//!
//! An event is written to the outbox by [`crate::StoreTx::enqueue_event`] in the same transaction as
//! the record it describes, so a committed record always has its event and a rolled-back one never
//! does. A dispatcher fans each outbox row out into one delivery per enabled subscription that wants
//! its type (`UNIQUE (subscription, event)`: dispatching twice never delivers twice); workers claim
//! due deliveries, POST them, and record every attempt. The event id is stable across retries and
//! manual redeliveries: receivers dedupe on it (at-least-once delivery).

use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use serde_json::{Value, json};

use crate::store::StoreResult;

/// A conversation was created (any path: chat, the conversations API, a channel).
pub const CONVERSATION_CREATED: &str = "conversation.created";
/// An assistant reply was stored.
pub const MESSAGE_CREATED: &str = "message.created";
/// A generation failed; the user's messages were marked failed.
pub const MESSAGE_FAILED: &str = "message.failed";
/// An API key was revoked.
pub const KEY_REVOKED: &str = "key.revoked";
/// Sent on demand to one subscription (admin "send test"); not subscribable.
pub const WEBHOOK_TEST: &str = "webhook.test";

/// The event types a subscription may ask for.
pub const EVENT_TYPES: &[&str] = &[CONVERSATION_CREATED, MESSAGE_CREATED, MESSAGE_FAILED, KEY_REVOKED];

/// An event to write to the outbox.
#[derive(Debug, Clone, PartialEq)]
pub struct OutboxEvent {
    /// Stable event id (`evt_…`): the `webhook-id` of every delivery attempt.
    pub id: String,
    pub event_type: String,
    /// The body sent: `{"type","timestamp","data"}`.
    pub payload: Value,
    pub created_ms: i64,
}

impl OutboxEvent {
    /// A new event with a fresh id and the Standard Webhooks envelope around `data`.
    pub fn new(event_type: &str, data: Value, now_ms: i64) -> Self {
        OutboxEvent {
            id: crate::ids::new_id("evt"),
            event_type: event_type.to_owned(),
            payload: Value::Object(serde_json::Map::from_iter([
                ("type".to_owned(), Value::from(event_type)),
                ("timestamp".to_owned(), Value::from(rfc3339_millis(now_ms))),
                ("data".to_owned(), data),
            ])),
            created_ms: now_ms,
        }
    }
}

/// RFC 3339 UTC with milliseconds (`2026-01-02T03:04:05.678Z`) of unix milliseconds.
pub fn rfc3339_millis(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let millis = ms.rem_euclid(1000);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

/// Where to send which events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookSubscription {
    /// `whsub_…`
    pub id: String,
    pub url: String,
    pub events: Vec<String>,
    /// Standard Webhooks signing key (`whsec_…`).
    pub secret: String,
    pub description: String,
    pub enabled: bool,
    pub created_ms: i64,
    pub updated_ms: i64,
}

impl WebhookSubscription {
    pub fn wants(&self, event_type: &str) -> bool {
        self.enabled && self.events.iter().any(|e| e == event_type)
    }
}

/// Which event types some enabled subscription wants, as this replica knows it: an event nobody wants is
/// not written to the outbox at all (the dispatcher would only delete it again — two rows written and
/// deleted per stored turn).
///
/// Starts with every type wanted (as if unknown: nothing is skipped before the first
/// [`WebhookStore::refresh_event_gate`]). A subscription created or changed on this replica opens its
/// types at once ([`open_for`](Self::open_for)); other replicas learn it at their dispatcher's next
/// refresh (every 250 ms), so events committed there within that window are not sent to the new
/// subscription. Types a deleted or disabled subscription wanted close at the next refresh. Types
/// outside [`EVENT_TYPES`] are always written.
#[derive(Debug)]
pub struct EventGate {
    /// Low 8 bits: one per [`EVENT_TYPES`] entry; above: a count of `open_for` calls, so that a
    /// refresh that read the subscriptions before one of them does not close what it opened.
    state: AtomicU64,
}

const TYPE_BITS: u64 = 0xFF;

impl Default for EventGate {
    fn default() -> Self {
        Self {
            state: AtomicU64::new(TYPE_BITS),
        }
    }
}

impl EventGate {
    fn bit(event_type: &str) -> Option<u64> {
        EVENT_TYPES.iter().position(|t| *t == event_type).map(|i| 1 << i)
    }

    fn bits<'a>(subs: impl IntoIterator<Item = &'a WebhookSubscription>) -> u64 {
        subs.into_iter()
            .filter(|s| s.enabled)
            .flat_map(|s| s.events.iter())
            .filter_map(|t| Self::bit(t))
            .fold(0, |acc, b| acc | b)
    }

    /// Whether events of this type must be written (some enabled subscription may want them).
    pub fn wants(&self, event_type: &str) -> bool {
        Self::bit(event_type).is_none_or(|b| self.state.load(Ordering::Acquire) & b != 0)
    }

    /// A subscription was stored or changed here: its types are wanted from now on.
    pub fn open_for(&self, sub: &WebhookSubscription) {
        let bits = Self::bits([sub]);
        let _ = self.state.fetch_update(Ordering::AcqRel, Ordering::Acquire, |s| {
            Some((s | bits).wrapping_add(TYPE_BITS + 1))
        });
    }

    /// Before reading the subscriptions for a refresh: the token for [`refreshed`](Self::refreshed).
    pub fn refresh_token(&self) -> u64 {
        self.state.load(Ordering::Acquire) & !TYPE_BITS
    }

    /// `subs`: every subscription, read after [`refresh_token`](Self::refresh_token) returned `token`.
    /// Types opened here meanwhile stay open until the next refresh.
    pub fn refreshed(&self, token: u64, subs: &[WebhookSubscription]) {
        let bits = Self::bits(subs);
        let _ = self.state.fetch_update(Ordering::AcqRel, Ordering::Acquire, |s| {
            Some(if s & !TYPE_BITS == token {
                token | bits
            } else {
                s | bits
            })
        });
    }
}

/// A change to a subscription; `None` leaves a field alone.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WebhookSubscriptionUpdate {
    pub url: Option<String>,
    pub events: Option<Vec<String>>,
    pub secret: Option<String>,
    pub description: Option<String>,
    pub enabled: Option<bool>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryStatus {
    /// Waiting for (or held by) a worker, possibly after failed attempts.
    Pending,
    /// A 2xx answer.
    Delivered,
    /// Given up: retried for the whole window, or refused for good (410).
    Dead,
}

impl DeliveryStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryStatus::Pending => "pending",
            DeliveryStatus::Delivered => "delivered",
            DeliveryStatus::Dead => "dead",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "pending" => DeliveryStatus::Pending,
            "delivered" => DeliveryStatus::Delivered,
            "dead" => DeliveryStatus::Dead,
            _ => return None,
        })
    }
}

/// One event for one subscription.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookDelivery {
    /// `whdel_…`
    pub id: String,
    pub subscription_id: String,
    /// The outbox event id: `webhook-id`.
    pub event_id: String,
    pub event_type: String,
    pub status: DeliveryStatus,
    /// Attempts started so far (claims).
    pub attempts: u32,
    pub next_attempt_ms: i64,
    /// No retry is scheduled after this time: a failure then dead-letters the delivery.
    pub expires_ms: i64,
    /// HTTP status of the last attempt (`None`: no answer).
    pub last_status: Option<u16>,
    pub last_error: Option<String>,
    pub created_ms: i64,
    pub updated_ms: i64,
    pub delivered_ms: Option<i64>,
}

/// A claimed delivery with what sending it needs.
#[derive(Debug, Clone, PartialEq)]
pub struct WebhookJob {
    pub delivery: WebhookDelivery,
    pub url: String,
    pub secret: String,
    /// The JSON body, exactly as stored.
    pub payload: String,
    pub event_created_ms: i64,
}

/// One HTTP attempt, for the delivery log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookAttempt {
    /// `whatt_…`
    pub id: String,
    pub delivery_id: String,
    pub attempted_ms: i64,
    pub status_code: Option<u16>,
    pub error: Option<String>,
    pub duration_ms: i64,
}

/// How an attempt ended for the delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeliveryOutcome {
    Delivered,
    /// Try again at `at_ms`.
    Retry {
        at_ms: i64,
    },
    /// Give up.
    Dead,
}

/// Filter for the delivery log (newest first).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeliveryQuery {
    pub subscription_id: Option<String>,
    pub event_id: Option<String>,
    pub status: Option<DeliveryStatus>,
    pub limit: u32,
}

/// What one dispatcher round did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Dispatched {
    /// Outbox events handled (fanned out, or dropped because no subscription wants them).
    pub events: u32,
    /// Deliveries created: when zero, no delivery worker has anything new to do.
    pub deliveries: u32,
}

#[async_trait]
pub trait WebhookStore: Send + Sync {
    /// Whether an event of this type must be written: `false` only when no enabled subscription wants
    /// it, as far as this replica knows (see [`EventGate`]). Stores without a gate write every event.
    fn wants_event(&self, _event_type: &str) -> bool {
        true
    }

    /// Re-read which event types enabled subscriptions want (the dispatcher, every round).
    async fn refresh_event_gate(&self) -> StoreResult<()> {
        Ok(())
    }

    /// Store a new subscription. A duplicate id is a `Conflict`.
    async fn create_webhook_subscription(&self, sub: &WebhookSubscription) -> StoreResult<()>;

    /// Every subscription, oldest first.
    async fn list_webhook_subscriptions(&self) -> StoreResult<Vec<WebhookSubscription>>;

    async fn get_webhook_subscription(&self, id: &str) -> StoreResult<Option<WebhookSubscription>>;

    /// Apply `update`; `None` if there is no such subscription.
    async fn update_webhook_subscription(
        &self,
        id: &str,
        update: &WebhookSubscriptionUpdate,
        now_ms: i64,
    ) -> StoreResult<Option<WebhookSubscription>>;

    /// Delete a subscription with its deliveries and their attempts. `false` if there was none.
    async fn delete_webhook_subscription(&self, id: &str) -> StoreResult<bool>;

    /// Fan up to `limit` undispatched outbox events (oldest first) out into pending deliveries, one
    /// per enabled subscription that wants the type (due at `now_ms`, given up after the event's
    /// creation + `retry_for_ms`), and mark them dispatched; events no subscription wants are deleted.
    /// Idempotent (`UNIQUE (subscription, event)`), so concurrent dispatchers are harmless. The whole
    /// batch is one transaction.
    async fn dispatch_webhook_events(
        &self,
        now_ms: i64,
        retry_for_ms: i64,
        limit: u32,
    ) -> StoreResult<Dispatched>;

    /// Write `event` (already dispatched) and a delivery of it to subscription `subscription_id`
    /// alone. `None` if there is no such subscription.
    async fn enqueue_webhook_test(
        &self,
        subscription_id: &str,
        event: &OutboxEvent,
        retry_for_ms: i64,
    ) -> StoreResult<Option<WebhookDelivery>>;

    /// Claim the next due pending delivery (oldest due first) for `worker` until `lock_until_ms`,
    /// with its subscription's URL and secret and the event body. Increments `attempts`.
    async fn claim_webhook_delivery(
        &self,
        worker: &str,
        now_ms: i64,
        lock_until_ms: i64,
    ) -> StoreResult<Option<WebhookJob>>;

    /// Log `attempt` and finish (or reschedule) the delivery it belongs to, in one transaction. The
    /// attempt is logged in any case; `false` if `worker` no longer held the delivery (nothing else
    /// changed).
    async fn finish_webhook_delivery(
        &self,
        worker: &str,
        attempt: &WebhookAttempt,
        outcome: &DeliveryOutcome,
    ) -> StoreResult<bool>;

    /// The delivery log, newest first.
    async fn list_webhook_deliveries(&self, query: &DeliveryQuery) -> StoreResult<Vec<WebhookDelivery>>;

    async fn get_webhook_delivery(&self, id: &str) -> StoreResult<Option<WebhookDelivery>>;

    /// The attempts of a delivery, oldest first.
    async fn list_webhook_attempts(&self, delivery_id: &str) -> StoreResult<Vec<WebhookAttempt>>;

    /// Queue a delivery again — same event, same id — due at `now_ms`, retried until
    /// `now_ms + retry_for_ms`. `None` if there is no such delivery.
    async fn redeliver_webhook(
        &self,
        id: &str,
        now_ms: i64,
        retry_for_ms: i64,
    ) -> StoreResult<Option<WebhookDelivery>>;

    /// Delete finished (delivered, dead) deliveries created before `before_ms` with their attempts,
    /// and dispatched events no delivery refers to any more. Returns how many deliveries.
    async fn purge_webhooks(&self, before_ms: i64) -> StoreResult<u64>;
}

/// Revoke `key` and write its `key.revoked` event in one transaction (nothing is written when the key
/// was revoked already). `true` if this call revoked it.
pub async fn revoke_api_key(store: &dyn crate::Store, key: &crate::ApiKey, now_ms: i64) -> StoreResult<bool> {
    let now = now_ms.div_euclid(1000);
    let mut tx = store.begin().await?;
    if !tx.revoke_api_key(&key.id, now).await? {
        return Ok(false);
    }
    let data = json!({
        "id": key.id,
        "name": key.name,
        "prefix": key.prefix,
        "scopes": key.scopes.iter().map(|s| s.as_str()).collect::<Vec<_>>(),
        "revoked_at": now,
    });
    tx.enqueue_event(&OutboxEvent::new(KEY_REVOKED, data, now_ms))
        .await?;
    tx.commit().await?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_of_known_instants() {
        assert_eq!(rfc3339_millis(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339_millis(951_782_400_123), "2000-02-29T00:00:00.123Z");
        assert_eq!(rfc3339_millis(1_767_225_599_999), "2025-12-31T23:59:59.999Z");
    }

    #[test]
    fn envelope_has_type_timestamp_and_data() {
        let e = OutboxEvent::new(KEY_REVOKED, json!({"id": "k1"}), 1_000);
        assert!(e.id.starts_with("evt_"));
        assert_eq!(
            e.payload,
            json!({"type": "key.revoked", "timestamp": "1970-01-01T00:00:01.000Z", "data": {"id": "k1"}})
        );
        let sub = WebhookSubscription {
            id: "s".into(),
            url: "http://x".into(),
            events: vec![KEY_REVOKED.into()],
            secret: String::new(),
            description: String::new(),
            enabled: true,
            created_ms: 0,
            updated_ms: 0,
        };
        assert!(sub.wants(KEY_REVOKED));
        assert!(!sub.wants(MESSAGE_CREATED));
        assert!(
            !WebhookSubscription {
                enabled: false,
                ..sub
            }
            .wants(KEY_REVOKED)
        );
    }

    fn sub(events: &[&str], enabled: bool) -> WebhookSubscription {
        WebhookSubscription {
            id: "s".into(),
            url: "http://x".into(),
            events: events.iter().map(|e| (*e).to_owned()).collect(),
            secret: String::new(),
            description: String::new(),
            enabled,
            created_ms: 0,
            updated_ms: 0,
        }
    }

    #[test]
    fn gate_writes_everything_until_refreshed_then_what_subscriptions_want() {
        let gate = EventGate::default();
        assert!(EVENT_TYPES.iter().all(|t| gate.wants(t)));
        let t = gate.refresh_token();
        gate.refreshed(t, &[sub(&[KEY_REVOKED], true), sub(&[MESSAGE_CREATED], false)]);
        assert!(gate.wants(KEY_REVOKED));
        assert!(
            !gate.wants(MESSAGE_CREATED),
            "a disabled subscription wants nothing"
        );
        assert!(!gate.wants(CONVERSATION_CREATED));
        assert!(
            gate.wants(WEBHOOK_TEST),
            "types outside EVENT_TYPES are always written"
        );
        let t = gate.refresh_token();
        gate.refreshed(t, &[]);
        assert!(EVENT_TYPES.iter().all(|t| !gate.wants(t)));
    }

    #[test]
    fn gate_keeps_a_subscription_opened_during_a_refresh() {
        let gate = EventGate::default();
        let t = gate.refresh_token();
        gate.refreshed(t, &[]);
        // A refresh reads the subscriptions; meanwhile one is created here.
        let t = gate.refresh_token();
        gate.open_for(&sub(&[MESSAGE_CREATED, MESSAGE_FAILED], true));
        assert!(gate.wants(MESSAGE_CREATED) && gate.wants(MESSAGE_FAILED));
        gate.refreshed(t, &[]);
        assert!(gate.wants(MESSAGE_CREATED), "the stale refresh must not close it");
        assert!(!gate.wants(KEY_REVOKED));
        // The next refresh sees the subscription's row (or its deletion).
        let t = gate.refresh_token();
        gate.refreshed(t, &[]);
        assert!(!gate.wants(MESSAGE_CREATED));
        gate.open_for(&sub(&[KEY_REVOKED], false));
        assert!(!gate.wants(KEY_REVOKED), "a disabled subscription opens nothing");
    }
}
