//! Access-control domain: API keys, scopes, per-key limits and the authenticated [`Principal`].
//!
//! An API key secret is `mb_` + an 8-character visible prefix + `_` + 32 random bytes in base62.
//! Only its SHA-256 is stored; [`verify_secret`] compares hashes in constant time.

use std::fmt;

use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// What a credential may do. Least privilege: no scope implies another.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
pub enum Scope {
    /// `POST /v1/chat/completions`.
    Chat,
    /// OpenAI's Conversations API (`/v1/conversations…`).
    Conversations,
    /// The admin API on the admin listener (key management).
    Admin,
    /// `GET /metrics` on the admin listener (a key Prometheus can hold).
    Metrics,
}

impl Scope {
    pub const ALL: [Scope; 4] = [Scope::Chat, Scope::Conversations, Scope::Admin, Scope::Metrics];

    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Chat => "chat",
            Scope::Conversations => "conversations",
            Scope::Admin => "admin",
            Scope::Metrics => "metrics",
        }
    }

    pub fn parse(s: &str) -> Option<Scope> {
        Scope::ALL.into_iter().find(|scope| scope.as_str() == s)
    }

    /// Parse a comma-separated list (`chat,conversations`); duplicates are dropped, order is canonical.
    pub fn parse_list(s: &str) -> Result<Vec<Scope>, String> {
        let mut out = Vec::new();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let scope = Scope::parse(part).ok_or_else(|| {
                let known: Vec<&str> = Scope::ALL.iter().map(|s| s.as_str()).collect();
                format!("unknown scope `{part}`: expected one of {}", known.join(", "))
            })?;
            out.push(scope);
        }
        out.sort();
        out.dedup();
        Ok(out)
    }

    /// The canonical comma-separated form.
    pub fn join(scopes: &[Scope]) -> String {
        scopes.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(",")
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Per-key limits; `None` falls back to the configured default (which may be unlimited).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct KeyLimits {
    pub requests_per_minute: Option<u32>,
    pub tokens_per_minute: Option<u32>,
    pub daily_tokens: Option<u64>,
    pub concurrent_streams: Option<u32>,
}

impl KeyLimits {
    /// These limits, with unset ones taken from `defaults`.
    pub fn or(self, defaults: KeyLimits) -> KeyLimits {
        KeyLimits {
            requests_per_minute: self.requests_per_minute.or(defaults.requests_per_minute),
            tokens_per_minute: self.tokens_per_minute.or(defaults.tokens_per_minute),
            daily_tokens: self.daily_tokens.or(defaults.daily_tokens),
            concurrent_streams: self.concurrent_streams.or(defaults.concurrent_streams),
        }
    }
}

/// A stored API key (never the secret: only its hash).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKey {
    /// `key_…`; also the owner id of every record the key creates.
    pub id: String,
    /// Who or what holds the key (free text).
    pub name: String,
    /// The visible part of the secret (`mb_AbCd1234`), for recognising a key in listings.
    pub prefix: String,
    /// Lower-case hex SHA-256 of the whole secret.
    pub secret_hash: String,
    pub scopes: Vec<Scope>,
    pub limits: KeyLimits,
    pub created_at: i64,
    pub last_used_at: Option<i64>,
    pub expires_at: Option<i64>,
    pub revoked_at: Option<i64>,
}

impl ApiKey {
    /// A new key with a fresh secret. The secret is returned once and never stored.
    pub fn generate(
        name: &str,
        scopes: Vec<Scope>,
        limits: KeyLimits,
        now: i64,
        expires_at: Option<i64>,
    ) -> (ApiKey, String) {
        let secret = new_secret();
        let key = ApiKey::from_secret(&secret, name, scopes, limits, now, expires_at);
        (key, secret)
    }

    /// A key record for a secret supplied from outside (the bootstrap admin key from a secret store).
    pub fn from_secret(
        secret: &str,
        name: &str,
        scopes: Vec<Scope>,
        limits: KeyLimits,
        now: i64,
        expires_at: Option<i64>,
    ) -> ApiKey {
        ApiKey {
            id: crate::ids::new_id("key"),
            name: name.to_owned(),
            prefix: visible_prefix(secret),
            secret_hash: hash_secret(secret),
            scopes,
            limits,
            created_at: now,
            last_used_at: None,
            expires_at,
            revoked_at: None,
        }
    }

