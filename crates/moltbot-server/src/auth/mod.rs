//! Access control: who is calling (API key or access token), what they may do (scopes), how much
//! (rate limits, quotas, concurrent streams), and who keeps guessing (lockouts).
//!
//! [`layer`] runs in each listener's middleware stack before idempotency: it authenticates every
//! request except the listener's public paths, inserts the [`Principal`] into the request extensions
//! and applies the per-key request rate. Route groups then require scopes with [`require_scope`];
//! admin handlers take an [`AdminPrincipal`], which only this module can construct.

mod extract;
pub mod jwt;
pub mod limits;
pub mod lockout;
pub mod session;

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderValue, Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use moltbot_config::Config;
use moltbot_core::auth::{hash_secret, hashes_match, looks_like_secret};
use moltbot_core::ratelimit::{InMemoryLimiter, RateLimiter};
use moltbot_core::{ApiKey, Clock, Credential, KeyLimits, Principal, Scope, Store, StoreError};

pub use extract::{AdminPrincipal, MetricsAccess, require_metrics, require_scope};

use crate::error::ApiError;
use crate::state::AppState;
use lockout::{Failure, Lockout};

/// Where `/metrics` lives on the admin listener: reachable without credentials so that
/// [`MetricsAccess`] can admit scrapers from the admin CIDR allowlist.
pub const METRICS_PATH: &str = "/metrics";

/// Which paths of a listener skip authentication.
#[derive(Debug, Clone, Copy)]
pub struct Policy {
    /// Exact paths served without credentials.
    pub public: &'static [&'static str],
    /// Path prefixes served without credentials (channels and hooks verify their own signatures).
    pub public_prefixes: &'static [&'static str],
    /// Paths where credentials are optional here and the handler's extractor decides.
    pub optional: &'static [&'static str],
    /// Apply the per-key requests-per-minute limit.
    pub rate_limit: bool,
    /// Accept the admin session cookie (with CSRF checks) when no `Authorization` is sent, and let
    /// `POST` [`crate::routes::admin_session::PATH`] (sign-in) through without credentials.
    pub sessions: bool,
}

impl Policy {
    pub const CHAT: Policy = Policy {
        public: &[
            crate::routes::health::HEALTH,
            crate::routes::health::READY,
            crate::routes::openapi::PATH,
            crate::routes::assets::INDEX,
        ],
        public_prefixes: &["/channels/", "/hooks/", crate::routes::assets::PREFIX],
        // Browsers cannot send `Authorization` on a WebSocket: the handler authenticates a ticket or
        // the `bearer.<credential>` subprotocol itself (see routes/ws).
        optional: &[crate::routes::ws::PATH],
        rate_limit: true,
        sessions: false,
    };
    pub const ADMIN: Policy = Policy {
        public: &[
            crate::routes::health::HEALTH,
            crate::routes::health::READY,
            crate::routes::assets::INDEX,
        ],
        public_prefixes: &[crate::routes::assets::PREFIX],
        optional: &[METRICS_PATH, crate::routes::admin_session::PATH],
        rate_limit: false,
        sessions: true,
    };

    fn is_public(&self, path: &str) -> bool {
        self.public.contains(&path) || self.public_prefixes.iter().any(|p| path.starts_with(p))
    }
}

