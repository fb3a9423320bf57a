//! Untyped layers: building them from TOML and environment variables, merging them, and
//! checking their keys and values against [`KEYS`](crate::KEYS), remembering where every value
//! came from.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use ipnet::IpNet;
use serde_json::{Map, Value};

use crate::keys::{
    KeyDoc, SECRET_SUFFIXES, ValueKind, is_table, is_table_list, key_doc, secret_keys, secret_variant,
    suggest,
};
use crate::{ConfigError, KEYS, normalize_endpoint};

pub(crate) type Tree = Map<String, Value>;

/// Where a value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Origin {
    File(PathBuf),
    DotEnv { path: PathBuf, var: String },
    Env(String),
    Flag(&'static str),
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::File(path) => write!(f, "in {}", path.display()),
            Origin::DotEnv { path, var } => write!(f, "from {var} in {}", path.display()),
            Origin::Env(var) => write!(f, "from environment variable {var}"),
            Origin::Flag(flag) => write!(f, "from flag {flag}"),
        }
    }
}

/// Origin of every value set by a layer, by full key path (`log.format`, `models[0].name`).
#[derive(Debug, Default, Clone)]
pub(crate) struct Origins(BTreeMap<String, Origin>);

fn is_below(path: &str, ancestor: &str) -> bool {
    path.strip_prefix(ancestor)
        .is_some_and(|rest| rest.starts_with('.') || rest.starts_with('['))
}

impl Origins {
    /// Records `origin` for `path`, forgetting whatever was recorded at or below it.
    pub(crate) fn set(&mut self, path: &str, origin: Origin) {
        self.0.retain(|p, _| p != path && !is_below(p, path));
        self.0.insert(path.to_owned(), origin);
    }

    /// Origin of the value at `path` (or of the nearest enclosing or contained value).
    pub(crate) fn get(&self, path: &str) -> Option<&Origin> {
        if let Some(origin) = self.0.get(path) {
            return Some(origin);
        }
        if let Some((_, origin)) = self.0.iter().find(|(p, _)| is_below(path, p)) {
            return Some(origin);
        }
        self.0.iter().find(|(p, _)| is_below(p, path)).map(|(_, o)| o)
    }

    /// ` (from …)` for messages, or empty for built-in defaults.
    pub(crate) fn suffix(&self, path: &str) -> String {
        self.get(path).map(|o| format!(" ({o})")).unwrap_or_default()
    }

    /// Human description of the origin (`built-in default` when unset).
    pub(crate) fn describe(&self, path: &str) -> String {
        self.get(path)
            .map_or_else(|| "built-in default".to_owned(), ToString::to_string)
    }
}

/// One layer (or the merge of several).
#[derive(Debug, Default, Clone)]
pub(crate) struct Layer {
    pub(crate) tree: Tree,
    pub(crate) origins: Origins,
}

impl Layer {
    /// Sets a value at a dotted path (no array indices), creating tables on the way.
    pub(crate) fn insert(&mut self, path: &str, value: Value, origin: Origin) {
        let mut map = &mut self.tree;
        let mut parts = path.split('.').peekable();
        while let Some(part) = parts.next() {
            if parts.peek().is_none() {
                map.insert(part.to_owned(), value);
                break;
            }
            let entry = map
                .entry(part.to_owned())
                .or_insert_with(|| Value::Object(Map::new()));
            if !entry.is_object() {
                *entry = Value::Object(Map::new());
            }
            let Value::Object(next) = entry else { return };
            map = next;
        }
        self.origins.set(path, origin);
    }

    /// Puts `over` on top of this layer: tables merge key by key, everything else (arrays
    /// included) is replaced.
    ///
    /// A secret set in any form (`K`, `K_file`, `K_command`, `K_env`) by `over` replaces every form of it
    /// below, so precedence applies to the secret as a whole.
    pub(crate) fn merge(&mut self, over: Layer) {
        for doc in secret_keys().filter(|d| !d.key.contains("[]")) {
            let (parent, leaf) = doc.key.rsplit_once('.').unwrap_or(("", doc.key));
            let forms: Vec<String> = std::iter::once(leaf.to_owned())
                .chain(SECRET_SUFFIXES.iter().map(|s| format!("{leaf}{s}")))
                .collect();
            let set_above =
                table(&over.tree, parent).is_some_and(|t| forms.iter().any(|f| t.contains_key(f)));
            if let Some(below) = table_mut(&mut self.tree, parent).filter(|_| set_above) {
                for form in &forms {
                    below.remove(form);
                }
            }
        }
        merge_maps(&mut self.tree, over.tree);
        for (path, origin) in over.origins.0 {
            self.origins.set(&path, origin);
        }
    }
}

