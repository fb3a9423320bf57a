-- Local models registered with `moltbot load-model`: every replica fetches and verifies the same file.
-- Additive only (see 0001 for the expand/contract rules).

CREATE TABLE model_registry (
    name           TEXT PRIMARY KEY NOT NULL,
    source         TEXT NOT NULL,
    local_path     TEXT NOT NULL,
    sha256         TEXT NOT NULL,
    md5            TEXT NOT NULL,
    -- `4bit`, `8bit` or `none`.
    quantization   TEXT NOT NULL,
    context_window BIGINT NOT NULL,
    max_tokens     BIGINT NOT NULL,
    gpu_layers     BIGINT NOT NULL,
    created_at     BIGINT NOT NULL
);
