-- Turns left `in_progress` by a process that died mid-generation are marked `failed` by a periodic sweep
-- (see `Store::fail_stale_messages`); this partial index keeps that sweep from scanning every message.
-- Additive only (see 0001 for the expand/contract rules).

CREATE INDEX messages_in_progress ON messages (created_at) WHERE status = 'in_progress';
