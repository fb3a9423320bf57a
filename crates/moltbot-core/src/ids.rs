//! Identifiers: a prefix and a time-ordered UUIDv7 in hex (`conv_0192…`), like OpenAI's ids.

use uuid::Uuid;

pub fn new_id(prefix: &str) -> String {
    format!("{prefix}_{}", Uuid::now_v7().simple())
}

pub fn conversation_id() -> String {
    new_id("conv")
}

pub fn message_id() -> String {
    new_id("msg")
}

/// `chatcmpl-…`, with OpenAI's hyphen.
pub fn completion_id() -> String {
    format!("chatcmpl-{}", Uuid::now_v7().simple())
}

pub fn usage_id() -> String {
    new_id("use")
}

/// A random request id when the client did not send `x-request-id`.
pub fn request_id() -> String {
    Uuid::new_v4().simple().to_string()
}

#[cfg(test)]
mod tests {
    #[test]
    fn ids_are_prefixed_and_unique() {
        let a = super::conversation_id();
        let b = super::conversation_id();
        assert!(a.starts_with("conv_") && a.len() == 5 + 32);
        assert_ne!(a, b);
    }
}
