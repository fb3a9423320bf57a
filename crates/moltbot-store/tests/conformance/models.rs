//! The local model registry: upsert (replace by name), get, list in name order, delete.

use moltbot_core::RegisteredModel;

use crate::harness::TestDb;

fn model(name: &str, created_at: i64) -> RegisteredModel {
    RegisteredModel {
        name: name.to_owned(),
        source: format!("s3://models/{name}.gguf"),
        local_path: format!("models/{name}.gguf"),
        sha256: "a".repeat(64),
        md5: "b".repeat(32),
        quantization: "4bit".to_owned(),
        context_window: 4096,
        max_tokens: 2048,
        gpu_layers: 0,
        created_at,
    }
}

pub async fn model_registry_lifecycle(db: TestDb) {
    let store = db.migrated().await;
    assert!(store.list_models().await.unwrap().is_empty());
    assert_eq!(store.get_model("tiny").await.unwrap(), None);

    let (b, a) = (model("llama-b", 10), model("gemma-a", 20));
    store.upsert_model(&b).await.unwrap();
    store.upsert_model(&a).await.unwrap();
    assert_eq!(store.get_model("llama-b").await.unwrap(), Some(b.clone()));
    let names: Vec<String> = store
        .list_models()
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.name)
        .collect();
    assert_eq!(names, ["gemma-a", "llama-b"]);

    // Registering the same name again replaces the row.
    let replaced = RegisteredModel {
        quantization: "8bit".into(),
        sha256: "c".repeat(64),
        context_window: u32::MAX,
        created_at: 30,
        ..b.clone()
    };
    store.upsert_model(&replaced).await.unwrap();
    assert_eq!(store.get_model("llama-b").await.unwrap(), Some(replaced));
    assert_eq!(store.list_models().await.unwrap().len(), 2);

    assert!(store.delete_model("gemma-a").await.unwrap());
    assert!(!store.delete_model("gemma-a").await.unwrap());
    assert_eq!(store.list_models().await.unwrap().len(), 1);
}