fn table<'a>(tree: &'a Tree, path: &str) -> Option<&'a Tree> {
    path.split('.')
        .filter(|p| !p.is_empty())
        .try_fold(tree, |t, part| t.get(part)?.as_object())
}

fn table_mut<'a>(tree: &'a mut Tree, path: &str) -> Option<&'a mut Tree> {
    path.split('.')
        .filter(|p| !p.is_empty())
        .try_fold(tree, |t, part| t.get_mut(part)?.as_object_mut())
}

pub(crate) fn merge_maps(base: &mut Tree, over: Tree) {
    for (key, value) in over {
        match (base.get_mut(&key), value) {
            (Some(Value::Object(b)), Value::Object(o)) => merge_maps(b, o),
            (_, value) => {
                base.insert(key, value);
            }
        }
    }
}

fn join(prefix: &str, key: &str) -> String {
    if prefix.is_empty() {
        key.to_owned()
    } else {
        format!("{prefix}.{key}")
    }
}

fn unknown(schema: &str, actual: &str, origin: &Origin) -> ConfigError {
    let hint = suggest(schema)
        .map(|s| format!("; did you mean \"{s}\"?"))
        .unwrap_or_default();
    ConfigError::UnknownKey {
        key: actual.to_owned(),
        origin: origin.to_string(),
        hint,
    }
}

/// Reads and checks the keys of a TOML file.
pub(crate) fn file_layer(path: &Path) -> Result<Layer, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    let tree: Tree = toml::from_str(&text).map_err(|e| ConfigError::Parse {
        path: path.to_owned(),
        message: toml_error_message(&text, &e),
    })?;
    let origin = Origin::File(path.to_owned());
    let mut layer = Layer {
        tree,
        origins: Origins::default(),
    };
    check_keys(&layer.tree, "", "", &origin, &mut layer.origins)?;
    Ok(layer)
}

/// The TOML error without its source snippet (the line could hold a secret).
fn toml_error_message(text: &str, error: &toml::de::Error) -> String {
    let message = error.message().trim_end();
    match error.span() {
        Some(span) => {
            let before = &text[..span.start.min(text.len())];
            let line = before.matches('\n').count() + 1;
            let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
            format!("line {line}, column {column}: {message}")
        }
        None => message.to_owned(),
    }
}

fn check_keys(
    map: &Tree,
    schema: &str,
    actual: &str,
    origin: &Origin,
    origins: &mut Origins,
) -> Result<(), ConfigError> {
    for (key, value) in map {
        let s = join(schema, key);
        let a = join(actual, key);
        if let Some(doc) = key_doc(&s) {
            if doc.kind == ValueKind::TableList {
                let Value::Array(items) = value else {
                    return Err(ConfigError::invalid(
                        &a,
                        format!(
                            "expected {} ([[{s}]]), got {} ({origin})",
                            doc.kind.expected(),
                            describe(value, false)
                        ),
                    ));
                };
                for (i, item) in items.iter().enumerate() {
                    let item_path = format!("{a}[{i}]");
                    let Value::Object(table) = item else {
                        return Err(ConfigError::invalid(
                            item_path,
                            format!("expected a table ({origin})"),
                        ));
                    };
                    origins.set(&item_path, origin.clone());
                    check_keys(table, &format!("{s}[]"), &item_path, origin, origins)?;
                }
            } else {
                origins.set(&a, origin.clone());
            }
        } else if secret_variant(&s).is_some() {
            origins.set(&a, origin.clone());
        } else if is_table(&s) {
            let Value::Object(table) = value else {
                return Err(ConfigError::invalid(
                    &a,
                    format!("expected a table, got {} ({origin})", describe(value, false)),
                ));
            };
            check_keys(table, &s, &a, origin, origins)?;
        } else {
            return Err(unknown(&s, &a, origin));
        }
    }
    Ok(())
}

/// Whether an environment variable name is reserved for tooling (ignored, not unknown).
pub(crate) fn is_reserved(name: &str) -> bool {
    name == "MOLTBOT_CONFIG" || name.starts_with("MOLTBOT_TEST_") || name.starts_with("MOLTBOT_BOOTSTRAP_")
}

