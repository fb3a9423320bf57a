//! `moltbot_db_query_duration_seconds{op}`: how long each store operation took, recorded by a guard
//! at the top of every [`moltbot_core::Store`] / [`moltbot_core::StoreTx`] method (so a failed or
//! cancelled operation is timed too).

use std::time::Instant;

use metrics::{Unit, describe_histogram, histogram};

pub const DB_QUERY_DURATION: &str = "moltbot_db_query_duration_seconds";

/// Suggested histogram buckets (seconds) for [`DB_QUERY_DURATION`].
pub const DB_QUERY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

/// Describe this crate's metrics (call once after installing the recorder).
pub fn describe() {
    describe_histogram!(
        DB_QUERY_DURATION,
        Unit::Seconds,
        "Duration of database operations by op (store method; `tx.` prefix inside a transaction)."
    );
}

/// Records the elapsed time under `op` when dropped.
pub(crate) struct QueryTimer {
    op: &'static str,
    started: Instant,
}

impl QueryTimer {
    pub(crate) fn start(op: &'static str) -> Self {
        Self {
            op,
            started: Instant::now(),
        }
    }
}

impl Drop for QueryTimer {
    fn drop(&mut self) {
        histogram!(DB_QUERY_DURATION, "op" => self.op).record(self.started.elapsed().as_secs_f64());
    }
}
