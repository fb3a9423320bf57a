-- Access control: API keys (only the SHA-256 of each secret) and the one-time bootstrap marker.
-- Additive only (see 0001 for the expand/contract rules).

CREATE TABLE api_keys (
    id                  TEXT PRIMARY KEY NOT NULL,
    name                TEXT NOT NULL,
    prefix              TEXT NOT NULL,
    secret_hash         TEXT NOT NULL UNIQUE,
    -- Comma-separated scope names (`chat,conversations`).
    scopes              TEXT NOT NULL,
    requests_per_minute BIGINT NULL,
    tokens_per_minute   BIGINT NULL,
    daily_tokens        BIGINT NULL,
    concurrent_streams  BIGINT NULL,
    created_at          BIGINT NOT NULL,
    last_used_at        BIGINT NULL,
    expires_at          BIGINT NULL,
    revoked_at          BIGINT NULL
);

-- At most one row ever (id = 1): the database's first admin key was created (or deliberately skipped
-- because keys already existed). Its presence means "never bootstrap again".
CREATE TABLE auth_bootstrap (
    id         BIGINT PRIMARY KEY NOT NULL,
    key_id     TEXT NULL,
    created_at BIGINT NOT NULL
);
