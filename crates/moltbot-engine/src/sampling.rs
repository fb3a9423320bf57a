//! Sampling parameters of one request and the llama.cpp sampler chain built from them.

use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::sampling::LlamaSampler;

/// Resolved sampling parameters. `temperature == 0` means greedy decoding.
#[derive(Debug, Clone, PartialEq)]
pub struct Sampling {
    pub temperature: f32,
    pub top_p: f32,
    pub top_k: i32,
    pub min_p: f32,
    pub repeat_penalty: f32,
    pub frequency_penalty: f32,
    pub presence_penalty: f32,
    /// Fixed seed for reproducible sampling; `None` = random.
    pub seed: Option<u32>,
    /// Keep generating past end-of-turn tokens (benchmarks).
    pub ignore_eos: bool,
    /// Constrain the output (JSON, tool calls); checked by [`Sampling::check_grammar`] before the
    /// request is queued.
    pub grammar: Option<crate::tools::Grammar>,
}

impl Default for Sampling {
    fn default() -> Self {
        Self {
            temperature: 0.8,
            top_p: 0.95,
            top_k: 40,
            min_p: 0.05,
            repeat_penalty: 1.0,
            frequency_penalty: 0.0,
            presence_penalty: 0.0,
            seed: None,
            ignore_eos: false,
            grammar: None,
        }
    }
}

impl Sampling {
    pub fn greedy() -> Self {
        Self {
            temperature: 0.0,
            ..Self::default()
        }
    }

    fn grammar_sampler(&self, model: &LlamaModel) -> Option<Result<LlamaSampler, String>> {
        let g = self.grammar.as_ref()?;
        let sampler = if g.triggers.is_empty() {
            LlamaSampler::grammar(model, &g.gbnf, "root")
        } else {
            LlamaSampler::grammar_lazy(model, &g.gbnf, "root", &g.triggers, &[])
        };
        Some(sampler.map_err(|e| e.to_string()))
    }

    /// Whether llama.cpp accepts the grammar (an invalid one is the client's error, found before
    /// queueing).
    pub fn check_grammar(&self, model: &LlamaModel) -> Result<(), String> {
        self.grammar_sampler(model).transpose().map(|_| ())
    }

    pub(crate) fn build(&self, model: &LlamaModel) -> LlamaSampler {
        let n_vocab = model.n_vocab();
        let mut chain = Vec::new();
        match self.grammar_sampler(model) {
            Some(Ok(g)) => chain.push(g),
            Some(Err(e)) => {
                tracing::error!(error = %e, "grammar rejected after it was checked; sampling without it")
            }
            None => {}
        }
        if self.repeat_penalty != 1.0 || self.frequency_penalty != 0.0 || self.presence_penalty != 0.0 {
            chain.push(LlamaSampler::penalties(
                n_vocab,
                64,
                self.repeat_penalty,
                self.frequency_penalty,
                self.presence_penalty,
            ));
        }
        if self.temperature <= 0.0 {
            chain.push(LlamaSampler::greedy());
        } else {
            if self.top_k > 0 {
                chain.push(LlamaSampler::top_k(self.top_k));
            }
            if self.top_p < 1.0 {
                chain.push(LlamaSampler::top_p(self.top_p, 1));
            }
            if self.min_p > 0.0 {
                chain.push(LlamaSampler::min_p(self.min_p, 1));
            }
            chain.push(LlamaSampler::temp(self.temperature));
            let seed = self.seed.unwrap_or_else(rand::random);
            chain.push(LlamaSampler::dist(seed));
        }
        LlamaSampler::chain_simple(chain)
    }
}
