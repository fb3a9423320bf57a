//! `[[channels]]` and `[[hooks]]`: every account is built as `serve` would build it, and its
//! credentials are checked against the platform (a token fetch, `getMe`, `auth.test`) — no message is
//! sent. Hooks have nothing remote to check; they are listed with their path.

use std::time::Duration;

use moltbot_channels::{Platform, SendError};
use moltbot_config::Config;

use super::Check;

const TIMEOUT: Duration = Duration::from_secs(10);

pub async fn accounts(config: &Config) -> Vec<Check> {
    if config.channels.is_empty() && config.hooks.is_empty() {
        return Vec::new();
    }
    let channels = match moltbot_server::channels::from_config(config) {
        Ok(c) => c,
        Err(e) => {
            return vec![Check::fail(
                "channels",
                format!("cannot set up: {e:#}"),
                "fix the [[channels]]/[[hooks]] entry named above (docs/channels.md)",
            )];
        }
    };
    let mut checks = Vec::new();
    for account in channels.sorted() {
        let name = format!("channel {}/{}", account.platform, account.name);
        let mode = if account.long_lived.is_some() {
            "long-lived connection (one replica holds the lease)".to_owned()
        } else {
            format!("webhook at {}", account.path())
        };
        if account.platform == Platform::Hook {
            checks.push(Check::pass(name, mode));
            continue;
        }
        checks.push(match tokio::time::timeout(TIMEOUT, account.adapter.check_credentials()).await {
            Ok(Ok(said)) => Check::pass(name, format!("{mode}; credentials accepted: {said}")),
            Ok(Err(SendError::Permanent(e))) => Check::fail(
                name,
                format!("credentials refused: {e}"),
                "check the account's credentials in [[channels]] against the platform's console (docs/channels/)",
            ),
            Ok(Err(SendError::Retryable { message, .. })) => Check::warn(
                name,
                format!("platform not reachable or busy: {message}"),
                "check outbound HTTPS from this host to the platform (proxy, firewall, api_base)",
            ),
            Err(_) => Check::warn(
                name,
                format!("no answer from the platform in {TIMEOUT:?}"),
                "check outbound HTTPS from this host to the platform",
            ),
        });
    }
    checks
}
