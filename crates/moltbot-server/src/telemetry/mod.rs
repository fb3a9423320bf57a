//! Prometheus metrics through the `metrics` facade: the recorder (installed once per process), the
//! description of every metric, build information and process metrics. `/metrics` renders on request
//! (see [`crate::routes::metrics`]); other crates record their own metrics (`moltbot_llm::metrics`,
//! `moltbot_store::metrics`) and are described here.

mod chat;
mod handles;
mod http;
mod recent;
pub mod series;

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use metrics::{Unit, describe_counter, describe_gauge, describe_histogram, gauge};
use metrics_exporter_prometheus::{BuildError, Matcher, PrometheusBuilder, PrometheusHandle};

pub use chat::ChatMeter;
pub use http::{ChatSummary, HttpMeter, track, with_meter};
pub use recent::{RecentRequests, RequestSummary};
pub use series::LiveStats;

use crate::state::AppState;

pub const HTTP_REQUESTS: &str = "http_requests_total";
pub const HTTP_DURATION: &str = "http_request_duration_seconds";
pub const HTTP_IN_FLIGHT: &str = "http_requests_in_flight";
pub const CHAT_REQUESTS: &str = "moltbot_chat_requests_total";
pub const TOKENS: &str = "moltbot_tokens_total";
pub const TTFT: &str = "moltbot_time_to_first_token_seconds";
pub const INTER_TOKEN: &str = "moltbot_inter_token_seconds";
pub const RATE_LIMITED: &str = "moltbot_rate_limited_total";
pub const AUTH_FAILURES: &str = "moltbot_auth_failures_total";
pub const AUTH_LOCKOUTS: &str = "moltbot_auth_lockouts_total";
pub const BUILD_INFO: &str = "moltbot_build_info";

/// Request latency buckets (seconds): sub-millisecond health checks to multi-minute generations.
const HTTP_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
];
const TTFT_BUCKETS: &[f64] = &[0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0];
const INTER_TOKEN_BUCKETS: &[f64] = &[0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5];

/// The version and the git commit this binary was built from (`unknown` outside a checkout).
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
pub const COMMIT: &str = env!("MOLTBOT_GIT_COMMIT");

/// The process-wide telemetry handles carried in [`AppState`].
#[derive(Clone)]
pub struct Telemetry {
    prometheus: PrometheusHandle,
    process: Arc<metrics_process::Collector>,
    /// The last requests of the dialog listener, for `/debug/requests`.
    pub recent: Arc<RecentRequests>,
    /// The admin console's live counters (overview series, per-backend counters).
    pub live: Arc<LiveStats>,
}

impl Telemetry {
    /// Install the recorder (first call only) and make a handle; `recent` keeps that many request
    /// summaries for the debug listener.
    pub fn new(recent: usize) -> Self {
        Self {
            prometheus: install(),
            process: Arc::new(process_collector()),
            recent: Arc::new(RecentRequests::new(recent)),
            live: Arc::new(LiveStats::default()),
        }
    }

    /// The Prometheus text exposition, with gauges that are read at scrape time refreshed first.
    pub fn render(&self, state: &AppState) -> String {
        self.process.collect();
        for route in state.chat.models().iter() {
            moltbot_llm::metrics::circuit_state(route.backend.name(), route.backend.circuit_state());
        }
        self.prometheus.render()
    }
}

fn process_collector() -> metrics_process::Collector {
    static DESCRIBED: OnceLock<()> = OnceLock::new();
    let collector = metrics_process::Collector::default();
    DESCRIBED.get_or_init(|| collector.describe());
    collector
}

fn builder() -> Result<PrometheusBuilder, BuildError> {
    PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Full(HTTP_DURATION.into()), HTTP_BUCKETS)?
        .set_buckets_for_metric(Matcher::Full(TTFT.into()), TTFT_BUCKETS)?
        .set_buckets_for_metric(Matcher::Full(INTER_TOKEN.into()), INTER_TOKEN_BUCKETS)?
        .set_buckets_for_metric(
            Matcher::Full(moltbot_store::metrics::DB_QUERY_DURATION.into()),
            moltbot_store::metrics::DB_QUERY_BUCKETS,
        )
}

