//! The admin API for usage (admin listener, `admin` scope):
//! `GET /admin/api/usage?group_by=day|key|model&since=&until=&key_id=&format=json|csv`.
//! Defaults: the last 30 UTC days (today included), grouped by day.

use axum::Router;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use moltbot_core::{UsageGroupBy, UsageQuery, UsageRow};
use serde::{Deserialize, Serialize};

use super::admin_conversations::{given, key_names, parse_range};
use crate::auth::AdminPrincipal;
use crate::error::ApiError;
use crate::extract::Query;
use crate::state::AppState;

pub const PATH: &str = "/admin/api/usage";

const DAY: i64 = 86_400;
const DEFAULT_DAYS: i64 = 30;

pub fn router() -> Router<AppState> {
    Router::new().route(PATH, get(usage))
}

#[derive(Debug, Deserialize)]
pub struct UsageParams {
    group_by: Option<String>,
    since: Option<String>,
    until: Option<String>,
    key_id: Option<String>,
    format: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct UsageGroup {
    /// `YYYY-MM-DD` (UTC), the key id, or the model.
    pub group: String,
    /// With `group_by=key` only: the key's name (`null` when the key no longer exists).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_name: Option<Option<String>>,
    pub requests: u64,
    /// Turns that failed (a client that went away is not an error).
    pub errors: u64,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub total_tokens: u64,
}

#[derive(Debug, Serialize)]
pub struct UsageList {
    pub object: &'static str,
    pub group_by: &'static str,
    pub since: i64,
    pub until: i64,
    pub data: Vec<UsageGroup>,
}

/// A spreadsheet must not run a cell as a formula: text starting with `= + - @` (or a tab/CR) gets a
/// leading `'` (OWASP's CSV injection advice). Dates, ids and numbers never start that way.
fn csv_text(s: &str) -> String {
    if s.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{s}")
    } else {
        s.to_owned()
    }
}

fn to_csv(list: &UsageList) -> Result<String, ApiError> {
    let by_key = list.group_by == "key";
    let mut w = csv::Writer::from_writer(Vec::new());
    let mut header = vec!["group"];
    if by_key {
        header.push("key_name");
    }
    header.extend([
        "requests",
        "errors",
        "prompt_tokens",
        "completion_tokens",
        "total_tokens",
    ]);
    w.write_record(&header).map_err(ApiError::internal)?;
    for g in &list.data {
        let mut record = vec![csv_text(&g.group)];
        if by_key {
            record.push(csv_text(
                g.key_name.clone().flatten().as_deref().unwrap_or_default(),
            ));
        }
        record.extend(
            [
                g.requests,
                g.errors,
                g.prompt_tokens,
                g.completion_tokens,
                g.total_tokens,
            ]
            .map(|n| n.to_string()),
        );
        w.write_record(&record).map_err(ApiError::internal)?;
    }
    let bytes = w.into_inner().map_err(ApiError::internal)?;
    String::from_utf8(bytes).map_err(ApiError::internal)
}

async fn usage(
    _admin: AdminPrincipal,
    State(state): State<AppState>,
    Query(params): Query<UsageParams>,
) -> Result<Response, ApiError> {
    let group_by = match given(params.group_by) {
        None => UsageGroupBy::Day,
        Some(g) => UsageGroupBy::parse(g.trim())
            .ok_or_else(|| ApiError::invalid("group_by", "`group_by` must be `day`, `key` or `model`"))?,
    };
    let csv = match given(params.format).as_deref() {
        None | Some("json") => false,
        Some("csv") => true,
        Some(_) => return Err(ApiError::invalid("format", "`format` must be `json` or `csv`")),
    };
    let (since, until) = parse_range(params.since, params.until)?;
    let now = state.clock.now_secs();
    let tomorrow = (now.div_euclid(DAY) + 1) * DAY;
    let until = until.unwrap_or(tomorrow);
    let since = match since {
        Some(s) => s,
        None => until - DEFAULT_DAYS * DAY,
    };
    let query = UsageQuery {
        group_by,
        since,
        until,
        owner: given(params.key_id),
    };
    let rows = state.store.aggregate_usage(&query).await?;
    let names = match group_by {
        UsageGroupBy::Key => Some(key_names(&state).await?),
        _ => None,
    };
    let data = rows
        .into_iter()
        .map(|r: UsageRow| UsageGroup {
            key_name: names.as_ref().map(|n| n.get(&r.group).cloned()),
            total_tokens: r.prompt_tokens + r.completion_tokens,
            group: r.group,
            requests: r.requests,
            errors: r.errors,
            prompt_tokens: r.prompt_tokens,
            completion_tokens: r.completion_tokens,
        })
        .collect();
    let list = UsageList {
        object: "list",
        group_by: group_by.as_str(),
        since,
        until,
        data,
    };
    if !csv {
        return Ok(axum::Json(list).into_response());
    }
    let body = to_csv(&list)?;
    Ok((
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_owned()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"usage-by-{}.csv\"", list.group_by),
            ),
        ],
        body,
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_quotes_and_defuses_formulas() {
        let list = UsageList {
            object: "list",
            group_by: "key",
            since: 0,
            until: 1,
            data: vec![UsageGroup {
                group: "key_1".into(),
                key_name: Some(Some("=cmd, \"x\"".into())),
                requests: 2,
                errors: 1,
                prompt_tokens: 3,
                completion_tokens: 4,
                total_tokens: 7,
            }],
        };
        assert_eq!(
            to_csv(&list).unwrap(),
            "group,key_name,requests,errors,prompt_tokens,completion_tokens,total_tokens\n\
             key_1,\"'=cmd, \"\"x\"\"\",2,1,3,4,7\n"
        );
    }
}