/// The `MOLTBOT_*` variables of one environment, checked and parsed.
pub(crate) fn env_layer(
    vars: &BTreeMap<String, String>,
    origin_of: impl Fn(&str) -> Origin,
) -> Result<Layer, ConfigError> {
    let mut layer = Layer::default();
    for (name, raw) in vars {
        let upper = name.to_ascii_uppercase();
        let Some(rest) = upper.strip_prefix("MOLTBOT_") else {
            continue;
        };
        if is_reserved(&upper) {
            continue;
        }
        let origin = origin_of(name);
        let key_path = rest.to_ascii_lowercase().replace("__", ".");
        let (path, kind) = match env_key(&upper) {
            Some(found) => found,
            None if table_list_of(&key_path).is_some() => {
                let list = table_list_of(&key_path).unwrap_or_default();
                return Err(ConfigError::invalid(
                    &key_path,
                    format!("{list} can only be configured in the TOML file ([[{list}]]) ({origin})"),
                ));
            }
            None if is_table(&key_path) => {
                return Err(ConfigError::invalid(
                    &key_path,
                    format!("a table cannot be set as a whole; set its keys, e.g. {upper}__<KEY> ({origin})"),
                ));
            }
            None => return Err(unknown(&key_path, &key_path, &origin)),
        };
        layer.insert(&path, env_value(kind, raw), origin);
    }
    Ok(layer)
}

/// The array of tables (`models`, `channels`, `hooks`) a key path from the environment falls in.
fn table_list_of(key_path: &str) -> Option<&str> {
    let head = key_path.split('.').next().unwrap_or(key_path);
    is_table_list(head).then_some(head)
}

/// Key path and kind of a `MOLTBOT_*` variable, including secret `_FILE`/`_COMMAND`/`_ENV` forms.
fn env_key(upper: &str) -> Option<(String, ValueKind)> {
    if let Some(doc) = KEYS.iter().find(|d| d.env == Some(upper)) {
        return Some((doc.key.to_owned(), doc.kind));
    }
    SECRET_SUFFIXES.iter().find_map(|suffix| {
        let base = upper.strip_suffix(suffix.to_ascii_uppercase().as_str())?;
        let doc = KEYS
            .iter()
            .find(|d| d.env == Some(base) && d.kind == ValueKind::Secret)?;
        Some((format!("{}{suffix}", doc.key), ValueKind::String))
    })
}

/// Parses an environment value: strings stay strings; other kinds are parsed like figment
/// values (`true`, numbers, `[a, b]`); lists also accept `a,b`.
pub(crate) fn env_value(kind: ValueKind, raw: &str) -> Value {
    if kind.is_stringly() {
        return Value::String(raw.to_owned());
    }
    if matches!(
        kind,
        ValueKind::CidrList | ValueKind::StringList | ValueKind::SecretList
    ) && !raw.trim_start().starts_with('[')
    {
        let items = raw.split(',').map(str::trim).filter(|s| !s.is_empty());
        return Value::Array(items.map(|s| Value::String(s.to_owned())).collect());
    }
    let parsed = figment::value::Value::from_str(raw).unwrap_or_else(|never| match never {});
    serde_json::to_value(&parsed).unwrap_or_else(|_| Value::String(raw.to_owned()))
}

/// Short description of a value for messages; secrets are never shown.
pub(crate) fn describe(value: &Value, secret: bool) -> String {
    match value {
        Value::String(_) if secret => "a string".to_owned(),
        Value::String(s) => format!("{s:?}"),
        Value::Number(n) if !secret => n.to_string(),
        Value::Number(_) => "a number".to_owned(),
        Value::Bool(b) if !secret => b.to_string(),
        Value::Bool(_) => "a boolean".to_owned(),
        Value::Array(_) => "an array".to_owned(),
        Value::Object(_) => "a table".to_owned(),
        Value::Null => "nothing".to_owned(),
    }
}

/// Checks every value of the merged tree against its key's kind, normalising some
/// (endpoints, bare IPs in CIDR lists).
pub(crate) fn check_values(
    tree: &mut Tree,
    schema: &str,
    actual: &str,
    origins: &Origins,
) -> Result<(), ConfigError> {
    for (key, value) in tree.iter_mut() {
        let s = join(schema, key);
        let a = join(actual, key);
        match key_doc(&s) {
            Some(doc) if doc.kind == ValueKind::TableList => {
                if let Value::Array(items) = value {
                    for (i, item) in items.iter_mut().enumerate() {
                        if let Value::Object(table) = item {
                            let (item_schema, item_path) = (format!("{s}[]"), format!("{a}[{i}]"));
                            check_required_choices(table, &item_schema, &item_path, origins)?;
                            check_values(table, &item_schema, &item_path, origins)?;
                        }
                    }
                }
            }
            Some(doc) => check_leaf(doc, &a, value, origins)?,
            None => {
                if let Value::Object(table) = value {
                    check_values(table, &s, &a, origins)?;
                }
            }
        }
    }
    Ok(())
}

