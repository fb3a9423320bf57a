//! The first admin key of a fresh database (`init-db`, and the first `serve` on SQLite).
//!
//! Created once — the store's bootstrap marker makes a second attempt a no-op, even after every key
//! was revoked. A generated secret goes to `auth.bootstrap_key_file` (mode 0600, path logged) and to
//! stdout only when stdout is a terminal or `--print-admin-key` is given: never into logs, which
//! often end up in a log pipeline (a Kubernetes Job's output goes to ELK).

use std::io::{IsTerminal, Write};
use std::path::Path;

use anyhow::Context;
use moltbot_config::{Config, Secret};
use moltbot_core::{ApiKey, KeyLimits, Scope, Store};

pub async fn run(
    store: &dyn Store,
    config: &Config,
    supplied: Option<&Secret>,
    print: bool,
) -> anyhow::Result<()> {
    if store.count_api_keys().await? > 0 {
        return Ok(());
    }
    let now = moltbot_core::Clock::now_secs(&moltbot_core::SystemClock);
    let scopes = Scope::ALL.to_vec();
    let (key, generated) = match supplied {
        Some(s) => (
            ApiKey::from_secret(
                s.expose(),
                "admin (bootstrap)",
                scopes,
                KeyLimits::default(),
                now,
                None,
            ),
            None,
        ),
        None => {
            let (k, secret) = ApiKey::generate("admin (bootstrap)", scopes, KeyLimits::default(), now, None);
            (k, Some(secret))
        }
    };
    if !store.bootstrap_api_key(&key).await? {
        return Ok(());
    }
    let Some(secret) = generated else {
        tracing::info!(moltbot.api_key.id = %key.id, "bootstrap admin key created from MOLTBOT_BOOTSTRAP_ADMIN_KEY");
        return Ok(());
    };
    let path = Path::new(&config.auth.bootstrap_key_file);
    write_private(path, &secret).with_context(|| {
        format!(
            "the bootstrap admin key {} was created but could not be written to {}; revoke it with \
             `moltbot keys revoke {}` and create another with `moltbot keys create --scopes admin,...`",
            key.prefix,
            path.display(),
            key.id
        )
    })?;
    tracing::warn!(
        moltbot.api_key.id = %key.id,
        path = %path.display(),
        "bootstrap admin key created and written to the file (readable by its owner only); keep it safe"
    );
    let mut out = std::io::stdout();
    if print || out.is_terminal() {
        writeln!(
            out,
            "Admin API key (shown once, also in {}):\n{secret}",
            path.display()
        )?;
    } else {
        writeln!(out, "Admin API key written to {}", path.display())?;
    }
    Ok(())
}

/// Write `secret` to a new file only its owner can read.
fn write_private(path: &Path, secret: &str) -> std::io::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        opts.mode(0o600);
        let mut f = opts.open(path)?;
        // The mode only applies to a new file: tighten an existing one too.
        f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
        writeln!(f, "{secret}")?;
        return f.sync_all();
    }
    #[allow(unreachable_code)]
    {
        let mut f = opts.open(path)?;
        writeln!(f, "{secret}")?;
        f.sync_all()
    }
}
