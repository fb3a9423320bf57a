//! Metric handles registered once per label set and reused. `counter!(name, labels…)` builds a
//! labelled key (a vector of owned labels) and looks it up in the recorder's registry every time; with
//! a dozen such calls per chat request that cost more than the increments themselves. The label sets
//! are bounded (configured model and backend names, matched routes, status codes), so each is
//! registered on first use and its handle kept here; the recorder is process-wide (installed once, see
//! [`super::install`]), and so are these caches.

use std::hash::Hash;
use std::sync::{Arc, LazyLock, OnceLock, RwLock};

use hashbrown::{Equivalent, HashMap};
use metrics::{Counter, Gauge, Histogram, counter, gauge, histogram};

use super::{CHAT_REQUESTS, HTTP_DURATION, HTTP_IN_FLIGHT, HTTP_REQUESTS, INTER_TOKEN, TOKENS, TTFT};

/// The value for `key`, made (and its owned key built) by `make` on first use.
fn cached<K, V, Q>(map: &RwLock<HashMap<K, V>>, key: &Q, make: impl FnOnce() -> (K, V)) -> V
where
    K: Hash + Eq,
    Q: Hash + Equivalent<K> + ?Sized,
    V: Clone,
{
    if let Some(v) = map.read().unwrap_or_else(|e| e.into_inner()).get(key) {
        return v.clone();
    }
    let (k, v) = make();
    map.write()
        .unwrap_or_else(|e| e.into_inner())
        .entry(k)
        .or_insert(v)
        .clone()
}

/// The per-model series of a chat turn, each registered at its first use (a series appears in
/// `/metrics` once it was recorded, as before).
pub(crate) struct ModelHandles {
    model: String,
    /// `moltbot_time_to_first_token_seconds{model, stream}`: `[false, true]`.
    ttft: [OnceLock<Histogram>; 2],
    inter_token: OnceLock<Histogram>,
    prompt_tokens: OnceLock<Counter>,
    completion_tokens: OnceLock<Counter>,
}

impl ModelHandles {
    pub fn ttft(&self, stream: bool) -> &Histogram {
        self.ttft[usize::from(stream)].get_or_init(|| {
            let stream = if stream { "true" } else { "false" };
            histogram!(TTFT, "model" => self.model.clone(), "stream" => stream)
        })
    }

    pub fn inter_token(&self) -> &Histogram {
        self.inter_token
            .get_or_init(|| histogram!(INTER_TOKEN, "model" => self.model.clone()))
    }

    pub fn prompt_tokens(&self) -> &Counter {
        self.prompt_tokens
            .get_or_init(|| counter!(TOKENS, "model" => self.model.clone(), "kind" => "prompt"))
    }

    pub fn completion_tokens(&self) -> &Counter {
        self.completion_tokens
            .get_or_init(|| counter!(TOKENS, "model" => self.model.clone(), "kind" => "completion"))
    }
}

static MODELS: LazyLock<RwLock<HashMap<String, Arc<ModelHandles>>>> = LazyLock::new(Default::default);

pub(crate) fn model(model: &str) -> Arc<ModelHandles> {
    cached(&MODELS, model, || {
        let handles = ModelHandles {
            model: model.to_owned(),
            ttft: Default::default(),
            inter_token: OnceLock::new(),
            prompt_tokens: OnceLock::new(),
            completion_tokens: OnceLock::new(),
        };
        (model.to_owned(), Arc::new(handles))
    })
}

/// `moltbot_chat_requests_total{model, backend, outcome}`.
#[derive(PartialEq, Eq, Hash)]
struct TurnKey {
    model: String,
    backend: String,
    outcome: &'static str,
}

/// A [`TurnKey`] by reference (hashes like it: `str` and `String` hash alike).
#[derive(Hash)]
struct TurnKeyRef<'a> {
    model: &'a str,
    backend: &'a str,
    outcome: &'static str,
}

impl Equivalent<TurnKey> for TurnKeyRef<'_> {
    fn equivalent(&self, key: &TurnKey) -> bool {
        self.model == key.model && self.backend == key.backend && self.outcome == key.outcome
    }
}

static TURNS: LazyLock<RwLock<HashMap<TurnKey, Counter>>> = LazyLock::new(Default::default);

