//! Periodic repairs of what a crashed process leaves behind.

use std::time::Duration;

use moltbot_config::Config;

use crate::state::AppState;

/// The sweep never touches a turn younger than this, whatever the timeouts say.
const MIN_STALE_AFTER: Duration = Duration::from_secs(3600);

/// How old an `in_progress` message must be before no process can still be generating its turn: the
/// sum over all models of `timeouts.total × retry.max_attempts` bounds any fallback chain (each model
/// is tried once per turn), at least [`MIN_STALE_AFTER`]. Cluster-safe: another replica's live turn
/// is always younger.
pub fn stale_turn_age(config: &Config) -> Duration {
    let chain: Duration = config
        .models
        .iter()
        .map(|m| m.timeouts.total.saturating_mul(m.retry.max_attempts.max(1)))
        .fold(Duration::ZERO, Duration::saturating_add);
    chain.max(MIN_STALE_AFTER)
}

/// Mark turns left `in_progress` by a process that died (kill -9, OOM, power loss) as `failed`, every
/// ten minutes, once they are older than [`stale_turn_age`]. They were never sent as context; this
/// makes the admin console and the Conversations API show them as incomplete instead of forever
/// generating.
pub async fn stale_turns_loop(state: AppState) {
    let age = stale_turn_age(&state.config);
    let mut tick = tokio::time::interval(Duration::from_secs(600));
    loop {
        tick.tick().await;
        let before = state.clock.now_secs() - i64::try_from(age.as_secs()).unwrap_or(i64::MAX);
        match state.store.fail_stale_messages(before).await {
            Ok(0) => {}
            Ok(n) => {
                metrics::counter!("moltbot_stale_messages_failed_total").increment(n);
                tracing::warn!(
                    messages = n,
                    older_than_s = age.as_secs(),
                    "marked messages of interrupted turns failed"
                );
            }
            Err(e) => tracing::warn!(error = %e, "could not sweep interrupted turns"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_age_covers_every_model_chain_and_is_at_least_an_hour() {
        let mut config = Config::default();
        assert_eq!(stale_turn_age(&config), MIN_STALE_AFTER);
        let mut long = moltbot_config::ModelConfig::default();
        long.timeouts.total = Duration::from_secs(1800);
        long.retry.max_attempts = 2;
        let mut short = moltbot_config::ModelConfig::default();
        short.timeouts.total = Duration::from_secs(600);
        short.retry.max_attempts = 3;
        config.models = vec![long, short];
        assert_eq!(stale_turn_age(&config), Duration::from_secs(1800 * 2 + 600 * 3));
    }
}
