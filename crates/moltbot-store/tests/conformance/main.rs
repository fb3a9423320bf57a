//! The store conformance suite: every case runs against SQLite (a temporary file, and `sqlite::memory:`)
//! and against PostgreSQL when `MOLTBOT_TEST_POSTGRES_URL` is set (each run in a fresh schema).
//! With `CI=true` and no PostgreSQL URL, the PostgreSQL cases fail instead of skipping.
//!
//! Test names carry the backend: `sqlite::appends_are_sequenced`, `postgres::appends_are_sequenced`, …

mod channels;
mod compaction;
mod conversations;
mod harness;
mod keys;
mod listing;
mod messages;
mod models;
mod records;
mod responses;
mod schema;
mod specific;
mod turns;
mod webhooks;

/// Instantiate each `module::case` once per backend, in modules named after the backend.
macro_rules! conformance {
    ($($module:ident :: $case:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    crate::harness::sqlite_file(crate::$module::$case).await;
                }
            )*
        }
        mod sqlite_memory {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    crate::harness::sqlite_memory(crate::$module::$case).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    crate::harness::postgres(crate::$module::$case).await;
                }
            )*
        }
    };
}

conformance!(
    channels::channel_events_dedupe_and_claim_in_chat_order,
    channels::channel_claims_expire_and_are_exclusive,
    channels::channel_conversations_state_and_leases,
    schema::migrate_is_idempotent,
    schema::tolerates_newer_schema,
    conversations::conversations_are_owner_scoped,
    conversations::tip_hash_finds_conversation,
    conversations::rollback_on_drop,
    conversations::commit_makes_writes_visible,
    conversations::delete_cascades_messages_keeps_usage,
    messages::appends_and_paginates,
    messages::append_errors,
    messages::context_messages_filter,
    messages::set_message_status_updates,
    messages::fail_stale_messages_settles_only_old_in_progress,
    messages::get_and_delete_message,
    messages::appends_are_sequenced,
    compaction::compaction_replaces_messages_in_context,
    compaction::compaction_of_claimed_items_conflicts,
    compaction::concurrent_compactions_have_one_winner,
    turns::grouped_turns_commit_together,
    turns::concurrent_turns_are_all_stored,
    turns::unwanted_events_are_not_written,
    records::usage_insert_and_list,
    records::usage_write_behind,
    records::idempotency_lifecycle,
    responses::responses_commit_with_the_turn_and_are_owner_scoped,
    keys::api_keys_lifecycle,
    keys::bootstrap_happens_once,
    keys::bootstrap_skipped_when_keys_exist,
    keys::concurrent_bootstrap_has_one_winner,
    keys::usage_tokens_are_summed_since,
    models::model_registry_lifecycle,
    listing::conversations_are_listed_and_searched,
    listing::titles_are_collapsed_and_cut,
    listing::usage_is_aggregated,
    webhooks::webhook_subscriptions_crud,
    webhooks::webhook_outbox_commits_with_the_record,
    webhooks::webhook_claims_retries_dead_letters_and_redelivery,
);