pub(crate) fn turns(model: &str, backend: &str, outcome: &'static str) -> Counter {
    let key = TurnKeyRef {
        model,
        backend,
        outcome,
    };
    cached(&TURNS, &key, || {
        let c = counter!(CHAT_REQUESTS,
            "model" => model.to_owned(), "backend" => backend.to_owned(), "outcome" => outcome);
        let key = TurnKey {
            model: model.to_owned(),
            backend: backend.to_owned(),
            outcome,
        };
        (key, c)
    })
}

/// `http_requests_total` and `http_request_duration_seconds` of one listener, method, route, status
/// and kind of response.
#[derive(PartialEq, Eq, Hash)]
struct HttpKey {
    listener: &'static str,
    method: &'static str,
    route: String,
    status: u16,
    stream: bool,
}

/// An [`HttpKey`] by reference (hashes like it: `str` and `String` hash alike).
#[derive(Hash)]
pub(crate) struct HttpKeyRef<'a> {
    pub listener: &'static str,
    pub method: &'static str,
    pub route: &'a str,
    pub status: u16,
    pub stream: bool,
}

impl Equivalent<HttpKey> for HttpKeyRef<'_> {
    fn equivalent(&self, key: &HttpKey) -> bool {
        self.listener == key.listener
            && self.method == key.method
            && self.route == key.route
            && self.status == key.status
            && self.stream == key.stream
    }
}

type HttpHandles = (Counter, Histogram);

static HTTP: LazyLock<RwLock<HashMap<HttpKey, HttpHandles>>> = LazyLock::new(Default::default);

/// The request counter (with `status`) and the duration histogram (without) of one request.
pub(crate) fn http(key: &HttpKeyRef<'_>) -> HttpHandles {
    cached(&HTTP, key, || {
        let stream = if key.stream { "true" } else { "false" };
        let requests = counter!(HTTP_REQUESTS,
            "listener" => key.listener, "method" => key.method, "route" => key.route.to_owned(),
            "status" => key.status.to_string(), "stream" => stream);
        let duration = histogram!(HTTP_DURATION,
            "listener" => key.listener, "method" => key.method, "route" => key.route.to_owned(),
            "stream" => stream);
        let owned = HttpKey {
            listener: key.listener,
            method: key.method,
            route: key.route.to_owned(),
            status: key.status,
            stream: key.stream,
        };
        (owned, (requests, duration))
    })
}

static IN_FLIGHT: LazyLock<RwLock<HashMap<&'static str, Gauge>>> = LazyLock::new(Default::default);

/// `http_requests_in_flight{listener}`.
pub(crate) fn in_flight(listener: &'static str) -> Gauge {
    cached(&IN_FLIGHT, listener, || {
        (listener, gauge!(HTTP_IN_FLIGHT, "listener" => listener))
    })
}

#[cfg(test)]
mod tests {
    use std::hash::BuildHasher;

    use super::*;

    #[test]
    fn borrowed_keys_hash_and_compare_like_owned_ones() {
        let s = hashbrown::DefaultHashBuilder::default();
        let owned = HttpKey {
            listener: "chat",
            method: "POST",
            route: "/v1/chat/completions".into(),
            status: 200,
            stream: true,
        };
        let borrowed = HttpKeyRef {
            listener: "chat",
            method: "POST",
            route: "/v1/chat/completions",
            status: 200,
            stream: true,
        };
        assert_eq!(s.hash_one(&owned), s.hash_one(&borrowed));
        assert!(borrowed.equivalent(&owned));
        let other = HttpKeyRef {
            status: 500,
            ..borrowed
        };
        assert!(!other.equivalent(&owned));

        let turn = TurnKey {
            model: "default".into(),
            backend: "primary".into(),
            outcome: "success",
        };
        let turn_ref = TurnKeyRef {
            model: "default",
            backend: "primary",
            outcome: "success",
        };
        assert_eq!(s.hash_one(&turn), s.hash_one(&turn_ref));
        assert!(turn_ref.equivalent(&turn));
    }

    #[test]
    fn a_label_set_is_registered_once_and_reused() {
        let a = model("handles-test-model");
        let b = model("handles-test-model");
        assert!(Arc::ptr_eq(&a, &b));
        assert_eq!(
            MODELS
                .read()
                .unwrap()
                .keys()
                .filter(|k| *k == "handles-test-model")
                .count(),
            1
        );
        turns("handles-test-model", "b1", "success").increment(1);
        turns("handles-test-model", "b1", "success").increment(1);
        turns("handles-test-model", "b2", "success").increment(1);
        let n = TURNS
            .read()
            .unwrap()
            .keys()
            .filter(|k| k.model == "handles-test-model")
            .count();
        assert_eq!(n, 2);
    }
}
