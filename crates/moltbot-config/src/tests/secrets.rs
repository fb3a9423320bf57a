//! Secrets: value, `_file`, `_command`, conflicts, and output never leaking into errors.

use std::time::{Duration, Instant};

use super::{Dir, assert_contains, env, env_opts, load_err, load_ok};
use crate::load::load_with;
use crate::{ConfigError, REDACTED, Secret};

const MARKER: &str = "LEAKED-MARKER-7f3a";

#[test]
fn secret_never_prints_itself() {
    let s = Secret::new("hunter2");
    assert_eq!(format!("{s}"), REDACTED);
    assert_eq!(format!("{s:?}"), REDACTED);
    assert_eq!(serde_json::to_string(&s).ok().as_deref(), Some("\"***\""));
    assert_eq!(s.expose(), "hunter2");
}

#[test]
fn secret_as_plain_value() {
    let dir = Dir::new();
    let opts = dir.with_file(
        "database_password = \"pw-file\"\n[auth]\njwt_secret = \"jwt-from-file-0123456789abcdef0123\"\n",
    );
    let c = load_ok(opts).config;
    assert_eq!(c.database_password.as_ref().map(Secret::expose), Some("pw-file"));
    assert_eq!(
        c.auth.jwt_secret.as_ref().map(Secret::expose),
        Some("jwt-from-file-0123456789abcdef0123")
    );
    assert!(!format!("{c:?}").contains("pw-file"));
}

#[test]
fn secret_from_file_trims_one_newline() {
    let dir = Dir::new();
    let pw = dir.write("pw", "pw-from-file\n\n");
    let jwt = dir.write("jwt", "jwt-from-file\r\n");
    let key = dir.write("key", "sk-from-file");
    let toml = format!(
        "database_password_file = {pw:?}\n[auth]\njwt_secret_file = {jwt:?}\n\
         [[models]]\nname = \"a\"\nendpoint = \"https://api.example.com/v1\"\napi_key_file = {key:?}\n"
    );
    let c = load_ok(dir.with_file(&toml)).config;
    assert_eq!(
        c.database_password.as_ref().map(Secret::expose),
        Some("pw-from-file\n")
    );
    assert_eq!(
        c.auth.jwt_secret.as_ref().map(Secret::expose),
        Some("jwt-from-file")
    );
    assert_eq!(c.models[0].keys()[0].expose(), "sk-from-file");

    let env_file = load_ok(env_opts(&[(
        "MOLTBOT_AUTH__JWT_SECRET_FILE",
        jwt.to_str().unwrap_or_default(),
    )]))
    .config;
    assert_eq!(
        env_file.auth.jwt_secret.as_ref().map(Secret::expose),
        Some("jwt-from-file")
    );
}

#[test]
fn missing_secret_file_names_key_and_path() {
    let msg = load_err(env_opts(&[(
        "MOLTBOT_DATABASE_PASSWORD_FILE",
        "/nonexistent/moltbot-pw",
    )]))
    .to_string();
    assert_contains(&msg, "could not resolve secret \"database_password\"");
    assert_contains(&msg, "/nonexistent/moltbot-pw");
    assert_contains(&msg, "MOLTBOT_DATABASE_PASSWORD_FILE");
}

#[test]
fn secret_from_command() {
    let c = load_ok(env_opts(&[(
        "MOLTBOT_DATABASE_PASSWORD_COMMAND",
        "printf '  pw-cmd\\n'",
    )]))
    .config;
    assert_eq!(c.database_password.as_ref().map(Secret::expose), Some("pw-cmd"));

    let dir = Dir::new();
    let toml = "[[models]]\nname = \"a\"\nendpoint = \"https://a.example/v1\"\n\
                [[models]]\nname = \"b\"\nendpoint = \"https://b.example/v1\"\napi_key_command = \"echo sk-b\"\n";
    let c = load_ok(dir.with_file(toml)).config;
    assert!(c.models[0].keys().is_empty());
    assert_eq!(c.models[1].keys()[0].expose(), "sk-b");
}

