//! Public model names → backends, with fallback chains.

use std::collections::HashMap;
use std::sync::Arc;

use crate::backend::ChatBackend;
use crate::tokens::TokenCounter;

/// A configured model: how to reach it and its limits.
#[derive(Clone)]
pub struct ModelRoute {
    pub name: String,
    pub backend: Arc<dyn ChatBackend>,
    pub upstream_model: String,
    /// Default and maximum completion tokens.
    pub max_tokens: u32,
    pub context_window: u32,
    pub temperature: Option<f32>,
    pub top_p: Option<f32>,
    /// Names of models tried, in order, when this one fails before its first token.
    pub fallbacks: Vec<String>,
    pub tokens: Arc<dyn TokenCounter>,
    /// `owned_by` in `/v1/models`.
    pub owned_by: String,
    pub created: i64,
}

impl std::fmt::Debug for ModelRoute {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModelRoute")
            .field("name", &self.name)
            .field("backend", &self.backend.name())
            .field("upstream_model", &self.upstream_model)
            .field("fallbacks", &self.fallbacks)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Default)]
pub struct ModelRegistry {
    order: Vec<String>,
    by_name: HashMap<String, ModelRoute>,
}

impl ModelRegistry {
    pub fn new(routes: Vec<ModelRoute>) -> Self {
        let order = routes.iter().map(|r| r.name.clone()).collect();
        let by_name = routes.into_iter().map(|r| (r.name.clone(), r)).collect();
        Self { order, by_name }
    }

    pub fn get(&self, name: &str) -> Option<&ModelRoute> {
        self.by_name.get(name)
    }

    /// Models in configuration order.
    pub fn iter(&self) -> impl Iterator<Item = &ModelRoute> {
        self.order.iter().filter_map(|n| self.by_name.get(n))
    }

    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }

    /// The model itself, then its fallbacks (each once; unknown names skipped — config validation
    /// rejects them).
    pub fn chain(&self, name: &str) -> Vec<&ModelRoute> {
        let mut out: Vec<&ModelRoute> = Vec::new();
        let Some(first) = self.get(name) else { return out };
        out.push(first);
        for f in &first.fallbacks {
            if let Some(r) = self.get(f)
                && !out.iter().any(|o| o.name == r.name)
            {
                out.push(r);
            }
        }
        out
    }
}
