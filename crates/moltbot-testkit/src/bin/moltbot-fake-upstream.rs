//! The fake OpenAI-compatible upstream as a process, for end-to-end tests with real clients (the
//! OpenAI SDKs) and for quick measurements. Prints its base URL on the first line of stdout, then
//! serves until SIGINT or SIGTERM.
//!
//! ```text
//! moltbot-fake-upstream [--echo | --reply TEXT] [--chunks N] [--interval-ms N] [--status CODE]
//!                       [--flaky N]
//! ```
//!
//! `--flaky N`: the first 2N chat requests alternate between 503 and the normal reply, so N calls
//! succeed on their retry (then the script applies to every request).

use std::time::Duration;

use moltbot_testkit::{FakeConfig, FakeUpstream, Script};

fn usage() -> ! {
    eprintln!(
        "usage: moltbot-fake-upstream [--echo | --reply TEXT] [--chunks N] [--interval-ms N] [--status CODE] \
         [--flaky N]"
    );
    std::process::exit(2)
}

fn parse() -> (Script, usize) {
    let mut script = Script::echo();
    let mut flaky = 0;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().unwrap_or_else(|| usage());
        script = match arg.as_str() {
            "--flaky" => {
                flaky = value().parse().unwrap_or_else(|_| usage());
                script
            }
            "--echo" => Script {
                reply: moltbot_testkit::Reply::Echo,
                ..script
            },
            "--reply" => Script {
                reply: moltbot_testkit::Reply::Text(value()),
                ..script
            },
            "--chunks" => script.chunks(value().parse().unwrap_or_else(|_| usage())),
            "--interval-ms" => {
                script.chunk_interval(Duration::from_millis(value().parse().unwrap_or_else(|_| usage())))
            }
            "--status" => Script {
                status: Script::status(value().parse().unwrap_or_else(|_| usage())).status,
                ..script
            },
            _ => usage(),
        };
    }
    (script, flaky)
}

#[tokio::main]
async fn main() {
    let (script, flaky) = parse();
    let fake = FakeUpstream::start(FakeConfig {
        default_script: script.clone(),
        ..FakeConfig::default()
    })
    .await;
    for _ in 0..flaky {
        fake.push(Script::status(503));
        fake.push(script.clone());
    }
    println!("{}", fake.base_url());
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = term => {}
    }
    drop(fake);
}