/// Install the global Prometheus recorder once per process and return its handle. If another recorder
/// was installed first (an embedding application), ours still renders but stays empty.
pub fn install() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = builder()
                .unwrap_or_else(|e| {
                    tracing::warn!(error = %e, "metrics buckets rejected; histograms render as summaries");
                    PrometheusBuilder::new()
                })
                .build_recorder();
            let handle = recorder.handle();
            if metrics::set_global_recorder(recorder).is_err() {
                tracing::warn!(
                    "a metrics recorder was already installed; /metrics will not see moltbot's metrics"
                );
            }
            describe();
            gauge!(BUILD_INFO, "version" => VERSION, "commit" => COMMIT).set(1.0);
            // Histogram samples are buffered until drained; drain them even if nobody scrapes.
            let upkeep = handle.clone();
            let _ = std::thread::Builder::new()
                .name("metrics-upkeep".into())
                .spawn(move || {
                    loop {
                        std::thread::sleep(Duration::from_secs(5));
                        upkeep.run_upkeep();
                    }
                });
            handle
        })
        .clone()
}

/// Describe every metric moltbot records, including those other layers increment.
fn describe() {
    describe_counter!(
        HTTP_REQUESTS,
        Unit::Count,
        "HTTP requests by listener, method, route (matched path or <unmatched>), status and stream; \
         streams are counted when the body ends."
    );
    describe_histogram!(
        HTTP_DURATION,
        Unit::Seconds,
        "HTTP request duration until the response body ended, by listener, method, route and stream."
    );
    describe_gauge!(
        HTTP_IN_FLIGHT,
        "HTTP requests whose response has not finished, by listener."
    );
    describe_counter!(
        CHAT_REQUESTS,
        Unit::Count,
        "Chat completions by model, backend and outcome (success, invalid_request, upstream_error, timeout, \
         circuit_open, rate_limited, overloaded, unauthorized, cancelled, error)."
    );
    describe_counter!(
        TOKENS,
        Unit::Count,
        "Tokens of completed chat turns by model and kind (prompt, completion)."
    );
    describe_histogram!(
        TTFT,
        Unit::Seconds,
        "Time from the chat request to the first generated delta, by model and stream."
    );
    describe_histogram!(
        INTER_TOKEN,
        Unit::Seconds,
        "Time between consecutive generated deltas, by model."
    );
    describe_counter!(
        RATE_LIMITED,
        Unit::Count,
        "Requests refused for rate reasons, by reason (upstream: the platform's 429 after retries; \
         backend_capacity: moltbot's outbound limit; per-key and per-IP limits of the access layer)."
    );
    describe_counter!(
        AUTH_FAILURES,
        Unit::Count,
        "Requests refused because authentication failed, by reason (missing, unknown, expired, revoked \
         credentials, …)."
    );
    describe_counter!(
        AUTH_LOCKOUTS,
        Unit::Count,
        "Clients locked out after repeated authentication failures."
    );
    describe_gauge!(
        BUILD_INFO,
        "Always 1; the version and git commit of this binary as labels."
    );
    describe_counter!(
        "moltbot_channel_messages_total",
        Unit::Count,
        "Chat-platform messages by platform and outcome: queued, duplicate (already stored), ignored (rules)."
    );
    describe_counter!(
        "moltbot_channel_requests_rejected_total",
        Unit::Count,
        "Channel and hook requests refused by platform and reason (invalid_signature, invalid_request)."
    );
    describe_counter!(
        "moltbot_channel_events_finished_total",
        Unit::Count,
        "Channel event attempts by platform and outcome: done, retry, failed."
    );
    describe_counter!(
        "moltbot_channel_replies_sent_total",
        Unit::Count,
        "Reply chunks sent to chat platforms, by platform."
    );
    describe_gauge!(
        "moltbot_channel_lease_held",
        "1 while this replica holds a long-lived connection's lease (Telegram polling, DingTalk Stream), by lease."
    );
    describe_counter!(
        "moltbot_webhook_deliveries_total",
        Unit::Count,
        "Outbound webhook delivery attempts by outcome."
    );
    describe_counter!(
        moltbot_core::COMPACTIONS,
        Unit::Count,
        "Conversation compactions (memory) by trigger (auto, manual) and outcome (ok; failed: the context \
         was trimmed instead; conflict: another replica compacted first)."
    );
    moltbot_llm::metrics::describe();
    moltbot_store::metrics::describe();
}
