//! Loading: layers, seed variables, secrets, defaults, typed extraction, validation.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Map, Value};

use crate::resolve::{SECRET_COMMAND_TIMEOUT, SecretSources, resolve_secrets};
use crate::tree::{Layer, Origin, check_values, env_layer, file_layer, merge_maps};
use crate::types::DEFAULT_DEBUG_ADDR;
use crate::validate::validate;
use crate::{Config, ConfigError, Profile, Secret};

/// Name of the configuration file looked for in the working directory.
pub const DEFAULT_CONFIG_FILE: &str = "moltbot.toml";
/// Upstream model id of the seed model when `MODEL_NAME` is not set.
pub const DEFAULT_SEED_MODEL: &str = "gpt-4o-mini";
/// Name of the model defined by `MODEL_ENDPOINT`.
pub const SEED_MODEL_NAME: &str = "default";

/// Inputs of [`Config::load`]. Nothing in this crate reads the process environment except
/// [`LoadOptions::from_process`].
#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    /// `--config`; falls back to `MOLTBOT_CONFIG` (environment, then `.env`), then to
    /// `moltbot.toml` in `dotenv_dir` if that file exists.
    pub config_path: Option<PathBuf>,
    /// Snapshot of the process environment.
    pub env: BTreeMap<String, String>,
    /// The working directory: its `.env` is read, and its `moltbot.toml` is the default config
    /// file. `None` = neither.
    pub dotenv_dir: Option<PathBuf>,
    /// Command-line flags.
    pub overrides: CliOverrides,
}

impl LoadOptions {
    /// Snapshots the process environment and working directory (the only place that reads them).
    pub fn from_process(config_path: Option<PathBuf>, overrides: CliOverrides) -> Self {
        let env = std::env::vars_os()
            .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
            .collect();
        Self {
            config_path,
            env,
            dotenv_dir: std::env::current_dir().ok(),
            overrides,
        }
    }
}

/// Command-line flags that override configuration (highest precedence).
#[derive(Default, Clone, Debug)]
pub struct CliOverrides {
    /// `--chat-addr`
    pub chat_addr: Option<String>,
    /// `--admin-addr`
    pub admin_addr: Option<String>,
    /// `--debug-addr`
    pub debug_addr: Option<String>,
    /// `--database-url`
    pub database_url: Option<String>,
    /// `--redis-url`
    pub redis_url: Option<String>,
    /// `--profile`
    pub profile: Option<String>,
    /// `--dev`: enable the debug listener on 127.0.0.1:5000 unless `debug_addr` is set
    /// (refused in production).
    pub dev: bool,
    /// `--log-format`
    pub log_format: Option<String>,
}

/// A loaded configuration with what loading noticed.
#[derive(Debug, Clone)]
pub struct LoadedConfig {
    /// The validated configuration.
    pub config: Config,
    /// Unsafe-but-allowed settings, to be logged at startup.
    pub warnings: Vec<String>,
    /// Files read (config file, `.env`), in order.
    pub sources: Vec<String>,
    /// `MOLTBOT_BOOTSTRAP_ADMIN_KEY` (or `_FILE`): the admin key a fresh database starts with, instead
    /// of a generated one. Not part of [`Config`]: it is used once, by `init-db` / the first `serve`.
    pub bootstrap_admin_key: Option<Secret>,
}

/// Environment variable with the bootstrap admin key (`mb_` + at least 32 letters, digits or `_`).
pub const BOOTSTRAP_ADMIN_KEY_ENV: &str = "MOLTBOT_BOOTSTRAP_ADMIN_KEY";

/// `MOLTBOT_BOOTSTRAP_ADMIN_KEY` / `MOLTBOT_BOOTSTRAP_ADMIN_KEY_FILE`, environment over `.env`.
fn bootstrap_admin_key(
    env: &BTreeMap<String, String>,
    dotenv: &BTreeMap<String, String>,
) -> Result<Option<Secret>, ConfigError> {
    let file_var = format!("{BOOTSTRAP_ADMIN_KEY_ENV}_FILE");
    let pick = |name: &str| {
        env.get(name)
            .or_else(|| dotenv.get(name))
            .filter(|v| !v.is_empty())
            .cloned()
    };
    let value = match (pick(BOOTSTRAP_ADMIN_KEY_ENV), pick(&file_var)) {
        (None, None) => return Ok(None),
        (Some(_), Some(_)) => {
            return Err(ConfigError::Rule(format!(
                "{BOOTSTRAP_ADMIN_KEY_ENV} and {file_var} are both set; set only one"
            )));
        }
        (Some(v), None) => v,
        (None, Some(path)) => std::fs::read_to_string(&path)
            .map_err(|source| ConfigError::Read {
                path: PathBuf::from(&path),
                source,
            })?
            .trim()
            .to_owned(),
    };
    let rest = value.strip_prefix("mb_").unwrap_or("");
    if !(32..=128).contains(&rest.len()) || !rest.bytes().all(|b| b == b'_' || b.is_ascii_alphanumeric()) {
        // The value itself is never shown.
        return Err(ConfigError::Rule(format!(
            "{BOOTSTRAP_ADMIN_KEY_ENV}: expected `mb_` followed by 32 to 128 letters, digits or underscores \
             (e.g. mb_$(openssl rand -hex 24))"
        )));
    }
    Ok(Some(Secret::new(value)))
}

