//! GGUF quantization through llama.cpp's quantizer (CPU only; no GPU needed).

use std::ffi::CString;
use std::path::Path;

use crate::gguf::{self, TensorType};

/// What `--quantization` asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Quantization {
    /// Q4_K_M.
    Q4,
    /// Q8_0.
    Q8,
    /// Keep the file as it is.
    None,
}

impl Quantization {
    pub fn parse(s: &str) -> Option<Self> {
        match s.to_ascii_lowercase().as_str() {
            "4bit" | "q4" | "q4_k_m" => Some(Self::Q4),
            "8bit" | "q8" | "q8_0" => Some(Self::Q8),
            "none" => Some(Self::None),
            _ => None,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Q4 => "4bit",
            Self::Q8 => "8bit",
            Self::None => "none",
        }
    }
    /// The GGUF type name the result has (`Q4_K_M`, `Q8_0`).
    pub fn gguf_name(self) -> &'static str {
        match self {
            Self::Q4 => "Q4_K_M",
            Self::Q8 => "Q8_0",
            Self::None => "none",
        }
    }
    /// Whether a file whose weights are `ty` already is what this asks for.
    pub fn matches(self, ty: TensorType) -> bool {
        match self {
            Self::Q4 => matches!(ty, TensorType::Q4K),
            Self::Q8 => matches!(ty, TensorType::Q8_0),
            Self::None => true,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum QuantizeError {
    #[error(transparent)]
    Gguf(#[from] gguf::GgufError),
    #[error(
        "{path} is already quantized ({have}); it cannot be quantized to {want} — load it with \
         --quantization none, or start from an F32/F16/BF16 GGUF"
    )]
    AlreadyQuantized {
        path: String,
        have: String,
        want: &'static str,
    },
    #[error("llama.cpp could not quantize {path} (status {status})")]
    Failed { path: String, status: u32 },
    #[error("path {0} is not valid UTF-8 or contains a NUL byte")]
    Path(String),
}

/// Quantize `input` (F32/F16/BF16 weights) into `output`. Runs on the CPU with `threads` threads.
pub fn quantize(input: &Path, output: &Path, q: Quantization, threads: u32) -> Result<(), QuantizeError> {
    let info = gguf::inspect(input)?;
    let ty = info.weight_type();
    if !info.is_unquantized() {
        let have = ty.map_or("an unknown type", TensorType::name).to_owned();
        return Err(QuantizeError::AlreadyQuantized {
            path: input.display().to_string(),
            have,
            want: q.gguf_name(),
        });
    }
    let ftype = match q {
        Quantization::Q4 => llama_cpp_sys_2::LLAMA_FTYPE_MOSTLY_Q4_K_M,
        Quantization::Q8 => llama_cpp_sys_2::LLAMA_FTYPE_MOSTLY_Q8_0,
        Quantization::None => return Ok(()),
    };
    let c = |p: &Path| {
        p.to_str()
            .and_then(|s| CString::new(s).ok())
            .ok_or_else(|| QuantizeError::Path(p.display().to_string()))
    };
    let (inp, out) = (c(input)?, c(output)?);
    crate::engine::backend().map_err(|_| QuantizeError::Failed {
        path: input.display().to_string(),
        status: 255,
    })?;
    #[allow(unsafe_code)]
    // SAFETY: llama.cpp's quantizer has no safe wrapper. Both paths are valid NUL-terminated strings that
    // outlive the call; the params struct comes from llama.cpp's own defaults and is passed by pointer to
    // a value on our stack; the function only reads them.
    let status = unsafe {
        let mut params = llama_cpp_sys_2::llama_model_quantize_default_params();
        params.ftype = ftype;
        params.nthread = threads.max(1) as i32;
        llama_cpp_sys_2::llama_model_quantize(inp.as_ptr(), out.as_ptr(), &raw const params)
    };
    if status != 0 {
        let _ = std::fs::remove_file(output);
        return Err(QuantizeError::Failed {
            path: input.display().to_string(),
            status,
        });
    }
    Ok(())
}
