//! The binary's access-control commands: the bootstrap admin key (`init-db`, first `serve`), `keys
//! create|list|revoke` and the offline `token`.

use std::path::Path;
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_moltbot");
const JWT_SECRET: &str = "cli-test-jwt-secret-0123456789abcdef0123";

fn moltbot(dir: &Path) -> Command {
    let mut c = Command::new(BIN);
    c.current_dir(dir)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("MOLTBOT_AUTH__JWT_SECRET", JWT_SECRET);
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

fn key_lines(list: &str) -> Vec<&str> {
    list.lines().filter(|l| l.starts_with("key_")).collect()
}

#[test]
fn init_db_bootstraps_one_admin_key_into_a_private_file() {
    let dir = tempfile::tempdir().unwrap();
    let (code, out, err) = run(moltbot(dir.path()).arg("init-db"));
    assert_eq!(code, 0, "{err}");
    let file = dir.path().join("data/admin-key.txt");
    let secret = std::fs::read_to_string(&file).unwrap().trim().to_owned();
    assert!(secret.starts_with("mb_") && secret.len() > 40, "{secret}");
    assert!(
        out.contains("Admin API key written to ./data/admin-key.txt"),
        "{out}"
    );
    assert!(
        !out.contains(&secret) && !err.contains(&secret),
        "not a terminal: the secret is not printed"
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }
    // Never twice, even after the admin key is revoked.
    let (_, list, _) = run(moltbot(dir.path()).args(["keys", "list"]));
    let keys = key_lines(&list);
    assert_eq!(keys.len(), 1, "{list}");
    assert!(
        keys[0].contains("admin,metrics") && keys[0].contains("active"),
        "{list}"
    );
    let id = keys[0].split_whitespace().next().unwrap();
    assert_eq!(run(moltbot(dir.path()).args(["keys", "revoke", id])).0, 0);
    let (code, out, _) = run(moltbot(dir.path()).args(["init-db", "--print-admin-key"]));
    assert_eq!(code, 0);
    assert!(!out.contains("Admin API key"), "{out}");
    let (_, list, _) = run(moltbot(dir.path()).args(["keys", "list"]));
    assert_eq!(key_lines(&list).len(), 1);
    assert!(list.contains("revoked"), "{list}");
}

#[test]
fn print_admin_key_and_the_bootstrap_env_var() {
    let dir = tempfile::tempdir().unwrap();
    let (code, out, _) = run(moltbot(dir.path()).args(["init-db", "--print-admin-key"]));
    assert_eq!(code, 0);
    let secret = std::fs::read_to_string(dir.path().join("data/admin-key.txt")).unwrap();
    assert!(out.contains(secret.trim()), "{out}");

    let dir = tempfile::tempdir().unwrap();
    let supplied = "mb_supplied0123456789abcdef0123456789abcdef";
    let (code, out, err) = run(moltbot(dir.path())
        .arg("init-db")
        .env("MOLTBOT_BOOTSTRAP_ADMIN_KEY", supplied));
    assert_eq!(code, 0, "{err}");
    assert!(!out.contains(supplied) && !err.contains(supplied));
    assert!(
        !dir.path().join("data/admin-key.txt").exists(),
        "the operator already has it"
    );
    let (code, out, err) = run(moltbot(dir.path()).args(["token", "--api-key", supplied]));
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("access_token"), "{out}");
}

#[test]
fn keys_create_list_revoke_and_offline_tokens() {
    let dir = tempfile::tempdir().unwrap();
    assert_eq!(run(moltbot(dir.path()).arg("init-db")).0, 0);
    let (code, out, err) = run(moltbot(dir.path()).args([
        "keys",
        "create",
        "--name",
        "ci",
        "--scopes",
        "chat",
        "--rpm",
        "5",
        "--expires",
        "30d",
    ]));
    assert_eq!(code, 0, "{err}");
    let secret = out.trim().to_owned();
    assert!(secret.starts_with("mb_"), "{out}");
    assert!(err.contains("scopes chat"), "{err}");
    let (_, list, _) = run(moltbot(dir.path()).args(["keys", "list"]));
    assert!(!list.contains(&secret), "listings never show secrets");
    let line = key_lines(&list)
        .into_iter()
        .find(|l| l.contains(" ci "))
        .unwrap()
        .to_owned();
    assert!(line.contains(&secret[..11]), "the visible prefix: {line}");

    let (code, out, err) = run(moltbot(dir.path()).args(["token", "--api-key", &secret, "--ttl", "1h"]));
    assert_eq!(code, 0, "{err}");
    let token: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(token["token_type"], "Bearer");
    assert_eq!(token["expires_in"], 3600);
    let (code, _, err) = run(moltbot(dir.path()).args(["token", "--api-key", &secret, "--ttl", "30days"]));
    assert_ne!(code, 0);
    assert!(err.contains("expires_in") || err.contains("seconds"), "{err}");

    let id = line.split_whitespace().next().unwrap();
    assert_eq!(run(moltbot(dir.path()).args(["keys", "revoke", id])).0, 0);
    let (code, _, err) = run(moltbot(dir.path()).args(["token", "--api-key", &secret]));
    assert_ne!(code, 0);
    assert!(err.contains("not valid") && !err.contains(&secret), "{err}");
    assert_ne!(run(moltbot(dir.path()).args(["keys", "revoke", "key_nope"])).0, 0);
    let (code, _, err) = run(moltbot(dir.path()).args(["keys", "create", "--name", "x", "--scopes", "root"]));
    assert_ne!(code, 0);
    assert!(err.contains("unknown scope `root`"), "{err}");
    // Without a configured signing secret an offline token could never be verified.
    let (code, _, err) = run(moltbot(dir.path())
        .args(["token", "--api-key", &secret])
        .env_remove("MOLTBOT_AUTH__JWT_SECRET"));
    assert_ne!(code, 0);
    assert!(err.contains("auth.jwt_secret"), "{err}");
}