impl Config {
    /// Loads, merges and validates: defaults < TOML file < `.env` < environment < flags.
    #[allow(
        clippy::needless_pass_by_value,
        reason = "owned options keep the call site simple"
    )]
    pub fn load(opts: LoadOptions) -> Result<LoadedConfig, ConfigError> {
        load_with(&opts, SECRET_COMMAND_TIMEOUT)
    }
}

pub(crate) fn load_with(opts: &LoadOptions, command_timeout: Duration) -> Result<LoadedConfig, ConfigError> {
    let mut sources = Vec::new();
    let mut warnings = Vec::new();

    let dotenv_path = opts
        .dotenv_dir
        .as_ref()
        .map(|d| d.join(".env"))
        .filter(|p| p.is_file());
    let dotenv = match &dotenv_path {
        Some(path) => {
            sources.push(path.display().to_string());
            read_dotenv(path)?
        }
        None => BTreeMap::new(),
    };

    let mut merged = Layer::default();
    if let Some(path) = config_file(opts, &dotenv)? {
        sources.insert(0, path.display().to_string());
        merged.merge(file_layer(&path)?);
    }
    if let Some(path) = &dotenv_path {
        let path = path.clone();
        merged.merge(env_layer(&dotenv, |var| Origin::DotEnv {
            path: path.clone(),
            var: var.to_owned(),
        })?);
    }
    merged.merge(env_layer(&opts.env, |var| Origin::Env(var.to_owned()))?);
    merged.merge(flag_layer(&opts.overrides));
    if opts.overrides.dev && !merged.tree.contains_key("debug_addr") {
        merged.insert(
            "debug_addr",
            Value::String(DEFAULT_DEBUG_ADDR.to_string()),
            Origin::Flag("--dev"),
        );
    }
    seed_model(
        &mut merged,
        &dotenv,
        dotenv_path.as_deref(),
        &opts.env,
        &mut warnings,
    );

    let var = |name: &str| {
        [opts.env.get(name), dotenv.get(name)]
            .into_iter()
            .flatten()
            .find(|v| !v.is_empty())
            .cloned()
    };
    resolve_secrets(
        &mut merged,
        &SecretSources {
            timeout: command_timeout,
            var: &var,
        },
    )?;
    check_values(&mut merged.tree, "", "", &merged.origins)?;

    let profile = match merged.tree.get("profile").and_then(Value::as_str) {
        Some("production") => Profile::Production,
        _ => Profile::Development,
    };
    let mut tree = match serde_json::to_value(Config::defaults(profile)) {
        Ok(Value::Object(map)) => map,
        _ => Map::new(),
    };
    merge_maps(&mut tree, merged.tree);
    let mut config: Config = serde_path_to_error::deserialize(Value::Object(tree)).map_err(|e| {
        let key = e.path().to_string();
        let from = merged.origins.suffix(&key);
        ConfigError::invalid(key, format!("{}{from}", e.inner()))
    })?;
    validate(&mut config, &merged.origins, &mut warnings)?;
    let bootstrap_admin_key = bootstrap_admin_key(&opts.env, &dotenv)?;
    Ok(LoadedConfig {
        config,
        warnings,
        sources,
        bootstrap_admin_key,
    })
}

fn read_dotenv(path: &Path) -> Result<BTreeMap<String, String>, ConfigError> {
    let parse_error = |e: dotenvy::Error| match e {
        dotenvy::Error::Io(source) => ConfigError::Read {
            path: path.to_owned(),
            source,
        },
        // The line itself is not shown: it may hold a secret.
        dotenvy::Error::LineParse(_, index) => ConfigError::Parse {
            path: path.to_owned(),
            message: format!("syntax error at character {index} of a line"),
        },
        other => ConfigError::Parse {
            path: path.to_owned(),
            message: other.to_string(),
        },
    };
    let mut vars = BTreeMap::new();
    for item in dotenvy::from_path_iter(path).map_err(parse_error)? {
        let (key, value) = item.map_err(parse_error)?;
        vars.insert(key, value);
    }
    Ok(vars)
}