    pub fn has_scope(&self, scope: Scope) -> bool {
        self.scopes.contains(&scope)
    }

    /// Usable at `now`: not revoked and not expired.
    pub fn is_active(&self, now: i64) -> bool {
        self.revoked_at.is_none() && self.expires_at.is_none_or(|e| now < e)
    }
}

/// What a PATCH may change; `None` leaves a field as it is, `Some(None)` clears a limit or expiry.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ApiKeyUpdate {
    pub name: Option<String>,
    pub scopes: Option<Vec<Scope>>,
    pub requests_per_minute: Option<Option<u32>>,
    pub tokens_per_minute: Option<Option<u32>>,
    pub daily_tokens: Option<Option<u64>>,
    pub concurrent_streams: Option<Option<u32>>,
    pub expires_at: Option<Option<i64>>,
}

impl ApiKeyUpdate {
    /// Apply to a key record (the store persists the result).
    pub fn apply(&self, key: &mut ApiKey) {
        if let Some(n) = &self.name {
            key.name.clone_from(n);
        }
        if let Some(s) = &self.scopes {
            key.scopes.clone_from(s);
        }
        let l = &mut key.limits;
        if let Some(v) = self.requests_per_minute {
            l.requests_per_minute = v;
        }
        if let Some(v) = self.tokens_per_minute {
            l.tokens_per_minute = v;
        }
        if let Some(v) = self.daily_tokens {
            l.daily_tokens = v;
        }
        if let Some(v) = self.concurrent_streams {
            l.concurrent_streams = v;
        }
        if let Some(v) = self.expires_at {
            key.expires_at = v;
        }
    }
}

/// How a caller authenticated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Credential {
    ApiKey,
    /// A JWT access token from `/v1/auth/token`.
    AccessToken,
}

/// An authenticated caller. Records are owned by [`Principal::owner`], the API key id.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Principal {
    pub key_id: String,
    pub key_name: String,
    /// For a token: the token's scopes still held by its key.
    pub scopes: Vec<Scope>,
    /// Effective limits (the key's, with configured defaults filled in).
    pub limits: KeyLimits,
    pub credential: Credential,
    /// When the key (not a token) expires, for capping token lifetimes.
    pub key_expires_at: Option<i64>,
}

impl Principal {
    pub fn owner(&self) -> &str {
        &self.key_id
    }

    pub fn has_scope(&self, scope: Scope) -> bool {
        self.scopes.contains(&scope)
    }
}

/// Prefix of every moltbot API key secret.
pub const SECRET_PREFIX: &str = "mb_";
const VISIBLE_LEN: usize = 8;
const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// `mb_` + 8 visible characters + `_` + 32 random bytes in base62 (43 characters).
pub fn new_secret() -> String {
    let mut rng = rand::rng();
    let mut visible = [0u8; 6];
    rng.fill_bytes(&mut visible);
    let mut body = [0u8; 32];
    rng.fill_bytes(&mut body);
    let mut prefix = base62(&visible);
    prefix.truncate(VISIBLE_LEN);
    format!("{SECRET_PREFIX}{prefix:0>8}_{}", base62(&body))
}

/// Whether a string has the shape of a moltbot secret (cheap check before any lookup): `mb_` and 32 to
/// 128 letters, digits or underscores (generated keys, and operator-supplied bootstrap keys).
pub fn looks_like_secret(s: &str) -> bool {
    s.strip_prefix(SECRET_PREFIX).is_some_and(|rest| {
        (32..=128).contains(&rest.len()) && rest.bytes().all(|b| b == b'_' || b.is_ascii_alphanumeric())
    })
}

/// `mb_` and the visible characters (what listings show).
pub fn visible_prefix(secret: &str) -> String {
    secret.chars().take(SECRET_PREFIX.len() + VISIBLE_LEN).collect()
}

