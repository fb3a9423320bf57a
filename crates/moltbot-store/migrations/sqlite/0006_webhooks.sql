-- Outbound event webhooks (issue 8): subscriptions, the durable event outbox (written in the same
-- transaction as the record it describes), one delivery per (subscription, event) and the log of
-- every attempt. Additive only (see 0001 for the expand/contract rules).
-- Times in milliseconds (`_ms`): retries start at sub-second delays in tests.

CREATE TABLE webhook_subscriptions (
    id          TEXT PRIMARY KEY NOT NULL,
    url         TEXT NOT NULL,
    -- Comma-separated event types (`conversation.created,message.created`).
    events      TEXT NOT NULL,
    -- Standard Webhooks signing key (`whsec_` + base64). Shown to the admin once.
    secret      TEXT NOT NULL,
    description TEXT NOT NULL DEFAULT '',
    enabled     INTEGER NOT NULL DEFAULT 1,
    created_ms  BIGINT NOT NULL,
    updated_ms  BIGINT NOT NULL
);

-- One row per event; `id` is the stable event id (the `webhook-id` header of every attempt).
-- `dispatched_ms` NULL = not yet fanned out to the subscriptions.
CREATE TABLE event_outbox (
    id            TEXT PRIMARY KEY NOT NULL,
    event_type    TEXT NOT NULL,
    -- The JSON body sent: {"type","timestamp","data"}.
    payload       TEXT NOT NULL,
    created_ms    BIGINT NOT NULL,
    dispatched_ms BIGINT NULL
);
CREATE INDEX event_outbox_pending ON event_outbox (dispatched_ms, created_ms);

-- UNIQUE (subscription_id, event_id): dispatching an event twice never delivers it twice.
CREATE TABLE webhook_deliveries (
    id              TEXT PRIMARY KEY NOT NULL,
    subscription_id TEXT NOT NULL,
    event_id        TEXT NOT NULL,
    event_type      TEXT NOT NULL,
    -- pending | delivered | dead
    status          TEXT NOT NULL,
    attempts        BIGINT NOT NULL DEFAULT 0,
    next_attempt_ms BIGINT NOT NULL,
    -- Retries stop (the delivery is dead-lettered) after this time.
    expires_ms      BIGINT NOT NULL,
    locked_by       TEXT NULL,
    locked_until_ms BIGINT NULL,
    last_status     BIGINT NULL,
    last_error      TEXT NULL,
    created_ms      BIGINT NOT NULL,
    updated_ms      BIGINT NOT NULL,
    delivered_ms    BIGINT NULL,
    UNIQUE (subscription_id, event_id)
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (status, next_attempt_ms);
CREATE INDEX webhook_deliveries_created ON webhook_deliveries (created_ms);
CREATE INDEX webhook_deliveries_event ON webhook_deliveries (event_id);

CREATE TABLE webhook_attempts (
    id           TEXT PRIMARY KEY NOT NULL,
    delivery_id  TEXT NOT NULL,
    attempted_ms BIGINT NOT NULL,
    status_code  BIGINT NULL,
    error        TEXT NULL,
    duration_ms  BIGINT NOT NULL
);
CREATE INDEX webhook_attempts_delivery ON webhook_attempts (delivery_id, attempted_ms);
