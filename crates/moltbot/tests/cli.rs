//! The binary as an operator runs it: init-db, config show/check, serve (bind errors, schema checks,
//! ready file, SIGTERM).

use std::io::Read;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_moltbot");

/// A command with a clean environment (no MOLTBOT_* or seed variables from the developer's shell).
fn moltbot(dir: &Path) -> Command {
    let mut c = Command::new(BIN);
    c.current_dir(dir)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default());
    c
}

fn run(cmd: &mut Command) -> (i32, String, String) {
    let Output {
        status,
        stdout,
        stderr,
    } = cmd.output().expect("run moltbot");
    (
        status.code().unwrap_or(-1),
        String::from_utf8_lossy(&stdout).into(),
        String::from_utf8_lossy(&stderr).into(),
    )
}

fn wait_ready(child: &mut Child, ready: &Path) -> serde_json::Value {
    let start = Instant::now();
    while !ready.exists() {
        if let Some(status) = child.try_wait().unwrap() {
            let mut err = String::new();
            child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
            panic!("moltbot exited with {status}: {err}");
        }
        assert!(start.elapsed() < Duration::from_secs(30), "not ready within 30 s");
        std::thread::sleep(Duration::from_millis(20));
    }
    serde_json::from_str(&std::fs::read_to_string(ready).unwrap()).unwrap()
}

/// `moltbot serve` on ephemeral ports in `dir`, writing `ready`, with a short shutdown delay.
fn serve_ephemeral(dir: &Path, ready: &Path) -> Child {
    moltbot(dir)
        .args([
            "serve",
            "--chat-addr",
            "127.0.0.1:0",
            "--admin-addr",
            "127.0.0.1:0",
            "--ready-file",
        ])
        .arg(ready)
        .env("MOLTBOT_SERVER__SHUTDOWN_DELAY", "100ms")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// A child process killed when dropped (a failing test leaves no server running).
struct KillOnDrop(Option<Child>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(c) = self.0.as_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn sigterm(child: &Child) {
    // std has no way to send a signal; `kill` is what an operator (or Kubernetes) effectively does.
    Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status()
        .unwrap();
}

#[test]
fn init_db_twice_reports_the_same_version() {
    let dir = tempfile::tempdir().unwrap();
    let (c1, out1, err1) = run(moltbot(dir.path()).arg("init-db"));
    assert_eq!(c1, 0, "{err1}");
    let (c2, out2, _) = run(moltbot(dir.path()).arg("init-db"));
    assert_eq!(c2, 0);
    assert!(out1.contains("sqlite schema version"), "{out1}");
    assert_eq!(out1.lines().next(), out2.lines().next());
    assert!(
        dir.path().join("data/moltbot.db").exists(),
        "default database path ./data/moltbot.db"
    );
}

#[test]
fn config_show_redacts_every_secret_source() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("jwt.txt"),
        "file-secret-0123456789-0123456789-abcdef\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("moltbot.toml"),
        "database_password = \"pw-in-file-77\"\n[[models]]\nname = \"m\"\nendpoint = \"https://x.example/v1\"\n\
         api_key_command = \"echo cmd-secret-4242\"\napi_keys = [\"list-secret-5151\"]\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join(".env"),
        "API_KEY=dotenv-secret-9191\nMODEL_ENDPOINT=https://seed.example/v1/chat\n",
    )
    .unwrap();
    let (code, out, err) = run(moltbot(dir.path())
        .args(["config", "show"])
        .env("MOLTBOT_AUTH__JWT_SECRET_FILE", dir.path().join("jwt.txt")));
    assert_eq!(code, 0, "{err}");
    for secret in [
        "file-secret-0123456789",
        "pw-in-file-77",
        "cmd-secret-4242",
        "list-secret-5151",
        "dotenv-secret-9191",
    ] {
        assert!(
            !out.contains(secret) && !err.contains(secret),
            "{secret} leaked:\n{out}"
        );
    }
    assert!(out.matches("***").count() >= 5, "{out}");
    assert!(
        out.contains("https://seed.example/v1"),
        "the seed endpoint from .env is the default model: {out}"
    );
}

#[test]
fn config_check_fails_with_a_precise_message() {
    let dir = tempfile::tempdir().unwrap();
    let (code, out, _) = run(moltbot(dir.path()).args(["config", "check"]));
    assert_eq!(code, 0);
    assert!(out.contains("configuration is valid"), "{out}");
    let (code, _, err) = run(moltbot(dir.path())
        .args(["config", "check"])
        .env("MOLTBOT_CHAT_ADDR", "nonsense"));
    assert_ne!(code, 0);
    assert!(err.contains("chat_addr") && err.contains("nonsense"), "{err}");
    let (code, _, err) = run(moltbot(dir.path())
        .args(["config", "check", "--profile", "production", "--dev"])
        .env("MOLTBOT_AUTH__JWT_SECRET", "0123456789abcdef0123456789abcdef"));
    assert_ne!(code, 0);
    assert!(
        err.contains("debug listener is refused in the production profile"),
        "{err}"
    );
}

