-- Channels (issue 8): the durable queue of inbound chat-platform events, chat → conversation mapping,
-- per-account state and leases. Additive only (see 0001 for the expand/contract rules).
-- Times in milliseconds (`_ms`) where sub-second retries and leases need them.

-- One row per platform event. UNIQUE (platform, account, event_id) is the dedupe authority: the key
-- and the queued event are one row, written by one statement.
CREATE TABLE channel_events (
    id              TEXT PRIMARY KEY NOT NULL,
    platform        TEXT NOT NULL,
    account         TEXT NOT NULL,
    event_id        TEXT NOT NULL,
    chat_key        TEXT NOT NULL,
    message         TEXT NOT NULL,
    status          TEXT NOT NULL,
    attempts        BIGINT NOT NULL DEFAULT 0,
    next_attempt_ms BIGINT NOT NULL,
    locked_by       TEXT NULL,
    locked_until_ms BIGINT NULL,
    reply           TEXT NULL,
    chunks_sent     BIGINT NOT NULL DEFAULT 0,
    conversation_id TEXT NULL,
    last_error      TEXT NULL,
    created_ms      BIGINT NOT NULL,
    updated_ms      BIGINT NOT NULL,
    UNIQUE (platform, account, event_id)
);
CREATE INDEX channel_events_due ON channel_events (status, next_attempt_ms);
CREATE INDEX channel_events_chat ON channel_events (chat_key, status, id);
CREATE INDEX channel_events_account ON channel_events (platform, account, created_ms);

CREATE TABLE channel_conversations (
    chat_key        TEXT PRIMARY KEY NOT NULL,
    conversation_id TEXT NOT NULL,
    created_ms      BIGINT NOT NULL
);

CREATE TABLE channel_state (
    name       TEXT PRIMARY KEY NOT NULL,
    value      TEXT NOT NULL,
    updated_ms BIGINT NOT NULL
);

CREATE TABLE leases (
    name       TEXT PRIMARY KEY NOT NULL,
    holder     TEXT NOT NULL,
    expires_ms BIGINT NOT NULL
);
