//! `POST /v1/embeddings`: request and response shapes.
//!
//! `input` is OpenAI's union (one string, strings, one token array, token arrays), read through
//! [`EmbeddingInput`] so a wrong shape is a 400 naming `input`. Unknown request fields are kept in `extra`
//! and passed through to remote backends unchanged.

use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value};
use utoipa::ToSchema;

/// An embeddings request.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
pub struct EmbeddingRequest {
    pub model: String,
    /// A string, an array of strings, an array of token ids, or an array of token-id arrays.
    #[schema(value_type = Object)]
    pub input: EmbeddingInput,
    /// `float` (default) or `base64` (little-endian `f32`s, as OpenAI sends them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encoding_format: Option<EncodingFormat>,
    /// Size of the returned vectors, where the backend supports choosing it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dimensions: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Any other field, passed through to the upstream unchanged.
    #[serde(flatten)]
    #[schema(value_type = Object)]
    pub extra: Map<String, Value>,
}

/// `input`, normalised: texts or token-id lists, one per vector.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum EmbeddingInput {
    Text(String),
    Texts(Vec<String>),
    Tokens(Vec<u32>),
    TokenLists(Vec<Vec<u32>>),
}

impl Default for EmbeddingInput {
    fn default() -> Self {
        EmbeddingInput::Texts(Vec::new())
    }
}

impl EmbeddingInput {
    /// How many vectors the request asks for.
    pub fn len(&self) -> usize {
        match self {
            EmbeddingInput::Text(_) | EmbeddingInput::Tokens(_) => 1,
            EmbeddingInput::Texts(t) => t.len(),
            EmbeddingInput::TokenLists(t) => t.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

const INPUT_SHAPE: &str =
    "expected a string, an array of strings, an array of token ids or an array of token-id arrays";

impl<'de> Deserialize<'de> for EmbeddingInput {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let token = |v: &Value| v.as_u64().and_then(|n| u32::try_from(n).ok());
        let tokens = |items: &[Value]| items.iter().map(token).collect::<Option<Vec<u32>>>();
        match Value::deserialize(deserializer)? {
            Value::String(s) => Ok(EmbeddingInput::Text(s)),
            Value::Array(items) => match items.first() {
                None => Ok(EmbeddingInput::Texts(Vec::new())),
                Some(Value::String(_)) => items
                    .into_iter()
                    .map(|v| match v {
                        Value::String(s) => Ok(s),
                        _ => Err(D::Error::custom(format!("{INPUT_SHAPE}, not a mixed array"))),
                    })
                    .collect::<Result<Vec<_>, _>>()
                    .map(EmbeddingInput::Texts),
                Some(Value::Number(_)) => tokens(&items)
                    .map(EmbeddingInput::Tokens)
                    .ok_or_else(|| D::Error::custom(format!("{INPUT_SHAPE}; token ids are integers from 0"))),
                Some(Value::Array(_)) => items
                    .iter()
                    .map(|v| v.as_array().and_then(|a| tokens(a)))
                    .collect::<Option<Vec<_>>>()
                    .map(EmbeddingInput::TokenLists)
                    .ok_or_else(|| D::Error::custom(format!("{INPUT_SHAPE}; token ids are integers from 0"))),
                Some(_) => Err(D::Error::custom(INPUT_SHAPE)),
            },
            _ => Err(D::Error::custom(INPUT_SHAPE)),
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum EncodingFormat {
    #[default]
    Float,
    Base64,
}

/// The answer: one embedding per input, in input order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct EmbeddingList {
    /// Always `"list"`.
    pub object: String,
    pub data: Vec<Embedding>,
    pub model: String,
    pub usage: EmbeddingUsage,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Embedding {
    /// Always `"embedding"`.
    pub object: String,
    pub index: u32,
    /// Floats, or a base64 string of little-endian `f32`s when `encoding_format` is `base64`.
    pub embedding: EmbeddingVector,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum EmbeddingVector {
    Float(Vec<f32>),
    Base64(String),
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct EmbeddingUsage {
    pub prompt_tokens: u32,
    pub total_tokens: u32,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn input(v: &Value) -> Result<EmbeddingInput, serde_json::Error> {
        serde_json::from_value::<EmbeddingRequest>(json!({"model": "m", "input": v})).map(|r| r.input)
    }

    #[test]
    fn every_input_shape_is_read() {
        assert_eq!(input(&json!("a")).unwrap(), EmbeddingInput::Text("a".into()));
        assert_eq!(
            input(&json!(["a", "b"])).unwrap(),
            EmbeddingInput::Texts(vec!["a".into(), "b".into()])
        );
        assert_eq!(input(&json!([1, 2])).unwrap(), EmbeddingInput::Tokens(vec![1, 2]));
        assert_eq!(
            input(&json!([[1], [2, 3]])).unwrap(),
            EmbeddingInput::TokenLists(vec![vec![1], vec![2, 3]])
        );
        assert!(input(&json!([])).unwrap().is_empty());
        assert_eq!(input(&json!([[1], [2, 3]])).unwrap().len(), 2);
    }

    #[test]
    fn wrong_shapes_are_refused() {
        for bad in [
            json!(1),
            json!(null),
            json!({"a": 1}),
            json!(["a", 1]),
            json!([1, "a"]),
            json!([-1]),
            json!([1.5]),
            json!([[1], "a"]),
            json!([[1, -2]]),
            json!([true]),
        ] {
            assert!(input(&bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn encoding_formats_and_vectors_round_trip() {
        let r: EmbeddingRequest =
            serde_json::from_value(json!({"model": "m", "input": "x", "encoding_format": "base64", "x": 1}))
                .unwrap();
        assert_eq!(r.encoding_format, Some(EncodingFormat::Base64));
        assert_eq!(r.extra["x"], 1);
        assert!(
            serde_json::from_value::<EmbeddingRequest>(
                json!({"model": "m", "input": "x", "encoding_format": "hex"})
            )
            .is_err()
        );
        let e = Embedding {
            object: "embedding".into(),
            index: 0,
            embedding: EmbeddingVector::Float(vec![0.5, -1.0]),
        };
        assert_eq!(
            serde_json::to_value(&e).unwrap(),
            json!({"object": "embedding", "index": 0, "embedding": [0.5, -1.0]})
        );
        let b = EmbeddingVector::Base64("AAAA".into());
        assert_eq!(serde_json::to_value(&b).unwrap(), json!("AAAA"));
    }
}
