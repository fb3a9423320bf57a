//! Getting a model file: a local GGUF, a directory holding one, `http(s)://` (resumable download) or
//! object storage (`s3://`, `gs://`, `az://`) through the `object_store` client with credentials from
//! the environment; then checksum verification.

use std::path::{Path, PathBuf};
use std::time::Duration;

use futures::StreamExt;
use md5::Md5;
use object_store::{GetOptions, GetRange, ObjectStore};
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;
use url::Url;

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("{0} does not exist")]
    Missing(String),
    #[error("{dir} holds no .gguf file{hint}")]
    NoGguf { dir: String, hint: String },
    #[error("{dir} holds several .gguf files ({files}); pass one of them")]
    SeveralGguf { dir: String, files: String },
    #[error("unsupported model location {0}: expected a path, http(s)://, s3://, gs:// or az://")]
    Scheme(String),
    #[error("download of {url} failed: {message}")]
    Download { url: String, message: String },
    #[error(
        "{algo} mismatch for {path}: expected {expected}, got {actual}; the file was removed and not registered"
    )]
    Checksum {
        path: String,
        algo: &'static str,
        expected: String,
        actual: String,
    },
    #[error("I/O error on {path}: {source}")]
    Io { path: String, source: std::io::Error },
}

/// Where a model comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    Local(PathBuf),
    Http(Url),
    Object(Url),
}

impl Source {
    pub fn parse(s: &str) -> Result<Self, FetchError> {
        match Url::parse(s) {
            Ok(u) if matches!(u.scheme(), "http" | "https") => Ok(Self::Http(u)),
            Ok(u) if matches!(u.scheme(), "s3" | "gs" | "az" | "abfs" | "abfss") => Ok(Self::Object(u)),
            Ok(u) if u.scheme() == "file" => Ok(Self::Local(PathBuf::from(u.path()))),
            Ok(u) if u.scheme().len() > 1 => Err(FetchError::Scheme(s.to_owned())),
            _ => Ok(Self::Local(PathBuf::from(s))),
        }
    }

    fn file_name(&self) -> String {
        let url = match self {
            Self::Local(p) => {
                return p
                    .file_name()
                    .map_or("model.gguf".into(), |n| n.to_string_lossy().into_owned());
            }
            Self::Http(u) | Self::Object(u) => u,
        };
        url.path_segments()
            .and_then(|mut s| s.next_back().map(str::to_owned))
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| "model.gguf".into())
    }
}

/// Expected checksums (hex, any case).
#[derive(Debug, Clone, Default)]
pub struct Checksums {
    pub sha256: Option<String>,
    pub md5: Option<String>,
}

/// Options for [`fetch`].
#[derive(Debug, Clone)]
pub struct FetchOptions {
    /// Where downloads go.
    pub dir: PathBuf,
    /// Object-store client options (`aws_endpoint`, `aws_access_key_id`, …), usually the environment's
    /// `AWS_*` / `GOOGLE_*` / `AZURE_*` variables.
    pub object_store: Vec<(String, String)>,
    /// Show a progress bar on stderr.
    pub progress: bool,
    /// Download attempts (each resumes where the last stopped).
    pub attempts: u32,
}

impl FetchOptions {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            object_store: Vec::new(),
            progress: false,
            attempts: 5,
        }
    }
}

/// Resolve `source` to a local GGUF file, downloading it when remote.
pub async fn fetch(source: &Source, opts: &FetchOptions) -> Result<PathBuf, FetchError> {
    match source {
        Source::Local(p) => resolve_local(p),
        Source::Http(url) | Source::Object(url) => {
            let dest = opts.dir.join(source.file_name());
            tokio::fs::create_dir_all(&opts.dir)
                .await
                .map_err(io(&opts.dir))?;
            let part = dest.with_extension("gguf.part");
            let mut last = String::new();
            for attempt in 0..opts.attempts.max(1) {
                if attempt > 0 {
                    tokio::time::sleep(Duration::from_millis(200 * u64::from(attempt))).await;
                }
                let result = match source {
                    Source::Http(u) => http_once(u, &part, opts.progress).await,
                    _ => object_once(url, &part, opts).await,
                };
                match result {
                    Ok(()) => {
                        tokio::fs::rename(&part, &dest).await.map_err(io(&dest))?;
                        return Ok(dest);
                    }
                    Err(e) => {
                        tracing::warn!(attempt, error = %e, "download interrupted; resuming");
                        last = e;
                    }
                }
            }
            Err(FetchError::Download {
                url: url.to_string(),
                message: last,
            })
        }
    }
}

/// A local file, or the one `.gguf` in a directory.
pub fn resolve_local(p: &Path) -> Result<PathBuf, FetchError> {
    if !p.exists() {
        return Err(FetchError::Missing(p.display().to_string()));
    }
    if !p.is_dir() {
        return Ok(p.to_owned());
    }
    let entries: Vec<PathBuf> = std::fs::read_dir(p)
        .map_err(io(p))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    let ggufs: Vec<&PathBuf> = entries
        .iter()
        .filter(|e| e.extension().is_some_and(|x| x == "gguf"))
        .collect();
    match ggufs.as_slice() {
        [one] => Ok((*one).clone()),
        [] => {
            let st = entries
                .iter()
                .any(|e| e.extension().is_some_and(|x| x == "safetensors"));
            let hint = if st {
                "; it looks like a Hugging Face safetensors checkpoint — convert it with llama.cpp's \
                 convert_hf_to_gguf.py first"
            } else {
                ""
            };
            Err(FetchError::NoGguf {
                dir: p.display().to_string(),
                hint: hint.into(),
            })
        }
        many => Err(FetchError::SeveralGguf {
            dir: p.display().to_string(),
            files: many
                .iter()
                .map(|f| f.display().to_string())
                .collect::<Vec<_>>()
                .join(", "),
        }),
    }
}