#[test]
fn failing_command_error_never_contains_output() {
    let cmd = format!("echo {MARKER}; echo {MARKER} >&2; exit 3");
    let err = load_err(env_opts(&[("MOLTBOT_AUTH__JWT_SECRET_COMMAND", &cmd)]));
    assert!(matches!(err, ConfigError::Secret { .. }));
    let msg = err.to_string();
    assert_contains(&msg, "could not resolve secret \"auth.jwt_secret\"");
    assert_contains(&msg, "exited with status 3");
    assert_contains(&msg, "MOLTBOT_AUTH__JWT_SECRET_COMMAND");
    assert!(!msg.contains(MARKER), "{msg}");
    assert!(!format!("{err:?}").contains(MARKER));

    let msg = load_err(env_opts(&[("MOLTBOT_AUTH__JWT_SECRET_COMMAND", "true")])).to_string();
    assert_contains(&msg, "printed nothing");
}

#[test]
fn slow_command_times_out() {
    let cmd = format!("echo {MARKER}; sleep 5");
    let started = Instant::now();
    let err = match load_with(
        &env_opts(&[("MOLTBOT_DATABASE_PASSWORD_COMMAND", &cmd)]),
        Duration::from_millis(300),
    ) {
        Ok(_) => panic!("expected a timeout"),
        Err(e) => e.to_string(),
    };
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "took {:?}",
        started.elapsed()
    );
    assert_contains(&err, "timed out after 300ms");
    assert_contains(&err, "database_password");
    assert!(!err.contains(MARKER));
}

#[test]
fn two_forms_of_one_secret_are_an_error() {
    let dir = Dir::new();
    let opts = dir.with_file("[auth]\njwt_secret = \"from-file-value\"\njwt_secret_command = \"echo x\"\n");
    let msg = load_err(opts).to_string();
    assert_contains(
        &msg,
        "secret \"auth.jwt_secret\" is set more than once: jwt_secret (in ",
    );
    assert_contains(&msg, "moltbot.toml) and jwt_secret_command (in ");
    assert!(!msg.contains("from-file-value"));

    let toml = "[[models]]\nname = \"a\"\nendpoint = \"https://a.example/v1\"\napi_key = \"k\"\napi_key_file = \"/x\"\n";
    let msg = load_err(dir.with_file(toml)).to_string();
    assert_contains(&msg, "secret \"models[0].api_key\" is set more than once");

    let msg = load_err(env_opts(&[
        ("MOLTBOT_DATABASE_PASSWORD", "pw"),
        ("MOLTBOT_DATABASE_PASSWORD_FILE", "/x"),
    ]))
    .to_string();
    assert_contains(&msg, "\"database_password\" is set more than once");
}

#[test]
fn higher_layer_replaces_every_form_of_a_secret() {
    let dir = Dir::new();
    let mut opts =
        dir.with_file("database_password_file = \"/nonexistent/pw\"\n[auth]\njwt_secret = \"file\"\n");
    opts.env = env(&[
        ("MOLTBOT_DATABASE_PASSWORD", "pw-env"),
        ("MOLTBOT_AUTH__JWT_SECRET_COMMAND", "echo jwt-env"),
    ]);
    let c = load_ok(opts).config;
    assert_eq!(c.database_password.as_ref().map(Secret::expose), Some("pw-env"));
    assert_eq!(c.auth.jwt_secret.as_ref().map(Secret::expose), Some("jwt-env"));
}

#[test]
fn secret_of_wrong_type_is_not_echoed() {
    let dir = Dir::new();
    let msg = load_err(dir.with_file("database_password = 987654321\n")).to_string();
    assert_contains(
        &msg,
        "invalid value for \"database_password\": expected a string, got a number",
    );
    assert!(!msg.contains("987654321"));
}
