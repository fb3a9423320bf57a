//! The OpenAI error envelope: `{"error": {"message", "type", "param", "code"}}`.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// The body of every error response and of an error event in a stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ErrorEnvelope {
    pub error: ErrorBody,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    pub message: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub param: Option<String>,
    pub code: Option<String>,
}

impl ErrorEnvelope {
    pub fn new(kind: &str, message: impl Into<String>, param: Option<&str>, code: Option<&str>) -> Self {
        Self {
            error: ErrorBody {
                message: message.into(),
                kind: kind.to_owned(),
                param: param.map(str::to_owned),
                code: code.map(str::to_owned),
            },
        }
    }
}
