//! `moltbot token --api-key K [--ttl 24h]`: what `POST /v1/auth/token` does, offline — the key is
//! checked in the database and the token signed with `auth.jwt_secret`.

use std::io::BufRead;
use std::process::ExitCode;
use std::sync::Arc;

use moltbot_core::{Clock, SystemClock};

use crate::args::{GlobalArgs, TokenArgs};

pub fn run(global: &GlobalArgs, args: &TokenArgs) -> anyhow::Result<ExitCode> {
    let config = super::load_config(global)?.config;
    moltbot_server::logging::init(false, "warn");
    anyhow::ensure!(
        config.auth.jwt_secret.is_some(),
        "auth.jwt_secret is not set: a server without it signs with an ephemeral secret, so an offline token \
         could never be verified; set MOLTBOT_AUTH__JWT_SECRET_FILE (or _COMMAND) for both"
    );
    let api_key = if args.api_key == "-" {
        let mut line = String::new();
        std::io::stdin().lock().read_line(&mut line)?;
        line.trim().to_owned()
    } else {
        args.api_key.clone()
    };
    let ttl = args
        .ttl
        .as_deref()
        .map(|t| humantime::parse_duration(t).map_err(|e| anyhow::anyhow!("--ttl {t:?}: {e}")))
        .transpose()?;
    super::runtime()?.block_on(async {
        let store = moltbot_server::app::open_store(&config, moltbot_server::BuildOptions::default()).await?;
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        let auth = moltbot_server::auth::Auth::new(&config, store, clock);
        let Ok(key) = auth.key_for_secret(&api_key).await else {
            eprintln!("the API key is not valid (unknown, revoked or expired)");
            return Ok(ExitCode::FAILURE);
        };
        let (token, claims) = match auth.issue_token(&key, None, ttl) {
            Ok(t) => t,
            Err(e) => {
                let env = e.envelope(None);
                eprintln!("cannot issue a token: {}", env.error.message);
                return Ok(ExitCode::FAILURE);
            }
        };
        let out = serde_json::json!({
            "access_token": token,
            "token_type": "Bearer",
            "expires_in": claims.exp - claims.iat,
        });
        println!("{out}");
        Ok(ExitCode::SUCCESS)
    })
}
