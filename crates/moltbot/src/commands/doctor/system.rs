//! Database, GPU, disk space, the JWT secret, the TLS trust store and the debug listener.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use moltbot_config::{BackendKind, Config, Profile};
use moltbot_core::Store;
use moltbot_store::{SqlStore, StoreOptions};

use super::Check;

/// The SQLite file a `sqlite:` URL names (`None` for in-memory databases and other backends).
pub fn sqlite_path(url: &str) -> Option<PathBuf> {
    let rest = url.strip_prefix("sqlite:")?;
    let rest = rest.strip_prefix("//").unwrap_or(rest);
    let path = rest.split('?').next().unwrap_or(rest);
    (!path.is_empty() && !path.starts_with(":memory:")).then(|| PathBuf::from(path))
}

/// Cluster mode: Redis reachable, its version and round trip.
pub async fn redis(config: &Config) -> Check {
    const NAME: &str = "redis";
    let Some(url) = &config.redis_url else {
        return Check::skip(
            NAME,
            "redis_url not set: limits, lockouts and tickets are per replica",
        );
    };
    match moltbot_server::cluster::probe(url, Duration::from_secs(5)).await {
        Ok((version, _))
            if moltbot_server::cluster::parse_version(&version)
                .is_none_or(|v| v < moltbot_server::cluster::MIN_VERSION) =>
        {
            let (major, minor) = moltbot_server::cluster::MIN_VERSION;
            Check::fail(
                NAME,
                format!("Redis {version} is too old for cluster mode"),
                format!("upgrade Redis to {major}.{minor} or later (GETDEL, SET … EXAT are used)"),
            )
        }
        Ok((version, latency)) => Check::pass(
            NAME,
            format!(
                "Redis {version}, PING {:.1} ms; when unreachable: {}",
                latency.as_secs_f64() * 1000.0,
                match config.cluster.redis_failure {
                    moltbot_config::RedisFailure::Open => "open (per-replica limits)",
                    moltbot_config::RedisFailure::Closed => "closed (503 redis_unavailable)",
                }
            ),
        ),
        Err(e) => Check::fail(
            NAME,
            e,
            "check redis_url (host, port, password) and that Redis is running and reachable from here",
        ),
    }
}

pub async fn database(config: &Config) -> Check {
    const NAME: &str = "database";
    if let Some(path) = sqlite_path(&config.database_url)
        && !path.exists()
    {
        return Check::warn(
            NAME,
            format!("{} does not exist yet", path.display()),
            "`moltbot init-db` creates it (so does `moltbot serve`)",
        );
    }
    let opts = StoreOptions {
        max_connections: 1,
        busy_timeout: Duration::from_secs(3),
        password: config.database_password.as_ref().map(|s| s.expose().to_owned()),
    };
    let connect = tokio::time::timeout(
        Duration::from_secs(10),
        SqlStore::connect(&config.database_url, &opts),
    );
    let store = match connect.await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            return Check::fail(
                NAME,
                format!("cannot connect: {e}"),
                "check database_url, the password (database_password) and that the server is reachable",
            );
        }
        Err(_) => {
            return Check::fail(
                NAME,
                "no connection within 10 s",
                "check the host and port in database_url and the firewall between here and the database",
            );
        }
    };
    let result = match store.ping().await {
        Err(e) => Check::fail(
            NAME,
            format!("ping failed: {e}"),
            "check the database server's health",
        ),
        Ok(()) => match store.schema_status().await {
            Ok(s) if s.is_current() => Check::pass(
                NAME,
                format!("{} reachable, schema version {}", store.kind(), s.applied),
            ),
            Ok(s) => Check::warn(
                NAME,
                format!(
                    "{} reachable, schema version {} with migrations {:?} pending",
                    store.kind(),
                    s.applied,
                    s.pending
                ),
                "run `moltbot init-db` (or start with `serve --migrate`)",
            ),
            Err(e) => Check::fail(
                NAME,
                format!("cannot read the schema version: {e}"),
                "run `moltbot init-db`",
            ),
        },
    };
    store.close().await;
    result
}

