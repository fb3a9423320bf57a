//! GGUF files: a header reader that checks a file before llama.cpp sees it (clear errors for truncated,
//! corrupt or non-GGUF files), and a writer for random-weight models (tests and `bench-engine --synthetic`).

mod writer;

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::Path;

pub use writer::{
    CHATML_TEMPLATE, GgufWriter, SyntheticOptions, SyntheticShape, TensorType, write_synthetic,
    write_synthetic_with,
};

pub const MAGIC: &[u8; 4] = b"GGUF";

/// What can be wrong with a model file, each with a message that names the problem.
#[derive(Debug, thiserror::Error)]
pub enum GgufError {
    #[error("cannot read {path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error(
        "{path} is a Hugging Face safetensors checkpoint, not GGUF; convert it first with llama.cpp's \
         convert_hf_to_gguf.py (e.g. `python convert_hf_to_gguf.py <model dir> --outtype f16`), then load the .gguf"
    )]
    Safetensors { path: String },
    #[error("{path} is not a GGUF file (magic bytes {magic:?}, expected \"GGUF\")")]
    NotGguf { path: String, magic: String },
    #[error("{path}: unsupported GGUF version {version} (supported: 2 and 3)")]
    Version { path: String, version: u32 },
    #[error("{path} is truncated or corrupt: {detail}")]
    Corrupt { path: String, detail: String },
}

/// A metadata value (arrays keep only their length and, for strings, nothing else).
#[derive(Debug, Clone, PartialEq)]
pub enum MetaValue {
    Int(i128),
    Float(f64),
    Bool(bool),
    Str(String),
    Array { len: u64 },
}

impl MetaValue {
    pub fn as_str(&self) -> Option<&str> {
        match self {
            MetaValue::Str(s) => Some(s),
            _ => None,
        }
    }
    pub fn as_u64(&self) -> Option<u64> {
        match self {
            MetaValue::Int(i) => u64::try_from(*i).ok(),
            _ => None,
        }
    }
}

/// The parts of a GGUF header moltbot checks and reports.
#[derive(Debug, Clone)]
pub struct GgufInfo {
    pub version: u32,
    pub tensor_count: u64,
    pub metadata: BTreeMap<String, MetaValue>,
    /// `(name, ggml type id)` of every tensor.
    pub tensors: Vec<(String, u32)>,
    /// Bytes the tensor data needs, by the header; the file must be at least this long.
    pub expected_len: u64,
    pub file_len: u64,
}

impl GgufInfo {
    pub fn architecture(&self) -> Option<&str> {
        self.metadata
            .get("general.architecture")
            .and_then(MetaValue::as_str)
    }
    pub fn chat_template(&self) -> Option<&str> {
        self.metadata
            .get("tokenizer.chat_template")
            .and_then(MetaValue::as_str)
    }
    pub fn context_length(&self) -> Option<u64> {
        let arch = self.architecture()?;
        self.metadata
            .get(&format!("{arch}.context_length"))
            .and_then(MetaValue::as_u64)
    }
    /// The weight type of the model, from the matrix tensors: `F32`, `F16`, `BF16`, `Q8_0`, `Q4_K`, …
    pub fn weight_type(&self) -> Option<TensorType> {
        let mut counts: BTreeMap<u32, usize> = BTreeMap::new();
        for (name, ty) in &self.tensors {
            if name.ends_with(".weight") && !name.contains("norm") {
                *counts.entry(*ty).or_default() += 1;
            }
        }
        let (ty, _) = counts.into_iter().max_by_key(|(_, n)| *n)?;
        TensorType::from_id(ty)
    }
    /// Whether the weights are unquantized (F32, F16 or BF16) and can be quantized.
    pub fn is_unquantized(&self) -> bool {
        matches!(
            self.weight_type(),
            Some(TensorType::F32 | TensorType::F16 | TensorType::Bf16)
        )
    }
}

