//! Conversation listings and search (`/v1/conversations`, the admin console) and usage aggregation,
//! shared by both backends.
//!
//! A page costs three queries whatever its size: the summaries (one aggregate over the matching
//! conversations), then the titles and the models of the page's conversations.

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, UNIX_EPOCH};

use moltbot_core::{
    ConversationQuery, ConversationSummary, StoreError, StoreResult, UsageGroupBy, UsageQuery, UsageRow,
};
use sqlx::Row;
use sqlx::any::AnyRow;

use crate::SqlStore;
use crate::error::{corrupt, db_err};
use crate::rows;

/// The first characters of a first user message fetched for its title (titles keep 80 of them after
/// collapsing whitespace).
const TITLE_SOURCE_CHARS: u32 = 1000;

const SECONDS_PER_DAY: i64 = 86_400;

/// A statement with `$n` placeholders numbered as arguments are added.
#[derive(Default)]
struct Statement {
    sql: String,
    args: Vec<Arg>,
}

enum Arg {
    Text(String),
    Int(i64),
}

impl Statement {
    /// Add an argument; returns its placeholder.
    fn arg(&mut self, arg: Arg) -> String {
        self.args.push(arg);
        format!("${}", self.args.len())
    }

    fn text(&mut self, s: &str) -> String {
        self.arg(Arg::Text(s.to_owned()))
    }

    fn int(&mut self, i: i64) -> String {
        self.arg(Arg::Int(i))
    }

    async fn fetch_all(self, pool: &sqlx::AnyPool) -> StoreResult<Vec<AnyRow>> {
        let mut q = sqlx::query(&self.sql);
        for arg in self.args {
            q = match arg {
                Arg::Text(s) => q.bind(s),
                Arg::Int(i) => q.bind(i),
            };
        }
        q.fetch_all(pool).await.map_err(db_err)
    }
}

/// `text` as a `LIKE` pattern matching it anywhere, with `\` as the escape character.
fn contains_pattern(text: &str) -> String {
    let mut p = String::with_capacity(text.len() + 2);
    p.push('%');
    for c in text.chars() {
        if matches!(c, '\\' | '%' | '_') {
            p.push('\\');
        }
        p.push(c);
    }
    p.push('%');
    p
}

fn u64_of(row: &AnyRow, column: &str) -> StoreResult<u64> {
    let v: i64 = row.try_get(column).map_err(db_err)?;
    u64::try_from(v).map_err(|e| corrupt(column, e))
}

/// `YYYY-MM-DD` (UTC) of a day number since the epoch.
fn day_label(day: i64) -> StoreResult<String> {
    let secs = u64::try_from(day.saturating_mul(SECONDS_PER_DAY)).map_err(|e| corrupt("usage day", e))?;
    let stamp = humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(secs)).to_string();
    Ok(stamp.get(..10).unwrap_or(&stamp).to_owned())
}