#[test]
fn serve_reports_bind_failures_and_exits_non_zero() {
    let dir = tempfile::tempdir().unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let (code, _, err) =
        run(moltbot(dir.path()).args(["serve", "--chat-addr", &addr, "--admin-addr", "127.0.0.1:0"]));
    assert_ne!(code, 0);
    assert!(
        err.contains(&addr) && err.contains("address already in use") && err.contains("dialog"),
        "{err}"
    );
}

#[test]
fn serve_writes_the_ready_file_and_stops_cleanly_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let ready = dir.path().join("ready.json");
    let mut child = serve_ephemeral(dir.path(), &ready);
    let addrs = wait_ready(&mut child, &ready);
    let chat = addrs["chat_addr"].as_str().unwrap();
    assert!(!chat.ends_with(":0"));
    let started = Instant::now();
    sigterm(&child);
    let status = child.wait().unwrap();
    assert!(status.success(), "exit status {status}");
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[test]
fn healthcheck_is_zero_while_ready_and_one_once_stopped() {
    let dir = tempfile::tempdir().unwrap();
    let ready = dir.path().join("ready.json");
    let child = serve_ephemeral(dir.path(), &ready);
    // Killed if an assertion fails before the SIGTERM below (no server left behind).
    let mut child = KillOnDrop(Some(child));
    let addrs = wait_ready(child.0.as_mut().unwrap(), &ready);
    let chat = addrs["chat_addr"].as_str().unwrap().to_owned();
    // The default URL comes from the configured dialog address (here given as a flag).
    let (code, _, err) = run(moltbot(dir.path()).args(["--chat-addr", &chat, "healthcheck"]));
    assert_eq!(code, 0, "{err}");
    // Any answer but a 2xx is unhealthy (here: /v1/models without a key).
    let (code, _, err) =
        run(moltbot(dir.path()).args(["healthcheck", "--url", &format!("http://{chat}/v1/models")]));
    assert_eq!(code, 1);
    assert!(err.contains("answered 401"), "{err}");
    let mut server = child.0.take().unwrap();
    sigterm(&server);
    assert!(server.wait().unwrap().success());
    let (code, _, err) =
        run(moltbot(dir.path()).args(["--chat-addr", &chat, "healthcheck", "--timeout", "1s"]));
    assert_eq!(code, 1);
    assert!(err.starts_with("unhealthy: "), "{err}");
}

mod postgres {
    use super::*;

    /// A fresh schema on the test server, or `None` (a failure under CI=true) when unset.
    fn schema_url() -> Option<String> {
        let Ok(base) = std::env::var("MOLTBOT_TEST_POSTGRES_URL") else {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "CI=true requires MOLTBOT_TEST_POSTGRES_URL"
            );
            eprintln!("skipping: MOLTBOT_TEST_POSTGRES_URL is not set");
            return None;
        };
        let schema = format!("mbcli_{}", uuid::Uuid::new_v4().simple());
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            use sqlx::Connection;
            let mut conn = sqlx::PgConnection::connect(&base)
                .await
                .expect("connect to PostgreSQL");
            sqlx::query(&format!("CREATE SCHEMA {schema}"))
                .execute(&mut conn)
                .await
                .unwrap();
        });
        let sep = if base.contains('?') { '&' } else { '?' };
        Some(format!("{base}{sep}options=-c%20search_path%3D{schema}"))
    }

    #[test]
    fn init_db_twice_and_serve_refuses_an_old_schema() {
        let Some(url) = schema_url() else { return };
        let dir = tempfile::tempdir().unwrap();
        // An empty schema: serve refuses without --migrate and says how to fix it.
        let (code, _, err) = run(moltbot(dir.path()).args([
            "serve",
            "--chat-addr",
            "127.0.0.1:0",
            "--admin-addr",
            "127.0.0.1:0",
            "--database-url",
            &url,
        ]));
        assert_ne!(code, 0);
        assert!(
            err.contains("schema") && err.contains("--migrate") && err.contains("init-db"),
            "{err}"
        );

        let (c1, out1, err1) = run(moltbot(dir.path()).args(["init-db", "--database-url", &url]));
        assert_eq!(c1, 0, "{err1}");
        let (c2, out2, _) = run(moltbot(dir.path()).args(["init-db", "--database-url", &url]));
        assert_eq!(c2, 0);
        assert!(out1.contains("postgres schema version"), "{out1}");
        assert_eq!(out1.lines().next(), out2.lines().next());
        assert!(out1.contains("Admin API key written to"), "{out1}");
        assert!(!out2.contains("Admin API key"), "bootstrapped once: {out2}");
        assert!(!err1.contains("postgres://"), "no URL in the output");

        // Now current: serve starts.
        let ready = dir.path().join("ready.json");
        let mut child = moltbot(dir.path())
            .args([
                "serve",
                "--chat-addr",
                "127.0.0.1:0",
                "--admin-addr",
                "127.0.0.1:0",
                "--database-url",
                &url,
            ])
            .arg("--ready-file")
            .arg(&ready)
            .env("MOLTBOT_SERVER__SHUTDOWN_DELAY", "50ms")
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        wait_ready(&mut child, &ready);
        sigterm(&child);
        assert!(child.wait().unwrap().success());
    }
}
