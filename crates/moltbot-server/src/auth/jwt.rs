//! Access tokens: HS256 JWTs with a `kid` header, signed by `auth.jwt_secret` and verified against it
//! and every `auth.jwt_previous_secrets` entry (rotation).
//!
//! The verifier pins the algorithm (HS256 only: `none`, other HMAC sizes and RS/ES headers are refused
//! before any signature check) and checks `exp`, `nbf` and `iat` itself, against the injected clock
//! with a small leeway, because JWT libraries skip `nbf` and `iat` by default.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use moltbot_config::AuthConfig;
use moltbot_core::Scope;
use rand::RngCore;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub const ISSUER: &str = "moltbot";
const ALGORITHM: Algorithm = Algorithm::HS256;
/// The `typ` header of admin console session tokens ([`super::session`]); access tokens carry `JWT`.
/// An access-token verification refuses it, and a session verification requires it.
pub const SESSION_TYP: &str = "moltbot-admin-session";

/// The claims of a moltbot access token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    pub iss: String,
    /// The API key id.
    pub sub: String,
    pub scopes: Vec<String>,
    pub iat: i64,
    pub nbf: i64,
    pub exp: i64,
    pub jti: String,
}

/// Why a token was refused. Clients only ever learn "invalid or expired"; the reason is for logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("malformed token")]
    Malformed,
    #[error("algorithm not allowed")]
    Algorithm,
    #[error("unknown key id")]
    UnknownKid,
    #[error("bad signature or claims")]
    Signature,
    #[error("wrong issuer")]
    Issuer,
    #[error("expired")]
    Expired,
    #[error("not yet valid")]
    NotYetValid,
    #[error("issued in the future")]
    IssuedInFuture,
}

/// The signing key and the keys still accepted, by `kid`.
pub struct JwtKeys {
    active_kid: String,
    encoding: EncodingKey,
    decoding: HashMap<String, DecodingKey>,
    /// Per `kid`: a key derived from that secret for HMACs other than token signatures (CSRF tokens).
    derived: HashMap<String, [u8; 32]>,
    /// No `auth.jwt_secret` was configured: tokens die with this process.
    pub ephemeral: bool,
}

/// A sub-key of a signing secret for another purpose (`label` separates the purposes).
fn derive(secret: &[u8], label: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(label);
    h.update(secret);
    h.finalize().into()
}

/// A key id derived from the secret, so rotation needs no extra configuration (and reveals nothing
/// useful: a truncated hash of a ≥ 32-byte random secret).
pub fn key_id(secret: &[u8]) -> String {
    let mut h = Sha256::new();
    h.update(b"moltbot-jwt-kid\0");
    h.update(secret);
    hex::encode(&h.finalize()[..8])
}

impl JwtKeys {
    pub fn new(active: &[u8], previous: &[&[u8]]) -> Self {
        let active_kid = key_id(active);
        let mut decoding = HashMap::new();
        let mut derived = HashMap::new();
        for secret in previous.iter().copied().chain([active]) {
            decoding.insert(key_id(secret), DecodingKey::from_secret(secret));
            derived.insert(key_id(secret), derive(secret, b"moltbot-derived-hmac-key\0"));
        }
        Self {
            active_kid,
            encoding: EncodingKey::from_secret(active),
            decoding,
            derived,
            ephemeral: false,
        }
    }

    /// From configuration; without `auth.jwt_secret` (development only) a random ephemeral secret.
    pub fn from_config(auth: &AuthConfig) -> Self {
        let previous: Vec<&[u8]> = auth
            .jwt_previous_secrets
            .iter()
            .map(|s| s.expose().as_bytes())
            .collect();
        match &auth.jwt_secret {
            Some(s) => Self::new(s.expose().as_bytes(), &previous),
            None => {
                let mut secret = [0u8; 32];
                rand::rng().fill_bytes(&mut secret);
                let mut keys = Self::new(&secret, &previous);
                keys.ephemeral = true;
                keys
            }
        }
    }

    pub fn active_kid(&self) -> &str {
        &self.active_kid
    }

