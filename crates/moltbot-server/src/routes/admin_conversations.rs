//! The admin API for conversations (admin listener, `admin` scope), across every owner:
//! `/admin/api/conversations` (search), `/admin/api/conversations/{id}` (transcript, DELETE) and
//! `/admin/api/conversations/{id}/export?format=json|markdown` (an attachment).

use std::collections::HashMap;
use std::fmt::Write as _;
use std::time::{Duration, UNIX_EPOCH};

use axum::Router;
use axum::extract::{Path, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use moltbot_api::{ConversationDeleted, ConversationSummaryObject};
use moltbot_core::{ConversationQuery, ConversationSummary, ItemQuery, StoredMessage};
use serde::{Deserialize, Serialize};

use super::conversations::{list_page, summary_object};
use crate::auth::AdminPrincipal;
use crate::error::ApiError;
use crate::extract::Query;
use crate::state::AppState;

pub const COLLECTION: &str = "/admin/api/conversations";
pub const ONE: &str = "/admin/api/conversations/{conversation_id}";
pub const EXPORT: &str = "/admin/api/conversations/{conversation_id}/export";

const DEFAULT_LIMIT: u32 = 50;
const MAX_LIMIT: u32 = 200;
/// Messages fetched per store call when loading a whole transcript.
const TRANSCRIPT_PAGE: u32 = 500;

pub fn router() -> Router<AppState> {
    Router::new()
        .route(COLLECTION, get(list))
        .route(ONE, get(retrieve).delete(delete))
        .route(EXPORT, get(export))
}

/// A listing entry: the `/v1/conversations` object plus who owns it.
#[derive(Debug, Serialize)]
pub struct AdminConversation {
    #[serde(flatten)]
    pub summary: ConversationSummaryObject,
    /// The owning API key's id (`""` for the anonymous principal).
    pub owner: String,
    /// That key's name; `null` when the key no longer exists (or for the anonymous principal).
    pub key_name: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct AdminConversationList {
    pub object: &'static str,
    pub data: Vec<AdminConversation>,
    pub has_more: bool,
    pub last_id: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct TranscriptMessage {
    pub id: String,
    pub role: &'static str,
    pub content: String,
    /// `completed`, `in_progress`, `failed` or `truncated`.
    pub status: &'static str,
    pub model: Option<String>,
    pub created_at: i64,
    pub finish_reason: Option<String>,
    pub prompt_tokens: Option<u32>,
    pub completion_tokens: Option<u32>,
    /// On a summary (conversation memory): what it replaced.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub compaction: Option<moltbot_api::CompactionDetails>,
    /// On a message replaced by a summary: that summary's id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub compacted_by: Option<String>,
}

/// `GET /admin/api/conversations/{id}`, and the JSON export.
#[derive(Debug, Serialize)]
pub struct AdminConversationDetail {
    #[serde(flatten)]
    pub conversation: AdminConversation,
    pub messages: Vec<TranscriptMessage>,
}

#[derive(Debug, Deserialize)]
pub struct ListParams {
    /// Case-insensitive substring of any message.
    q: Option<String>,
    key_id: Option<String>,
    model: Option<String>,
    since: Option<String>,
    until: Option<String>,
    limit: Option<String>,
    after: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct ExportParams {
    format: Option<String>,
}

/// An optional query parameter: absent and empty are the same.
pub(crate) fn given(v: Option<String>) -> Option<String> {
    v.filter(|s| !s.trim().is_empty())
}

/// A time parameter: unix seconds, a UTC date (`YYYY-MM-DD`) or an RFC 3339 time. A date as an end
/// (`until`, exclusive) means the end of that day, so `until=2026-01-31` includes the 31st.
pub(crate) fn parse_time(param: &'static str, value: &str, end: bool) -> Result<i64, ApiError> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<i64>() {
        return Ok(secs);
    }
    let bad = || {
        ApiError::invalid(
            param,
            format!("`{param}` must be unix seconds, a date (YYYY-MM-DD) or an RFC 3339 time"),
        )
    };
    let is_date = value.len() == 10 && value.as_bytes().get(4) == Some(&b'-');
    let (text, shift) = if is_date {
        (format!("{value}T00:00:00Z"), if end { 86_400 } else { 0 })
    } else {
        (value.to_owned(), 0)
    };
    let at = humantime::parse_rfc3339_weak(&text).map_err(|_| bad())?;
    let secs = at.duration_since(UNIX_EPOCH).map_err(|_| bad())?.as_secs();
    i64::try_from(secs).map(|s| s + shift).map_err(|_| bad())
}

/// `since`/`until` as a checked pair.
pub(crate) fn parse_range(
    since: Option<String>,
    until: Option<String>,
) -> Result<(Option<i64>, Option<i64>), ApiError> {
    let since = given(since).map(|v| parse_time("since", &v, false)).transpose()?;
    let until = given(until).map(|v| parse_time("until", &v, true)).transpose()?;
    if let (Some(s), Some(u)) = (since, until)
        && u <= s
    {
        return Err(ApiError::invalid("until", "`until` must be later than `since`"));
    }
    Ok((since, until))
}

pub(crate) fn parse_limit(value: Option<String>, default: u32, max: u32) -> Result<u32, ApiError> {
    let Some(v) = given(value) else {
        return Ok(default);
    };
    v.trim()
        .parse::<u32>()
        .ok()
        .filter(|n| (1..=max).contains(n))
        .ok_or_else(|| ApiError::invalid("limit", format!("`limit` must be an integer from 1 to {max}")))
}

/// Key names by id, for labelling owners.
pub(crate) async fn key_names(state: &AppState) -> Result<HashMap<String, String>, ApiError> {
    Ok(state
        .store
        .list_api_keys()
        .await?
        .into_iter()
        .map(|k| (k.id, k.name))
        .collect())
}

fn admin_object(s: &ConversationSummary, names: &HashMap<String, String>) -> AdminConversation {
    AdminConversation {
        summary: summary_object(s),
        owner: s.conversation.owner.clone(),
        key_name: names.get(&s.conversation.owner).cloned(),
    }
}

async fn list(
    _admin: AdminPrincipal,
    State(state): State<AppState>,
    Query(params): Query<ListParams>,
) -> Result<axum::Json<AdminConversationList>, ApiError> {
    let limit = parse_limit(params.limit, DEFAULT_LIMIT, MAX_LIMIT)?;
    let (since, until) = parse_range(params.since, params.until)?;
    let query = ConversationQuery {
        owner: given(params.key_id),
        text: given(params.q),
        model: given(params.model),
        since,
        until,
        limit,
        after: given(params.after),
    };
    let (page, has_more) = list_page(&state, &query).await?;
    let names = key_names(&state).await?;
    let data: Vec<AdminConversation> = page.iter().map(|s| admin_object(s, &names)).collect();
    Ok(axum::Json(AdminConversationList {
        object: "list",
        last_id: data.last().map(|c| c.summary.id.clone()),
        data,
        has_more,
    }))
}

fn transcript_message(m: &StoredMessage) -> TranscriptMessage {
    TranscriptMessage {
        id: m.id.clone(),
        role: m.role.as_str(),
        content: m.content.clone(),
        status: m.status.as_str(),
        model: m.meta.model.clone(),
        created_at: m.created_at,
        finish_reason: m.meta.finish_reason.clone(),
        prompt_tokens: m.meta.usage.as_ref().map(|u| u.prompt_tokens),
        completion_tokens: m.meta.usage.as_ref().map(|u| u.completion_tokens),
        compaction: m.compaction.as_ref().map(super::compaction::compaction_details),
        compacted_by: m.compacted_by.clone(),
    }
}

async fn detail(state: &AppState, id: &str) -> Result<AdminConversationDetail, ApiError> {
    let summary = state
        .store
        .conversation_summary(None, id)
        .await?
        .ok_or_else(|| ApiError::conversation_not_found(id))?;
    let mut messages = Vec::new();
    let mut after = None;
    loop {
        let query = ItemQuery {
            after: after.take(),
            limit: TRANSCRIPT_PAGE,
            ascending: true,
        };
        let (page, more) = state.store.list_messages(id, &query).await?;
        messages.extend(page.iter().map(transcript_message));
        match page.last() {
            Some(last) if more => after = Some(last.id.clone()),
            _ => break,
        }
    }
    Ok(AdminConversationDetail {
        conversation: admin_object(&summary, &key_names(state).await?),
        messages,
    })
}

async fn retrieve(
    _admin: AdminPrincipal,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<axum::Json<AdminConversationDetail>, ApiError> {
    Ok(axum::Json(detail(&state, &id).await?))
}

async fn delete(
    admin: AdminPrincipal,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<axum::Json<ConversationDeleted>, ApiError> {
    let summary = state
        .store
        .conversation_summary(None, &id)
        .await?
        .ok_or_else(|| ApiError::conversation_not_found(&id))?;
    if !state
        .store
        .delete_conversation(&summary.conversation.owner, &id)
        .await?
    {
        return Err(ApiError::conversation_not_found(&id));
    }
    tracing::info!(moltbot.admin.key_id = %admin.principal().key_id, moltbot.conversation.id = %id,
        "conversation deleted by an admin");
    Ok(axum::Json(ConversationDeleted {
        id,
        object: "conversation.deleted".into(),
        deleted: true,
    }))
}

fn rfc3339(secs: i64) -> String {
    let secs = u64::try_from(secs).unwrap_or(0);
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(secs)).to_string()
}

/// The transcript as Markdown: a heading, a few facts, then one `##` section per message.
pub fn markdown(d: &AdminConversationDetail) -> String {
    let s = &d.conversation.summary;
    let mut out = String::new();
    let title = if s.title.is_empty() {
        format!("Conversation {}", s.id)
    } else {
        s.title.clone()
    };
    let key = match &d.conversation.key_name {
        Some(name) => format!("{name} (`{}`)", d.conversation.owner),
        None => format!("`{}`", d.conversation.owner),
    };
    let _ = writeln!(out, "# {title}\n");
    let _ = writeln!(out, "- Conversation: `{}`", s.id);
    let _ = writeln!(out, "- Key: {key}");
    let _ = writeln!(out, "- Created: {}", rfc3339(s.created_at));
    let _ = writeln!(out, "- Last activity: {}", rfc3339(s.updated_at));
    if !s.models.is_empty() {
        let _ = writeln!(out, "- Models: {}", s.models.join(", "));
    }
    let _ = writeln!(out, "- Messages: {}", s.message_count);
    for m in &d.messages {
        let mut role = m.role.to_owned();
        if let Some(first) = role.get_mut(..1) {
            first.make_ascii_uppercase();
        }
        let mut notes: Vec<&str> = m.model.as_deref().into_iter().collect();
        if m.status != "completed" {
            notes.push(m.status);
        }
        let summary_of;
        if let Some(c) = &m.compaction {
            "Summary".clone_into(&mut role);
            summary_of = format!("compacts {} earlier messages, by {}", c.message_count, c.model);
            notes.push(&summary_of);
        } else if m.compacted_by.is_some() {
            notes.push("compacted");
        }
        let notes = if notes.is_empty() {
            String::new()
        } else {
            format!(" ({})", notes.join(", "))
        };
        let _ = writeln!(out, "\n## {role}{notes}\n");
        let _ = writeln!(out, "{}", m.content.trim_end());
    }
    out
}

fn attachment(content_type: &'static str, filename: &str, body: String) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type.to_owned()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{filename}\""),
            ),
        ],
        body,
    )
        .into_response()
}

/// `Content-Disposition` filenames are conversation ids; anything unexpected becomes `_`.
fn safe_filename(id: &str) -> String {
    id.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

async fn export(
    admin: AdminPrincipal,
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(params): Query<ExportParams>,
) -> Result<Response, ApiError> {
    let format = given(params.format).unwrap_or_else(|| "json".into());
    if !matches!(format.as_str(), "json" | "markdown" | "md") {
        return Err(ApiError::invalid(
            "format",
            "`format` must be `json` or `markdown`",
        ));
    }
    let d = detail(&state, &id).await?;
    tracing::info!(moltbot.admin.key_id = %admin.principal().key_id, moltbot.conversation.id = %id,
        format = %format, "conversation exported by an admin");
    let name = safe_filename(&d.conversation.summary.id);
    Ok(if format == "json" {
        let body = serde_json::to_string_pretty(&d).map_err(|e| ApiError::internal(e.to_string()))?;
        attachment("application/json", &format!("{name}.json"), body)
    } else {
        attachment(
            "text/markdown; charset=utf-8",
            &format!("{name}.md"),
            markdown(&d),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_seconds_dates_or_rfc3339() {
        assert_eq!(parse_time("since", "1700000000", false).unwrap(), 1_700_000_000);
        assert_eq!(parse_time("since", "2023-11-14", false).unwrap(), 1_699_920_000);
        assert_eq!(parse_time("until", "2023-11-14", true).unwrap(), 1_700_006_400);
        assert_eq!(
            parse_time("since", "2023-11-14T22:13:20Z", false).unwrap(),
            1_700_000_000
        );
        for bad in ["yesterday", "2023-13-01", "", "1.5"] {
            assert!(parse_time("since", bad, false).is_err(), "{bad}");
        }
    }

    #[test]
    fn ranges_and_limits_name_the_parameter() {
        let err = parse_range(Some("200".into()), Some("100".into())).unwrap_err();
        assert!(format!("{err:?}").contains("until"), "{err:?}");
        assert_eq!(parse_range(None, Some(" ".into())).unwrap(), (None, None));
        assert_eq!(parse_limit(None, 50, 200).unwrap(), 50);
        assert_eq!(parse_limit(Some("200".into()), 50, 200).unwrap(), 200);
        for bad in ["0", "201", "-1", "ten"] {
            assert!(parse_limit(Some(bad.into()), 50, 200).is_err(), "{bad}");
        }
    }
}
