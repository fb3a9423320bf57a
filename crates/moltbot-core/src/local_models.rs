//! Local models registered with `moltbot load-model`: the database registry every replica reads, so
//! each can fetch and verify the same file.

/// One registered local model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegisteredModel {
    /// Public model name; unique (and distinct from the names in the config file).
    pub name: String,
    /// Where the file came from (path, `https://…`, `s3://…`); replicas fetch it from here.
    pub source: String,
    /// The file on this machine (the download location for remote sources).
    pub local_path: String,
    /// Hex SHA-256 of the (final, possibly quantized) file.
    pub sha256: String,
    /// Hex MD5 of the same file.
    pub md5: String,
    /// `4bit`, `8bit` or `none`.
    pub quantization: String,
    /// Context window per sequence, in tokens.
    pub context_window: u32,
    /// Default and maximum completion tokens.
    pub max_tokens: u32,
    pub gpu_layers: u32,
    /// Unix seconds.
    pub created_at: i64,
}
