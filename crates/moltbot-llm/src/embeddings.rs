//! Embeddings through a remote backend: `POST {endpoint}/embeddings` with the same keys, retries,
//! timeouts, circuit breaker and outbound limits as chat ([`RemoteBackend::call`]).
//!
//! Floats are always requested (`encoding_format: "float"`): the server encodes base64 for its own
//! clients, so every backend answers the same way. `dimensions` and unknown request fields are passed
//! through; the upstream decides whether it can honour them.

use bytes::Bytes;
use moltbot_core::{BackendError, EmbedInput, EmbedOutput, EmbedRequest};
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::backend::{Answer, Call, RemoteBackend};

pub(crate) async fn embed(
    backend: &RemoteBackend,
    request: EmbedRequest,
) -> Result<EmbedOutput, BackendError> {
    let estimate = || {
        request
            .inputs
            .iter()
            .map(|i| match i {
                EmbedInput::Text(t) => backend.counter().count_text(t).max(1),
                EmbedInput::Tokens(t) => t.len(),
            })
            .sum::<usize>() as u64
    };
    let cost = if backend.limits_tokens() { estimate() } else { 0 };
    let body = serde_json::to_vec(&request_body(&request))
        .map_err(|e| BackendError::Protocol(format!("could not encode the request: {e}")))?;
    let bytes = match backend
        .call(Call::Embeddings, &request.request_id, Bytes::from(body), cost)
        .await?
    {
        Answer::Body(b) => b,
        Answer::Events(_) => return Err(BackendError::Protocol("expected a JSON body".into())),
    };
    let (vectors, prompt_tokens) = parse(&bytes, request.inputs.len())?;
    let prompt_tokens = prompt_tokens.unwrap_or_else(|| u32::try_from(estimate()).unwrap_or(u32::MAX));
    Ok(EmbedOutput {
        vectors,
        prompt_tokens,
    })
}

/// Known fields win over same-named `extra` fields; every other `extra` field is forwarded unchanged.
pub(crate) fn request_body(request: &EmbedRequest) -> Value {
    let mut m = Map::new();
    m.insert("model".into(), Value::String(request.model.clone()));
    let input = request
        .inputs
        .iter()
        .map(|i| match i {
            EmbedInput::Text(t) => Value::String(t.clone()),
            EmbedInput::Tokens(t) => Value::from(t.clone()),
        })
        .collect();
    m.insert("input".into(), Value::Array(input));
    m.insert("encoding_format".into(), Value::String("float".into()));
    if let Some(d) = request.dimensions {
        m.insert("dimensions".into(), Value::from(d));
    }
    if let Some(u) = &request.user {
        m.insert("user".into(), Value::String(u.clone()));
    }
    for (k, v) in &request.extra {
        m.entry(k.clone()).or_insert_with(|| v.clone());
    }
    Value::Object(m)
}

#[derive(Deserialize)]
struct Body {
    data: Vec<Item>,
    #[serde(default)]
    usage: Option<Usage>,
}

#[derive(Deserialize)]
struct Item {
    index: Option<usize>,
    embedding: Vec<f32>,
}

#[derive(Deserialize)]
struct Usage {
    prompt_tokens: Option<u32>,
}

/// The vectors in input order (by `index`, else by position), and the upstream's prompt tokens. The
/// upstream must answer exactly one vector per input.
pub(crate) fn parse(bytes: &[u8], inputs: usize) -> Result<(Vec<Vec<f32>>, Option<u32>), BackendError> {
    let protocol = |m: &str| BackendError::Protocol(format!("upstream embeddings: {m}"));
    let body: Body = serde_json::from_slice(bytes)
        .map_err(|e| protocol(&format!("not a list of float embeddings ({})", category(&e))))?;
    if body.data.len() != inputs {
        return Err(protocol(&format!(
            "{} vectors for {inputs} inputs",
            body.data.len()
        )));
    }
    let mut slots: Vec<Option<Vec<f32>>> = vec![None; inputs];
    for (pos, item) in body.data.into_iter().enumerate() {
        let i = item.index.unwrap_or(pos);
        match slots.get_mut(i) {
            Some(slot @ None) => *slot = Some(item.embedding),
            _ => return Err(protocol("missing or repeated indexes")),
        }
    }
    let vectors = slots.into_iter().flatten().collect::<Vec<_>>();
    Ok((vectors, body.usage.and_then(|u| u.prompt_tokens)))
}

/// What kind of JSON error, without the upstream's text.
fn category(e: &serde_json::Error) -> &'static str {
    match e.classify() {
        serde_json::error::Category::Io => "io",
        serde_json::error::Category::Syntax => "syntax",
        serde_json::error::Category::Data => "unexpected shape",
        serde_json::error::Category::Eof => "truncated",
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn body_asks_for_floats_and_passes_dimensions_and_extra() {
        let mut extra = Map::new();
        extra.insert("encoding_format".into(), json!("base64"));
        extra.insert("truncate_prompt_tokens".into(), json!(8));
        let body = request_body(&EmbedRequest {
            model: "up".into(),
            inputs: vec![EmbedInput::Text("a".into()), EmbedInput::Tokens(vec![1, 2])],
            dimensions: Some(64),
            user: Some("u".into()),
            extra,
            request_id: "r".into(),
        });
        assert_eq!(
            body,
            json!({"model": "up", "input": ["a", [1, 2]], "encoding_format": "float", "dimensions": 64,
                   "user": "u", "truncate_prompt_tokens": 8})
        );
    }

    #[test]
    fn vectors_come_back_in_index_order() {
        let body = json!({"object": "list", "data": [
            {"object": "embedding", "index": 1, "embedding": [0.0, 1.0]},
            {"object": "embedding", "index": 0, "embedding": [1.0, 0.0]},
        ], "usage": {"prompt_tokens": 7, "total_tokens": 7}});
        let (v, tokens) = parse(body.to_string().as_bytes(), 2).unwrap();
        assert_eq!(v, vec![vec![1.0, 0.0], vec![0.0, 1.0]]);
        assert_eq!(tokens, Some(7));
        let no_usage = json!({"data": [{"embedding": [0.5]}]});
        assert_eq!(
            parse(no_usage.to_string().as_bytes(), 1).unwrap(),
            (vec![vec![0.5]], None)
        );
    }

    #[test]
    fn wrong_answers_are_protocol_errors() {
        for bad in [
            json!({"data": [{"index": 0, "embedding": [1.0]}]}),
            json!({"data": [{"index": 0, "embedding": [1.0]}, {"index": 0, "embedding": [1.0]}]}),
            json!({"data": [{"index": 0, "embedding": [1.0]}, {"index": 5, "embedding": [1.0]}]}),
            json!({"data": [{"index": 0, "embedding": "AAAA"}, {"index": 1, "embedding": [1.0]}]}),
            json!({"error": "x"}),
        ] {
            assert!(
                matches!(
                    parse(bad.to_string().as_bytes(), 2),
                    Err(BackendError::Protocol(_))
                ),
                "{bad}"
            );
        }
        assert!(parse(b"not json", 1).is_err());
    }
}
