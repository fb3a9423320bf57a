//! Logging: human-readable lines in development, one JSON object per line with Elastic Common Schema
//! names in production (`@timestamp`, `log.level`, `message`, `http.request.id`, …), so ELK indexes
//! them without a pipeline. Span fields (the request id, method, path) are merged into every line.

use std::fmt;

use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::{JsonFields, Writer};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields, MakeWriter};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::{EnvFilter, Registry};

/// The ECS JSON line format.
#[derive(Debug, Default, Clone, Copy)]
pub struct EcsFormat;

struct FieldsToJson<'a>(&'a mut Map<String, Value>);

impl Visit for FieldsToJson<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0
            .insert(field.name().to_owned(), Value::String(value.to_owned()));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().to_owned(), Value::from(value));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().to_owned(), Value::from(value));
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().to_owned(), Value::from(value));
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.0.insert(field.name().to_owned(), Value::from(value));
    }
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.0
            .insert(field.name().to_owned(), Value::String(format!("{value:?}")));
    }
}

impl<S, N> FormatEvent<S, N> for EcsFormat
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let meta = event.metadata();
        let mut obj = Map::new();
        obj.insert(
            "@timestamp".into(),
            Value::String(humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string()),
        );
        obj.insert(
            "log.level".into(),
            Value::String(meta.level().as_str().to_ascii_lowercase()),
        );
        obj.insert("log.logger".into(), Value::String(meta.target().to_owned()));
        if let Some(scope) = ctx.event_scope() {
            for span in scope.from_root() {
                let ext = span.extensions();
                if let Some(fields) = ext.get::<FormattedFields<N>>()
                    && let Ok(Value::Object(map)) = serde_json::from_str::<Value>(fields)
                {
                    obj.extend(map);
                }
            }
        }
        let mut fields = Map::new();
        event.record(&mut FieldsToJson(&mut fields));
        obj.extend(fields);
        obj.insert("ecs.version".into(), Value::String("8.11.0".into()));
        writeln!(writer, "{}", Value::Object(obj))
    }
}

/// Build the subscriber; `json` selects the ECS format. Used by the binary and by tests that capture logs.
pub fn subscriber<W>(json: bool, filter: &str, writer: W) -> Box<dyn Subscriber + Send + Sync>
where
    W: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    let filter = EnvFilter::try_new(filter).unwrap_or_else(|_| EnvFilter::new("info"));
    if json {
        Box::new(
            Registry::default().with(filter).with(
                tracing_subscriber::fmt::layer()
                    .fmt_fields(JsonFields::new())
                    .event_format(EcsFormat)
                    .with_writer(writer),
            ),
        )
    } else {
        Box::new(
            Registry::default()
                .with(filter)
                .with(tracing_subscriber::fmt::layer().with_writer(writer)),
        )
    }
}

/// Install the global subscriber, logging to stderr (stdout stays free for command output).
pub fn init(json: bool, level: &str) {
    let filter = format!("{level},hyper=warn,sqlx=warn,reqwest=warn,h2=warn,tower=warn");
    let _ = tracing::subscriber::set_global_default(subscriber(json, &filter, std::io::stderr));
}
