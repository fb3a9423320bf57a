//! [`WebhookStore`] for [`SqlStore`]: subscriptions, outbox dispatch, the delivery queue (claims
//! mirror the channel-event queue's) and the attempt log. Portable SQL for SQLite and PostgreSQL
//! through sqlx `Any`.

use async_trait::async_trait;
use moltbot_core::webhooks::{
    DeliveryOutcome, DeliveryQuery, DeliveryStatus, Dispatched, OutboxEvent, WebhookAttempt, WebhookDelivery,
    WebhookJob, WebhookStore, WebhookSubscription, WebhookSubscriptionUpdate,
};
use moltbot_core::{StoreError, StoreResult, ids};
use sqlx::Row;
use sqlx::any::AnyRow;

use crate::SqlStore;
use crate::error::{corrupt, db_err};
use crate::metrics::QueryTimer;
use crate::params::push_params;

const SUB_COLUMNS: &str = "id, url, events, secret, description, enabled, created_ms, updated_ms";

const DELIVERY_COLUMNS: &str = "id, subscription_id, event_id, event_type, status, attempts, next_attempt_ms, \
     expires_ms, last_status, last_error, created_ms, updated_ms, delivered_ms";

const ATTEMPT_COLUMNS: &str = "id, delivery_id, attempted_ms, status_code, error, duration_ms";

/// A claimable delivery: pending, due, not held by a live worker.
const CLAIMABLE: &str =
    "status = 'pending' AND next_attempt_ms <= $3 AND (locked_until_ms IS NULL OR locked_until_ms < $3)";

fn subscription(row: &AnyRow) -> StoreResult<WebhookSubscription> {
    let s = |c: &str| row.try_get::<String, _>(c).map_err(db_err);
    let i = |c: &str| row.try_get::<i64, _>(c).map_err(db_err);
    Ok(WebhookSubscription {
        id: s("id")?,
        url: s("url")?,
        events: split_events(&s("events")?),
        secret: s("secret")?,
        description: s("description")?,
        enabled: i("enabled")? != 0,
        created_ms: i("created_ms")?,
        updated_ms: i("updated_ms")?,
    })
}

fn split_events(s: &str) -> Vec<String> {
    s.split(',')
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .map(str::to_owned)
        .collect()
}

fn join_events(events: &[String]) -> String {
    events.join(",")
}

fn status_code(row: &AnyRow, c: &str) -> StoreResult<Option<u16>> {
    row.try_get::<Option<i64>, _>(c)
        .map_err(db_err)?
        .map(|v| u16::try_from(v).map_err(|e| corrupt(c, e)))
        .transpose()
}

fn delivery(row: &AnyRow) -> StoreResult<WebhookDelivery> {
    let s = |c: &str| row.try_get::<String, _>(c).map_err(db_err);
    let i = |c: &str| row.try_get::<i64, _>(c).map_err(db_err);
    let status = s("status")?;
    Ok(WebhookDelivery {
        id: s("id")?,
        subscription_id: s("subscription_id")?,
        event_id: s("event_id")?,
        event_type: s("event_type")?,
        status: DeliveryStatus::parse(&status).ok_or_else(|| corrupt("webhook delivery status", &status))?,
        attempts: u32::try_from(i("attempts")?).map_err(|e| corrupt("attempts", e))?,
        next_attempt_ms: i("next_attempt_ms")?,
        expires_ms: i("expires_ms")?,
        last_status: status_code(row, "last_status")?,
        last_error: row.try_get("last_error").map_err(db_err)?,
        created_ms: i("created_ms")?,
        updated_ms: i("updated_ms")?,
        delivered_ms: row.try_get("delivered_ms").map_err(db_err)?,
    })
}

fn attempt(row: &AnyRow) -> StoreResult<WebhookAttempt> {
    Ok(WebhookAttempt {
        id: row.try_get("id").map_err(db_err)?,
        delivery_id: row.try_get("delivery_id").map_err(db_err)?,
        attempted_ms: row.try_get("attempted_ms").map_err(db_err)?,
        status_code: status_code(row, "status_code")?,
        error: row.try_get("error").map_err(db_err)?,
        duration_ms: row.try_get("duration_ms").map_err(db_err)?,
    })
}

