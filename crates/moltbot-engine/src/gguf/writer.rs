//! A small GGUF v3 writer for llama-architecture models with random weights: the tiny model the tests
//! load in milliseconds, and `bench-engine --synthetic` shapes (throughput does not depend on the
//! weights' values). The vocabulary is byte-level SentencePiece (`<0xXX>` tokens plus printable ASCII)
//! with chatml special tokens and a chatml chat template.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

use rand::rngs::SmallRng;
use rand::{Rng, RngCore, SeedableRng};

/// ggml tensor types moltbot reads or writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TensorType {
    F32,
    F16,
    Q4_0,
    Q4_1,
    Q5_0,
    Q5_1,
    Q8_0,
    Q2K,
    Q3K,
    Q4K,
    Q5K,
    Q6K,
    Bf16,
}

impl TensorType {
    pub fn from_id(id: u32) -> Option<Self> {
        Some(match id {
            0 => Self::F32,
            1 => Self::F16,
            2 => Self::Q4_0,
            3 => Self::Q4_1,
            6 => Self::Q5_0,
            7 => Self::Q5_1,
            8 => Self::Q8_0,
            10 => Self::Q2K,
            11 => Self::Q3K,
            12 => Self::Q4K,
            13 => Self::Q5K,
            14 => Self::Q6K,
            30 => Self::Bf16,
            _ => return None,
        })
    }
    pub fn id(self) -> u32 {
        match self {
            Self::F32 => 0,
            Self::F16 => 1,
            Self::Q4_0 => 2,
            Self::Q4_1 => 3,
            Self::Q5_0 => 6,
            Self::Q5_1 => 7,
            Self::Q8_0 => 8,
            Self::Q2K => 10,
            Self::Q3K => 11,
            Self::Q4K => 12,
            Self::Q5K => 13,
            Self::Q6K => 14,
            Self::Bf16 => 30,
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            Self::F32 => "F32",
            Self::F16 => "F16",
            Self::Q4_0 => "Q4_0",
            Self::Q4_1 => "Q4_1",
            Self::Q5_0 => "Q5_0",
            Self::Q5_1 => "Q5_1",
            Self::Q8_0 => "Q8_0",
            Self::Q2K => "Q2_K",
            Self::Q3K => "Q3_K",
            Self::Q4K => "Q4_K",
            Self::Q5K => "Q5_K",
            Self::Q6K => "Q6_K",
            Self::Bf16 => "BF16",
        }
    }
    /// (elements per block, bytes per block)
    fn block(self) -> (u64, u64) {
        match self {
            Self::F32 => (1, 4),
            Self::F16 | Self::Bf16 => (1, 2),
            Self::Q4_0 => (32, 18),
            Self::Q4_1 => (32, 20),
            Self::Q5_0 => (32, 22),
            Self::Q5_1 => (32, 24),
            Self::Q8_0 => (32, 34),
            Self::Q2K => (256, 84),
            Self::Q3K => (256, 110),
            Self::Q4K => (256, 144),
            Self::Q5K => (256, 176),
            Self::Q6K => (256, 210),
        }
    }
    pub fn bytes_for(self, elements: u64) -> u64 {
        let (per, bytes) = self.block();
        elements.div_ceil(per) * bytes
    }
}

/// The shape of a llama-architecture model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyntheticShape {
    pub n_vocab: u32,
    pub n_embd: u32,
    pub n_layer: u32,
    pub n_ff: u32,
    pub n_head: u32,
    pub n_head_kv: u32,
    pub n_ctx_train: u32,
}

/// Specials, then 256 byte tokens, then printable ASCII (space as `▁`).
const SPECIALS: [&str; 5] = ["<unk>", "<s>", "</s>", "<|im_start|>", "<|im_end|>"];
const BASE_VOCAB: u32 = 5 + 256 + 95;

pub const CHATML_TEMPLATE: &str = "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + \
message['content'] + '<|im_end|>' + '\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

impl SyntheticShape {
    /// 2 layers, 256 wide: loads and generates in milliseconds; rows divisible by 256 so every
    /// quantization type applies.
    pub fn tiny() -> Self {
        Self {
            n_vocab: BASE_VOCAB,
            n_embd: 256,
            n_layer: 2,
            n_ff: 512,
            n_head: 4,
            n_head_kv: 2,
            n_ctx_train: 4096,
        }
    }

    /// Named sizes for `bench-engine --synthetic`: `tiny`, `270m`, `1b` (TinyLlama's shape), `3b`, `8b`
    /// (Llama-3-8B's shape).
    pub fn named(name: &str) -> Option<Self> {
        let s = |n_vocab, n_embd, n_layer, n_ff, n_head, n_head_kv| Self {
            n_vocab,
            n_embd,
            n_layer,
            n_ff,
            n_head,
            n_head_kv,
            n_ctx_train: 8192,
        };
        Some(match name.to_ascii_lowercase().as_str() {
            "tiny" => Self::tiny(),
            "270m" => s(32000, 1024, 18, 2816, 8, 4),
            "1b" => s(32000, 2048, 22, 5632, 32, 4),
            "3b" => s(32000, 3072, 26, 8192, 24, 8),
            "8b" => s(128256, 4096, 32, 14336, 32, 8),
            _ => return None,
        })
    }

