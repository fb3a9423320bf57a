//! moltbot-store: the [`Store`] implementation for SQLite and PostgreSQL.
//!
//! One implementation serves both backends through sqlx's `Any` driver: the SQL is written once in
//! the common dialect (`$n` placeholders, `ON CONFLICT DO NOTHING`, `RETURNING`), timestamps are
//! BIGINT unix seconds, JSON is TEXT. Only connection setup, migrations (one embedded directory per
//! backend) and a couple of catalog queries differ.
//!
//! ```no_run
//! # async fn f() -> Result<(), moltbot_core::StoreError> {
//! let store = moltbot_store::open("sqlite://./data/moltbot.db", &Default::default()).await?;
//! store.migrate().await?;
//! # Ok(()) }
//! ```

mod channels;
mod compaction;
mod connect;
mod error;
mod keys;
mod listing;
pub mod metrics;
mod migrate;
mod models;
mod params;
mod responses;
mod rows;
mod store;
mod turn_log;
mod tx;
mod usage_log;
mod webhooks;

use std::sync::Arc;
use std::time::Duration;

use moltbot_core::{Store, StoreError};

pub use crate::store::SqlStore;
pub use crate::turn_log::TurnWrite;

/// Which database a [`SqlStore`] talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        }
    }
}

/// Connection settings that are not part of the URL.
#[derive(Clone, PartialEq, Eq)]
pub struct StoreOptions {
    /// Pool size. In-memory SQLite always uses a single connection.
    pub max_connections: u32,
    /// SQLite `busy_timeout` (how long a writer waits for the write lock); on both backends also how
    /// long a caller waits for a pooled connection, including the first connect (at least 1 s).
    pub busy_timeout: Duration,
    /// PostgreSQL password, used only when the URL carries none (keeps secrets out of URLs/config).
    pub password: Option<String>,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            max_connections: 10,
            busy_timeout: Duration::from_secs(5),
            password: None,
        }
    }
}

impl std::fmt::Debug for StoreOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreOptions")
            .field("max_connections", &self.max_connections)
            .field("busy_timeout", &self.busy_timeout)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// Open a store: `sqlite://path/to.db` (parent directories and the file are created),
/// `sqlite::memory:`, or `postgres://…` / `postgresql://…`. Does not migrate: call
/// [`Store::migrate`] (or check [`Store::schema_status`]) afterwards.
///
/// Errors never contain the URL or the password.
pub async fn open(url: &str, opts: &StoreOptions) -> Result<Arc<dyn Store>, StoreError> {
    Ok(Arc::new(SqlStore::connect(url, opts).await?))
}