/// Read and check a GGUF header: magic, version, metadata, tensor table and that the file holds all the
/// tensor data the header promises.
pub fn inspect(path: &Path) -> Result<GgufInfo, GgufError> {
    let p = path.display().to_string();
    let io = |source| GgufError::Io {
        path: p.clone(),
        source,
    };
    let file = File::open(path).map_err(io)?;
    let file_len = file.metadata().map_err(io)?.len();
    let mut r = Reader {
        inner: BufReader::new(file),
        path: p.clone(),
    };
    let mut magic = [0u8; 4];
    if file_len < 4 {
        return Err(GgufError::Corrupt {
            path: p,
            detail: format!("the file is only {file_len} bytes"),
        });
    }
    r.inner.read_exact(&mut magic).map_err(io)?;
    if &magic != MAGIC {
        if is_safetensors(path, &magic) {
            return Err(GgufError::Safetensors { path: p });
        }
        return Err(GgufError::NotGguf {
            path: p,
            magic: String::from_utf8_lossy(&magic).into_owned(),
        });
    }
    let version = r.u32()?;
    if !(2..=3).contains(&version) {
        return Err(GgufError::Version { path: p, version });
    }
    let tensor_count = r.u64()?;
    let kv_count = r.u64()?;
    if tensor_count > 1 << 24 || kv_count > 1 << 24 {
        return Err(r.corrupt(format!(
            "implausible counts ({tensor_count} tensors, {kv_count} keys)"
        )));
    }
    let mut metadata = BTreeMap::new();
    for _ in 0..kv_count {
        let key = r.string()?;
        let ty = r.u32()?;
        let value = r.value(ty)?;
        metadata.insert(key, value);
    }
    let alignment = metadata
        .get("general.alignment")
        .and_then(MetaValue::as_u64)
        .unwrap_or(32)
        .max(1);
    let mut tensors = Vec::with_capacity(tensor_count as usize);
    let mut data_end = 0u64;
    for _ in 0..tensor_count {
        let name = r.string()?;
        let n_dims = r.u32()?;
        if n_dims > 4 {
            return Err(r.corrupt(format!("tensor {name} has {n_dims} dimensions")));
        }
        let mut elements = 1u64;
        for _ in 0..n_dims {
            elements = elements.saturating_mul(r.u64()?);
        }
        let ty = r.u32()?;
        let offset = r.u64()?;
        let bytes = TensorType::from_id(ty).map_or(0, |t| t.bytes_for(elements));
        data_end = data_end.max(offset.saturating_add(bytes));
        tensors.push((name, ty));
    }
    let header_end = r.inner.stream_position().map_err(io)?;
    let data_start = header_end.div_ceil(alignment) * alignment;
    let expected_len = data_start + data_end;
    if tensor_count == 0 {
        return Err(r.corrupt("the file holds no tensors".to_owned()));
    }
    if file_len < expected_len {
        return Err(r.corrupt(format!(
            "the header promises {expected_len} bytes of tensor data but the file has {file_len} \
             (an interrupted download?)"
        )));
    }
    Ok(GgufInfo {
        version,
        tensor_count,
        metadata,
        tensors,
        expected_len,
        file_len,
    })
}

fn is_safetensors(path: &Path, first: &[u8; 4]) -> bool {
    // safetensors: an 8-byte little-endian header length, then a JSON object.
    let ext = path.extension().is_some_and(|e| e == "safetensors");
    let looks = File::open(path)
        .and_then(|mut f| {
            f.seek(SeekFrom::Start(8))?;
            let mut b = [0u8; 1];
            f.read_exact(&mut b)?;
            Ok(b[0] == b'{')
        })
        .unwrap_or(false);
    ext || (looks && first[2..] == [0, 0])
}

struct Reader {
    inner: BufReader<File>,
    path: String,
}