/// Errors worth showing in the console are short.
fn clip(s: &str) -> String {
    const MAX: usize = 1000;
    if s.len() <= MAX {
        return s.to_owned();
    }
    let mut end = MAX;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

async fn insert_delivery<'e, E>(
    exec: E,
    subscription_id: &str,
    event_id: &str,
    event_type: &str,
    now_ms: i64,
    expires_ms: i64,
) -> StoreResult<bool>
where
    E: sqlx::Executor<'e, Database = sqlx::Any>,
{
    let done = sqlx::query(
        "INSERT INTO webhook_deliveries (id, subscription_id, event_id, event_type, status, attempts, \
         next_attempt_ms, expires_ms, created_ms, updated_ms) \
         VALUES ($1, $2, $3, $4, 'pending', 0, $5, $6, $5, $5) ON CONFLICT DO NOTHING",
    )
    .bind(ids::new_id("whdel"))
    .bind(subscription_id)
    .bind(event_id)
    .bind(event_type)
    .bind(now_ms)
    .bind(expires_ms)
    .execute(exec)
    .await
    .map_err(db_err)?;
    Ok(done.rows_affected() > 0)
}

/// Ids per `IN (…)` list (the dispatcher's batch).
const ID_CHUNK: usize = 100;

#[async_trait]
impl WebhookStore for SqlStore {
    fn wants_event(&self, event_type: &str) -> bool {
        self.gate.wants(event_type)
    }

    async fn refresh_event_gate(&self) -> StoreResult<()> {
        let token = self.gate.refresh_token();
        let subs = self.list_webhook_subscriptions().await?;
        self.gate.refreshed(token, &subs);
        Ok(())
    }

    async fn create_webhook_subscription(&self, sub: &WebhookSubscription) -> StoreResult<()> {
        let _timer = QueryTimer::start("create_webhook_subscription");
        // Open before the row exists, so that this replica writes the events from the moment it does.
        self.gate.open_for(sub);
        let sql = format!(
            "INSERT INTO webhook_subscriptions ({SUB_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
        );
        sqlx::query(&sql)
            .bind(sub.id.as_str())
            .bind(sub.url.as_str())
            .bind(join_events(&sub.events))
            .bind(sub.secret.as_str())
            .bind(sub.description.as_str())
            .bind(i64::from(sub.enabled))
            .bind(sub.created_ms)
            .bind(sub.updated_ms)
            .execute(self.pool())
            .await
            .map_err(db_err)?;
        Ok(())
    }

    async fn list_webhook_subscriptions(&self) -> StoreResult<Vec<WebhookSubscription>> {
        let _timer = QueryTimer::start("list_webhook_subscriptions");
        let sql = format!("SELECT {SUB_COLUMNS} FROM webhook_subscriptions ORDER BY created_ms, id");
        let rows = sqlx::query(&sql).fetch_all(self.pool()).await.map_err(db_err)?;
        rows.iter().map(subscription).collect()
    }

    async fn get_webhook_subscription(&self, id: &str) -> StoreResult<Option<WebhookSubscription>> {
        let _timer = QueryTimer::start("get_webhook_subscription");
        let sql = format!("SELECT {SUB_COLUMNS} FROM webhook_subscriptions WHERE id = $1");
        let row = sqlx::query(&sql)
            .bind(id)
            .fetch_optional(self.pool())
            .await
            .map_err(db_err)?;
        row.as_ref().map(subscription).transpose()
    }

    async fn update_webhook_subscription(
        &self,
        id: &str,
        u: &WebhookSubscriptionUpdate,
        now_ms: i64,
    ) -> StoreResult<Option<WebhookSubscription>> {
        let _timer = QueryTimer::start("update_webhook_subscription");
        let sql = format!(
            "UPDATE webhook_subscriptions SET url = COALESCE($1, url), events = COALESCE($2, events), \
             secret = COALESCE($3, secret), description = COALESCE($4, description), \
             enabled = COALESCE($5, enabled), updated_ms = $6 WHERE id = $7 RETURNING {SUB_COLUMNS}"
        );
        let row = sqlx::query(&sql)
            .bind(u.url.as_deref())
            .bind(u.events.as_deref().map(join_events))
            .bind(u.secret.as_deref())
            .bind(u.description.as_deref())
            .bind(u.enabled.map(i64::from))
            .bind(now_ms)
            .bind(id)
            .fetch_optional(self.pool())
            .await
            .map_err(db_err)?;
        let updated = row.as_ref().map(subscription).transpose()?;
        if let Some(sub) = &updated {
            self.gate.open_for(sub);
        }
        Ok(updated)
    }

