-- Indexes for the admin console: conversation listings by last activity, usage aggregated over time.
-- Additive only (see 0001 for the expand/contract rules).

CREATE INDEX messages_conversation_created ON messages (conversation_id, created_at);
CREATE INDEX usage_records_created ON usage_records (created_at);