/// Why authentication failed. Clients see only `missing_api_key`, `invalid_api_key` or `invalid_token`.
#[derive(Debug)]
pub enum AuthError {
    Missing,
    InvalidKey(&'static str),
    InvalidToken(&'static str),
    /// The admin session cookie was refused (reason for logs).
    InvalidSession(&'static str),
    Store(StoreError),
}

impl AuthError {
    fn reason(&self) -> &'static str {
        match self {
            AuthError::Missing => "missing",
            AuthError::InvalidKey(r) | AuthError::InvalidToken(r) | AuthError::InvalidSession(r) => r,
            AuthError::Store(_) => "store_error",
        }
    }
}

impl From<AuthError> for ApiError {
    fn from(e: AuthError) -> Self {
        match e {
            AuthError::Missing => ApiError::Unauthorized {
                message:
                    "You didn't provide an API key. Send it in an Authorization header using Bearer auth \
                          (Authorization: Bearer YOUR_KEY)."
                        .into(),
                code: "missing_api_key",
            },
            AuthError::InvalidKey(_) => ApiError::Unauthorized {
                message: "Incorrect API key provided.".into(),
                code: "invalid_api_key",
            },
            AuthError::InvalidToken(_) => ApiError::Unauthorized {
                message: "The access token is invalid or expired; request a new one from /v1/auth/token."
                    .into(),
                code: "invalid_token",
            },
            AuthError::InvalidSession(_) => ApiError::Unauthorized {
                message: "The admin session is invalid or has expired; sign in again.".into(),
                code: "invalid_session",
            },
            AuthError::Store(e @ StoreError::Unavailable(_)) => e.into(),
            AuthError::Store(e) => ApiError::internal(format!("API key lookup failed: {e}")),
        }
    }
}

/// Access-control state shared by both listeners.
pub struct Auth {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    pub jwt: jwt::JwtKeys,
    pub limiter: Arc<dyn RateLimiter>,
    pub lockout: Lockout,
    pub(crate) streams: limits::StreamCounter,
    defaults: KeyLimits,
    pub(crate) burst_window: Duration,
    token_ttl: Duration,
    max_token_ttl: Duration,
    leeway: Duration,
    cache_ttl_ms: i64,
    /// `id:<key id>` and `hash:<secret hash>` → the key and when it was read.
    cache: Arc<Mutex<HashMap<String, (ApiKey, i64)>>>,
    /// Cluster mode: Redis shared by the replicas.
    cluster: Option<Arc<crate::cluster::Shared>>,
    /// Last `last_used_at` write per key, so a busy key is written at most once a minute.
    touched: Mutex<HashMap<String, i64>>,
    pub(crate) trusted_proxies: Vec<ipnet::IpNet>,
    /// Admin console sessions: lifetime and the sign-out denylist.
    pub(crate) sessions: session::Sessions,
}

impl Auth {
    pub fn new(config: &Config, store: Arc<dyn Store>, clock: Arc<dyn Clock>) -> Self {
        let a = &config.auth;
        let l = &config.limits;
        let jwt = jwt::JwtKeys::from_config(a);
        if jwt.ephemeral {
            tracing::warn!(
                "auth.jwt_secret is not set: access tokens are signed with an EPHEMERAL secret and stop \
                 working when this process exits (set MOLTBOT_AUTH__JWT_SECRET_FILE; required in production)"
            );
        }
        Self {
            limiter: Arc::new(InMemoryLimiter::new(clock.clone())),
            lockout: Lockout::new(
                clock.clone(),
                a.lockout_threshold,
                a.lockout_window,
                a.lockout_duration,
            ),
            streams: limits::StreamCounter::default(),
            defaults: KeyLimits {
                requests_per_minute: l.requests_per_minute,
                tokens_per_minute: l.tokens_per_minute,
                daily_tokens: l.daily_tokens,
                concurrent_streams: l.concurrent_streams,
            },
            burst_window: l.burst_window,
            token_ttl: a.token_ttl,
            max_token_ttl: a.max_token_ttl,
            leeway: a.clock_leeway,
            cache_ttl_ms: i64::try_from(a.key_cache_ttl.as_millis()).unwrap_or(i64::MAX),
            cache: Arc::new(Mutex::new(HashMap::new())),
            cluster: None,
            touched: Mutex::new(HashMap::new()),
            trusted_proxies: config.server.trusted_proxies.clone(),
            sessions: session::Sessions::new(config.admin.session_ttl, None),
            jwt,
            store,
            clock,
        }
    }

    /// Replace the limiter (a shared one makes limits global across replicas).
    pub fn with_limiter(mut self, limiter: Arc<dyn RateLimiter>) -> Self {
        self.limiter = limiter;
        self
    }

    /// Cluster mode: limits, quotas, lockouts and sign-outs through Redis, and key-cache
    /// invalidations from every replica. Needs a tokio runtime.
    pub fn with_cluster(mut self, shared: Arc<crate::cluster::Shared>) -> Self {
        self.limiter = Arc::new(crate::cluster::RedisLimiter::new(
            shared.clone(),
            InMemoryLimiter::new(self.clock.clone()),
        ));
        self.lockout = self.lockout.with_shared(Some(shared.clone()));
        self.sessions = session::Sessions::new(self.sessions.ttl, Some(shared.clone()));
        let cache = self.cache.clone();
        shared.subscribe_key_changes(move |id, hash| {
            let mut cache = lock(&cache);
            if id.is_empty() {
                // (Re)subscribed: changes announced meanwhile were missed.
                cache.clear();
            } else {
                cache.remove(&format!("id:{id}"));
                cache.remove(&format!("hash:{hash}"));
            }
        });
        self.cluster = Some(shared);
        self
    }

    /// Redis shared by the replicas, in cluster mode.
    pub fn cluster(&self) -> Option<&Arc<crate::cluster::Shared>> {
        self.cluster.as_ref()
    }

    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    fn now_ms(&self) -> i64 {
        self.clock.now_millis()
    }

    /// A key by cache entry (`id:…` / `hash:…`), read from the store when missing or older than the TTL.
    async fn cached(
        &self,
        entry: String,
        load: impl Future<Output = Result<Option<ApiKey>, StoreError>>,
    ) -> Result<Option<ApiKey>, StoreError> {
        let now = self.now_ms();
        {
            let cache = lock(&self.cache);
            if let Some((key, at)) = cache.get(&entry)
                && now - at < self.cache_ttl_ms
            {
                return Ok(Some(key.clone()));
            }
        }
        let key = load.await?;
        let mut cache = lock(&self.cache);
        if cache.len() > 10_000 {
            let ttl = self.cache_ttl_ms;
            cache.retain(|_, (_, at)| now - *at < ttl);
        }
        match &key {
            Some(k) => {
                cache.insert(entry, (k.clone(), now));
            }
            None => {
                cache.remove(&entry);
            }
        }
        Ok(key)
    }

    /// Forget a key at once after a revoke or update: here, and on every replica in cluster mode.
    pub async fn forget(&self, key: &ApiKey) {
        {
            let mut cache = lock(&self.cache);
            cache.remove(&format!("id:{}", key.id));
            cache.remove(&format!("hash:{}", key.secret_hash));
        }
        if let Some(shared) = &self.cluster {
            shared.publish_key_change(&key.id, &key.secret_hash).await;
        }
    }

    /// The active key with this secret (constant-time comparison of the hashes).
    pub async fn key_for_secret(&self, secret: &str) -> Result<ApiKey, AuthError> {
        if !looks_like_secret(secret) {
            return Err(AuthError::InvalidKey("malformed_key"));
        }
        let hash = hash_secret(secret);
        let store = self.store.clone();
        let h = hash.clone();
        let key = self
            .cached(format!("hash:{hash}"), async move {
                store.get_api_key_by_hash(&h).await
            })
            .await
            .map_err(AuthError::Store)?
            .filter(|k| hashes_match(&hash, &k.secret_hash))
            .ok_or(AuthError::InvalidKey("unknown_key"))?;
        if !key.is_active(self.clock.now_secs()) {
            return Err(AuthError::InvalidKey("inactive_key"));
        }
        Ok(key)
    }

    pub(crate) async fn key_by_id(&self, id: &str) -> Result<Option<ApiKey>, StoreError> {
        let store = self.store.clone();
        let owned = id.to_owned();
        self.cached(format!("id:{id}"), async move { store.get_api_key(&owned).await })
            .await
    }

    fn principal(&self, key: &ApiKey, scopes: Vec<Scope>, credential: Credential) -> Principal {
        Principal {
            key_id: key.id.clone(),
            key_name: key.name.clone(),
            scopes,
            limits: key.limits.or(self.defaults),
            credential,
            key_expires_at: key.expires_at,
        }
    }

    /// Authenticate an `Authorization` header value.
    pub async fn authenticate(&self, authorization: Option<&HeaderValue>) -> Result<Principal, AuthError> {
        let Some(value) = authorization else {
            return Err(AuthError::Missing);
        };
        let credential = value
            .to_str()
            .ok()
            .and_then(|v| v.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, c)| c.trim())
            .filter(|c| !c.is_empty())
            .ok_or(AuthError::InvalidKey("malformed_header"))?;
        if credential.starts_with(moltbot_core::auth::SECRET_PREFIX) {
            let key = self.key_for_secret(credential).await?;
            self.touch(&key.id);
            return Ok(self.principal(&key, key.scopes.clone(), Credential::ApiKey));
        }
        if credential.split('.').count() != 3 {
            return Err(AuthError::InvalidKey("malformed_key"));
        }
        let now = self.clock.now_secs();
        let claims = self
            .jwt
            .verify(credential, now, self.leeway)
            .map_err(|e| AuthError::InvalidToken(token_reason(e)))?;
        let key = self
            .key_by_id(&claims.sub)
            .await
            .map_err(AuthError::Store)?
            .filter(|k| k.is_active(now))
            .ok_or(AuthError::InvalidToken("key_inactive"))?;
        // A token never carries more than its key holds now (scopes may have been narrowed since).
        let scopes = key
            .scopes
            .iter()
            .copied()
            .filter(|s| claims.scopes.iter().any(|c| c == s.as_str()))
            .collect();
        self.touch(&key.id);
        Ok(self.principal(&key, scopes, Credential::AccessToken))
    }

    /// Record `last_used_at`, at most once a minute per key, off the request path.
    fn touch(&self, key_id: &str) {
        let now = self.now_ms();
        {
            let mut touched = lock(&self.touched);
            if touched.get(key_id).is_some_and(|at| now - at < 60_000) {
                return;
            }
            if touched.len() > 10_000 {
                touched.retain(|_, at| now - *at < 60_000);
            }
            touched.insert(key_id.to_owned(), now);
        }
        let store = self.store.clone();
        let (id, secs) = (key_id.to_owned(), self.clock.now_secs());
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            handle.spawn(async move {
                if let Err(e) = store.touch_api_key(&id, secs).await {
                    tracing::warn!(error = %e, "could not record an API key's last use");
                }
            });
        }
    }