impl SqlStore {
    /// The summaries matching `query` (plus `id` when given), one more than `limit` to tell whether
    /// more follow.
    pub(crate) async fn summaries(
        &self,
        query: &ConversationQuery,
        id: Option<&str>,
    ) -> StoreResult<(Vec<ConversationSummary>, bool)> {
        let mut st = Statement::default();
        let mut inner = String::new();
        if let Some(owner) = &query.owner {
            inner.push_str(&format!(" AND c.owner = {}", st.text(owner)));
        }
        if let Some(id) = id {
            inner.push_str(&format!(" AND c.id = {}", st.text(id)));
        }
        if let Some(text) = query.text.as_deref().filter(|t| !t.is_empty()) {
            // LOWER on both sides: both backends fold the same way for ASCII (PostgreSQL also beyond).
            inner.push_str(&format!(
                " AND EXISTS (SELECT 1 FROM messages mt WHERE mt.conversation_id = c.id \
                 AND LOWER(mt.content) LIKE LOWER({}) ESCAPE '\\')",
                st.text(&contains_pattern(text))
            ));
        }
        if let Some(model) = &query.model {
            inner.push_str(&format!(
                " AND EXISTS (SELECT 1 FROM messages mm WHERE mm.conversation_id = c.id AND mm.model = {})",
                st.text(model)
            ));
        }
        let mut outer = String::new();
        if let Some(since) = query.since {
            outer.push_str(&format!(" AND updated_at >= {}", st.int(since)));
        }
        if let Some(until) = query.until {
            outer.push_str(&format!(" AND updated_at < {}", st.int(until)));
        }
        if let Some(after) = &query.after {
            let at = self.cursor_updated_at(query.owner.as_deref(), after).await?;
            let (a, b, c) = (st.int(at), st.int(at), st.text(after));
            outer.push_str(&format!(
                " AND (updated_at < {a} OR (updated_at = {b} AND id < {c}))"
            ));
        }
        let limit = st.int(i64::from(query.limit) + 1);
        st.sql = format!(
            "WITH s AS (\
               SELECT c.id AS id, c.owner AS owner, c.created_at AS created_at, c.metadata AS metadata, \
                      COALESCE(MAX(m.created_at), c.created_at) AS updated_at, \
                      COUNT(m.id) AS message_count \
               FROM conversations c LEFT JOIN messages m ON m.conversation_id = c.id \
               WHERE 1 = 1{inner} \
               GROUP BY c.id, c.owner, c.created_at, c.metadata) \
             SELECT id, owner, created_at, metadata, updated_at, message_count FROM s \
             WHERE 1 = 1{outer} ORDER BY updated_at DESC, id DESC LIMIT {limit}"
        );
        let found = st.fetch_all(self.pool()).await?;
        let has_more = found.len() > query.limit as usize;
        let mut page = found
            .iter()
            .take(query.limit as usize)
            .map(|row| {
                Ok(ConversationSummary {
                    conversation: rows::conversation(row)?,
                    updated_at: row.try_get("updated_at").map_err(db_err)?,
                    message_count: u64_of(row, "message_count")?,
                    title: String::new(),
                    models: Vec::new(),
                })
            })
            .collect::<StoreResult<Vec<_>>>()?;
        self.fill_titles_and_models(&mut page).await?;
        Ok((page, has_more))
    }

    /// The current `updated_at` of the cursor conversation (`NotFound` if it is not one of `owner`'s).
    async fn cursor_updated_at(&self, owner: Option<&str>, id: &str) -> StoreResult<i64> {
        let mut st = Statement::default();
        let idp = st.text(id);
        let owner_filter = match owner {
            Some(o) => format!(" AND c.owner = {}", st.text(o)),
            None => String::new(),
        };
        st.sql = format!(
            "SELECT COALESCE((SELECT MAX(m.created_at) FROM messages m WHERE m.conversation_id = c.id), \
                             c.created_at) AS updated_at \
             FROM conversations c WHERE c.id = {idp}{owner_filter}"
        );
        let found = st.fetch_all(self.pool()).await?;
        let row = found.first().ok_or(StoreError::NotFound)?;
        row.try_get("updated_at").map_err(db_err)
    }

