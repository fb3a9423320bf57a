//! `[[channels]]`, `[[hooks]]` and `[pipeline]` → [`Channels`]: one adapter per account, with its rules.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use async_trait::async_trait;
use moltbot_channels::{
    Adapter, InboundMessage, Platform, SendError, Sink, dingtalk, dingtalk_stream, feishu, slack, telegram,
    wecom,
};
use moltbot_config::{
    ChannelConfig, ChannelMode, ChannelPlatform, Config, HookConfig, HookMode as ConfigHookMode, Secret,
};
use tokio_util::sync::CancellationToken;

use super::hooks::{HookAdapter, HookAuth};
use super::{Account, Channels, Connector, HookMode, LongLived, PipelineSettings, Poller, Rules};

/// Long polls ask Telegram to hold the request this long.
const POLL_TIMEOUT_SECS: u32 = 25;

/// The HTTP client of platform APIs: connect and whole-request timeouts (a long poll included).
fn http_client() -> anyhow::Result<reqwest::Client> {
    reqwest::Client::builder()
        .use_preconfigured_tls(moltbot_llm::tls::client_config(moltbot_llm::tls::Alpn::Any))
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(u64::from(POLL_TIMEOUT_SECS) + 15))
        .user_agent(concat!("moltbot/", env!("CARGO_PKG_VERSION")))
        .build()
        .context("building the platform HTTP client")
}

fn need(value: &Option<Secret>, what: &str, c: &ChannelConfig) -> anyhow::Result<String> {
    value
        .as_ref()
        .map(|s| s.expose().to_owned())
        .with_context(|| format!("channels {}/{}: `{what}` is required", c.platform, c.account))
}

fn need_plain(value: &Option<String>, what: &str, c: &ChannelConfig) -> anyhow::Result<String> {
    value
        .clone()
        .with_context(|| format!("channels {}/{}: `{what}` is required", c.platform, c.account))
}

fn platform_of(p: ChannelPlatform) -> Platform {
    match p {
        ChannelPlatform::Feishu => Platform::Feishu,
        ChannelPlatform::Lark => Platform::Lark,
        ChannelPlatform::DingTalk => Platform::Dingtalk,
        ChannelPlatform::WeCom => Platform::Wecom,
        ChannelPlatform::Telegram => Platform::Telegram,
        ChannelPlatform::Slack => Platform::Slack,
    }
}

struct TelegramPoller {
    adapter: Arc<telegram::TelegramAdapter>,
    /// getUpdates is refused while a webhook is set: remove it once before the first poll.
    webhook_removed: std::sync::atomic::AtomicBool,
}

#[async_trait]
impl Poller for TelegramPoller {
    async fn poll(&self, offset: Option<i64>) -> Result<(Vec<InboundMessage>, Option<i64>), SendError> {
        use std::sync::atomic::Ordering;
        if !self.webhook_removed.load(Ordering::Relaxed) {
            self.adapter.delete_webhook().await?;
            self.webhook_removed.store(true, Ordering::Relaxed);
            tracing::info!(
                account = self.adapter.account(),
                "telegram: webhook removed; long polling"
            );
        }
        self.adapter.get_updates(offset, POLL_TIMEOUT_SECS).await
    }
}

struct DingtalkConnector {
    account: String,
    settings: dingtalk::DingtalkSettings,
    http: reqwest::Client,
}

#[async_trait]
impl Connector for DingtalkConnector {
    async fn run(&self, sink: Arc<dyn Sink>, stop: CancellationToken) {
        dingtalk_stream::run(
            self.settings.clone(),
            self.http.clone(),
            self.account.clone(),
            sink,
            stop.cancelled_owned(),
        )
        .await;
    }
}