const CPU_FIX: &str =
    "set engine.cpu_variant to a variant this CPU runs (x64 runs everywhere), or engine.backends_dir";

/// Which llama.cpp CPU backend local models run on. A portable build selects (and probes) one now; the
/// default build needs x86-64-v3 (AVX2, FMA, F16C), which is checked here instead of dying with SIGILL.
pub fn cpu_backend() -> Check {
    const NAME: &str = "cpu_backend";
    if !moltbot_engine::cpu::PORTABLE_BUILD {
        #[cfg(target_arch = "x86_64")]
        {
            let missing: Vec<&str> = [
                ("avx2", std::arch::is_x86_feature_detected!("avx2")),
                ("fma", std::arch::is_x86_feature_detected!("fma")),
                ("f16c", std::arch::is_x86_feature_detected!("f16c")),
            ]
            .iter()
            .filter(|(_, ok)| !ok)
            .map(|(n, _)| *n)
            .collect();
            if !missing.is_empty() {
                return Check::fail(
                    NAME,
                    format!(
                        "this CPU lacks {}, which this build's llama.cpp needs",
                        missing.join(", ")
                    ),
                    "use the portable release (built with --features portable), which picks a backend this CPU runs",
                );
            }
        }
        return Check::pass(NAME, moltbot_engine::cpu::BUILTIN_DESCRIPTION.to_owned());
    }
    // Through the engine's own initialisation, so llama.cpp's messages go to the log, not the terminal.
    let loaded = moltbot_engine::engine::backend()
        .map(|_| ())
        .map_err(|e| e.to_string());
    match (loaded, moltbot_engine::cpu::choice()) {
        (Ok(()), Some(Ok(choice))) => {
            // Group the variants passed over by reason: "; passed over zen4, skylakex: this CPU lacks …".
            let mut reasons: Vec<(&str, Vec<&str>)> = Vec::new();
            for (variant, why) in &choice.skipped {
                match reasons.iter_mut().find(|(w, _)| *w == why.as_str()) {
                    Some((_, vs)) => vs.push(variant),
                    None => reasons.push((why, vec![variant])),
                }
            }
            let skipped: String = reasons
                .iter()
                .map(|(why, vs)| format!("; passed over {}: {why}", vs.join(", ")))
                .collect();
            Check::pass(NAME, format!("portable build, using {}{skipped}", choice.variant))
        }
        (Err(e), _) => Check::fail(NAME, e, CPU_FIX),
        (Ok(()), Some(Err(e))) => Check::fail(NAME, e.clone(), CPU_FIX),
        (Ok(()), None) => Check::fail(
            NAME,
            "no CPU backend was recorded".to_owned(),
            "report this as a bug",
        ),
    }
}

