//! `GET /openapi.json` is generated from the code and matches the golden copy in `docs/openapi.json`.
//! Regenerate with `make docs` (MOLTBOT_TEST_REGENERATE_DOCS=1).

mod common;

use common::*;

const GOLDEN: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/openapi.json");

#[tokio::test]
async fn openapi_document_matches_the_golden_copy() {
    let fake = fake().await;
    let srv = start(&fake).await;
    let served = srv.get("/openapi.json").await.text().await.unwrap();
    assert_eq!(served, moltbot_server::routes::openapi::document());
    if std::env::var_os("MOLTBOT_TEST_REGENERATE_DOCS").is_some() {
        std::fs::write(GOLDEN, &served).unwrap();
    }
    let golden = std::fs::read_to_string(GOLDEN).unwrap_or_default();
    assert!(
        golden == served,
        "docs/openapi.json is out of date: run `make docs` and commit the result"
    );
    let doc: serde_json::Value = serde_json::from_str(&served).unwrap();
    for path in [
        "/v1/chat/completions",
        "/v1/models",
        "/v1/conversations",
        "/v1/conversations/{conversation_id}",
        "/v1/conversations/{conversation_id}/items",
        "/v1/conversations/{conversation_id}/items/{item_id}",
        "/health",
        "/ready",
    ] {
        assert!(
            doc["paths"].get(path).is_some(),
            "{path} missing from the OpenAPI document"
        );
    }
    srv.stop().await;
}
