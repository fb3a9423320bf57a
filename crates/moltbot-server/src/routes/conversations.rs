//! OpenAI's Conversations API: `/v1/conversations` and `/v1/conversations/{id}/items`.

use axum::Router;
use axum::extract::{Path, State};
use axum::routing::get;
use moltbot_api::{
    ContentPart, ConversationDeleted, ConversationItem, ConversationList, ConversationObject,
    ConversationSummaryObject, CreateConversationRequest, CreateItemsRequest, ErrorEnvelope, InputItem,
    ItemList, UpdateConversationRequest,
};
use moltbot_core::{
    Conversation, ConversationQuery, ConversationSummary, ItemQuery, MessageStatus, NewMessage, Role,
    StoredMessage,
};
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::error::ApiError;
use crate::extract::{Json, Query};
use crate::principal::Principal;
use crate::state::AppState;

pub const COLLECTION: &str = "/v1/conversations";
pub const ONE: &str = "/v1/conversations/{conversation_id}";
pub const ITEMS: &str = "/v1/conversations/{conversation_id}/items";
pub const ITEM: &str = "/v1/conversations/{conversation_id}/items/{item_id}";

pub fn router() -> Router<AppState> {
    Router::new()
        .route(COLLECTION, get(list).post(create))
        .route(ONE, get(retrieve).post(update).delete(delete))
        .route(ITEMS, get(list_items).post(create_items))
        .route(ITEM, get(retrieve_item).delete(delete_item))
        .route(
            super::compaction::COMPACT,
            axum::routing::post(super::compaction::compact),
        )
}

fn conversation_object(c: &Conversation) -> ConversationObject {
    ConversationObject {
        id: c.id.clone(),
        object: "conversation".into(),
        created_at: c.created_at,
        metadata: c.metadata.clone(),
    }
}

/// A listing entry (`/v1/conversations`, and the admin console's, which adds the owner).
pub fn summary_object(s: &ConversationSummary) -> ConversationSummaryObject {
    ConversationSummaryObject {
        id: s.conversation.id.clone(),
        object: "conversation".into(),
        created_at: s.conversation.created_at,
        updated_at: s.updated_at,
        title: s.title.clone(),
        message_count: s.message_count,
        models: s.models.clone(),
        metadata: s.conversation.metadata.clone(),
    }
}

/// A listing page, or 400 naming `after` when the cursor is not a conversation of the listing.
pub async fn list_page(
    state: &AppState,
    query: &ConversationQuery,
) -> Result<(Vec<ConversationSummary>, bool), ApiError> {
    match state.store.list_conversations(query).await {
        Err(moltbot_core::StoreError::NotFound) => Err(ApiError::invalid(
            "after",
            "`after` is not a conversation of this listing",
        )),
        other => Ok(other?),
    }
}

pub fn item_object(m: &StoredMessage) -> ConversationItem {
    let kind = if m.role == Role::Assistant {
        "output_text"
    } else {
        "input_text"
    };
    let item = ConversationItem {
        id: m.id.clone(),
        kind: "message".into(),
        role: m.role.as_str().into(),
        content: vec![ContentPart {
            kind: kind.into(),
            text: m.content.clone(),
        }],
        status: m.status.api_status().into(),
        created_at: m.created_at,
        compaction: None,
        compacted_by: None,
    };
    super::compaction::with_memory(m, item)
}

/// OpenAI's limits: at most 16 pairs, keys up to 64 characters, string values up to 512.
fn validate_metadata(metadata: &Map<String, Value>) -> Result<(), ApiError> {
    if metadata.len() > 16 {
        return Err(ApiError::invalid(
            "metadata",
            "`metadata` may have at most 16 keys",
        ));
    }
    for (k, v) in metadata {
        if k.chars().count() > 64 {
            return Err(ApiError::invalid(
                format!("metadata.{k}"),
                "metadata keys are at most 64 characters",
            ));
        }
        match v {
            Value::String(s) if s.chars().count() <= 512 => {}
            _ => {
                return Err(ApiError::invalid(
                    format!("metadata.{k}"),
                    "metadata values must be strings of at most 512 characters",
                ));
            }
        }
    }
    Ok(())
}

fn input_to_new(items: &[InputItem]) -> Result<Vec<NewMessage>, ApiError> {
    items
        .iter()
        .enumerate()
        .map(|(i, item)| {
            if let Some(kind) = &item.kind
                && kind != "message"
            {
                return Err(ApiError::invalid(
                    format!("items[{i}].type"),
                    format!("Unsupported item type `{kind}`: only `message` items are supported"),
                ));
            }
            let role = Role::parse(&item.role).ok_or_else(|| {
                ApiError::invalid(
                    format!("items[{i}].role"),
                    format!(
                        "Invalid role `{}`: expected one of {}",
                        item.role,
                        Role::ALL.join(", ")
                    ),
                )
            })?;
            let text = match &item.content {
                Value::String(s) => s.clone(),
                Value::Array(parts) => {
                    let mut text = String::new();
                    for (j, p) in parts.iter().enumerate() {
                        match p.get("text").and_then(Value::as_str) {
                            Some(t) => text.push_str(t),
                            None => {
                                return Err(ApiError::invalid(
                                    format!("items[{i}].content[{j}]"),
                                    "only text content parts are supported",
                                ));
                            }
                        }
                    }
                    text
                }
                _ => {
                    return Err(ApiError::invalid(
                        format!("items[{i}].content"),
                        "`content` must be a string or an array of text parts",
                    ));
                }
            };
            Ok(NewMessage::new(role, text, MessageStatus::Completed))
        })
        .collect()
}