    pub fn n_params(&self) -> u64 {
        let (e, f, v) = (
            u64::from(self.n_embd),
            u64::from(self.n_ff),
            u64::from(self.n_vocab),
        );
        let kv = e * u64::from(self.n_head_kv) / u64::from(self.n_head);
        2 * e * v + u64::from(self.n_layer) * (2 * e * e + 2 * e * kv + 3 * e * f)
    }

    fn tensors(&self) -> Vec<(String, Vec<u64>)> {
        let (e, f, v) = (
            u64::from(self.n_embd),
            u64::from(self.n_ff),
            u64::from(self.n_vocab),
        );
        let kv = e * u64::from(self.n_head_kv) / u64::from(self.n_head);
        let mut t = vec![
            ("token_embd.weight".to_owned(), vec![e, v]),
            ("output_norm.weight".to_owned(), vec![e]),
            ("output.weight".to_owned(), vec![e, v]),
        ];
        for i in 0..self.n_layer {
            let b = |n: &str| format!("blk.{i}.{n}.weight");
            t.push((b("attn_norm"), vec![e]));
            t.push((b("attn_q"), vec![e, e]));
            t.push((b("attn_k"), vec![e, kv]));
            t.push((b("attn_v"), vec![e, kv]));
            t.push((b("attn_output"), vec![e, e]));
            t.push((b("ffn_norm"), vec![e]));
            t.push((b("ffn_gate"), vec![e, f]));
            t.push((b("ffn_down"), vec![f, e]));
            t.push((b("ffn_up"), vec![e, f]));
        }
        t
    }
}

/// Metadata and tensor-table encoder.
#[derive(Default)]
pub struct GgufWriter {
    kv_count: u64,
    kv: Vec<u8>,
}

impl GgufWriter {
    fn key(&mut self, key: &str, ty: u32) {
        self.kv_count += 1;
        put_str(&mut self.kv, key);
        self.kv.extend_from_slice(&ty.to_le_bytes());
    }
    pub fn u32(&mut self, key: &str, v: u32) {
        self.key(key, 4);
        self.kv.extend_from_slice(&v.to_le_bytes());
    }
    pub fn f32(&mut self, key: &str, v: f32) {
        self.key(key, 6);
        self.kv.extend_from_slice(&v.to_le_bytes());
    }
    pub fn bool(&mut self, key: &str, v: bool) {
        self.key(key, 7);
        self.kv.push(u8::from(v));
    }
    pub fn str(&mut self, key: &str, v: &str) {
        self.key(key, 8);
        put_str(&mut self.kv, v);
    }
    pub fn str_array(&mut self, key: &str, items: &[String]) {
        self.key(key, 9);
        self.kv.extend_from_slice(&8u32.to_le_bytes());
        self.kv.extend_from_slice(&(items.len() as u64).to_le_bytes());
        for s in items {
            put_str(&mut self.kv, s);
        }
    }
    pub fn f32_array(&mut self, key: &str, items: &[f32]) {
        self.key(key, 9);
        self.kv.extend_from_slice(&6u32.to_le_bytes());
        self.kv.extend_from_slice(&(items.len() as u64).to_le_bytes());
        items
            .iter()
            .for_each(|v| self.kv.extend_from_slice(&v.to_le_bytes()));
    }
    pub fn i32_array(&mut self, key: &str, items: &[i32]) {
        self.key(key, 9);
        self.kv.extend_from_slice(&5u32.to_le_bytes());
        self.kv.extend_from_slice(&(items.len() as u64).to_le_bytes());
        items
            .iter()
            .for_each(|v| self.kv.extend_from_slice(&v.to_le_bytes()));
    }
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u64).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

const ALIGN: u64 = 32;

/// Metadata a synthetic model may carry besides its shape.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SyntheticOptions {
    /// `llama.pooling_type` (llama.cpp's numbers: 1 mean, 2 cls, 3 last): an embedding model.
    pub pooling_type: Option<u32>,
}

/// Write a random-weight llama model of `shape` with matrices in `ty` (`F32`, `F16` or `Q8_0`; norms
/// are always F32). The same `seed` gives the same file.
pub fn write_synthetic(
    path: &Path,
    shape: &SyntheticShape,
    ty: TensorType,
    seed: u64,
) -> std::io::Result<()> {
    write_synthetic_with(path, shape, ty, seed, &SyntheticOptions::default())
}

