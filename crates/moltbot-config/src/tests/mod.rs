//! Unit tests. Every test passes an explicit environment; none reads or changes the process's.

mod channels;
mod docs;
mod layers;
mod memory;
mod rules;
mod secrets;
mod seed;

use std::collections::BTreeMap;
use std::path::PathBuf;

use tempfile::TempDir;

use crate::{Config, ConfigError, LoadOptions, LoadedConfig};

/// A temporary working directory.
pub(super) struct Dir(pub TempDir);

impl Dir {
    pub(super) fn new() -> Self {
        Dir(tempfile::tempdir().expect("tempdir"))
    }

    pub(super) fn write(&self, name: &str, content: &str) -> PathBuf {
        let path = self.0.path().join(name);
        std::fs::write(&path, content).expect("write");
        path
    }

    /// Options with this directory as working directory (its `.env` and `moltbot.toml`).
    pub(super) fn opts(&self) -> LoadOptions {
        LoadOptions {
            dotenv_dir: Some(self.0.path().to_owned()),
            ..LoadOptions::default()
        }
    }

    /// Options reading `toml` as the config file (explicit path), no `.env`.
    pub(super) fn with_file(&self, toml: &str) -> LoadOptions {
        LoadOptions {
            config_path: Some(self.write("moltbot.toml", toml)),
            ..LoadOptions::default()
        }
    }
}

pub(super) fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

pub(super) fn env_opts(pairs: &[(&str, &str)]) -> LoadOptions {
    LoadOptions {
        env: env(pairs),
        ..LoadOptions::default()
    }
}

#[track_caller]
pub(super) fn load_ok(opts: LoadOptions) -> LoadedConfig {
    match Config::load(opts) {
        Ok(loaded) => loaded,
        Err(e) => panic!("expected the configuration to load, got: {e}"),
    }
}

#[track_caller]
pub(super) fn load_err(opts: LoadOptions) -> ConfigError {
    match Config::load(opts) {
        Ok(loaded) => panic!("expected an error, got {:?}", loaded.config),
        Err(e) => e,
    }
}

#[track_caller]
pub(super) fn assert_contains(haystack: &str, needle: &str) {
    assert!(haystack.contains(needle), "expected {needle:?} in:\n{haystack}");
}

pub(super) const MODEL_A: &str = r#"
[[models]]
name = "a"
endpoint = "https://api.example.com/v1"
"#;