/// `nvidia-smi` output: driver, CUDA version and free memory per GPU, and whether this binary can use
/// them (built with the `cuda` feature).
pub fn gpu(config: &Config) -> Check {
    const NAME: &str = "gpu";
    let build = if moltbot_engine::CUDA_BUILD {
        "this binary was built with CUDA"
    } else {
        "this binary was built without CUDA (CPU only; rebuild with --features cuda to offload layers)"
    };
    let wants_gpu = config
        .models
        .iter()
        .any(|m| m.backend == BackendKind::Local && m.gpu_layers > 0);
    let query = Command::new("nvidia-smi")
        .args([
            "--query-gpu=name,driver_version,memory.free,memory.total",
            "--format=csv,noheader,nounits",
        ])
        .output();
    let out = match query {
        Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout).into_owned(),
        Ok(o) => {
            let err = String::from_utf8_lossy(&o.stderr).trim().to_owned();
            return Check::fail(
                NAME,
                format!("nvidia-smi failed: {err}"),
                "the NVIDIA driver is not loaded or does not match the kernel module; reinstall the driver",
            );
        }
        Err(_) if wants_gpu => {
            return Check::fail(
                NAME,
                format!("a local model sets gpu_layers but nvidia-smi is not installed; {build}"),
                "install the NVIDIA driver and CUDA 11.8+ (or set gpu_layers = 0 to run on the CPU)",
            );
        }
        Err(_) => return Check::skip(NAME, format!("no nvidia-smi: CPU only; {build}")),
    };
    let cuda = Command::new("nvidia-smi")
        .output()
        .ok()
        .and_then(|o| cuda_version(&String::from_utf8_lossy(&o.stdout)));
    let gpus: Vec<String> = out
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let f: Vec<&str> = l.split(',').map(str::trim).collect();
            format!(
                "{} (driver {}, {} MiB free of {} MiB)",
                f.first().unwrap_or(&"?"),
                f.get(1).unwrap_or(&"?"),
                f.get(2).unwrap_or(&"?"),
                f.get(3).unwrap_or(&"?")
            )
        })
        .collect();
    let cuda_text = cuda.map_or_else(
        || "CUDA version unknown".to_owned(),
        |(a, b)| format!("CUDA {a}.{b}"),
    );
    let detail = format!("{}; {cuda_text}; {build}", gpus.join("; "));
    if wants_gpu && !moltbot_engine::CUDA_BUILD {
        return Check::warn(
            NAME,
            detail,
            "gpu_layers is set but this binary has no CUDA backend: layers run on the CPU; build with --features cuda",
        );
    }
    match cuda {
        Some(v) if v < (11, 8) => {
            Check::warn(NAME, detail, "update the driver: local models need CUDA 11.8+")
        }
        _ => Check::pass(NAME, detail),
    }
}

/// `CUDA Version: 12.2` from `nvidia-smi`'s banner.
fn cuda_version(banner: &str) -> Option<(u32, u32)> {
    let rest = banner.split("CUDA Version:").nth(1)?.trim_start();
    let v: String = rest
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '.')
        .collect();
    let (a, b) = v.split_once('.')?;
    Some((a.parse().ok()?, b.parse().ok()?))
}

/// Free space where the database and the local models live.
pub fn disk(config: &Config) -> Vec<Check> {
    let mut dirs: Vec<(&str, PathBuf, u64)> = Vec::new();
    if let Some(db) = sqlite_path(&config.database_url) {
        let dir = db
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        dirs.push(("disk data", dir, 1 << 30));
    }
    let models: Vec<PathBuf> = config
        .models
        .iter()
        .filter(|m| m.backend == BackendKind::Local)
        .filter_map(|m| m.model_path.as_deref().map(PathBuf::from))
        .filter(|p| !p.to_string_lossy().contains("://"))
        .collect();
    if let Some(first) = models.first() {
        let dir = if first.is_dir() {
            first.clone()
        } else {
            first
                .parent()
                .map(Path::to_path_buf)
                .unwrap_or_else(|| PathBuf::from("."))
        };
        dirs.push(("disk models", dir, 10 << 30));
    }
    dirs.into_iter()
        .map(|(name, dir, want)| {
            let existing = dir.ancestors().find(|p| p.exists()).unwrap_or(Path::new("."));
            match free_bytes(existing) {
                Some(free) if free >= want => {
                    Check::pass(name, format!("{}: {} free", dir.display(), gib(free)))
                }
                Some(free) => Check::warn(
                    name,
                    format!(
                        "{}: only {} free (want at least {})",
                        dir.display(),
                        gib(free),
                        gib(want)
                    ),
                    "free space or move the data/models directory to a larger volume",
                ),
                None => Check::skip(
                    name,
                    format!("{}: cannot read free space (`df` failed)", dir.display()),
                ),
            }
        })
        .collect()
}

fn gib(bytes: u64) -> String {
    format!("{:.1} GiB", bytes as f64 / f64::from(1u32 << 30))
}

