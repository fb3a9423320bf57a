//! Local model files: present, size, GGUF header, and the SHA-256 recorded by `moltbot load-model`
//! (the `model_registry` table) or a `<file>.sha256` next to the file.

use std::io::Read;
use std::path::{Path, PathBuf};

use moltbot_config::{BackendKind, Config};
use sha2::{Digest, Sha256};

use super::Check;

struct ModelFile {
    name: String,
    path: String,
    sha256: Option<String>,
}

pub async fn local(config: &Config, checksums: bool) -> Vec<Check> {
    let mut files: Vec<ModelFile> = config
        .models
        .iter()
        .filter(|m| m.backend == BackendKind::Local)
        .filter_map(|m| {
            Some(ModelFile {
                name: m.name.clone(),
                path: m.model_path.clone()?,
                sha256: None,
            })
        })
        .collect();
    files.extend(registered(config).await);
    let mut out = Vec::new();
    for f in files {
        let f2 = ModelFile {
            name: f.name.clone(),
            path: f.path.clone(),
            sha256: f.sha256.clone(),
        };
        let check = tokio::task::spawn_blocking(move || check_file(&f2, checksums))
            .await
            .unwrap_or_else(|e| Check::fail(format!("model {}", f.name), e.to_string(), "report a bug"));
        out.push(check);
    }
    out
}

/// Models registered in the database by `moltbot load-model` (none when the table does not exist).
async fn registered(config: &Config) -> Vec<ModelFile> {
    let Some(path) = super::system::sqlite_path(&config.database_url) else {
        return Vec::new();
    };
    if !path.exists() {
        return Vec::new();
    }
    let opts = moltbot_store::StoreOptions::default();
    let Ok(store) = moltbot_store::SqlStore::connect(&config.database_url, &opts).await else {
        return Vec::new();
    };
    let rows: Vec<(String, String, String)> =
        sqlx::query_as("SELECT name, local_path, sha256 FROM model_registry ORDER BY name")
            .fetch_all(store.pool())
            .await
            .unwrap_or_default();
    store.close().await;
    rows.into_iter()
        .map(|(name, path, sha)| ModelFile {
            name,
            path,
            sha256: Some(sha),
        })
        .collect()
}

fn check_file(f: &ModelFile, checksums: bool) -> Check {
    let name = format!("model {}", f.name);
    if f.path.contains("://") {
        return Check::skip(
            name,
            format!("{} is remote; `moltbot load-model` fetches it", f.path),
        );
    }
    let path = match resolve(Path::new(&f.path)) {
        Ok(p) => p,
        Err(detail) => {
            return Check::fail(
                name,
                detail,
                "fix models[].model_path, or fetch the file again with `moltbot load-model --model-path …`",
            );
        }
    };
    let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
    let mut magic = [0u8; 8];
    let header = std::fs::File::open(&path).and_then(|mut file| file.read_exact(&mut magic));
    if header.is_err() || &magic[..4] != b"GGUF" {
        return Check::fail(
            name,
            format!("{} ({size} bytes) is not a GGUF file", path.display()),
            "the download is truncated or the file is another format: re-download it or convert it with llama.cpp",
        );
    }
    let version = u32::from_le_bytes([magic[4], magic[5], magic[6], magic[7]]);
    let mut detail = format!(
        "{} — GGUF v{version}, {:.2} GiB",
        path.display(),
        size as f64 / 1073741824.0
    );
    let expected = f.sha256.clone().or_else(|| sidecar(&path));
    match (expected, checksums) {
        (None, _) => Check::warn(
            name,
            format!("{detail}; no recorded checksum"),
            "register it with `moltbot load-model --sha256 …` so corruption can be detected",
        ),
        (Some(_), false) => Check::pass(name, format!("{detail}; checksum not verified (--no-checksums)")),
        (Some(want), true) => match sha256(&path) {
            Ok(got) if got.eq_ignore_ascii_case(want.trim()) => {
                detail.push_str("; SHA-256 matches");
                Check::pass(name, detail)
            }
            Ok(got) => Check::fail(
                name,
                format!("{detail}; SHA-256 {got} but {want} was recorded"),
                "the file is corrupt or was replaced: fetch it again with `moltbot load-model`",
            ),
            Err(e) => Check::fail(
                name,
                format!("{detail}; cannot read it: {e}"),
                "check file permissions",
            ),
        },
    }
}

/// A file, or a directory holding exactly one `.gguf`.
fn resolve(path: &Path) -> Result<PathBuf, String> {
    if path.is_file() {
        return Ok(path.to_path_buf());
    }
    if !path.is_dir() {
        return Err(format!("{} does not exist", path.display()));
    }
    let ggufs: Vec<PathBuf> = std::fs::read_dir(path)
        .map_err(|e| format!("{}: {e}", path.display()))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "gguf"))
        .collect();
    match ggufs.as_slice() {
        [one] => Ok(one.clone()),
        [] => Err(format!("{} holds no .gguf file", path.display())),
        _ => Err(format!("{} holds several .gguf files; name one", path.display())),
    }
}

/// `<file>.sha256` in `sha256sum` format (or just the hex).
fn sidecar(path: &Path) -> Option<String> {
    let mut p = path.as_os_str().to_owned();
    p.push(".sha256");
    let text = std::fs::read_to_string(PathBuf::from(p)).ok()?;
    text.split_whitespace().next().map(str::to_owned)
}

fn sha256(path: &Path) -> std::io::Result<String> {
    let mut file = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex::encode(hasher.finalize()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, bytes).unwrap();
        p
    }

    fn model(path: &Path) -> ModelFile {
        ModelFile {
            name: "m".into(),
            path: path.display().to_string(),
            sha256: None,
        }
    }

    #[test]
    fn verdicts_for_model_files() {
        let dir = tempfile::tempdir().unwrap();
        let good = file(dir.path(), "a.gguf", b"GGUF\x03\0\0\0rest");
        let c = check_file(&model(&good), true);
        assert_eq!(c.verdict, super::super::Verdict::Warn, "{c:?}");
        assert!(c.detail.contains("GGUF v3"), "{c:?}");

        let mut m = model(&good);
        m.sha256 = Some(sha256(&good).unwrap());
        assert_eq!(check_file(&m, true).verdict, super::super::Verdict::Pass);
        m.sha256 = Some("00".repeat(32));
        assert_eq!(check_file(&m, true).verdict, super::super::Verdict::Fail);

        let bad = file(dir.path(), "b.bin", b"PK\x03\x04zip");
        assert_eq!(
            check_file(&model(&bad), true).verdict,
            super::super::Verdict::Fail
        );
        let missing = dir.path().join("nope.gguf");
        assert_eq!(
            check_file(&model(&missing), true).verdict,
            super::super::Verdict::Fail
        );
    }
}