    /// Issue an access token for an API key: `ttl` (default `auth.token_ttl`, at most
    /// `auth.max_token_ttl`), capped by the key's expiry; `scopes` narrows the key's scopes.
    pub fn issue_token(
        &self,
        key: &ApiKey,
        scopes: Option<&[Scope]>,
        ttl: Option<Duration>,
    ) -> Result<(String, jwt::Claims), ApiError> {
        let ttl = ttl.unwrap_or(self.token_ttl);
        if ttl.is_zero() || ttl > self.max_token_ttl {
            return Err(ApiError::invalid(
                "expires_in",
                format!("must be between 1 and {} seconds", self.max_token_ttl.as_secs()),
            ));
        }
        let scopes: Vec<Scope> = match scopes {
            None => key.scopes.clone(),
            Some(asked) => {
                if let Some(extra) = asked.iter().find(|s| !key.has_scope(**s)) {
                    return Err(ApiError::Forbidden {
                        message: format!("This API key does not have the `{extra}` scope."),
                        code: "insufficient_scope",
                    });
                }
                asked.to_vec()
            }
        };
        self.jwt
            .issue(&key.id, &scopes, self.clock.now_secs(), ttl, key.expires_at)
            .map_err(|e| ApiError::internal(format!("cannot sign a token: {e}")))
    }
}

