//! Chat-platform channels and generic inbound hooks: the pipeline around the adapters of
//! `moltbot-channels`.
//!
//! verify (adapter, on the raw bytes) → rules (mention, allowlists) → durable enqueue with dedupe
//! (`channel_events`, UNIQUE platform+account+event id — the authority) → acknowledge → a worker
//! claims the event (one at a time per chat, in order), runs the model in the chat's conversation,
//! keeps the reply on the event, sends it in chunks with a per-chat rate limit and retries, and marks
//! it done. Delivery is at-least-once: a worker that dies leaves its claim to expire
//! (`pipeline.lock_timeout`) and another worker — on any replica — resumes after the last sent chunk.
//! Long-lived connections (Telegram long polling, DingTalk Stream) run on the one replica holding the
//! account's lease.

mod build;
pub mod hooks;
mod ingest;
mod lease;
mod ratelimit;
mod worker;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::routing::{get, post};
use moltbot_channels::{Adapter, ChatType, InboundMessage, Platform};
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::state::AppState;

pub use build::from_config;

/// Pipeline tunables (`[pipeline]`).
#[derive(Debug, Clone)]
pub struct PipelineSettings {
    pub workers: u32,
    pub lock_timeout: Duration,
    pub max_attempts: u32,
    pub retry_base: Duration,
    pub retry_max: Duration,
    pub retention: Duration,
    pub lease_ttl: Duration,
    pub poll_interval: Duration,
}

impl Default for PipelineSettings {
    fn default() -> Self {
        PipelineSettings {
            workers: 4,
            lock_timeout: Duration::from_secs(120),
            max_attempts: 8,
            retry_base: Duration::from_secs(2),
            retry_max: Duration::from_secs(300),
            retention: Duration::from_secs(7 * 86_400),
            lease_ttl: Duration::from_secs(15),
            poll_interval: Duration::from_secs(1),
        }
    }
}

/// Who may talk to the bot on an account, and how chats map to conversations.
#[derive(Debug, Clone, Default)]
pub struct Rules {
    pub require_mention: bool,
    pub allow_chats: HashSet<String>,
    pub allow_users: HashSet<String>,
    pub per_user_in_groups: bool,
}

impl Rules {
    /// `None` when the message is to be answered, else why not.
    pub fn refuse(&self, m: &InboundMessage) -> Option<&'static str> {
        if !self.allow_chats.is_empty() && !self.allow_chats.contains(&m.chat_id) {
            return Some("chat not on the allowlist");
        }
        if !self.allow_users.is_empty() && !self.allow_users.contains(&m.sender_id) {
            return Some("sender not on the allowlist");
        }
        if m.chat_type == ChatType::Group && self.require_mention && !m.mentions_bot {
            return Some("group message without a mention of the bot");
        }
        if m.text.trim().is_empty() {
            return Some("empty text");
        }
        None
    }

    /// The conversation key: platform, account, chat, thread; per sender in groups when configured.
    pub fn chat_key(&self, m: &InboundMessage) -> String {
        let mut key = format!("{}/{}/{}", m.platform, m.account, m.chat_id);
        if let Some(t) = &m.thread_id {
            key.push_str("/t/");
            key.push_str(t);
        }
        if m.chat_type == ChatType::Group && self.per_user_in_groups {
            key.push_str("/u/");
            key.push_str(&m.sender_id);
        }
        key
    }
}

/// A long-lived connection an account needs instead of a webhook; runs on one replica at a time.
#[derive(Clone)]
pub enum LongLived {
    /// Ask for messages in a loop (Telegram `getUpdates`); the offset is kept in the database.
    Poll(Arc<dyn Poller>),
    /// Hold a connection that pushes messages (DingTalk Stream).
    Connect(Arc<dyn Connector>),
}

/// Long polling: one call returns the messages after `offset` and the next offset.
#[async_trait::async_trait]
pub trait Poller: Send + Sync {
    async fn poll(
        &self,
        offset: Option<i64>,
    ) -> Result<(Vec<InboundMessage>, Option<i64>), moltbot_channels::SendError>;
}

/// A pushing connection: runs (reconnecting as needed) until `stop`, handing messages to `sink`.
#[async_trait::async_trait]
pub trait Connector: Send + Sync {
    async fn run(&self, sink: Arc<dyn moltbot_channels::Sink>, stop: CancellationToken);
}

/// A generic inbound hook's extra settings.
#[derive(Debug, Clone)]
pub struct HookMode {
    /// Answer in the HTTP response (`true`) or `202` + the callback.
    pub sync: bool,
}

/// One configured account.
pub struct Account {
    pub platform: Platform,
    pub name: String,
    pub adapter: Arc<dyn Adapter>,
    pub rules: Rules,
    /// The model that answers; `None` = the first configured model.
    pub model: Option<String>,
    pub system_prompt: Option<String>,
    pub replies_per_minute: u32,
    pub long_lived: Option<LongLived>,
    pub hook: Option<HookMode>,
}

impl Account {
    /// `/channels/{platform}/{account}` or `/hooks/{name}`.
    pub fn path(&self) -> String {
        match self.platform {
            Platform::Hook => format!("/hooks/{}", self.name),
            p => format!("/channels/{p}/{}", self.name),
        }
    }

    /// The owner of this account's conversations and usage records.
    pub fn owner(&self) -> String {
        format!("channel:{}:{}", self.platform, self.name)
    }
}