/// Available bytes on the filesystem holding `path` (POSIX `df -Pk`).
fn free_bytes(path: &Path) -> Option<u64> {
    let out = Command::new("df").arg("-Pk").arg(path).output().ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let kb: u64 = text.lines().nth(1)?.split_whitespace().nth(3)?.parse().ok()?;
    Some(kb * 1024)
}

pub fn jwt_secret(config: &Config) -> Check {
    const NAME: &str = "jwt secret";
    let production = config.profile == Profile::Production;
    let Some(secret) = &config.auth.jwt_secret else {
        return if production {
            Check::fail(
                NAME,
                "not set",
                "set MOLTBOT_AUTH__JWT_SECRET_FILE (32+ random bytes, e.g. `openssl rand -base64 48`)",
            )
        } else {
            Check::skip(NAME, "not set (development profile)")
        };
    };
    let bytes = secret.expose().as_bytes();
    let mut distinct: Vec<u8> = bytes.to_vec();
    distinct.sort_unstable();
    distinct.dedup();
    let fix =
        "use 32+ random bytes, e.g. `openssl rand -base64 48`, from a file or a KMS (`_file` / `_command`)";
    if bytes.len() < 32 || distinct.len() < 10 {
        let detail = format!("weak: {} bytes, {} distinct", bytes.len(), distinct.len());
        return if production {
            Check::fail(NAME, detail, fix)
        } else {
            Check::warn(NAME, detail, fix)
        };
    }
    Check::pass(NAME, format!("{} bytes", bytes.len()))
}

/// The roots outgoing HTTPS (upstreams, webhooks, chat platforms) trusts: the Mozilla roots built in and
/// the system's (`SSL_CERT_FILE` / `SSL_CERT_DIR` when set) — where a private CA's root has to be.
pub fn trust_store() -> Check {
    const NAME: &str = "trust store";
    let t = moltbot_llm::tls::trust_store();
    let mut detail = format!("{} Mozilla roots, {} from the system store", t.mozilla, t.system);
    if t.skipped > 0 {
        detail.push_str(&format!(" ({} unparsable skipped)", t.skipped));
    }
    if t.errors.is_empty() {
        return Check::pass(NAME, detail);
    }
    Check::warn(
        NAME,
        format!("{detail}; unreadable: {}", t.errors.join("; ")),
        "point SSL_CERT_FILE / SSL_CERT_DIR at readable PEM files, or install the ca-certificates package",
    )
}

pub fn debug_listener(config: &Config) -> Check {
    const NAME: &str = "debug listener";
    match (config.debug_addr, config.profile) {
        (None, _) => Check::pass(NAME, "disabled"),
        (Some(addr), Profile::Production) => Check::fail(
            NAME,
            format!("enabled on {addr} in production"),
            "unset debug_addr / MOLTBOT_DEBUG_ADDR and drop --dev: it exposes the configuration and profiles",
        ),
        (Some(addr), Profile::Development) => Check::warn(
            NAME,
            format!("enabled on {addr} (development only)"),
            "keep it on loopback (server.debug_allow_cidrs) and never enable it in production",
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_paths() {
        assert_eq!(
            sqlite_path("sqlite://./data/m.db"),
            Some(PathBuf::from("./data/m.db"))
        );
        assert_eq!(sqlite_path("sqlite:m.db?mode=rwc"), Some(PathBuf::from("m.db")));
        assert_eq!(sqlite_path("sqlite::memory:"), None);
        assert_eq!(sqlite_path("postgres://x/y"), None);
    }

    #[test]
    fn cuda_version_from_the_banner() {
        let banner = "| NVIDIA-SMI 535.104.05   Driver Version: 535.104.05   CUDA Version: 12.2     |";
        assert_eq!(cuda_version(banner), Some((12, 2)));
        assert_eq!(cuda_version("no gpu"), None);
    }
}