    async fn fill_titles_and_models(&self, page: &mut [ConversationSummary]) -> StoreResult<()> {
        if page.is_empty() {
            return Ok(());
        }
        let ids: Vec<&str> = page.iter().map(|s| s.conversation.id.as_str()).collect();

        let mut st = Statement::default();
        let list = ids.iter().map(|id| st.text(id)).collect::<Vec<_>>().join(", ");
        st.sql = format!(
            "SELECT m.conversation_id AS conversation_id, SUBSTR(m.content, 1, {TITLE_SOURCE_CHARS}) AS content \
             FROM messages m WHERE m.conversation_id IN ({list}) AND m.role = 'user' \
               AND m.seq = (SELECT MIN(m2.seq) FROM messages m2 \
                            WHERE m2.conversation_id = m.conversation_id AND m2.role = 'user')"
        );
        let mut titles = HashMap::new();
        for row in st.fetch_all(self.pool()).await? {
            let id: String = row.try_get("conversation_id").map_err(db_err)?;
            let content: String = row.try_get("content").map_err(db_err)?;
            titles.insert(id, ConversationSummary::title_from(&content));
        }

        let mut st = Statement::default();
        let list = ids.iter().map(|id| st.text(id)).collect::<Vec<_>>().join(", ");
        st.sql = format!(
            "SELECT DISTINCT conversation_id, model FROM messages \
             WHERE conversation_id IN ({list}) AND model IS NOT NULL"
        );
        let mut models: HashMap<String, BTreeSet<String>> = HashMap::new();
        for row in st.fetch_all(self.pool()).await? {
            let id: String = row.try_get("conversation_id").map_err(db_err)?;
            let model: String = row.try_get("model").map_err(db_err)?;
            models.entry(id).or_default().insert(model);
        }

        for s in page {
            s.title = titles.remove(&s.conversation.id).unwrap_or_default();
            s.models = models
                .remove(&s.conversation.id)
                .map(|m| m.into_iter().collect())
                .unwrap_or_default();
        }
        Ok(())
    }

    pub(crate) async fn usage_rows(&self, query: &UsageQuery) -> StoreResult<Vec<UsageRow>> {
        let mut st = Statement::default();
        let since = st.int(query.since);
        let until = st.int(query.until);
        let owner = match &query.owner {
            Some(o) => format!(" AND owner = {}", st.text(o)),
            None => String::new(),
        };
        let (group, order) = match query.group_by {
            UsageGroupBy::Day => (format!("created_at / {SECONDS_PER_DAY}"), "grp ASC"),
            UsageGroupBy::Key => ("owner".to_owned(), "total_tokens DESC, grp ASC"),
            UsageGroupBy::Model => ("model".to_owned(), "total_tokens DESC, grp ASC"),
        };
        // CAST keeps sums integers on both backends (PostgreSQL's SUM(bigint) is NUMERIC).
        st.sql = format!(
            "SELECT {group} AS grp, COUNT(*) AS requests, \
               CAST(COALESCE(SUM(CASE WHEN outcome = 'error' THEN 1 ELSE 0 END), 0) AS BIGINT) AS errors, \
               CAST(COALESCE(SUM(prompt_tokens), 0) AS BIGINT) AS prompt_tokens, \
               CAST(COALESCE(SUM(completion_tokens), 0) AS BIGINT) AS completion_tokens, \
               CAST(COALESCE(SUM(prompt_tokens + completion_tokens), 0) AS BIGINT) AS total_tokens \
             FROM usage_records WHERE created_at >= {since} AND created_at < {until}{owner} \
             GROUP BY {group} ORDER BY {order}"
        );
        st.fetch_all(self.pool())
            .await?
            .iter()
            .map(|row| {
                let group = match query.group_by {
                    UsageGroupBy::Day => day_label(row.try_get("grp").map_err(db_err)?)?,
                    UsageGroupBy::Key | UsageGroupBy::Model => row.try_get("grp").map_err(db_err)?,
                };
                Ok(UsageRow {
                    group,
                    requests: u64_of(row, "requests")?,
                    errors: u64_of(row, "errors")?,
                    prompt_tokens: u64_of(row, "prompt_tokens")?,
                    completion_tokens: u64_of(row, "completion_tokens")?,
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn like_patterns_escape_wildcards() {
        assert_eq!(contains_pattern("a%b_c\\d"), "%a\\%b\\_c\\\\d%");
        assert_eq!(contains_pattern(""), "%%");
    }

    #[test]
    fn days_are_utc_dates() {
        assert_eq!(day_label(0).unwrap(), "1970-01-01");
        assert_eq!(day_label(1_700_000_000 / SECONDS_PER_DAY).unwrap(), "2023-11-14");
    }
}