fn io(p: &Path) -> impl Fn(std::io::Error) -> FetchError + '_ {
    move |source| FetchError::Io {
        path: p.display().to_string(),
        source,
    }
}

async fn open_part(part: &Path) -> Result<(tokio::fs::File, u64), String> {
    let f = tokio::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(part)
        .await
        .map_err(|e| e.to_string())?;
    let len = f.metadata().await.map_err(|e| e.to_string())?.len();
    Ok((f, len))
}

fn bar(show: bool, total: Option<u64>, start: u64) -> indicatif::ProgressBar {
    if !show {
        return indicatif::ProgressBar::hidden();
    }
    let pb = total.map_or_else(indicatif::ProgressBar::new_spinner, indicatif::ProgressBar::new);
    pb.set_style(
        indicatif::ProgressStyle::with_template("{bytes}/{total_bytes} {wide_bar} {bytes_per_sec} eta {eta}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    pb.set_position(start);
    pb
}

async fn http_once(url: &Url, part: &Path, progress: bool) -> Result<(), String> {
    let (mut file, have) = open_part(part).await?;
    let client = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(10))
        .build()
        .map_err(|e| e.to_string())?;
    let mut req = client.get(url.clone());
    if have > 0 {
        req = req.header(reqwest::header::RANGE, format!("bytes={have}-"));
    }
    let resp = req.send().await.map_err(|e| e.to_string())?;
    let status = resp.status();
    if status == reqwest::StatusCode::RANGE_NOT_SATISFIABLE && have > 0 {
        return Ok(()); // already complete
    }
    if !status.is_success() {
        return Err(format!("HTTP {status}"));
    }
    let mut start = have;
    if have > 0 && status != reqwest::StatusCode::PARTIAL_CONTENT {
        // The server ignored the range: start over.
        file.set_len(0).await.map_err(|e| e.to_string())?;
        start = 0;
    }
    let total = resp.content_length().map(|n| n + start);
    let pb = bar(progress, total, start);
    let mut body = resp.bytes_stream();
    let mut got = start;
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| format!("{e} after {got} bytes"))?;
        file.write_all(&chunk).await.map_err(|e| e.to_string())?;
        got += chunk.len() as u64;
        pb.set_position(got);
    }
    file.flush().await.map_err(|e| e.to_string())?;
    pb.finish_and_clear();
    match total {
        Some(t) if got < t => Err(format!("connection closed after {got} of {t} bytes")),
        _ => Ok(()),
    }
}

async fn object_once(url: &Url, part: &Path, opts: &FetchOptions) -> Result<(), String> {
    let options = opts
        .object_store
        .iter()
        .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()));
    let (store, path) = object_store::parse_url_opts(url, options).map_err(|e| e.to_string())?;
    let (mut file, have) = open_part(part).await?;
    let meta = store.head(&path).await.map_err(|e| e.to_string())?;
    if have >= meta.size {
        return Ok(());
    }
    let get = GetOptions {
        range: (have > 0).then_some(GetRange::Offset(have)),
        ..Default::default()
    };
    let result = store.get_opts(&path, get).await.map_err(|e| e.to_string())?;
    let pb = bar(opts.progress, Some(meta.size), have);
    let mut stream = result.into_stream();
    let mut got = have;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| e.to_string())?;
        file.write_all(&chunk).await.map_err(|e| e.to_string())?;
        got += chunk.len() as u64;
        pb.set_position(got);
    }
    file.flush().await.map_err(|e| e.to_string())?;
    pb.finish_and_clear();
    if got < meta.size {
        return Err(format!("stream ended after {got} of {} bytes", meta.size));
    }
    Ok(())
}

/// Hex SHA-256 and MD5 of a file.
pub fn digests(path: &Path) -> Result<(String, String), FetchError> {
    use std::io::Read;
    let mut f = std::fs::File::open(path).map_err(io(path))?;
    let (mut sha, mut md5) = (Sha256::new(), Md5::new());
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).map_err(io(path))?;
        if n == 0 {
            break;
        }
        sha.update(&buf[..n]);
        md5.update(&buf[..n]);
    }
    Ok((hex::encode(sha.finalize()), hex::encode(md5.finalize())))
}

/// Check `path` against the expected checksums; on mismatch the file is removed when `remove` is set.
/// Returns the actual (sha256, md5).
pub fn verify(path: &Path, expected: &Checksums, remove: bool) -> Result<(String, String), FetchError> {
    let (sha, md5) = digests(path)?;
    for (algo, want, got) in [("sha256", &expected.sha256, &sha), ("md5", &expected.md5, &md5)] {
        if let Some(want) = want
            && !want.trim().eq_ignore_ascii_case(got)
        {
            if remove {
                let _ = std::fs::remove_file(path);
            }
            return Err(FetchError::Checksum {
                path: path.display().to_string(),
                algo,
                expected: want.trim().to_ascii_lowercase(),
                actual: got.clone(),
            });
        }
    }
    Ok((sha, md5))
}

/// `AWS_*`, `GOOGLE_*` and `AZURE_*` variables of the environment, for [`FetchOptions::object_store`].
pub fn object_store_env() -> Vec<(String, String)> {
    std::env::vars()
        .filter(|(k, _)| ["AWS_", "GOOGLE_", "AZURE_"].iter().any(|p| k.starts_with(p)))
        .collect()
}