/// SHA-256 of the secret in lowercase hex, as stored. Runs on every authenticated request: encoded
/// into a buffer (`hex::encode` collects the string one `char` at a time).
pub fn hash_secret(secret: &str) -> String {
    let mut hex = vec![0u8; 64];
    hex::encode_to_slice(Sha256::digest(secret.as_bytes()), &mut hex)
        .expect("64 bytes hold a 32-byte digest in hex");
    String::from_utf8(hex).expect("hex digits are ASCII")
}

/// Constant-time comparison of a presented secret against a stored hash.
pub fn verify_secret(secret: &str, stored_hash: &str) -> bool {
    hashes_match(&hash_secret(secret), stored_hash)
}

/// Constant-time comparison of two secret hashes (a presented secret's, already hashed, and a stored one).
pub fn hashes_match(hash: &str, stored_hash: &str) -> bool {
    hash.as_bytes().ct_eq(stored_hash.as_bytes()).into()
}

/// Big-endian base62 of `bytes` (leading zero bytes are not preserved; the length varies by a char).
pub fn base62(bytes: &[u8]) -> String {
    let mut digits: Vec<u8> = Vec::new();
    let mut num: Vec<u8> = bytes.to_vec();
    while num.iter().any(|b| *b != 0) {
        let mut rem: u32 = 0;
        for b in &mut num {
            let cur = (rem << 8) | u32::from(*b);
            *b = (cur / 62) as u8;
            rem = cur % 62;
        }
        digits.push(BASE62[rem as usize]);
    }
    if digits.is_empty() {
        digits.push(b'0');
    }
    digits.reverse();
    String::from_utf8(digits).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base62_matches_integer_conversion() {
        assert_eq!(base62(&[0]), "0");
        assert_eq!(base62(&[61]), "z");
        assert_eq!(base62(&[62]), "10");
        assert_eq!(base62(&[1, 0]), "48"); // 256 = 4·62 + 8
        let n: u64 = 0x0123_4567_89ab_cdef;
        let mut expect = String::new();
        let mut v = n;
        while v > 0 {
            expect.insert(0, BASE62[(v % 62) as usize] as char);
            v /= 62;
        }
        assert_eq!(base62(&n.to_be_bytes()), expect);
    }

    #[test]
    fn secrets_are_shaped_unique_and_verify() {
        let a = new_secret();
        let b = new_secret();
        assert_ne!(a, b);
        assert!(looks_like_secret(&a), "{a}");
        assert!(a.len() >= 3 + 8 + 1 + 42, "{a}");
        assert_eq!(visible_prefix(&a).len(), 11);
        let h = hash_secret(&a);
        assert!(verify_secret(&a, &h));
        assert!(!verify_secret(&b, &h));
        assert!(hashes_match(&h, &h) && !hashes_match(&hash_secret(&b), &h));
        // The stored format (lowercase hex SHA-256) must never change: keys in existing databases.
        assert_eq!(
            hash_secret("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert!(!looks_like_secret("mb_short"));
        assert!(!looks_like_secret(
            "sk-something-else-entirely-0123456789012345678901"
        ));
    }

    #[test]
    fn scopes_parse_canonically() {
        assert_eq!(
            Scope::parse_list("admin, chat,chat").unwrap(),
            vec![Scope::Chat, Scope::Admin]
        );
        assert!(Scope::parse_list("chat,root").unwrap_err().contains("root"));
        assert_eq!(Scope::join(&[Scope::Chat, Scope::Metrics]), "chat,metrics");
    }

    #[test]
    fn keys_expire_and_revoke() {
        let (mut k, secret) = ApiKey::generate("t", vec![Scope::Chat], KeyLimits::default(), 100, Some(200));
        assert!(verify_secret(&secret, &k.secret_hash));
        assert!(k.is_active(199) && !k.is_active(200));
        k.expires_at = None;
        k.revoked_at = Some(150);
        assert!(!k.is_active(151));
        let limits = KeyLimits {
            requests_per_minute: Some(5),
            ..KeyLimits::default()
        }
        .or(KeyLimits {
            requests_per_minute: Some(9),
            tokens_per_minute: Some(7),
            ..KeyLimits::default()
        });
        assert_eq!(
            (limits.requests_per_minute, limits.tokens_per_minute),
            (Some(5), Some(7))
        );
    }
}