/// A required key of an array-of-tables entry whose value is one of a fixed set (e.g.
/// `channels[].platform`) must be present: unlike a string, its typed value has no empty state that
/// validation could catch later.
fn check_required_choices(
    table: &Tree,
    item_schema: &str,
    item_path: &str,
    origins: &Origins,
) -> Result<(), ConfigError> {
    let prefix = format!("{item_schema}.");
    for doc in KEYS.iter().filter(|d| {
        d.default == "(required)"
            && matches!(d.kind, ValueKind::Enum(_))
            && d.key
                .strip_prefix(&prefix)
                .is_some_and(|leaf| !leaf.contains('.'))
    }) {
        let leaf = &doc.key[prefix.len()..];
        if !table.contains_key(leaf) {
            let path = format!("{item_path}.{leaf}");
            return Err(ConfigError::invalid(
                &path,
                format!(
                    "is required: {}{}",
                    doc.kind.expected(),
                    origins.suffix(item_path)
                ),
            ));
        }
    }
    Ok(())
}

fn check_leaf(doc: &KeyDoc, path: &str, value: &mut Value, origins: &Origins) -> Result<(), ConfigError> {
    let from = origins.suffix(path);
    let fail = |got: &Value| {
        ConfigError::invalid(
            path,
            format!(
                "expected {}, got {}{from}",
                doc.kind.expected(),
                describe(got, doc.is_secret)
            ),
        )
    };
    let ok = match doc.kind {
        ValueKind::String | ValueKind::Secret => value.is_string(),
        ValueKind::Bool => value.is_boolean(),
        ValueKind::U32 => value.as_u64().is_some_and(|n| u32::try_from(n).is_ok()),
        ValueKind::Usize => value.as_u64().is_some_and(|n| usize::try_from(n).is_ok()),
        ValueKind::F32 => value.as_f64().is_some_and(f64::is_finite),
        ValueKind::Duration => value
            .as_str()
            .is_some_and(|s| humantime::parse_duration(s.trim()).is_ok()),
        ValueKind::SocketAddr => value
            .as_str()
            .is_some_and(|s| s.trim().parse::<SocketAddr>().is_ok()),
        ValueKind::HttpUrl => match value.as_str().map(normalize_endpoint) {
            Some(Ok(url)) => {
                *value = Value::String(url.to_string());
                true
            }
            _ => false,
        },
        ValueKind::Url => value.as_str().is_some_and(|s| {
            url::Url::parse(s.trim())
                .is_ok_and(|u| matches!(u.scheme(), "http" | "https") && u.host_str().is_some())
        }),
        ValueKind::Enum(allowed) => value.as_str().is_some_and(|s| allowed.contains(&s)),
        ValueKind::StringList | ValueKind::SecretList => value
            .as_array()
            .is_some_and(|items| items.iter().all(Value::is_string)),
        ValueKind::CidrList => return check_cidrs(doc, path, value, &from),
        ValueKind::TableList => true,
    };
    if ok {
        // Trim stray whitespace around strings that are parsed (env values, flags).
        if !matches!(
            doc.kind,
            ValueKind::String | ValueKind::Secret | ValueKind::HttpUrl
        ) && let Value::String(s) = value
        {
            *s = s.trim().to_owned();
        }
        Ok(())
    } else {
        Err(fail(value))
    }
}

fn check_cidrs(doc: &KeyDoc, path: &str, value: &mut Value, from: &str) -> Result<(), ConfigError> {
    let Value::Array(items) = value else {
        return Err(ConfigError::invalid(
            path,
            format!(
                "expected {}, got {}{from}",
                doc.kind.expected(),
                describe(value, false)
            ),
        ));
    };
    for (i, item) in items.iter_mut().enumerate() {
        let parsed = item.as_str().map(str::trim).and_then(|s| {
            s.parse::<IpNet>()
                .ok()
                .or_else(|| s.parse::<IpAddr>().ok().map(IpNet::from))
        });
        match parsed {
            Some(net) => *item = Value::String(net.to_string()),
            None => {
                return Err(ConfigError::invalid(
                    path,
                    format!(
                        "expected {}, got {} in entry {}{from}",
                        doc.kind.expected(),
                        describe(item, false),
                        i + 1
                    ),
                ));
            }
        }
    }
    Ok(())
}