async fn load(state: &AppState, principal: &Principal, id: &str) -> Result<Conversation, ApiError> {
    state
        .store
        .get_conversation(principal.owner(), id)
        .await?
        .ok_or_else(|| ApiError::conversation_not_found(id))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct ListConversationsParams {
    /// 1 to 100, default 20.
    limit: Option<u32>,
    /// A conversation id (a previous page's `last_id`) to list after.
    after: Option<String>,
}

/// List the caller's conversations, newest activity first.
#[utoipa::path(get, path = "/v1/conversations", tag = "conversations", params(ListConversationsParams),
    responses((status = 200, body = ConversationList), (status = 400, body = ErrorEnvelope)))]
pub async fn list(
    State(state): State<AppState>,
    principal: Principal,
    Query(params): Query<ListConversationsParams>,
) -> Result<axum::Json<ConversationList>, ApiError> {
    let limit = params.limit.unwrap_or(20);
    if !(1..=100).contains(&limit) {
        return Err(ApiError::invalid("limit", "`limit` must be between 1 and 100"));
    }
    let query = ConversationQuery {
        owner: Some(principal.owner().to_owned()),
        limit,
        after: params.after.filter(|a| !a.is_empty()),
        ..ConversationQuery::default()
    };
    let (page, has_more) = list_page(&state, &query).await?;
    let data: Vec<ConversationSummaryObject> = page.iter().map(summary_object).collect();
    Ok(axum::Json(ConversationList {
        object: "list".into(),
        last_id: data.last().map(|c| c.id.clone()),
        data,
        has_more,
    }))
}

/// Create a conversation, optionally with initial items.
#[utoipa::path(post, path = "/v1/conversations", tag = "conversations", request_body = CreateConversationRequest,
    responses((status = 200, body = ConversationObject), (status = 400, body = ErrorEnvelope)))]
pub async fn create(
    State(state): State<AppState>,
    principal: Principal,
    Json(req): Json<CreateConversationRequest>,
) -> Result<axum::Json<ConversationObject>, ApiError> {
    let metadata = req.metadata.unwrap_or_default();
    validate_metadata(&metadata)?;
    let items = input_to_new(req.items.as_deref().unwrap_or_default())?;
    if items.len() > 20 {
        return Err(ApiError::invalid(
            "items",
            "at most 20 items can be added at once",
        ));
    }
    let now = state.clock.now_secs();
    let mut tx = state.store.begin().await?;
    let conv = tx.create_conversation(principal.owner(), metadata, now).await?;
    if !items.is_empty() {
        tx.append_messages(&conv.id, &items, now).await?;
    }
    tx.commit().await?;
    Ok(axum::Json(conversation_object(&conv)))
}

/// Retrieve a conversation.
#[utoipa::path(get, path = "/v1/conversations/{conversation_id}", tag = "conversations",
    params(("conversation_id" = String, Path)),
    responses((status = 200, body = ConversationObject), (status = 404, body = ErrorEnvelope)))]
pub async fn retrieve(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<axum::Json<ConversationObject>, ApiError> {
    Ok(axum::Json(conversation_object(
        &load(&state, &principal, &id).await?,
    )))
}

/// Replace a conversation's metadata.
#[utoipa::path(post, path = "/v1/conversations/{conversation_id}", tag = "conversations",
    params(("conversation_id" = String, Path)), request_body = UpdateConversationRequest,
    responses((status = 200, body = ConversationObject), (status = 404, body = ErrorEnvelope)))]
pub async fn update(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
    Json(req): Json<UpdateConversationRequest>,
) -> Result<axum::Json<ConversationObject>, ApiError> {
    validate_metadata(&req.metadata)?;
    let conv = state
        .store
        .update_conversation_metadata(principal.owner(), &id, req.metadata)
        .await?
        .ok_or_else(|| ApiError::conversation_not_found(&id))?;
    Ok(axum::Json(conversation_object(&conv)))
}

/// Delete a conversation and its items.
#[utoipa::path(delete, path = "/v1/conversations/{conversation_id}", tag = "conversations",
    params(("conversation_id" = String, Path)),
    responses((status = 200, body = ConversationDeleted), (status = 404, body = ErrorEnvelope)))]