fn token_reason(e: jwt::TokenError) -> &'static str {
    use jwt::TokenError as T;
    match e {
        T::Malformed => "malformed_token",
        T::Algorithm => "token_algorithm",
        T::UnknownKid => "token_unknown_kid",
        T::Signature => "token_signature",
        T::Issuer => "token_issuer",
        T::Expired => "token_expired",
        T::NotYetValid => "token_not_yet_valid",
        T::IssuedInFuture => "token_issued_in_future",
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The peer address of a request (unspecified in `oneshot` tests without connect info).
pub(crate) fn peer_ip(req_extensions: &axum::http::Extensions) -> IpAddr {
    req_extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |c| c.0.ip())
}

/// The authentication middleware (see the module docs).
pub async fn layer(State((state, policy)): State<(AppState, Policy)>, req: Request, next: Next) -> Response {
    authenticate(&state, policy, req, |req| next.run(req)).await
}

/// [`layer`] around any inner service.
pub async fn authenticate<F, Fut>(state: &AppState, policy: Policy, mut req: Request, next: F) -> Response
where
    F: FnOnce(Request) -> Fut,
    Fut: Future<Output = Response>,
{
    let path = req.uri().path();
    if policy.is_public(path)
        || (policy.sessions && path == crate::routes::admin_session::PATH && req.method() == Method::POST)
    {
        // Sign-in checks the key in its body itself (lockout included).
        return next(req).await;
    }
    let auth = &state.auth;
    let ip = lockout::client_ip(peer_ip(req.extensions()), req.headers(), &auth.trusted_proxies);
    if let Some(remaining) = auth.lockout.locked(ip).await {
        return ApiError::TooManyRequests {
            kind: "requests",
            message: "Too many failed authentication attempts from this address; try again later.".into(),
            code: "too_many_auth_failures",
            retry_after: Some(remaining),
            retry: true,
        }
        .into_response();
    }
    let authorization = req.headers().get(header::AUTHORIZATION).cloned();
    let cookie = match &authorization {
        None if policy.sessions => session::cookie(req.headers()).map(str::to_owned),
        _ => None,
    };
    if authorization.is_none() && cookie.is_none() && policy.optional.contains(&path) {
        return next(req).await;
    }
    let authenticated = match &cookie {
        Some(token) => auth.authenticate_session(token).await.map(|(p, s)| (p, Some(s))),
        None => auth.authenticate(authorization.as_ref()).await.map(|p| (p, None)),
    };
    let principal = match authenticated {
        Ok((p, None)) => p,
        Ok((p, Some(s))) => {
            if let Err(e) = session::check_csrf(req.method(), req.headers(), &s) {
                return e.into_response();
            }
            req.extensions_mut().insert(s);
            p
        }
        Err(e) => {
            failed(state, ip, &e).await;
            return ApiError::from(e).into_response();
        }
    };
    let rpm = if policy.rate_limit {
        match limits::check_requests(auth, &principal).await {
            Ok(d) => d,
            Err(resp) => return resp,
        }
    } else {
        None
    };
    req.extensions_mut().insert(principal);
    let mut resp = next(req).await;
    if let Some(d) = rpm {
        limits::request_headers(resp.headers_mut(), &d);
    }
    resp
}

/// Count, log (never the presented credential) and maybe lock out a failed authentication.
pub(crate) async fn failed(state: &AppState, ip: IpAddr, e: &AuthError) {
    let reason = e.reason();
    metrics::counter!("moltbot_auth_failures_total", "reason" => reason).increment(1);
    // A session that expired, was signed out or lost its key is no guess: a browser sends it until
    // the page signs in again, so it does not count toward the lockout (a forged one does).
    if matches!(
        e,
        AuthError::Missing
            | AuthError::Store(_)
            | AuthError::InvalidSession("session_expired" | "session_revoked" | "session_key_inactive")
    ) {
        return;
    }
    tracing::warn!(client.ip = %ip, moltbot.auth.reason = reason, "authentication failed");
    if state.auth.lockout.record_failure(ip).await == Failure::LockedOut {
        metrics::counter!("moltbot_auth_lockouts_total").increment(1);
        tracing::warn!(client.ip = %ip, "client address locked out after repeated authentication failures");
    }
}