/// Every configured account, and the pipeline's shared parts.
pub struct Channels {
    pub accounts: HashMap<(Platform, String), Arc<Account>>,
    pub settings: PipelineSettings,
    /// Wakes local workers when an event was queued here.
    pub notify: Arc<Notify>,
    /// This process: lease holder and worker ids.
    pub instance: String,
    pub(crate) limiter: ratelimit::ChatLimiter,
}

impl Channels {
    pub fn new(accounts: Vec<Account>, settings: PipelineSettings) -> Self {
        let instance = format!(
            "{}-{}-{}",
            std::env::var("HOSTNAME").unwrap_or_else(|_| "moltbot".into()),
            std::process::id(),
            &uuid::Uuid::new_v4().simple().to_string()[..8]
        );
        Channels {
            accounts: accounts
                .into_iter()
                .map(|a| ((a.platform, a.name.clone()), Arc::new(a)))
                .collect(),
            settings,
            notify: Arc::new(Notify::new()),
            instance,
            limiter: ratelimit::ChatLimiter::default(),
        }
    }

    pub fn empty() -> Self {
        Channels::new(Vec::new(), PipelineSettings::default())
    }

    pub fn get(&self, platform: Platform, name: &str) -> Option<&Arc<Account>> {
        self.accounts.get(&(platform, name.to_owned()))
    }

    /// Accounts sorted by platform and name.
    pub fn sorted(&self) -> Vec<&Arc<Account>> {
        let mut v: Vec<_> = self.accounts.values().collect();
        v.sort_by(|a, b| (a.platform, &a.name).cmp(&(b.platform, &b.name)));
        v
    }
}

/// Start the workers, the purge loop and the long-lived connections.
pub fn spawn(state: &AppState, stop: &CancellationToken) -> Vec<JoinHandle<()>> {
    let channels = &state.channels;
    if channels.accounts.is_empty() {
        return Vec::new();
    }
    let mut tasks = Vec::new();
    for i in 0..channels.settings.workers.max(1) {
        tasks.push(tokio::spawn(worker::run(state.clone(), i, stop.clone())));
    }
    tasks.push(tokio::spawn(worker::purge_loop(state.clone(), stop.clone())));
    for account in channels.accounts.values() {
        if account.long_lived.is_some() {
            tasks.push(tokio::spawn(lease::run(
                state.clone(),
                account.clone(),
                stop.clone(),
            )));
        }
    }
    tracing::info!(
        accounts = channels.accounts.len(),
        workers = channels.settings.workers,
        instance = %channels.instance,
        "channels started"
    );
    tasks
}

/// `/channels/{platform}/{account}` and `/hooks/{name}` on the dialog listener (no API key: each
/// request is verified by its platform's signature or token).
pub fn router() -> Router<AppState> {
    Router::new()
        .route(
            "/channels/{platform}/{account}",
            get(ingest::channel).post(ingest::channel),
        )
        .route("/hooks/{name}", post(ingest::hook))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(chat_type: ChatType, mentions_bot: bool) -> InboundMessage {
        InboundMessage {
            platform: Platform::Slack,
            account: "team".into(),
            event_id: "Ev1".into(),
            message_id: "m1".into(),
            chat_id: "C1".into(),
            chat_type,
            sender_id: "U1".into(),
            sender_name: None,
            text: "hi".into(),
            mentions_bot,
            thread_id: None,
            sent_at: 0,
            reply: serde_json::Value::Null,
        }
    }

    #[test]
    fn groups_need_a_mention_and_allowlists_apply() {
        let rules = Rules {
            require_mention: true,
            ..Rules::default()
        };
        assert_eq!(
            rules.refuse(&msg(ChatType::Direct, false)),
            None,
            "direct chats need no mention"
        );
        assert!(rules.refuse(&msg(ChatType::Group, false)).is_some());
        assert_eq!(rules.refuse(&msg(ChatType::Group, true)), None);
        let open = Rules::default();
        assert_eq!(
            open.refuse(&msg(ChatType::Group, false)),
            None,
            "require_mention = false"
        );

        let allow = Rules {
            allow_chats: ["C2".to_owned()].into(),
            ..Rules::default()
        };
        assert_eq!(
            allow.refuse(&msg(ChatType::Direct, true)),
            Some("chat not on the allowlist")
        );
        let allow = Rules {
            allow_users: ["U1".to_owned()].into(),
            ..Rules::default()
        };
        assert_eq!(allow.refuse(&msg(ChatType::Direct, true)), None);
        let mut empty = msg(ChatType::Direct, true);
        empty.text = "  ".into();
        assert_eq!(Rules::default().refuse(&empty), Some("empty text"));
    }

    #[test]
    fn chat_keys_separate_threads_and_optionally_senders() {
        let shared = Rules::default();
        let per_user = Rules {
            per_user_in_groups: true,
            ..Rules::default()
        };
        let mut m = msg(ChatType::Group, true);
        assert_eq!(shared.chat_key(&m), "slack/team/C1");
        assert_eq!(per_user.chat_key(&m), "slack/team/C1/u/U1");
        m.thread_id = Some("171.5".into());
        assert_eq!(shared.chat_key(&m), "slack/team/C1/t/171.5");
        let d = msg(ChatType::Direct, true);
        assert_eq!(
            per_user.chat_key(&d),
            "slack/team/C1",
            "per-user applies to groups only"
        );
    }
}