impl Reader {
    fn corrupt(&self, detail: String) -> GgufError {
        GgufError::Corrupt {
            path: self.path.clone(),
            detail,
        }
    }
    fn bytes<const N: usize>(&mut self) -> Result<[u8; N], GgufError> {
        let mut b = [0u8; N];
        self.inner
            .read_exact(&mut b)
            .map_err(|_| self.corrupt("the header ends early".to_owned()))?;
        Ok(b)
    }
    fn u32(&mut self) -> Result<u32, GgufError> {
        Ok(u32::from_le_bytes(self.bytes()?))
    }
    fn u64(&mut self) -> Result<u64, GgufError> {
        Ok(u64::from_le_bytes(self.bytes()?))
    }
    fn string(&mut self) -> Result<String, GgufError> {
        let len = self.u64()?;
        if len > 1 << 26 {
            return Err(self.corrupt(format!("a {len}-byte string in the header")));
        }
        let mut buf = vec![0u8; len as usize];
        self.inner
            .read_exact(&mut buf)
            .map_err(|_| self.corrupt("the header ends early".to_owned()))?;
        String::from_utf8(buf).map_err(|_| self.corrupt("a header string is not UTF-8".to_owned()))
    }
    fn value(&mut self, ty: u32) -> Result<MetaValue, GgufError> {
        Ok(match ty {
            0 => MetaValue::Int(self.bytes::<1>()?[0].into()),
            1 => MetaValue::Int((self.bytes::<1>()?[0] as i8).into()),
            2 => MetaValue::Int(u16::from_le_bytes(self.bytes()?).into()),
            3 => MetaValue::Int(i16::from_le_bytes(self.bytes()?).into()),
            4 => MetaValue::Int(self.u32()?.into()),
            5 => MetaValue::Int(i32::from_le_bytes(self.bytes()?).into()),
            6 => MetaValue::Float(f32::from_le_bytes(self.bytes()?).into()),
            7 => MetaValue::Bool(self.bytes::<1>()?[0] != 0),
            8 => MetaValue::Str(self.string()?),
            9 => {
                let item = self.u32()?;
                let len = self.u64()?;
                if len > 1 << 28 {
                    return Err(self.corrupt(format!("an array of {len} items")));
                }
                for _ in 0..len {
                    self.value(item)?;
                }
                MetaValue::Array { len }
            }
            10 => MetaValue::Int(self.u64()?.into()),
            11 => MetaValue::Int(i64::from_le_bytes(self.bytes()?).into()),
            12 => MetaValue::Float(f64::from_le_bytes(self.bytes()?)),
            other => return Err(self.corrupt(format!("unknown metadata type {other}"))),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tiny_model_round_trips_and_truncation_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tiny.gguf");
        write_synthetic(&path, &SyntheticShape::tiny(), TensorType::F32, 7).unwrap();
        let info = inspect(&path).unwrap();
        assert_eq!(info.version, 3);
        assert_eq!(info.architecture(), Some("llama"));
        assert!(info.chat_template().unwrap().contains("<|im_start|>"));
        assert_eq!(info.weight_type(), Some(TensorType::F32));
        assert_eq!(info.expected_len, info.file_len);

        let bytes = std::fs::read(&path).unwrap();
        let cut = dir.path().join("cut.gguf");
        std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
        let err = inspect(&cut).unwrap_err().to_string();
        assert!(err.contains("truncated or corrupt"), "{err}");

        std::fs::write(&cut, &bytes[..100]).unwrap();
        assert!(matches!(inspect(&cut), Err(GgufError::Corrupt { .. })));

        let mut bad = bytes.clone();
        bad[..4].copy_from_slice(b"GGML");
        std::fs::write(&cut, &bad).unwrap();
        assert!(matches!(inspect(&cut), Err(GgufError::NotGguf { .. })));
    }

    #[test]
    fn safetensors_is_explained() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("model.safetensors");
        let header = br#"{"__metadata__":{}}"#;
        let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
        bytes.extend_from_slice(header);
        std::fs::write(&path, bytes).unwrap();
        let err = inspect(&path).unwrap_err().to_string();
        assert!(err.contains("convert_hf_to_gguf"), "{err}");
    }
}