fn config_file(
    opts: &LoadOptions,
    dotenv: &BTreeMap<String, String>,
) -> Result<Option<PathBuf>, ConfigError> {
    let explicit = if let Some(path) = &opts.config_path {
        Some((path.clone(), "from flag --config".to_owned()))
    } else if let Some(path) = opts.env.get("MOLTBOT_CONFIG").filter(|p| !p.is_empty()) {
        Some((
            PathBuf::from(path),
            "from environment variable MOLTBOT_CONFIG".to_owned(),
        ))
    } else {
        dotenv
            .get("MOLTBOT_CONFIG")
            .filter(|p| !p.is_empty())
            .map(|path| (PathBuf::from(path), "from MOLTBOT_CONFIG in .env".to_owned()))
    };
    match explicit {
        Some((path, _)) if path.is_file() => Ok(Some(path)),
        Some((path, origin)) => Err(ConfigError::FileNotFound { path, origin }),
        None => Ok(opts
            .dotenv_dir
            .as_ref()
            .map(|d| d.join(DEFAULT_CONFIG_FILE))
            .filter(|p| p.is_file())),
    }
}

fn flag_layer(flags: &CliOverrides) -> Layer {
    let mut layer = Layer::default();
    let entries = [
        ("chat_addr", "--chat-addr", &flags.chat_addr),
        ("admin_addr", "--admin-addr", &flags.admin_addr),
        ("debug_addr", "--debug-addr", &flags.debug_addr),
        ("database_url", "--database-url", &flags.database_url),
        ("redis_url", "--redis-url", &flags.redis_url),
        ("profile", "--profile", &flags.profile),
        ("log.format", "--log-format", &flags.log_format),
    ];
    for (key, flag, value) in entries {
        if let Some(value) = value {
            layer.insert(key, Value::String(value.clone()), Origin::Flag(flag));
        }
    }
    layer
}

/// Adds the model defined by `MODEL_ENDPOINT` / `API_KEY` / `MODEL_NAME` (environment over `.env`).
fn seed_model(
    merged: &mut Layer,
    dotenv: &BTreeMap<String, String>,
    dotenv_path: Option<&Path>,
    env: &BTreeMap<String, String>,
    warnings: &mut Vec<String>,
) {
    let lookup = |name: &str| -> Option<(String, Origin)> {
        if let Some(value) = env.get(name).filter(|v| !v.is_empty()) {
            return Some((value.clone(), Origin::Env(name.to_owned())));
        }
        let value = dotenv.get(name).filter(|v| !v.is_empty())?;
        let path = dotenv_path.map(Path::to_path_buf).unwrap_or_default();
        Some((
            value.clone(),
            Origin::DotEnv {
                path,
                var: name.to_owned(),
            },
        ))
    };
    let keys: Vec<(&str, (String, Origin))> = [("api_key", "API_KEY"), ("api_key_file", "API_KEY_FILE")]
        .into_iter()
        .chain([("api_key_command", "API_KEY_COMMAND")])
        .filter_map(|(key, var)| lookup(var).map(|found| (key, found)))
        .collect();
    let Some((endpoint, endpoint_origin)) = lookup("MODEL_ENDPOINT") else {
        if !keys.is_empty() {
            warnings.push("API_KEY is set but MODEL_ENDPOINT is not; no default model is defined".to_owned());
        }
        return;
    };
    let models = merged
        .tree
        .entry("models")
        .or_insert_with(|| Value::Array(Vec::new()));
    let Value::Array(models) = models else { return };
    if models
        .iter()
        .any(|m| m.get("name").and_then(Value::as_str) == Some(SEED_MODEL_NAME))
    {
        warnings.push(format!(
            "MODEL_ENDPOINT is set but the configuration file already defines a model named \
             \"{SEED_MODEL_NAME}\"; the file's model is used and MODEL_ENDPOINT, MODEL_NAME and API_KEY are ignored"
        ));
        return;
    }
    let index = models.len();
    let path = format!("models[{index}]");
    let mut model = Map::new();
    let mut origins = vec![(format!("{path}.endpoint"), endpoint_origin)];
    model.insert("name".to_owned(), Value::String(SEED_MODEL_NAME.to_owned()));
    model.insert("endpoint".to_owned(), Value::String(endpoint));
    let (upstream, upstream_origin) = match lookup("MODEL_NAME") {
        Some((name, origin)) => (name, Some(origin)),
        None => (DEFAULT_SEED_MODEL.to_owned(), None),
    };
    model.insert("upstream_model".to_owned(), Value::String(upstream));
    origins.extend(upstream_origin.map(|o| (format!("{path}.upstream_model"), o)));
    for (key, (value, origin)) in keys {
        model.insert(key.to_owned(), Value::String(value));
        origins.push((format!("{path}.{key}"), origin));
    }
    models.push(Value::Object(model));
    for (key, origin) in origins {
        merged.origins.set(&key, origin);
    }
}
