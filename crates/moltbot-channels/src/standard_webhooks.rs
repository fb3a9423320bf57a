//! Standard Webhooks (<https://www.standardwebhooks.com/>, spec v1): HMAC-SHA256 signatures over
//! `{webhook-id}.{webhook-timestamp}.{body}` with a `whsec_`-prefixed base64 key, sent as
//! `webhook-signature: v1,<base64>` (several space-separated signatures during key rotation).
//! Used to verify generic inbound hooks and to sign hook callbacks and outbound event webhooks.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::{ChannelError, secure_eq};

/// Prefix of a Standard Webhooks key.
pub const SECRET_PREFIX: &str = "whsec_";

/// How far `webhook-timestamp` may be from now (the spec's recommendation: 5 minutes).
pub const DEFAULT_TOLERANCE_SECS: i64 = 5 * 60;

/// The key bytes of `whsec_<base64>` (the prefix is optional, as in the reference libraries).
pub fn decode_secret(secret: &str) -> Result<Vec<u8>, String> {
    let encoded = secret.strip_prefix(SECRET_PREFIX).unwrap_or(secret);
    let key = STANDARD
        .decode(encoded)
        .map_err(|_| format!("a Standard Webhooks key is \"{SECRET_PREFIX}\" followed by base64"))?;
    if key.is_empty() {
        return Err("the Standard Webhooks key is empty".into());
    }
    Ok(key)
}

/// A new random key (32 bytes), `whsec_…`.
pub fn generate_secret() -> String {
    let bytes: [u8; 32] = rand::random();
    format!("{SECRET_PREFIX}{}", STANDARD.encode(bytes))
}

fn mac(key: &[u8], msg_id: &str, timestamp: i64, body: &[u8]) -> Vec<u8> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(msg_id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac.finalize().into_bytes().to_vec()
}

/// The `webhook-signature` value (`v1,<base64>`) of a message.
pub fn sign(secret: &str, msg_id: &str, timestamp: i64, body: &[u8]) -> Result<String, String> {
    let key = decode_secret(secret)?;
    Ok(format!(
        "v1,{}",
        STANDARD.encode(mac(&key, msg_id, timestamp, body))
    ))
}

/// Check a message: the timestamp within `tolerance_secs` of `now`, and one of the space-separated
/// `v1,` signatures matching (constant-time). Other versions in the list are skipped.
pub fn verify(
    secret: &str,
    msg_id: &str,
    timestamp: &str,
    signatures: &str,
    body: &[u8],
    now: i64,
    tolerance_secs: i64,
) -> Result<(), ChannelError> {
    let key = decode_secret(secret).map_err(ChannelError::Unauthorized)?;
    if msg_id.is_empty() {
        return Err(ChannelError::Unauthorized("missing webhook-id".into()));
    }
    let ts: i64 = timestamp
        .trim()
        .parse()
        .map_err(|_| ChannelError::Unauthorized("webhook-timestamp is not unix seconds".into()))?;
    if !crate::within_window(ts, now, tolerance_secs) {
        return Err(ChannelError::Unauthorized(
            "webhook-timestamp is too old or too new".into(),
        ));
    }
    let expected = mac(&key, msg_id, ts, body);
    let matched = signatures
        .split_whitespace()
        .filter_map(|s| s.strip_prefix("v1,"))
        .filter_map(|b64| STANDARD.decode(b64).ok())
        .any(|given| secure_eq(&given, &expected));
    if matched {
        Ok(())
    } else {
        Err(ChannelError::Unauthorized("no webhook-signature matches".into()))
    }
}

/// [`verify`] with the three headers taken from a request.
pub fn verify_request(
    secret: &str,
    headers: &http::HeaderMap,
    body: &[u8],
    now: i64,
    tolerance_secs: i64,
) -> Result<(), ChannelError> {
    let h = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    };
    let signatures = h("webhook-signature");
    if signatures.is_empty() {
        return Err(ChannelError::Unauthorized("missing webhook-signature".into()));
    }
    verify(
        secret,
        h("webhook-id"),
        h("webhook-timestamp"),
        signatures,
        body,
        now,
        tolerance_secs,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    // The test vector of the Standard Webhooks reference libraries (standard-webhooks/standard-webhooks,
    // libraries/*/ tests: secret, msg_id, timestamp, payload and the expected signature).
    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const MSG_ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
    const TS: i64 = 1614265330;
    const PAYLOAD: &[u8] = br#"{"test": 2432232314}"#;
    const SIGNATURE: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";

    #[test]
    fn reference_vector() {
        assert_eq!(sign(SECRET, MSG_ID, TS, PAYLOAD).unwrap(), SIGNATURE);
        verify(
            SECRET,
            MSG_ID,
            &TS.to_string(),
            SIGNATURE,
            PAYLOAD,
            TS + 10,
            DEFAULT_TOLERANCE_SECS,
        )
        .unwrap();
    }

    #[test]
    fn rotation_lists_unknown_versions_and_refusals() {
        let ts = TS.to_string();
        let list = format!("v1a,xyz v1,AAAA {SIGNATURE}");
        verify(SECRET, MSG_ID, &ts, &list, PAYLOAD, TS, 300).unwrap();
        let refused = |id: &str, ts: &str, sig: &str, body: &[u8], now: i64| {
            verify(SECRET, id, ts, sig, body, now, 300).is_err()
        };
        assert!(
            refused(MSG_ID, &ts, SIGNATURE, br#"{"test": 2432232315}"#, TS),
            "tampered body"
        );
        assert!(refused("msg_other", &ts, SIGNATURE, PAYLOAD, TS), "other id");
        assert!(refused(MSG_ID, &ts, SIGNATURE, PAYLOAD, TS + 301), "too old");
        assert!(
            refused(MSG_ID, &ts, SIGNATURE, PAYLOAD, TS - 301),
            "from the future"
        );
        assert!(refused(MSG_ID, "nope", SIGNATURE, PAYLOAD, TS), "bad timestamp");
        assert!(refused(MSG_ID, &ts, "", PAYLOAD, TS), "no signature");
        assert!(
            refused(MSG_ID, &ts, &SIGNATURE.replace("v1,", "v2,"), PAYLOAD, TS),
            "unknown version only"
        );
        assert!(
            verify("whsec_!!!", MSG_ID, &ts, SIGNATURE, PAYLOAD, TS, 300).is_err(),
            "bad key"
        );
    }

    #[test]
    fn generated_secrets_decode_to_32_bytes() {
        let s = generate_secret();
        assert!(s.starts_with(SECRET_PREFIX));
        assert_eq!(decode_secret(&s).unwrap().len(), 32);
        assert_ne!(generate_secret(), s);
    }

    proptest! {
        #[test]
        fn sign_then_verify_round_trips(body in proptest::collection::vec(any::<u8>(), 0..512), id in "[a-zA-Z0-9_]{1,40}", ts in 1_000_000_000i64..2_000_000_000, flip in 0usize..512) {
            let secret = generate_secret();
            let sig = sign(&secret, &id, ts, &body).unwrap();
            prop_assert!(verify(&secret, &id, &ts.to_string(), &sig, &body, ts, 300).is_ok());
            if !body.is_empty() {
                let mut tampered = body.clone();
                let i = flip % tampered.len();
                tampered[i] ^= 1;
                prop_assert!(verify(&secret, &id, &ts.to_string(), &sig, &tampered, ts, 300).is_err());
            }
            prop_assert!(verify(&generate_secret(), &id, &ts.to_string(), &sig, &body, ts, 300).is_err());
        }
    }
}
