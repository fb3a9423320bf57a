//! `moltbot chat` as an operator uses it: the real binary in a pseudo-terminal (expectrl) against a real
//! `moltbot serve` whose two models (`alpha`, `beta`) are served by an in-process fake upstream; also
//! piped (no terminal) and `--local` with a synthetic GGUF model.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use expectrl::process::unix::WaitStatus;
use expectrl::{ControlCode, Eof, Expect, Regex};
use moltbot_testkit::{FakeConfig, FakeUpstream, RecordedRequest, Script};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_moltbot");
/// Generous: two cores shared by builds and other tests.
const EXPECT_TIMEOUT: Duration = Duration::from_secs(30);

/// A fake upstream, a `moltbot serve` in a temp dir, and the admin key it created.
struct Server {
    rt: tokio::runtime::Runtime,
    fake: FakeUpstream,
    dir: tempfile::TempDir,
    child: Child,
    chat_addr: String,
    key: String,
}

impl Server {
    fn start() -> Server {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let fake = rt.block_on(FakeUpstream::start(FakeConfig {
            default_script: Script::echo(),
            models: vec!["fake-alpha".into(), "fake-beta".into()],
            record: true,
        }));
        let dir = tempfile::tempdir().unwrap();
        let toml = format!(
            r#"
chat_addr = "127.0.0.1:0"
admin_addr = "127.0.0.1:0"
database_url = "sqlite://{db}"

[[models]]
name = "alpha"
endpoint = "{up}"
upstream_model = "fake-alpha"

[[models]]
name = "beta"
endpoint = "{up}"
upstream_model = "fake-beta"
"#,
            db = dir.path().join("moltbot.db").display(),
            up = fake.base_url(),
        );
        std::fs::write(dir.path().join("moltbot.toml"), toml).unwrap();
        let ready = dir.path().join("ready.json");
        let log = std::fs::File::create(dir.path().join("serve.log")).unwrap();
        let mut child = moltbot(dir.path())
            .args(["serve", "--ready-file"])
            .arg(&ready)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        let started = Instant::now();
        while !ready.exists() {
            if let Some(status) = child.try_wait().unwrap() {
                panic!(
                    "serve exited with {status}: {}",
                    read(&dir.path().join("serve.log"))
                );
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "serve not ready in 60 s"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        let addrs: Value = serde_json::from_str(&read(&ready)).unwrap();
        let chat_addr = addrs["chat_addr"].as_str().unwrap().to_owned();
        // The first start on SQLite created the admin key and wrote it here (mode 0600).
        let key = read(&dir.path().join("data/admin-key.txt")).trim().to_owned();
        assert!(key.starts_with("mb_"), "bootstrap key file: {key:?}");
        Server {
            rt,
            fake,
            dir,
            child,
            chat_addr,
            key,
        }
    }

    fn url(&self) -> String {
        format!("http://{}", self.chat_addr)
    }

    /// `moltbot chat` in a pseudo-terminal, key from the environment.
    fn chat_pty(&self) -> expectrl::session::OsSession {
        let mut cmd = moltbot(self.dir.path());
        cmd.env("TERM", "xterm")
            .env("MOLTBOT_API_KEY", &self.key)
            .args(["chat", "--url", &self.url()]);
        let mut s = expectrl::Session::spawn(cmd).expect("spawn moltbot chat in a pty");
        s.set_expect_timeout(Some(EXPECT_TIMEOUT));
        s
    }

    /// Until the newest conversation holds an `incomplete` assistant reply (a cancelled turn, stored).
    fn wait_for_incomplete_reply(&self) {
        let http = reqwest::Client::new();
        let get = |path: String| {
            let req = http.get(format!("{}{path}", self.url())).bearer_auth(&self.key);
            async move { req.send().await.unwrap().json::<Value>().await.unwrap() }
        };
        let started = Instant::now();
        loop {
            let found = self.rt.block_on(async {
                let list = get("/v1/conversations?limit=1".to_owned()).await;
                let Some(id) = list["data"][0]["id"].as_str() else {
                    return false;
                };
                let items = get(format!("/v1/conversations/{id}/items?order=asc")).await;
                items["data"].as_array().is_some_and(|items| {
                    items
                        .iter()
                        .any(|i| i["role"] == "assistant" && i["status"] == "incomplete")
                })
            });
            if found {
                return;
            }
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "the cancelled reply was not stored as incomplete within 20 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn chat_requests(&self) -> Vec<RecordedRequest> {
        self.fake.chat_requests()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A command with a clean environment (no MOLTBOT_* from the developer's shell).
fn moltbot(dir: &Path) -> Command {
    let mut c = Command::new(BIN);
    c.current_dir(dir)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default());
    c
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The text of the last message of a recorded upstream request, and the number of messages.
fn last_message(req: &RecordedRequest) -> (String, usize) {
    let msgs = req.body["messages"].as_array().expect("messages");
    let last = msgs.last().unwrap();
    (
        last["content"].as_str().unwrap_or_default().to_owned(),
        msgs.len(),
    )
}

fn text(captures: &expectrl::Captures) -> String {
    String::from_utf8_lossy(captures.before()).into_owned()
}

fn expect_exit_0(mut p: expectrl::session::OsSession) {
    p.expect(Eof).unwrap();
    match p.get_process().wait().unwrap() {
        WaitStatus::Exited(_, code) => assert_eq!(code, 0, "exit code"),
        other => panic!("moltbot chat ended with {other:?}"),
    }
}

#[test]
fn streams_continues_switches_models_shows_history_and_starts_anew() {
    let srv = Server::start();
    let mut p = srv.chat_pty();
    p.expect("model alpha via").unwrap();
    p.expect("alpha> ").unwrap();

    // A streamed reply (the fake echoes the last user message in three chunks).
    p.send_line("hello there").unwrap();
    p.expect("echo: hello there").unwrap();
    p.expect("alpha> ").unwrap();

    // Multi-line input: a trailing backslash continues the line. Typed in one go: no key typed ahead
    // is lost between the two prompts.
    p.send("first line\\\rsecond line\r").unwrap();
    p.expect("echo: first line\r\nsecond line").unwrap();
    p.expect("alpha> ").unwrap();
    // … and a """ block.
    p.send_line("\"\"\"").unwrap();
    p.expect("... ").unwrap();
    p.send_line("block one").unwrap();
    p.send_line("").unwrap();
    p.send_line("block three").unwrap();
    p.send_line("\"\"\"").unwrap();
    p.expect("echo: block one\r\n\r\nblock three").unwrap();
    p.expect("alpha> ").unwrap();
    // … and a (bracketed) paste of several lines is one message, even when it starts with a slash.
    p.send("\x1b[200~/pasted one\npasted two\x1b[201~\r").unwrap();
    p.expect("echo: /pasted one\r\npasted two").unwrap();
    p.expect("alpha> ").unwrap();

    let reqs = srv.chat_requests();
    assert_eq!(reqs.len(), 4, "one upstream request per message");
    assert_eq!(
        last_message(&reqs[1]).0,
        "first line\nsecond line",
        "sent as one message"
    );
    assert_eq!(last_message(&reqs[2]).0, "block one\n\nblock three");
    assert_eq!(last_message(&reqs[3]).0, "/pasted one\npasted two");
    // The server kept the conversation: each request carries the earlier turns.
    assert_eq!(last_message(&reqs[0]).1, 1);
    assert_eq!(last_message(&reqs[1]).1, 3);
    assert_eq!(last_message(&reqs[2]).1, 5);
    assert!(reqs.iter().all(|r| r.body["model"] == "fake-alpha"));

    // /history prints the stored conversation.
    p.send_line("/history").unwrap();
    p.expect("conversation conv_").unwrap();
    p.expect("user: hello there").unwrap();
    p.expect("assistant: echo: hello there").unwrap();
    p.expect("user: first line\r\nsecond line").unwrap();
    p.expect("assistant: echo: block one").unwrap();
    p.expect("alpha> ").unwrap();

    // /model lists the server's models; /model NAME switches, in the same conversation.
    p.send_line("/model").unwrap();
    let listed = text(&p.expect("alpha> ").unwrap());
    assert!(listed.contains("model: alpha"), "{listed}");
    assert!(
        listed.contains("* alpha") && listed.contains("  beta"),
        "{listed}"
    );
    p.send_line("/model nope").unwrap();
    p.expect("the model `nope` is not served; available: alpha, beta")
        .unwrap();
    p.send_line("/model beta").unwrap();
    p.expect("beta> ").unwrap();
    p.send_line("which model").unwrap();
    p.expect("echo: which model").unwrap();
    p.expect("beta> ").unwrap();
    let reqs = srv.chat_requests();
    assert_eq!(reqs.len(), 5);
    assert_eq!(reqs[4].body["model"], "fake-beta");
    assert_eq!(last_message(&reqs[4]).1, 9, "the same conversation continues");

    // /new starts a new conversation: no earlier turns go upstream, /history shows only the new one.
    p.send_line("/new").unwrap();
    p.expect("(new conversation)").unwrap();
    p.send_line("fresh start").unwrap();
    p.expect("echo: fresh start").unwrap();
    p.expect("beta> ").unwrap();
    let reqs = srv.chat_requests();
    assert_eq!(last_message(&reqs[5]), ("fresh start".to_owned(), 1));
    p.send_line("/history").unwrap();
    let history = text(&p.expect("assistant: echo: fresh start").unwrap());
    assert!(history.contains("user: fresh start"), "{history}");
    assert!(!history.contains("hello there"), "{history}");

    p.send_line("/help").unwrap();
    p.expect("/model [NAME]").unwrap();
    p.expect("beta> ").unwrap();

    // Ctrl-D leaves with status 0.
    p.send(ControlCode::EndOfTransmission).unwrap();
    expect_exit_0(p);
}

#[test]
fn ctrl_c_cancels_a_streaming_reply_and_the_session_goes_on() {
    let srv = Server::start();
    let full: String = ["AAAA", "BBBB", "CCCC", "DDDD", "EEEE", "FFFF", "GGGG", "HHHH"]
        .iter()
        .cycle()
        .take(24)
        .map(|w| format!("{w} "))
        .collect();
    srv.fake.push(
        Script::text(full.clone())
            .chunks(24)
            .chunk_interval(Duration::from_millis(400)),
    );
    let mut p = srv.chat_pty();
    p.expect("alpha> ").unwrap();
    p.send_line("tell me a long story").unwrap();
    p.expect("AAAA BBBB").unwrap();
    // Ctrl-C while the reply streams: the reply stops, the prompt returns.
    p.send(ControlCode::EndOfText).unwrap();
    p.expect("[cancelled]").unwrap();
    p.expect("alpha> ").unwrap();
    let closed = srv.rt.block_on(srv.fake.wait_for_close(Duration::from_secs(10)));
    assert!(closed, "the server dropped the upstream request");

    // The server stores the delivered prefix once it notices the client left (at its next write to
    // it); a follow-up sent before that would not see the prefix as context, so wait for it here.
    srv.wait_for_incomplete_reply();

    // Ctrl-C at an empty prompt does not leave.
    p.send(ControlCode::EndOfText).unwrap();
    p.expect("Ctrl-D or /quit leaves").unwrap();
    assert!(p.get_process().is_alive().unwrap());

    // The next message works, in the same conversation, with the truncated reply as context.
    p.send_line("and then?").unwrap();
    p.expect("echo: and then?").unwrap();
    p.expect("alpha> ").unwrap();
    let reqs = srv.chat_requests();
    assert_eq!(reqs.len(), 2);
    let msgs = reqs[1].body["messages"].as_array().unwrap();
    assert_eq!(msgs.len(), 3, "{msgs:?}");
    let partial = msgs[1]["content"].as_str().unwrap();
    assert!(partial.starts_with("AAAA BBBB"), "{partial:?}");
    assert!(
        partial.len() < full.len(),
        "the stored reply is the truncated prefix: {partial:?}"
    );

    p.send_line("/history").unwrap();
    let m = p
        .expect(Regex(r"assistant \[incomplete\]: ([A-H ]+)\r\n"))
        .unwrap();
    let shown = String::from_utf8_lossy(m.get(1).unwrap()).into_owned();
    assert_eq!(shown.trim_end(), partial.trim_end());
    p.expect("assistant: echo: and then?").unwrap();

    p.send(ControlCode::EndOfTransmission).unwrap();
    expect_exit_0(p);
}

/// Run `moltbot chat` with `input` on a pipe; (exit code, stdout, stderr).
fn piped(dir: &Path, args: &[&str], envs: &[(&str, &str)], input: &str) -> (i32, String, String) {
    let mut cmd = moltbot(dir);
    cmd.arg("chat")
        .args(args)
        .envs(envs.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    let start = Instant::now();
    loop {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(120), "chat did not finish");
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut out = String::new();
    let mut err = String::new();
    child.stdout.take().unwrap().read_to_string(&mut out).unwrap();
    child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    (child.wait().unwrap().code().unwrap_or(-1), out, err)
}

#[test]
fn piped_input_is_read_line_by_line_with_the_configured_address_and_key_file() {
    let srv = Server::start();
    // No --url, no key: the address comes from the configuration (here the bound one, as a flag) and
    // the key from ./data/admin-key.txt, as an operator on the server's host would have it.
    let input = "hello\n\"\"\"\nmulti\nline\n\"\"\"\n/history\n";
    let (code, out, err) = piped(srv.dir.path(), &["--chat-addr", &srv.chat_addr], &[], input);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.starts_with("echo: hello\necho: multi\nline\n"), "{out}");
    assert!(
        out.contains("user: hello\nassistant: echo: hello\nuser: multi\nline\n"),
        "{out}"
    );
    assert!(!out.contains("> "), "no prompt without a terminal: {out}");
    assert!(
        !out.contains(&srv.key) && !err.contains(&srv.key),
        "the key leaked"
    );
    let reqs = srv.chat_requests();
    assert_eq!(last_message(&reqs[1]), ("multi\nline".to_owned(), 3));
    assert!(
        reqs.iter().all(|r| r.bearer().is_none_or(|b| b != srv.key)),
        "the client key never goes upstream"
    );

    // Server errors are the OpenAI message and code, and the exit status says so.
    let (code, out, err) = piped(
        srv.dir.path(),
        &["--url", &srv.url(), "--conversation", "conv_doesnotexist"],
        &[("MOLTBOT_API_KEY", srv.key.as_str())],
        "hi\n",
    );
    assert_eq!(code, 1, "{out}\n{err}");
    assert!(
        err.contains(
            "error: Conversation with id 'conv_doesnotexist' not found. (code conversation_not_found, HTTP 404)"
        ),
        "{err}"
    );

    // A wrong key is refused before the first prompt.
    let (code, _, err) = piped(
        srv.dir.path(),
        &[
            "--url",
            &srv.url(),
            "--api-key",
            "mb_wrongwrongwrongwrongwrongwrongwrong",
        ],
        &[],
        "hi\n",
    );
    assert_eq!(code, 1);
    assert!(err.contains("HTTP 401"), "{err}");
    assert!(!err.contains("mb_wrongwrong"), "the key leaked: {err}");
}

#[test]
fn local_mode_runs_the_configured_model_in_process() {
    use moltbot_engine::gguf::{SyntheticShape, TensorType, write_synthetic};
    let dir = tempfile::tempdir().unwrap();
    let model: PathBuf = dir.path().join("tiny.gguf");
    write_synthetic(&model, &SyntheticShape::tiny(), TensorType::F16, 7).unwrap();
    let toml = format!(
        r#"
database_url = "sqlite://{db}"

[[models]]
name = "tiny"
backend = "local"
model_path = "{model}"
context_window = 512
max_tokens = 8
parallel = 1
threads = 1
"#,
        db = dir.path().join("m.db").display(),
        model = model.display(),
    );
    std::fs::write(dir.path().join("moltbot.toml"), toml).unwrap();
    let (code, out, err) = piped(dir.path(), &["--local"], &[], "hi there\n/history\n/model\n");
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(
        out.contains("conversation conv_"),
        "stored like the server stores: {out}"
    );
    assert!(out.contains("user: hi there\nassistant"), "{out}");
    assert!(out.contains("model: tiny"), "{out}");
}
