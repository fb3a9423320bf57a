//! `moltbot keys create|list|revoke`: API keys straight in the database (an operator with database
//! access needs no admin key). The admin API (`/admin/api/keys`) does the same online.

use std::process::ExitCode;

use moltbot_core::{ApiKey, Clock, KeyLimits, Scope, Store, SystemClock};

use crate::args::{GlobalArgs, KeysAction, KeysCreateArgs};

pub fn run(global: &GlobalArgs, action: KeysAction) -> anyhow::Result<ExitCode> {
    let config = super::load_config(global)?.config;
    moltbot_server::logging::init(false, "warn");
    super::runtime()?.block_on(async {
        let store = moltbot_server::app::open_store(&config, moltbot_server::BuildOptions::default()).await?;
        match action {
            KeysAction::Create(args) => create(store.as_ref(), &args).await,
            KeysAction::List => list(store.as_ref()).await,
            KeysAction::Revoke { id } => {
                // Transactional, with its `key.revoked` webhook event.
                if let Some(key) = store.get_api_key(&id).await? {
                    moltbot_core::webhooks::revoke_api_key(store.as_ref(), &key, SystemClock.now_millis())
                        .await?;
                    println!("revoked {id}");
                    Ok(ExitCode::SUCCESS)
                } else {
                    eprintln!("no API key with id {id}");
                    Ok(ExitCode::FAILURE)
                }
            }
        }
    })
}

async fn create(store: &dyn Store, args: &KeysCreateArgs) -> anyhow::Result<ExitCode> {
    let scopes = Scope::parse_list(&args.scopes).map_err(|e| anyhow::anyhow!("--scopes: {e}"))?;
    anyhow::ensure!(!scopes.is_empty(), "--scopes: a key needs at least one scope");
    anyhow::ensure!(!args.name.trim().is_empty(), "--name must not be empty");
    for (flag, v) in [
        ("--rpm", args.rpm),
        ("--tpm", args.tpm),
        ("--streams", args.streams),
    ] {
        anyhow::ensure!(
            v != Some(0),
            "{flag} must be at least 1 (omit it for the default)"
        );
    }
    anyhow::ensure!(args.daily_tokens != Some(0), "--daily-tokens must be at least 1");
    let now = SystemClock.now_secs();
    let expires_at = match &args.expires {
        None => None,
        Some(d) => {
            let d = humantime::parse_duration(d).map_err(|e| anyhow::anyhow!("--expires {d:?}: {e}"))?;
            anyhow::ensure!(!d.is_zero(), "--expires must be longer than 0s");
            Some(now.saturating_add(i64::try_from(d.as_secs()).unwrap_or(i64::MAX)))
        }
    };
    let limits = KeyLimits {
        requests_per_minute: args.rpm,
        tokens_per_minute: args.tpm,
        daily_tokens: args.daily_tokens,
        concurrent_streams: args.streams,
    };
    let (key, secret) = ApiKey::generate(args.name.trim(), scopes, limits, now, expires_at);
    store.create_api_key(&key).await?;
    eprintln!(
        "created {} ({}), scopes {}; the secret below is shown once and only its hash is stored:",
        key.id,
        key.name,
        Scope::join(&key.scopes)
    );
    println!("{secret}");
    Ok(ExitCode::SUCCESS)
}

fn when(t: Option<i64>) -> String {
    t.map_or_else(|| "-".to_owned(), |t| t.to_string())
}

async fn list(store: &dyn Store) -> anyhow::Result<ExitCode> {
    let now = SystemClock.now_secs();
    println!(
        "{:<37} {:<20} {:<12} {:<32} {:<7} {:>11} {:>11} {:>11}",
        "ID", "NAME", "PREFIX", "SCOPES", "STATUS", "CREATED", "LAST_USED", "EXPIRES"
    );
    for k in store.list_api_keys().await? {
        let status = match (k.revoked_at, k.is_active(now)) {
            (Some(_), _) => "revoked",
            (None, false) => "expired",
            (None, true) => "active",
        };
        println!(
            "{:<37} {:<20} {:<12} {:<32} {:<7} {:>11} {:>11} {:>11}",
            k.id,
            k.name,
            k.prefix,
            Scope::join(&k.scopes),
            status,
            k.created_at,
            when(k.last_used_at),
            when(k.expires_at)
        );
    }
    Ok(ExitCode::SUCCESS)
}