fn channel(c: &ChannelConfig, http: &reqwest::Client) -> anyhow::Result<Account> {
    let platform = platform_of(c.platform);
    let base = |default: &str| {
        c.api_base
            .as_ref()
            .map(|u| u.as_str().trim_end_matches('/').to_owned())
            .unwrap_or_else(|| default.to_owned())
    };
    let mut long_lived = None;
    let adapter: Arc<dyn Adapter> = match platform {
        Platform::Feishu | Platform::Lark => {
            let settings = feishu::FeishuSettings {
                app_id: need_plain(&c.app_id, "app_id", c)?,
                app_secret: need(&c.app_secret, "app_secret", c)?,
                verification_token: c.verification_token.as_ref().map(|s| s.expose().to_owned()),
                encrypt_key: c.encrypt_key.as_ref().map(|s| s.expose().to_owned()),
                bot_id: c.bot_id.clone(),
                api_base: base(if platform == Platform::Lark {
                    feishu::LARK_API_BASE
                } else {
                    feishu::FEISHU_API_BASE
                }),
            };
            Arc::new(feishu::FeishuAdapter::new(
                &c.account,
                platform,
                settings,
                http.clone(),
            ))
        }
        Platform::Dingtalk => {
            let settings = dingtalk::DingtalkSettings {
                app_key: need_plain(&c.app_key, "app_key", c)?,
                app_secret: need(&c.app_secret, "app_secret", c)?,
                robot_code: c.robot_code().map(str::to_owned),
                api_base: base(dingtalk::DEFAULT_API_BASE),
            };
            if c.mode() == ChannelMode::Stream {
                long_lived = Some(LongLived::Connect(Arc::new(DingtalkConnector {
                    account: c.account.clone(),
                    settings: settings.clone(),
                    http: http.clone(),
                })));
            }
            Arc::new(dingtalk::DingtalkAdapter::new(&c.account, settings, http.clone()))
        }
        Platform::Wecom => {
            let settings = wecom::WecomSettings {
                corp_id: need_plain(&c.corp_id, "corp_id", c)?,
                agent_id: need_plain(&c.agent_id, "agent_id", c)?,
                app_secret: need(&c.app_secret, "app_secret", c)?,
                token: need(&c.token, "token", c)?,
                encoding_aes_key: need(&c.encoding_aes_key, "encoding_aes_key", c)?,
                api_base: base(wecom::DEFAULT_API_BASE),
            };
            Arc::new(wecom::WecomAdapter::new(&c.account, settings, http.clone()))
        }
        Platform::Telegram => {
            let settings = telegram::TelegramSettings {
                bot_token: need(&c.bot_token, "bot_token", c)?,
                secret_token: c.secret_token.as_ref().map(|s| s.expose().to_owned()),
                bot_id: c.bot_id.clone(),
                api_base: base(telegram::DEFAULT_API_BASE),
            };
            let adapter = Arc::new(telegram::TelegramAdapter::new(&c.account, settings, http.clone()));
            if c.mode() == ChannelMode::Polling {
                long_lived = Some(LongLived::Poll(Arc::new(TelegramPoller {
                    adapter: adapter.clone(),
                    webhook_removed: Default::default(),
                })));
            }
            adapter
        }
        Platform::Slack => {
            let settings = slack::SlackSettings {
                bot_token: need(&c.bot_token, "bot_token", c)?,
                signing_secret: need(&c.signing_secret, "signing_secret", c)?,
                bot_id: c.bot_id.clone(),
                api_base: base(slack::DEFAULT_API_BASE),
            };
            Arc::new(slack::SlackAdapter::new(&c.account, settings, http.clone()))
        }
        Platform::Hook => unreachable!("hooks are configured in [[hooks]]"),
    };
    Ok(Account {
        platform,
        name: c.account.clone(),
        adapter,
        rules: Rules {
            require_mention: c.require_mention,
            allow_chats: c.allow_chats.iter().cloned().collect(),
            allow_users: c.allow_users.iter().cloned().collect(),
            per_user_in_groups: c.per_user_in_groups,
        },
        model: c.model.clone(),
        system_prompt: c.system_prompt.clone(),
        replies_per_minute: c.replies_per_minute,
        long_lived,
        hook: None,
    })
}

fn hook(h: &HookConfig, http: &reqwest::Client) -> anyhow::Result<Account> {
    let auth = match (&h.secret, &h.token) {
        (Some(s), _) => HookAuth::Signature(s.expose().to_owned()),
        (None, Some(t)) => HookAuth::Token(t.expose().to_owned()),
        (None, None) => anyhow::bail!("hooks {}: set `secret` or `token`", h.name),
    };
    let adapter = HookAdapter::new(
        &h.name,
        auth,
        h.callback_url.as_ref().map(|u| u.to_string()),
        h.callback_key().map(|s| s.expose().to_owned()),
        http.clone(),
    );
    Ok(Account {
        platform: Platform::Hook,
        name: h.name.clone(),
        adapter: Arc::new(adapter),
        rules: Rules::default(),
        model: h.model.clone(),
        system_prompt: h.system_prompt.clone(),
        // Callbacks are not a chat: no reply pacing beyond the pipeline's retries.
        replies_per_minute: 6000,
        long_lived: None,
        hook: Some(HookMode {
            sync: h.mode == ConfigHookMode::Sync,
        }),
    })
}

/// Every configured account with its adapter.
pub fn from_config(config: &Config) -> anyhow::Result<Channels> {
    let p = &config.pipeline;
    let settings = PipelineSettings {
        workers: p.workers,
        lock_timeout: p.lock_timeout,
        max_attempts: p.max_attempts,
        retry_base: p.retry_base,
        retry_max: p.retry_max,
        retention: p.retention,
        lease_ttl: p.lease_ttl,
        poll_interval: p.poll_interval,
    };
    if config.channels.is_empty() && config.hooks.is_empty() {
        return Ok(Channels::new(Vec::new(), settings));
    }
    let http = http_client()?;
    let mut accounts = Vec::new();
    for c in &config.channels {
        accounts.push(channel(c, &http)?);
    }
    for h in &config.hooks {
        accounts.push(hook(h, &http)?);
    }
    Ok(Channels::new(accounts, settings))
}
