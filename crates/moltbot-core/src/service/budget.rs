//! Context budgeting: how many output tokens a request may ask for, and how much stored history fits.

use moltbot_api::ChatMessage;

use super::{ChatError, ModelRoute};
use crate::domain::Role;

#[derive(Debug, Clone, Copy)]
pub struct Budget {
    explicit: Option<u32>,
    /// Output tokens kept free when trimming history.
    reserve: u32,
}

impl Budget {
    /// Check an explicit `max_tokens` against the model's limit.
    pub fn for_route(route: &ModelRoute, explicit: Option<u32>) -> Result<Self, ChatError> {
        if let Some(n) = explicit {
            if n == 0 {
                return Err(ChatError::invalid("max_tokens", "max_tokens must be at least 1"));
            }
            if n > route.max_tokens {
                return Err(ChatError::ContextLength {
                    param: Some("max_tokens".into()),
                    message: format!(
                        "max_tokens is too large: {n}. This model supports at most {} completion tokens.",
                        route.max_tokens
                    ),
                });
            }
        }
        let reserve = explicit
            .unwrap_or_else(|| route.max_tokens.min(route.context_window / 4))
            .max(1);
        Ok(Self { explicit, reserve })
    }

    /// The output token limit to send: the explicit value if it fits, else what fits the context.
    pub fn output_tokens(&self, route: &ModelRoute, prompt_tokens: u32) -> Result<u32, ChatError> {
        let available = route.context_window.saturating_sub(prompt_tokens);
        match self.explicit {
            Some(n) if n > available => Err(context_error(route, prompt_tokens, n)),
            Some(n) => Ok(n),
            None if available == 0 => Err(context_error(route, prompt_tokens, 1)),
            None => Ok(route.max_tokens.min(available)),
        }
    }

    /// The output token limit when it does not depend on the prompt's exact size: `Some` when even a
    /// prompt of `prompt_bound` tokens (an upper bound of its size) leaves room for the full output.
    pub fn output_tokens_unconstrained(&self, route: &ModelRoute, prompt_bound: u32) -> Option<u32> {
        let wanted = self.explicit.unwrap_or(route.max_tokens).max(1);
        (route.context_window.saturating_sub(prompt_bound) >= wanted).then_some(wanted)
    }

    /// Tokens the prompt may take: the context window less the output tokens kept free.
    pub fn prompt_limit(&self, route: &ModelRoute) -> usize {
        route.context_window.saturating_sub(self.reserve) as usize
    }

    /// Keep every instruction and the new messages, then as much recent history as fits.
    pub fn trim_history(
        &self,
        route: &ModelRoute,
        history: Vec<ChatMessage>,
        new: &[ChatMessage],
    ) -> Result<Vec<ChatMessage>, ChatError> {
        let limit = self.prompt_limit(route);
        let (instructions, rest): (Vec<_>, Vec<_>) = history
            .into_iter()
            .partition(|m| Role::parse(&m.role).is_some_and(Role::is_instruction));
        let mut prompt: Vec<ChatMessage> = instructions;
        prompt.extend_from_slice(new);
        let mut used = route.tokens.count_messages(&prompt);
        if used > limit {
            return Err(context_error(route, used as u32, self.reserve));
        }
        let mut kept = Vec::new();
        for m in rest.into_iter().rev() {
            let cost = route
                .tokens
                .count_messages(std::slice::from_ref(&m))
                .saturating_sub(3);
            if used + cost > limit {
                break;
            }
            used += cost;
            kept.push(m);
        }
        kept.reverse();
        let split = prompt.len() - new.len();
        let mut out: Vec<ChatMessage> = prompt[..split].to_vec();
        out.extend(kept);
        out.extend_from_slice(new);
        Ok(out)
    }
}

fn context_error(route: &ModelRoute, prompt: u32, completion: u32) -> ChatError {
    ChatError::ContextLength {
        param: Some("messages".into()),
        message: format!(
            "This model's maximum context length is {} tokens. However, you requested {} tokens \
             ({prompt} in the messages, {completion} in the completion). Please reduce the length of the \
             messages or completion.",
            route.context_window,
            prompt + completion
        ),
    }
}
