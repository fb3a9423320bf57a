-- Responses API (issue 9): one row per stored response (`store: true`). `body` is the response object
-- as returned (JSON); `input` the input items it was given, with ids (JSON array), for
-- `GET /v1/responses/{id}/input_items` and for rebuilding the context of a `previous_response_id` chain.
-- Written in the same transaction as the turn's usage (and its conversation items, if any).
-- Additive only (see 0001 for the expand/contract rules).

CREATE TABLE responses (
    id                   TEXT PRIMARY KEY NOT NULL,
    owner                TEXT NOT NULL,
    previous_response_id TEXT NULL,
    conversation_id      TEXT NULL,
    input                TEXT NOT NULL,
    body                 TEXT NOT NULL,
    created_at           BIGINT NOT NULL
);
CREATE INDEX responses_owner ON responses (owner, created_at);
