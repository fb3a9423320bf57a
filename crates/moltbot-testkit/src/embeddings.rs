//! The fake upstream's `POST /v1/embeddings`: deterministic unit vectors derived from each input (a
//! hash of the text, or of the token ids), [`FAKE_EMBEDDING_DIMS`] long unless the request has `dimensions`.
//! Tests compute the expected vectors with [`fake_embedding`].

use serde_json::{Value, json};

/// Vector size when the request does not ask for one.
pub const FAKE_EMBEDDING_DIMS: usize = 16;

/// What the fake answers for one input: `text` is the input string, or the token ids as JSON
/// (`"[1,2,3]"`). Unit length; the same input always gives the same vector.
pub fn fake_embedding(text: &str, dims: usize) -> Vec<f32> {
    // FNV-1a seeds a SplitMix64 sequence.
    let mut state = text.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    let mut next = || {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    };
    let v: Vec<f64> = (0..dims)
        .map(|_| (next() >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0)
        .collect();
    let norm = v.iter().map(|x| x * x).sum::<f64>().sqrt().max(f64::MIN_POSITIVE);
    v.iter().map(|x| (x / norm) as f32).collect()
}

/// The inputs of a request as [`fake_embedding`] keys, or why the request is invalid.
fn inputs(body: &Value) -> Result<Vec<String>, String> {
    let key = |v: &Value| match v {
        Value::String(s) => Some(s.clone()),
        Value::Array(a) if a.iter().all(Value::is_u64) => Some(v.to_string()),
        _ => None,
    };
    match &body["input"] {
        Value::String(s) => Ok(vec![s.clone()]),
        Value::Array(a) if !a.is_empty() && a.iter().all(Value::is_u64) => {
            Ok(vec![body["input"].to_string()])
        }
        Value::Array(a) if !a.is_empty() => a
            .iter()
            .map(key)
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| "'input' has an item that is neither a string nor token ids".to_owned()),
        _ => Err("'input' must be a string or a non-empty array".to_owned()),
    }
}

/// The `200` body for a request, or a `400` message.
pub(crate) fn answer(body: &Value) -> Result<Value, String> {
    let inputs = inputs(body)?;
    let dims = match body.get("dimensions") {
        None | Some(Value::Null) => FAKE_EMBEDDING_DIMS,
        Some(d) => d
            .as_u64()
            .filter(|d| (1..=4096).contains(d))
            .ok_or_else(|| "'dimensions' must be from 1 to 4096".to_owned())? as usize,
    };
    let data: Vec<Value> = inputs
        .iter()
        .enumerate()
        .map(|(i, t)| json!({"object": "embedding", "index": i, "embedding": fake_embedding(t, dims)}))
        .collect();
    // One token per whitespace-separated word (at least one per input).
    let tokens: usize = inputs.iter().map(|t| t.split_whitespace().count().max(1)).sum();
    Ok(json!({
        "object": "list",
        "data": data,
        "model": body["model"].as_str().unwrap_or("fake-embedding"),
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vectors_are_deterministic_unit_length_and_distinct() {
        let a = fake_embedding("hello", 16);
        assert_eq!(a, fake_embedding("hello", 16));
        assert_ne!(a, fake_embedding("hello!", 16));
        let norm: f32 = a.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-5, "{norm}");
        assert_eq!(fake_embedding("x", 3).len(), 3);
    }

    #[test]
    fn answers_follow_the_request() {
        let out = answer(&json!({"model": "m", "input": ["a b", "c"], "dimensions": 4})).unwrap();
        assert_eq!(out["data"][1]["index"], 1);
        assert_eq!(out["data"][0]["embedding"].as_array().unwrap().len(), 4);
        assert_eq!(out["usage"]["prompt_tokens"], 3);
        let tokens = answer(&json!({"input": [1, 2]})).unwrap();
        assert_eq!(tokens["data"].as_array().unwrap().len(), 1);
        let lists = answer(&json!({"input": [[1], [2, 3]]})).unwrap();
        assert_eq!(lists["data"].as_array().unwrap().len(), 2);
        assert!(answer(&json!({"input": []})).is_err());
        assert!(answer(&json!({"input": "a", "dimensions": 0})).is_err());
    }
}
