//! Remote backends, step by step as the troubleshooting guide does it: DNS, TCP, TLS, then an
//! authenticated `GET {endpoint}/models` per key with its latency, and what a 401/403/429 means.
//! The upstream's `Date` header doubles as a clock-skew hint.

use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime};

use moltbot_config::{BackendKind, Config, ModelConfig};
use reqwest::StatusCode;

use super::Check;

const STEP_TIMEOUT: Duration = Duration::from_secs(5);
/// Slower than this for a models call is worth a warning.
const SLOW: Duration = Duration::from_secs(2);
/// Clock skew beyond this breaks token expiry checks.
const MAX_SKEW: Duration = Duration::from_secs(30);

pub struct BackendChecks {
    pub checks: Vec<Check>,
    /// The clock-skew hint (from the first upstream `Date` header).
    pub clock: Check,
}

pub async fn remote(config: &Config) -> BackendChecks {
    let mut checks = Vec::new();
    let mut skew: Option<(String, i64)> = None;
    for m in config.models.iter().filter(|m| m.backend == BackendKind::Remote) {
        let Some(endpoint) = &m.endpoint else { continue };
        let name = format!("backend {}", m.name);
        let host = endpoint.host_str().unwrap_or_default().to_owned();
        let port = endpoint.port_or_known_default().unwrap_or(443);
        let addrs =
            match tokio::time::timeout(STEP_TIMEOUT, tokio::net::lookup_host((host.as_str(), port))).await {
                Ok(Ok(a)) => a.collect::<Vec<SocketAddr>>(),
                Ok(Err(e)) => {
                    checks.push(Check::fail(
                    format!("{name} dns"),
                    format!("{host}: {e}"),
                    "check the host name in the model's endpoint and this machine's DNS (/etc/resolv.conf)",
                ));
                    continue;
                }
                Err(_) => {
                    checks.push(Check::fail(
                        format!("{name} dns"),
                        format!("{host}: no answer in 5 s"),
                        "check DNS",
                    ));
                    continue;
                }
            };
        let Some(first) = addrs.first().copied() else {
            checks.push(Check::fail(
                format!("{name} dns"),
                format!("{host}: no address"),
                "check DNS",
            ));
            continue;
        };
        checks.push(Check::pass(
            format!("{name} dns"),
            format!("{host} → {}", first.ip()),
        ));
        let started = Instant::now();
        match tokio::time::timeout(STEP_TIMEOUT, tokio::net::TcpStream::connect(first)).await {
            Ok(Ok(_)) => checks.push(Check::pass(
                format!("{name} tcp"),
                format!("connected to {first} in {} ms", started.elapsed().as_millis()),
            )),
            Ok(Err(e)) => {
                checks.push(Check::fail(
                    format!("{name} tcp"),
                    format!("{first}: {e}"),
                    format!(
                        "the port is closed or filtered: check security-group/firewall rules for outbound \
                         {port} (`telnet {host} {port}` from this host)"
                    ),
                ));
                continue;
            }
            Err(_) => {
                checks.push(Check::fail(
                    format!("{name} tcp"),
                    format!("{first}: no connection in 5 s"),
                    "packets are being dropped: check security groups, firewalls and proxies",
                ));
                continue;
            }
        }
        let keys = m.keys();
        let key_count = keys.len();
        let key_list: Vec<Option<&str>> = if keys.is_empty() {
            vec![None]
        } else {
            keys.iter().map(|k| Some(k.expose())).collect()
        };
        for (i, key) in key_list.into_iter().enumerate() {
            let label = if key_count > 1 {
                format!("{name} key {}/{key_count}", i + 1)
            } else {
                format!("{name} api")
            };
            let (check, date_skew) = models_call(&label, m, key).await;
            if endpoint.scheme() == "https" && i == 0 {
                checks.push(tls_check(&name, &check));
            }
            if skew.is_none()
                && let Some(s) = date_skew
            {
                skew = Some((host.clone(), s));
            }
            checks.push(check);
        }
    }
    let clock = match skew {
        None => Check::skip(
            "clock",
            "no upstream Date header to compare with; keep NTP running",
        ),
        Some((host, s)) if s.unsigned_abs() > MAX_SKEW.as_secs() => Check::warn(
            "clock",
            format!("this host's clock differs from {host}'s by {s} s"),
            "enable NTP (chrony/systemd-timesyncd): token expiry (exp/iat) and TLS depend on the time",
        ),
        Some((host, s)) => Check::pass("clock", format!("within {} s of {host}", s.abs())),
    };
    BackendChecks { checks, clock }
}

