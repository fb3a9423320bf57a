//! [`ConfigError`].

use std::path::PathBuf;

/// Why configuration could not be loaded. Messages name the key and where its value came from;
/// they never contain secret values or the output of secret commands.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// An explicitly given configuration file does not exist.
    #[error("configuration file {} does not exist ({origin})", path.display())]
    FileNotFound {
        /// The path given.
        path: PathBuf,
        /// Where the path came from (`--config`, `MOLTBOT_CONFIG`).
        origin: String,
    },
    /// A file could not be read.
    #[error("could not read {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A file could not be parsed.
    #[error("could not parse {}: {message}", path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// What is wrong, with line and column.
        message: String,
    },
    /// A key that does not exist.
    #[error("unknown configuration key \"{key}\" ({origin}){hint}")]
    UnknownKey {
        /// Full key path, e.g. `log.formt` or `models[0].nmae`.
        key: String,
        /// Where it was set.
        origin: String,
        /// `; did you mean "…"?` or empty.
        hint: String,
    },
    /// A value of the wrong type or out of range.
    #[error("invalid value for \"{key}\": {message}")]
    InvalidValue {
        /// Full key path.
        key: String,
        /// What was expected and what was found, and where it was set.
        message: String,
    },
    /// A secret given in more than one form (`K`, `K_file`, `K_command`).
    #[error("secret \"{key}\" is set more than once: {sources}; set only one of them")]
    SecretConflict {
        /// Full key path of the secret.
        key: String,
        /// The forms found and where they came from.
        sources: String,
    },
    /// A secret file or command failed.
    #[error("could not resolve secret \"{key}\": {message}")]
    Secret {
        /// Full key path of the secret.
        key: String,
        /// Why (exit status, timeout, I/O error); never the command's output.
        message: String,
    },
    /// A rule across keys is broken (e.g. the debug listener in production).
    #[error("{0}")]
    Rule(String),
}

impl ConfigError {
    pub(crate) fn invalid(key: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError::InvalidValue {
            key: key.into(),
            message: message.into(),
        }
    }
}