pub async fn delete(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<axum::Json<ConversationDeleted>, ApiError> {
    if !state.store.delete_conversation(principal.owner(), &id).await? {
        return Err(ApiError::conversation_not_found(&id));
    }
    Ok(axum::Json(ConversationDeleted {
        id,
        object: "conversation.deleted".into(),
        deleted: true,
    }))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct ListParams {
    /// 1 to 100, default 20.
    limit: Option<u32>,
    /// `asc` or `desc` (default).
    order: Option<String>,
    /// An item id to list after.
    after: Option<String>,
}

/// List a conversation's items.
#[utoipa::path(get, path = "/v1/conversations/{conversation_id}/items", tag = "conversations",
    params(("conversation_id" = String, Path), ListParams),
    responses((status = 200, body = ItemList), (status = 404, body = ErrorEnvelope)))]
pub async fn list_items(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
    Query(params): Query<ListParams>,
) -> Result<axum::Json<ItemList>, ApiError> {
    let limit = params.limit.unwrap_or(20);
    if !(1..=100).contains(&limit) {
        return Err(ApiError::invalid("limit", "`limit` must be between 1 and 100"));
    }
    let ascending = match params.order.as_deref() {
        None | Some("desc") => false,
        Some("asc") => true,
        Some(_) => return Err(ApiError::invalid("order", "`order` must be `asc` or `desc`")),
    };
    let conv = load(&state, &principal, &id).await?;
    let query = ItemQuery {
        after: params.after.clone(),
        limit,
        ascending,
    };
    let (messages, has_more) = match state.store.list_messages(&conv.id, &query).await {
        Err(moltbot_core::StoreError::NotFound) => {
            return Err(ApiError::invalid(
                "after",
                "`after` is not an item of this conversation",
            ));
        }
        other => other?,
    };
    let data: Vec<ConversationItem> = messages.iter().map(item_object).collect();
    Ok(axum::Json(ItemList {
        object: "list".into(),
        first_id: data.first().map(|i| i.id.clone()),
        last_id: data.last().map(|i| i.id.clone()),
        data,
        has_more,
    }))
}

/// Add items to a conversation.
#[utoipa::path(post, path = "/v1/conversations/{conversation_id}/items", tag = "conversations",
    params(("conversation_id" = String, Path)), request_body = CreateItemsRequest,
    responses((status = 200, body = ItemList), (status = 404, body = ErrorEnvelope)))]
pub async fn create_items(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
    Json(req): Json<CreateItemsRequest>,
) -> Result<axum::Json<ItemList>, ApiError> {
    if req.items.is_empty() || req.items.len() > 20 {
        return Err(ApiError::invalid("items", "`items` must contain 1 to 20 items"));
    }
    let items = input_to_new(&req.items)?;
    let conv = load(&state, &principal, &id).await?;
    let mut tx = state.store.begin().await?;
    let stored = tx
        .append_messages(&conv.id, &items, state.clock.now_secs())
        .await?;
    tx.commit().await?;
    let data: Vec<ConversationItem> = stored.iter().map(item_object).collect();
    Ok(axum::Json(ItemList {
        object: "list".into(),
        first_id: data.first().map(|i| i.id.clone()),
        last_id: data.last().map(|i| i.id.clone()),
        data,
        has_more: false,
    }))
}

fn item_not_found(id: &str) -> ApiError {
    ApiError::NotFound {
        param: Some("item_id"),
        message: format!("Item with id '{id}' not found."),
        code: "not_found",
    }
}

/// Retrieve one item.
#[utoipa::path(get, path = "/v1/conversations/{conversation_id}/items/{item_id}", tag = "conversations",
    params(("conversation_id" = String, Path), ("item_id" = String, Path)),
    responses((status = 200, body = ConversationItem), (status = 404, body = ErrorEnvelope)))]
pub async fn retrieve_item(
    State(state): State<AppState>,
    principal: Principal,
    Path((id, item_id)): Path<(String, String)>,
) -> Result<axum::Json<ConversationItem>, ApiError> {
    let conv = load(&state, &principal, &id).await?;
    let m = state
        .store
        .get_message(&conv.id, &item_id)
        .await?
        .ok_or_else(|| item_not_found(&item_id))?;
    Ok(axum::Json(item_object(&m)))
}

/// Delete one item; returns the conversation.
#[utoipa::path(delete, path = "/v1/conversations/{conversation_id}/items/{item_id}", tag = "conversations",
    params(("conversation_id" = String, Path), ("item_id" = String, Path)),
    responses((status = 200, body = ConversationObject), (status = 404, body = ErrorEnvelope)))]
pub async fn delete_item(
    State(state): State<AppState>,
    principal: Principal,
    Path((id, item_id)): Path<(String, String)>,
) -> Result<axum::Json<ConversationObject>, ApiError> {
    let conv = load(&state, &principal, &id).await?;
    if !state.store.delete_message(&conv.id, &item_id).await? {
        return Err(item_not_found(&item_id));
    }
    Ok(axum::Json(conversation_object(&conv)))
}
