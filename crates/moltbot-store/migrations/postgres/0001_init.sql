-- moltbot schema, PostgreSQL flavour. Keep in step with migrations/sqlite (same logical shape).
--
-- EXPAND/CONTRACT RULES (blue-green deploys: the new release migrates while the old one still serves):
--   * A release only ADDS: new tables, new NULLable (or defaulted) columns, new indexes.
--   * Never rename, retype or drop in the same release that stops using something; the DROP ships
--     one release later, once no running binary reads or writes it.
--   * Code selects and inserts explicit column lists, never `SELECT *`, so unknown columns are harmless.
--   * Never edit an applied migration: add a new numbered file.
-- Timestamps are unix seconds (BIGINT); JSON is TEXT; BYTEA for bodies; booleans would be INTEGER 0/1 (portable through sqlx Any).

CREATE TABLE conversations (
    id         TEXT PRIMARY KEY NOT NULL,
    owner      TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    metadata   TEXT NOT NULL DEFAULT '{}',
    tip_hash   TEXT NULL,
    next_seq   BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX conversations_owner_tip ON conversations (owner, tip_hash);

CREATE TABLE messages (
    id                TEXT PRIMARY KEY NOT NULL,
    conversation_id   TEXT NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
    seq               BIGINT NOT NULL,
    created_at        BIGINT NOT NULL,
    role              TEXT NOT NULL,
    content           TEXT NOT NULL,
    raw               TEXT NULL,
    status            TEXT NOT NULL,
    model             TEXT NULL,
    backend           TEXT NULL,
    finish_reason     TEXT NULL,
    prompt_tokens     BIGINT NULL,
    completion_tokens BIGINT NULL,
    latency_ms        BIGINT NULL,
    request_id        TEXT NULL,
    UNIQUE (conversation_id, seq)
);

-- No foreign key on conversation_id: usage outlives deleted conversations.
CREATE TABLE usage_records (
    id                TEXT PRIMARY KEY NOT NULL,
    owner             TEXT NOT NULL,
    conversation_id   TEXT NULL,
    request_id        TEXT NULL,
    model             TEXT NOT NULL,
    backend           TEXT NULL,
    prompt_tokens     BIGINT NOT NULL,
    completion_tokens BIGINT NOT NULL,
    latency_ms        BIGINT NOT NULL,
    outcome           TEXT NOT NULL,
    created_at        BIGINT NOT NULL
);
CREATE INDEX usage_records_owner_created ON usage_records (owner, created_at);

CREATE TABLE idempotency_keys (
    owner        TEXT NOT NULL,
    key          TEXT NOT NULL,
    request_hash TEXT NOT NULL,
    status       INTEGER NULL,
    content_type TEXT NULL,
    body         BYTEA NULL,
    headers      TEXT NULL,
    created_at   BIGINT NOT NULL,
    PRIMARY KEY (owner, key)
);
CREATE INDEX idempotency_keys_created ON idempotency_keys (created_at);