    async fn delete_webhook_subscription(&self, id: &str) -> StoreResult<bool> {
        let _timer = QueryTimer::start("delete_webhook_subscription");
        let mut tx = self.begin_write().await?;
        sqlx::query(
            "DELETE FROM webhook_attempts WHERE delivery_id IN \
             (SELECT id FROM webhook_deliveries WHERE subscription_id = $1)",
        )
        .bind(id)
        .execute(&mut *tx)
        .await
        .map_err(db_err)?;
        sqlx::query("DELETE FROM webhook_deliveries WHERE subscription_id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
        let done = sqlx::query("DELETE FROM webhook_subscriptions WHERE id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
        tx.commit().await.map_err(db_err)?;
        Ok(done.rows_affected() == 1)
    }

    async fn dispatch_webhook_events(
        &self,
        now_ms: i64,
        retry_for_ms: i64,
        limit: u32,
    ) -> StoreResult<Dispatched> {
        let _timer = QueryTimer::start("dispatch_webhook_events");
        let events: Vec<(String, String, i64)> = sqlx::query_as(
            "SELECT id, event_type, created_ms FROM event_outbox WHERE dispatched_ms IS NULL \
             ORDER BY created_ms, id LIMIT $1",
        )
        .bind(i64::from(limit))
        .fetch_all(self.pool())
        .await
        .map_err(db_err)?;
        if events.is_empty() {
            return Ok(Dispatched::default());
        }
        let subs: Vec<WebhookSubscription> = self
            .list_webhook_subscriptions()
            .await?
            .into_iter()
            .filter(|s| s.enabled)
            .collect();
        // One transaction for the whole batch: every turn enqueues events, and a transaction per
        // event cost more than the turn's own writes.
        let mut tx = self.begin_write().await?;
        let mut dropped: Vec<&str> = Vec::new();
        let mut fanned: Vec<&str> = Vec::new();
        let mut deliveries = 0u32;
        for (event_id, event_type, created_ms) in &events {
            let wanted = subs.iter().filter(|s| s.wants(event_type));
            let mut any = false;
            for sub in wanted {
                any = true;
                let inserted = insert_delivery(
                    &mut *tx,
                    &sub.id,
                    event_id,
                    event_type,
                    now_ms,
                    created_ms.saturating_add(retry_for_ms),
                )
                .await?;
                deliveries = deliveries.saturating_add(u32::from(inserted));
            }
            if any {
                fanned.push(event_id);
            } else {
                // Nobody listens: the event is dropped (a later subscription starts with later events).
                dropped.push(event_id);
            }
        }
        for chunk in dropped.chunks(ID_CHUNK) {
            let mut sql = String::from("DELETE FROM event_outbox WHERE dispatched_ms IS NULL AND id IN (");
            push_params(&mut sql, self.backend(), 1, chunk.len());
            sql.push(')');
            let mut q = sqlx::query(&sql);
            for id in chunk {
                q = q.bind(*id);
            }
            q.execute(&mut *tx).await.map_err(db_err)?;
        }
        for chunk in fanned.chunks(ID_CHUNK) {
            let mut sql = String::from("UPDATE event_outbox SET dispatched_ms = ");
            push_params(&mut sql, self.backend(), 1, 1);
            sql.push_str(" WHERE dispatched_ms IS NULL AND id IN (");
            push_params(&mut sql, self.backend(), 2, chunk.len());
            sql.push(')');
            let mut q = sqlx::query(&sql).bind(now_ms);
            for id in chunk {
                q = q.bind(*id);
            }
            q.execute(&mut *tx).await.map_err(db_err)?;
        }
        tx.commit().await.map_err(db_err)?;
        Ok(Dispatched {
            events: u32::try_from(events.len()).unwrap_or(u32::MAX),
            deliveries,
        })
    }

    async fn enqueue_webhook_test(
        &self,
        subscription_id: &str,
        event: &OutboxEvent,
        retry_for_ms: i64,
    ) -> StoreResult<Option<WebhookDelivery>> {
        let _timer = QueryTimer::start("enqueue_webhook_test");
        let payload = serde_json::to_string(&event.payload)
            .map_err(|e| StoreError::Database(format!("cannot encode event payload: {e}")))?;
        let mut tx = self.begin_write().await?;
        let exists: Option<(String,)> = sqlx::query_as("SELECT id FROM webhook_subscriptions WHERE id = $1")
            .bind(subscription_id)
            .fetch_optional(&mut *tx)
            .await
            .map_err(db_err)?;
        if exists.is_none() {
            return Ok(None);
        }
        sqlx::query(
            "INSERT INTO event_outbox (id, event_type, payload, created_ms, dispatched_ms) VALUES ($1, $2, $3, $4, $4)",
        )
        .bind(event.id.as_str())
        .bind(event.event_type.as_str())
        .bind(payload)
        .bind(event.created_ms)
        .execute(&mut *tx)
        .await
        .map_err(db_err)?;
        insert_delivery(
            &mut *tx,
            subscription_id,
            &event.id,
            &event.event_type,
            event.created_ms,
            event.created_ms.saturating_add(retry_for_ms),
        )
        .await?;
        tx.commit().await.map_err(db_err)?;
        let mut found = self
            .list_webhook_deliveries(&DeliveryQuery {
                subscription_id: Some(subscription_id.to_owned()),
                event_id: Some(event.id.clone()),
                status: None,
                limit: 1,
            })
            .await?;
        Ok(found.pop())
    }

    async fn claim_webhook_delivery(
        &self,
        worker: &str,
        now_ms: i64,
        lock_until_ms: i64,
    ) -> StoreResult<Option<WebhookJob>> {
        let _timer = QueryTimer::start("claim_webhook_delivery");
        // The conditions are repeated outside the subquery: on PostgreSQL (READ COMMITTED) a concurrent
        // claimer that loses the row lock re-checks them on the new row version and updates nothing,
        // instead of taking a delivery another worker holds.
        let sql = format!(
            "UPDATE webhook_deliveries SET locked_by = $1, locked_until_ms = $2, attempts = attempts + 1, \
             updated_ms = $3 \
             WHERE id = (SELECT d.id FROM webhook_deliveries d \
                         WHERE d.status = 'pending' AND d.next_attempt_ms <= $3 \
                           AND (d.locked_until_ms IS NULL OR d.locked_until_ms < $3) \
                         ORDER BY d.next_attempt_ms, d.id LIMIT 1) \
               AND {CLAIMABLE} \
             RETURNING {DELIVERY_COLUMNS}"
        );
        let row = sqlx::query(&sql)
            .bind(worker)
            .bind(lock_until_ms)
            .bind(now_ms)
            .fetch_optional(self.pool())
            .await
            .map_err(db_err)?;
        let Some(row) = row else { return Ok(None) };
        let delivery = delivery(&row)?;
        let found = sqlx::query(
            "SELECT s.url, s.secret, e.payload, e.created_ms FROM webhook_subscriptions s, event_outbox e \
             WHERE s.id = $1 AND e.id = $2",
        )
        .bind(delivery.subscription_id.as_str())
        .bind(delivery.event_id.as_str())
        .fetch_optional(self.pool())
        .await
        .map_err(db_err)?;
        let Some(found) = found else {
            // The subscription or the event is gone (deleted meanwhile): nothing can be sent.
            sqlx::query(
                "UPDATE webhook_deliveries SET status = 'dead', last_error = $1, locked_by = NULL, \
                 locked_until_ms = NULL, updated_ms = $2 WHERE id = $3 AND locked_by = $4",
            )
            .bind("the subscription or the event no longer exists")
            .bind(now_ms)
            .bind(delivery.id.as_str())
            .bind(worker)
            .execute(self.pool())
            .await
            .map_err(db_err)?;
            return Ok(None);
        };
        Ok(Some(WebhookJob {
            url: found.try_get("url").map_err(db_err)?,
            secret: found.try_get("secret").map_err(db_err)?,
            payload: found.try_get("payload").map_err(db_err)?,
            event_created_ms: found.try_get("created_ms").map_err(db_err)?,
            delivery,
        }))
    }

    async fn finish_webhook_delivery(
        &self,
        worker: &str,
        a: &WebhookAttempt,
        outcome: &DeliveryOutcome,
    ) -> StoreResult<bool> {
        let _timer = QueryTimer::start("finish_webhook_delivery");
        let now = a.attempted_ms + a.duration_ms;
        let (status, next, delivered) = match outcome {
            DeliveryOutcome::Delivered => ("delivered", now, Some(now)),
            DeliveryOutcome::Retry { at_ms } => ("pending", *at_ms, None),
            DeliveryOutcome::Dead => ("dead", now, None),
        };
        let error = a.error.as_deref().map(clip);
        let mut tx = self.begin_write().await?;
        sqlx::query(&format!(
            "INSERT INTO webhook_attempts ({ATTEMPT_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6)"
        ))
        .bind(a.id.as_str())
        .bind(a.delivery_id.as_str())
        .bind(a.attempted_ms)
        .bind(a.status_code.map(i64::from))
        .bind(error.as_deref())
        .bind(a.duration_ms)
        .execute(&mut *tx)
        .await
        .map_err(db_err)?;
        let done = sqlx::query(
            "UPDATE webhook_deliveries SET status = $1, next_attempt_ms = $2, last_status = $3, last_error = $4, \
             delivered_ms = COALESCE($5, delivered_ms), locked_by = NULL, locked_until_ms = NULL, updated_ms = $6 \
             WHERE id = $7 AND locked_by = $8 AND status = 'pending'",
        )
        .bind(status)
        .bind(next)
        .bind(a.status_code.map(i64::from))
        .bind(error.as_deref())
        .bind(delivered)
        .bind(now)
        .bind(a.delivery_id.as_str())
        .bind(worker)
        .execute(&mut *tx)
        .await
        .map_err(db_err)?;
        tx.commit().await.map_err(db_err)?;
        Ok(done.rows_affected() == 1)
    }

    async fn list_webhook_deliveries(&self, q: &DeliveryQuery) -> StoreResult<Vec<WebhookDelivery>> {
        let _timer = QueryTimer::start("list_webhook_deliveries");
        let mut sql = format!("SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries WHERE 1 = 1");
        let status = q.status.map(DeliveryStatus::as_str);
        let filters = [
            ("subscription_id", q.subscription_id.as_deref()),
            ("event_id", q.event_id.as_deref()),
            ("status", status),
        ];
        let mut n = 1;
        for (column, value) in filters {
            if value.is_some() {
                sql.push_str(&format!(" AND {column} = ${n}"));
                n += 1;
            }
        }
        sql.push_str(&format!(" ORDER BY created_ms DESC, id DESC LIMIT ${n}"));
        let mut query = sqlx::query(&sql);
        for (_, value) in filters {
            if let Some(v) = value {
                query = query.bind(v);
            }
        }
        let rows = query
            .bind(i64::from(q.limit.max(1)))
            .fetch_all(self.pool())
            .await
            .map_err(db_err)?;
        rows.iter().map(delivery).collect()
    }

    async fn get_webhook_delivery(&self, id: &str) -> StoreResult<Option<WebhookDelivery>> {
        let _timer = QueryTimer::start("get_webhook_delivery");
        let sql = format!("SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries WHERE id = $1");
        let row = sqlx::query(&sql)
            .bind(id)
            .fetch_optional(self.pool())
            .await
            .map_err(db_err)?;
        row.as_ref().map(delivery).transpose()
    }

    async fn list_webhook_attempts(&self, delivery_id: &str) -> StoreResult<Vec<WebhookAttempt>> {
        let _timer = QueryTimer::start("list_webhook_attempts");
        let sql = format!(
            "SELECT {ATTEMPT_COLUMNS} FROM webhook_attempts WHERE delivery_id = $1 ORDER BY attempted_ms, id"
        );
        let rows = sqlx::query(&sql)
            .bind(delivery_id)
            .fetch_all(self.pool())
            .await
            .map_err(db_err)?;
        rows.iter().map(attempt).collect()
    }

    async fn redeliver_webhook(
        &self,
        id: &str,
        now_ms: i64,
        retry_for_ms: i64,
    ) -> StoreResult<Option<WebhookDelivery>> {
        let _timer = QueryTimer::start("redeliver_webhook");
        let sql = format!(
            "UPDATE webhook_deliveries SET status = 'pending', next_attempt_ms = $1, expires_ms = $2, \
             delivered_ms = NULL, locked_by = NULL, locked_until_ms = NULL, updated_ms = $1 \
             WHERE id = $3 RETURNING {DELIVERY_COLUMNS}"
        );
        let row = sqlx::query(&sql)
            .bind(now_ms)
            .bind(now_ms.saturating_add(retry_for_ms))
            .bind(id)
            .fetch_optional(self.pool())
            .await
            .map_err(db_err)?;
        row.as_ref().map(delivery).transpose()
    }

    async fn purge_webhooks(&self, before_ms: i64) -> StoreResult<u64> {
        let _timer = QueryTimer::start("purge_webhooks");
        let mut tx = self.begin_write().await?;
        sqlx::query(
            "DELETE FROM webhook_attempts WHERE delivery_id IN \
             (SELECT id FROM webhook_deliveries WHERE status <> 'pending' AND created_ms < $1)",
        )
        .bind(before_ms)
        .execute(&mut *tx)
        .await
        .map_err(db_err)?;
        let done =
            sqlx::query("DELETE FROM webhook_deliveries WHERE status <> 'pending' AND created_ms < $1")
                .bind(before_ms)
                .execute(&mut *tx)
                .await
                .map_err(db_err)?;
        sqlx::query(
            "DELETE FROM event_outbox WHERE dispatched_ms IS NOT NULL AND created_ms < $1 \
             AND NOT EXISTS (SELECT 1 FROM webhook_deliveries d WHERE d.event_id = event_outbox.id)",
        )
        .bind(before_ms)
        .execute(&mut *tx)
        .await
        .map_err(db_err)?;
        tx.commit().await.map_err(db_err)?;
        Ok(done.rows_affected())
    }
}
