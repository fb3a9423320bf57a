//! Secret resolution on the merged tree: `K`, `K_file`, `K_command` or `K_env` become `K`.

use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::ConfigError;
use crate::keys::{SECRET_SUFFIXES, secret_keys};
use crate::tree::{Layer, Origins, Tree};

/// How long a `_command` may run.
pub const SECRET_COMMAND_TIMEOUT: Duration = Duration::from_secs(10);

/// Where the indirect forms of secrets are read from.
pub(crate) struct SecretSources<'a> {
    /// How long a `_command` may run.
    pub(crate) timeout: Duration,
    /// The value of a variable named by `_env`: the environment, then `.env`; `None` when unset
    /// or empty in both.
    pub(crate) var: &'a dyn Fn(&str) -> Option<String>,
}

/// Resolves every secret key of the schema (wildcards over `[[models]]`, `[[channels]]`, … included).
pub(crate) fn resolve_secrets(layer: &mut Layer, sources: &SecretSources<'_>) -> Result<(), ConfigError> {
    for doc in secret_keys() {
        let segments: Vec<&str> = doc.key.split('.').collect();
        resolve_at(&mut layer.tree, &segments, "", &mut layer.origins, sources)?;
    }
    Ok(())
}

fn resolve_at(
    map: &mut Tree,
    segments: &[&str],
    actual: &str,
    origins: &mut Origins,
    sources: &SecretSources<'_>,
) -> Result<(), ConfigError> {
    let join = |key: &str| {
        if actual.is_empty() {
            key.to_owned()
        } else {
            format!("{actual}.{key}")
        }
    };
    match segments {
        [] => Ok(()),
        [leaf] => resolve_one(map, leaf, &join(leaf), origins, sources),
        [head, rest @ ..] => {
            if let Some(array_key) = head.strip_suffix("[]") {
                if let Some(Value::Array(items)) = map.get_mut(array_key) {
                    for (i, item) in items.iter_mut().enumerate() {
                        if let Value::Object(table) = item {
                            let path = format!("{}[{i}]", join(array_key));
                            resolve_at(table, rest, &path, origins, sources)?;
                        }
                    }
                }
                Ok(())
            } else if let Some(Value::Object(table)) = map.get_mut(*head) {
                resolve_at(table, rest, &join(head), origins, sources)
            } else {
                Ok(())
            }
        }
    }
}

fn resolve_one(
    map: &mut Tree,
    leaf: &str,
    path: &str,
    origins: &mut Origins,
    sources: &SecretSources<'_>,
) -> Result<(), ConfigError> {
    let forms: Vec<String> = std::iter::once(String::new())
        .chain(SECRET_SUFFIXES.iter().map(|s| (*s).to_owned()))
        .filter(|suffix| map.contains_key(&format!("{leaf}{suffix}")))
        .collect();
    if forms.len() > 1 {
        let sources: Vec<String> = forms
            .iter()
            .map(|suffix| {
                format!(
                    "{leaf}{suffix} ({})",
                    origins.describe(&format!("{path}{suffix}"))
                )
            })
            .collect();
        return Err(ConfigError::SecretConflict {
            key: path.to_owned(),
            sources: sources.join(" and "),
        });
    }
    let Some(suffix) = forms.first().filter(|s| !s.is_empty()) else {
        return Ok(());
    };
    let variant_path = format!("{path}{suffix}");
    let origin = origins.get(&variant_path).cloned();
    let from = origins.suffix(&variant_path);
    let Some(Value::String(spec)) = map.remove(&format!("{leaf}{suffix}")) else {
        return Err(ConfigError::invalid(
            &variant_path,
            format!("expected a string{from}"),
        ));
    };
    let value = match suffix.as_str() {
        "_file" => read_secret_file(Path::new(spec.trim())).map_err(|message| ConfigError::Secret {
            key: path.to_owned(),
            message: format!("{message}{from}"),
        })?,
        "_env" => read_secret_var(spec.trim(), sources.var).map_err(|message| ConfigError::Secret {
            key: path.to_owned(),
            message: format!("{leaf}{suffix} {message}{from}"),
        })?,
        _ => run_secret_command(&spec, sources.timeout).map_err(|message| ConfigError::Secret {
            key: path.to_owned(),
            message: format!("{leaf}{suffix} {message}{from}"),
        })?,
    };
    map.insert(leaf.to_owned(), Value::String(value));
    if let Some(origin) = origin {
        origins.set(path, origin);
    }
    Ok(())
}

/// The value of the environment variable `name` (environment, then `.env`), as is.
fn read_secret_var(name: &str, var: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    let valid = name
        .bytes()
        .next()
        .is_some_and(|b| b == b'_' || b.is_ascii_alphabetic())
        && name.bytes().all(|b| b == b'_' || b.is_ascii_alphanumeric());
    if !valid {
        return Err(format!(
            "expected the name of an environment variable (letters, digits and _), got {name:?}"
        ));
    }
    var(name).ok_or_else(|| {
        format!("names environment variable {name}, which is not set (or empty) in the environment or .env")
    })
}

/// Reads a secret file, removing one trailing newline.
pub(crate) fn read_secret_file(path: &Path) -> Result<String, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("could not read secret file {}: {e}", path.display()))?;
    let value = text
        .strip_suffix('\n')
        .map(|t| t.strip_suffix('\r').unwrap_or(t))
        .unwrap_or(&text);
    if value.is_empty() {
        return Err(format!("secret file {} is empty", path.display()));
    }
    Ok(value.to_owned())
}

/// Runs `sh -c <command>` and returns its trimmed stdout. Errors say how the command failed
/// (exit status, timeout) but never include its output; stderr is discarded.
pub(crate) fn run_secret_command(command: &str, timeout: Duration) -> Result<String, String> {
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(command)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("could not be started: {e}"))?;
    let mut stdout = child.stdout.take().ok_or("could not be started: no stdout")?;
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        let result = stdout.read_to_end(&mut buf).map(|_| buf);
        let _ = tx.send(result);
    });

    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("timed out after {}", humantime::format_duration(timeout)));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(10)),
            Err(e) => return Err(format!("could not be waited for: {e}")),
        }
    };
    if !status.success() {
        return Err(match status.code() {
            Some(code) => format!("exited with status {code}"),
            None => format!("was terminated ({status})"),
        });
    }
    // The output pipe may stay open in a background grandchild; do not wait forever.
    let remaining = deadline
        .saturating_duration_since(Instant::now())
        .max(Duration::from_millis(100));
    let output = match rx.recv_timeout(remaining) {
        Ok(Ok(bytes)) => bytes,
        Ok(Err(e)) => return Err(format!("output could not be read: {e}")),
        Err(_) => {
            return Err(format!(
                "output did not end within {}",
                humantime::format_duration(timeout)
            ));
        }
    };
    let text = String::from_utf8(output).map_err(|_| "printed output that is not UTF-8".to_owned())?;
    let value = text.trim();
    if value.is_empty() {
        return Err("printed nothing".to_owned());
    }
    Ok(value.to_owned())
}