    /// Sign a token for `key_id` valid from `now` (unix seconds) for `ttl`, capped at `not_after`.
    pub fn issue(
        &self,
        key_id: &str,
        scopes: &[Scope],
        now: i64,
        ttl: Duration,
        not_after: Option<i64>,
    ) -> Result<(String, Claims), jsonwebtoken::errors::Error> {
        let ttl = i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX);
        let exp = now.saturating_add(ttl).min(not_after.unwrap_or(i64::MAX));
        let claims = Claims {
            iss: ISSUER.to_owned(),
            sub: key_id.to_owned(),
            scopes: scopes.iter().map(|s| s.as_str().to_owned()).collect(),
            iat: now,
            nbf: now,
            exp,
            jti: uuid::Uuid::new_v4().simple().to_string(),
        };
        let mut header = Header::new(ALGORITHM);
        header.kid = Some(self.active_kid.clone());
        let token = jsonwebtoken::encode(&header, &claims, &self.encoding)?;
        Ok((token, claims))
    }

    /// Sign `claims` with the active secret under the header type `typ`.
    pub(crate) fn sign<T: Serialize>(
        &self,
        typ: &str,
        claims: &T,
    ) -> Result<String, jsonwebtoken::errors::Error> {
        let mut header = Header::new(ALGORITHM);
        header.kid = Some(self.active_kid.clone());
        header.typ = Some(typ.to_owned());
        jsonwebtoken::encode(&header, claims, &self.encoding)
    }

    /// Check the header (HS256, a known `kid`, the `typ`: `expect` when given; otherwise anything but
    /// [`SESSION_TYP`]) and the signature, and decode the claims. Time claims are the caller's.
    /// Returns the `kid` with the claims.
    pub(crate) fn decode<T: DeserializeOwned>(
        &self,
        token: &str,
        expect: Option<&str>,
    ) -> Result<(String, T), TokenError> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| TokenError::Malformed)?;
        if header.alg != ALGORITHM {
            return Err(TokenError::Algorithm);
        }
        let typ_ok = match expect {
            Some(t) => header.typ.as_deref() == Some(t),
            None => header.typ.as_deref() != Some(SESSION_TYP),
        };
        if !typ_ok {
            return Err(TokenError::Signature);
        }
        let kid = header.kid.ok_or(TokenError::UnknownKid)?;
        let key = self.decoding.get(&kid).ok_or(TokenError::UnknownKid)?;
        let mut validation = Validation::new(ALGORITHM);
        validation.algorithms = vec![ALGORITHM];
        // Time claims are checked by the caller, with our clock.
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.validate_aud = false;
        validation.leeway = 0;
        validation.required_spec_claims = HashSet::new();
        let claims = jsonwebtoken::decode::<T>(token, key, &validation)
            .map_err(|_| TokenError::Signature)?
            .claims;
        Ok((kid, claims))
    }

    /// HMAC-SHA256 of `message` under the key derived from the secret with this `kid` (hex), or
    /// `None` for an unknown `kid`.
    pub(crate) fn hmac_hex(&self, kid: &str, message: &[u8]) -> Option<String> {
        use hmac::Mac;
        let key = self.derived.get(kid)?;
        let mut mac = hmac::Hmac::<Sha256>::new_from_slice(key).ok()?;
        mac.update(message);
        Some(hex::encode(mac.finalize().into_bytes()))
    }

    /// Verify an access token at `now` (unix seconds) with `leeway` for clock differences.
    pub fn verify(&self, token: &str, now: i64, leeway: Duration) -> Result<Claims, TokenError> {
        let (_, claims) = self.decode::<Claims>(token, None)?;
        if claims.iss != ISSUER {
            return Err(TokenError::Issuer);
        }
        let leeway = i64::try_from(leeway.as_secs()).unwrap_or(0);
        if now >= claims.exp.saturating_add(leeway) {
            return Err(TokenError::Expired);
        }
        if claims.nbf > now.saturating_add(leeway) {
            return Err(TokenError::NotYetValid);
        }
        if claims.iat > now.saturating_add(leeway) {
            return Err(TokenError::IssuedInFuture);
        }
        Ok(claims)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_700_000_000;
    const LEEWAY: Duration = Duration::from_secs(30);

    #[test]
    fn round_trip_and_time_claims() {
        let keys = JwtKeys::new(b"0123456789abcdef0123456789abcdef", &[]);
        let (token, claims) = keys
            .issue("key_1", &[Scope::Chat], NOW, Duration::from_secs(60), None)
            .unwrap();
        assert_eq!(keys.verify(&token, NOW, LEEWAY).unwrap(), claims);
        assert_eq!(claims.exp, NOW + 60);
        assert_eq!(
            keys.verify(&token, NOW + 89, LEEWAY).map(|c| c.sub),
            Ok("key_1".into())
        );
        assert_eq!(keys.verify(&token, NOW + 90, LEEWAY), Err(TokenError::Expired));
        assert_eq!(
            keys.verify(&token, NOW - 31, LEEWAY),
            Err(TokenError::NotYetValid)
        );
        let (capped, c) = keys
            .issue("key_1", &[], NOW, Duration::from_secs(600), Some(NOW + 10))
            .unwrap();
        assert_eq!(c.exp, NOW + 10, "capped by the key's expiry");
        assert!(keys.verify(&capped, NOW, LEEWAY).is_ok());
    }

    #[test]
    fn rotation_accepts_previous_secrets_by_kid() {
        let old = JwtKeys::new(b"old-secret-0123456789abcdef012345", &[]);
        let (token, _) = old.issue("k", &[], NOW, Duration::from_secs(60), None).unwrap();
        let rotated = JwtKeys::new(
            b"new-secret-0123456789abcdef012345",
            &[b"old-secret-0123456789abcdef012345"],
        );
        assert_ne!(rotated.active_kid(), old.active_kid());
        assert!(rotated.verify(&token, NOW, LEEWAY).is_ok());
        let removed = JwtKeys::new(b"new-secret-0123456789abcdef012345", &[]);
        assert_eq!(removed.verify(&token, NOW, LEEWAY), Err(TokenError::UnknownKid));
    }

    #[test]
    fn ephemeral_secret_when_unconfigured() {
        let a = JwtKeys::from_config(&AuthConfig::default());
        let b = JwtKeys::from_config(&AuthConfig::default());
        assert!(a.ephemeral);
        assert_ne!(a.active_kid(), b.active_kid());
    }
}