/// The TLS verdict, from how the authenticated call went.
fn tls_check(name: &str, call: &Check) -> Check {
    if call.detail.starts_with("TLS:") {
        Check::fail(
            format!("{name} tls"),
            call.detail.clone(),
            "check the endpoint's certificate chain, an intercepting proxy, and this host's clock",
        )
    } else {
        Check::pass(format!("{name} tls"), "handshake ok, certificate trusted")
    }
}

/// `GET {endpoint}/models` with the key; the verdict and the upstream clock's skew (s, + = we are ahead).
async fn models_call(label: &str, m: &ModelConfig, key: Option<&str>) -> (Check, Option<i64>) {
    let Some(base) = &m.endpoint else {
        return (Check::skip(label, "no endpoint"), None);
    };
    let url = format!("{}/models", base.as_str().trim_end_matches('/'));
    let client = moltbot_llm::http_client(m.timeouts.connect);
    let mut req = client.get(&url).timeout(Duration::from_secs(15));
    if let Some(k) = key {
        req = req.bearer_auth(k);
    }
    let started = Instant::now();
    let resp = match req.send().await {
        Ok(r) => r,
        Err(e) => {
            let text = error_chain(&e);
            let tls = ["certificate", "tls", "handshake", "InvalidCertificate"]
                .iter()
                .any(|w| text.to_ascii_lowercase().contains(&w.to_ascii_lowercase()));
            let detail = if tls { format!("TLS: {text}") } else { text };
            return (
                Check::fail(
                    label,
                    detail,
                    "see the DNS/TCP/TLS checks above; check proxies (HTTPS_PROXY)",
                ),
                None,
            );
        }
    };
    let elapsed = started.elapsed();
    let skew = resp
        .headers()
        .get(reqwest::header::DATE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| httpdate::parse_http_date(v).ok())
        .map(|theirs| seconds_between(SystemTime::now(), theirs));
    let status = resp.status();
    let body: serde_json::Value = resp.json().await.unwrap_or_default();
    let code = body["error"]["code"].as_str().unwrap_or_default().to_owned();
    let ms = elapsed.as_millis();
    let check = match status {
        s if s.is_success() => {
            let n = body["data"].as_array().map_or(0, Vec::len);
            let detail = format!("authenticated, {n} models listed, {ms} ms");
            if elapsed > SLOW {
                Check::warn(
                    label,
                    detail,
                    "the platform is slow from here: check the region and the network path",
                )
            } else {
                Check::pass(label, detail)
            }
        }
        StatusCode::UNAUTHORIZED => Check::fail(
            label,
            format!("401 Unauthorized: the platform rejected the API key ({ms} ms)"),
            "the key is wrong, revoked or for another platform: set API_KEY or models[].api_key \
             (or its _file/_command) to a valid key",
        ),
        StatusCode::FORBIDDEN => Check::fail(
            label,
            format!("403 Forbidden: the key is valid but not allowed here ({ms} ms)"),
            "grant the key access to this model/project (least privilege per project), or check the \
             platform's region and IP restrictions",
        ),
        StatusCode::TOO_MANY_REQUESTS if code == "insufficient_quota" => Check::fail(
            label,
            format!("429 insufficient_quota: the account's quota is exhausted ({ms} ms)"),
            "raise the quota or add billing on the platform; add another account's key to models[].api_keys",
        ),
        StatusCode::TOO_MANY_REQUESTS => Check::fail(
            label,
            format!("429 Too Many Requests: the platform is rate limiting this key ({ms} ms)"),
            "the platform's QPS/quota limit is reached: wait (moltbot retries with backoff and Retry-After), \
             ask for a higher quota, add keys to models[].api_keys, or lower models[].limits.requests_per_minute",
        ),
        StatusCode::NOT_FOUND | StatusCode::METHOD_NOT_ALLOWED => Check::warn(
            label,
            format!("{status}: this endpoint has no /models, so the key could not be verified"),
            "check that the endpoint is the API base (…/v1); chat may still work",
        ),
        s => Check::fail(
            label,
            format!("{s} from the platform ({ms} ms)"),
            "the platform is failing: check its status page; moltbot's retries and fallbacks cover short outages",
        ),
    };
    (check, skew)
}

fn seconds_between(ours: SystemTime, theirs: SystemTime) -> i64 {
    match ours.duration_since(theirs) {
        Ok(d) => d.as_secs() as i64,
        Err(e) => -(e.duration().as_secs() as i64),
    }
}

/// The error and its sources (reqwest's top-level message alone says little). Never contains the key.
fn error_chain(e: &reqwest::Error) -> String {
    let mut out = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}