/// [`write_synthetic`] with extra metadata (e.g. a pooling type, for a tiny embedding model).
pub fn write_synthetic_with(
    path: &Path,
    shape: &SyntheticShape,
    ty: TensorType,
    seed: u64,
    options: &SyntheticOptions,
) -> std::io::Result<()> {
    if !matches!(ty, TensorType::F32 | TensorType::F16 | TensorType::Q8_0) {
        return Err(std::io::Error::other(format!(
            "synthetic models are written as F32, F16 or Q8_0, not {}",
            ty.name()
        )));
    }
    let mut w = GgufWriter::default();
    w.str("general.architecture", "llama");
    w.str("general.name", "moltbot-synthetic");
    w.u32("general.alignment", ALIGN as u32);
    w.u32(
        "general.file_type",
        match ty {
            TensorType::F32 => 0,
            TensorType::F16 => 1,
            _ => 7,
        },
    );
    w.u32("llama.context_length", shape.n_ctx_train);
    w.u32("llama.embedding_length", shape.n_embd);
    w.u32("llama.block_count", shape.n_layer);
    w.u32("llama.feed_forward_length", shape.n_ff);
    w.u32("llama.attention.head_count", shape.n_head);
    w.u32("llama.attention.head_count_kv", shape.n_head_kv);
    w.u32("llama.rope.dimension_count", shape.n_embd / shape.n_head);
    w.f32("llama.attention.layer_norm_rms_epsilon", 1e-5);
    if let Some(p) = options.pooling_type {
        w.u32("llama.pooling_type", p);
    }
    let (tokens, types) = vocab(shape.n_vocab);
    w.str("tokenizer.ggml.model", "llama");
    w.str_array("tokenizer.ggml.tokens", &tokens);
    w.f32_array("tokenizer.ggml.scores", &vec![0.0; tokens.len()]);
    w.i32_array("tokenizer.ggml.token_type", &types);
    w.u32("tokenizer.ggml.unknown_token_id", 0);
    w.u32("tokenizer.ggml.bos_token_id", 1);
    w.u32("tokenizer.ggml.eos_token_id", 4);
    w.u32("tokenizer.ggml.eot_token_id", 4);
    w.bool("tokenizer.ggml.add_bos_token", true);
    w.str("tokenizer.chat_template", CHATML_TEMPLATE);

    let tensors = shape.tensors();
    let mut header = Vec::new();
    header.extend_from_slice(super::MAGIC);
    header.extend_from_slice(&3u32.to_le_bytes());
    header.extend_from_slice(&(tensors.len() as u64).to_le_bytes());
    header.extend_from_slice(&w.kv_count.to_le_bytes());
    header.extend_from_slice(&w.kv);
    let mut offset = 0u64;
    let mut layout = Vec::new();
    for (name, dims) in &tensors {
        let t = if dims.len() == 1 { TensorType::F32 } else { ty };
        let elements: u64 = dims.iter().product();
        put_str(&mut header, name);
        header.extend_from_slice(&(dims.len() as u32).to_le_bytes());
        dims.iter()
            .for_each(|d| header.extend_from_slice(&d.to_le_bytes()));
        header.extend_from_slice(&t.id().to_le_bytes());
        header.extend_from_slice(&offset.to_le_bytes());
        layout.push((t, elements, dims[0]));
        offset += t.bytes_for(elements).div_ceil(ALIGN) * ALIGN;
    }
    pad(&mut header);
    let mut out = BufWriter::with_capacity(1 << 20, File::create(path)?);
    out.write_all(&header)?;
    let mut rng = SmallRng::seed_from_u64(seed);
    for (t, elements, n_in) in layout {
        let scale = 1.0 / (n_in as f32).sqrt();
        let mut data = Vec::with_capacity(t.bytes_for(elements) as usize);
        match t {
            TensorType::F32 if n_in == elements => {
                data.extend((0..elements).flat_map(|_| 1.0f32.to_le_bytes()))
            }
            TensorType::F32 => {
                data.extend((0..elements).flat_map(|_| rng.random_range(-scale..scale).to_le_bytes()));
            }
            TensorType::F16 => data.extend(
                (0..elements)
                    .flat_map(|_| half::f16::from_f32(rng.random_range(-scale..scale)).to_le_bytes()),
            ),
            _ => {
                let d = half::f16::from_f32(scale / 127.0).to_le_bytes();
                let mut qs = [0u8; 32];
                for _ in 0..elements / 32 {
                    rng.fill_bytes(&mut qs);
                    data.extend_from_slice(&d);
                    data.extend_from_slice(&qs);
                }
            }
        }
        pad(&mut data);
        out.write_all(&data)?;
    }
    out.flush()
}

fn pad(buf: &mut Vec<u8>) {
    let len = buf.len() as u64;
    buf.resize((len.div_ceil(ALIGN) * ALIGN) as usize, 0);
}

fn vocab(n_vocab: u32) -> (Vec<String>, Vec<i32>) {
    let mut tokens: Vec<String> = SPECIALS.iter().map(|s| (*s).to_owned()).collect();
    let mut types = vec![2, 3, 3, 3, 3];
    for b in 0..=255u8 {
        tokens.push(format!("<0x{b:02X}>"));
        types.push(6);
    }
    for c in 0x20u8..0x7f {
        tokens.push(if c == b' ' {
            "\u{2581}".to_owned()
        } else {
            (c as char).to_string()
        });
        types.push(1);
    }
    let mut i = 0;
    while (tokens.len() as u32) < n_vocab {
        tokens.push(format!("<extra_{i}>"));
        types.push(4);
        i += 1;
    }
    (tokens, types)
}
