//! The fake OpenAI-compatible upstream as a process, for end-to-end tests with real clients (the
//! OpenAI SDKs), chaos tests and quick measurements. Prints its base URL on the first line of stdout,
//! then serves until SIGINT or SIGTERM; with `--fault-rate`, it then prints one JSON line counting the
//! chat requests and the faults it injected, in all and on requests that asked for a stream
//! (`{"requests": N, "faults": {"429": n, …}, "stream_faults": {…}}`).
//!
//! A request without `"stream": true` gets one JSON reply; its faults take the same shape where they
//! can: `cut`/`cut-late` send half the body and break the connection, `garbage` a body that is not
//! JSON, `stall-late` half the body and then silence, `drip` the whole body after the pauses.
//!
//! ```text
//! moltbot-fake-upstream [--echo | --reply TEXT] [--chunks N] [--interval-ms N] [--status CODE]
//!                       [--flaky N] [--fault-rate P [--faults LIST] [--seed N]
//!                       [--retry-after SECS] [--drip-ms N]]
//! ```
//!
//! `--flaky N`: the first 2N chat requests alternate between 503 and the normal reply, so N calls
//! succeed on their retry (then the script applies to every request).
//!
//! `--fault-rate P`: each chat request (after the `--flaky` ones) is faulted with probability P, the
//! fault drawn uniformly from `--faults` (comma-separated; default: every kind below except the
//! `-late` ones) by a PRNG seeded with `--seed` (default 1), so a run is reproducible:
//!
//! | kind | what the request gets |
//! |---|---|
//! | `429` | 429 with `Retry-After: --retry-after` (default 1) |
//! | `500`, `502`, `503` | that status with an OpenAI error envelope |
//! | `reset` | the connection closed without a status line |
//! | `cut` | 200, the role chunk, then the connection breaks (before any content) |
//! | `garbage` | 200, the role chunk, an event that is not JSON, then the connection breaks |
//! | `timeout` | nothing at all, ever (the client's first-byte timeout must fire) |
//! | `drip` | the whole reply, slowly: headers after `--drip-ms` (default 250), then 6 chunks that far apart |
//! | `cut-late` | 200, the first content chunk, then the connection breaks (too late to retry) |
//! | `stall-late` | 200, the first content chunk, then silence (the idle timeout must fire) |

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use moltbot_testkit::{Failure, FakeConfig, FakeUpstream, Script, StatusReply};

const USAGE: &str = "usage: moltbot-fake-upstream [--echo | --reply TEXT] [--chunks N] [--interval-ms N] \
    [--status CODE] [--flaky N] [--fault-rate P [--faults LIST] [--seed N] [--retry-after SECS] [--drip-ms N]]";

const DEFAULT_FAULTS: &str = "429,500,502,503,reset,cut,garbage,timeout,drip";
const KINDS: &[&str] = &[
    "429",
    "500",
    "502",
    "503",
    "reset",
    "cut",
    "garbage",
    "timeout",
    "drip",
    "cut-late",
    "stall-late",
];

fn usage() -> ! {
    eprintln!("{USAGE}");
    std::process::exit(2)
}

fn num<T: std::str::FromStr>(v: &str) -> T {
    v.parse().unwrap_or_else(|_| usage())
}

struct Args {
    script: Script,
    flaky: usize,
    fault_rate: f64,
    faults: Vec<String>,
    seed: u64,
    retry_after: String,
    drip: Duration,
}

fn parse() -> Args {
    let mut a = Args {
        script: Script::echo(),
        flaky: 0,
        fault_rate: 0.0,
        faults: DEFAULT_FAULTS.split(',').map(str::to_owned).collect(),
        seed: 1,
        retry_after: "1".to_owned(),
        drip: Duration::from_millis(250),
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().unwrap_or_else(|| usage());
        let script = a.script.clone();
        a.script = match arg.as_str() {
            "--flaky" => {
                a.flaky = num(&value());
                script
            }
            "--fault-rate" => {
                a.fault_rate = num(&value());
                if !(0.0..=1.0).contains(&a.fault_rate) {
                    usage()
                }
                script
            }
            "--faults" => {
                a.faults = value().split(',').map(|k| k.trim().to_owned()).collect();
                if a.faults.is_empty() || a.faults.iter().any(|k| !KINDS.contains(&k.as_str())) {
                    usage()
                }
                script
            }
            "--seed" => {
                a.seed = num(&value());
                script
            }
            "--retry-after" => {
                a.retry_after = value();
                script
            }
            "--drip-ms" => {
                a.drip = Duration::from_millis(num(&value()));
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
            "--chunks" => script.chunks(num(&value())),
            "--interval-ms" => script.chunk_interval(Duration::from_millis(num(&value()))),
            "--status" => Script {
                status: Script::status(num(&value())).status,
                ..script
            },
            _ => usage(),
        };
    }
    a
}

/// splitmix64: a small, seedable PRNG (no dependency for a test binary).
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// The script of one fault kind, built on the normal reply `base`.
fn fault(kind: &str, base: &Script, retry_after: &str, drip: Duration) -> Script {
    let late = base.clone().chunks(base.chunks.max(2));
    match kind {
        "429" => Script::status_reply(StatusReply::new(429).retry_after(retry_after)),
        "reset" => Script::reset(),
        "cut" => base.clone().fail_after(0, Failure::Abort),
        "garbage" => base.clone().fail_after(0, Failure::Garbage),
        "timeout" => Script::hang(),
        "drip" => base
            .clone()
            .chunks(base.chunks.max(6))
            .chunk_interval(drip)
            .headers_delay(drip),
        "cut-late" => late.fail_after(1, Failure::Abort),
        "stall-late" => late.fail_after(1, Failure::Stall),
        status => Script::status(status.parse().unwrap_or(500)),
    }
}

#[derive(Default)]
struct Stats {
    requests: u64,
    faults: BTreeMap<String, u64>,
    stream_faults: BTreeMap<String, u64>,
}

#[tokio::main]
async fn main() {
    let args = parse();
    let fake = FakeUpstream::start(FakeConfig {
        default_script: args.script.clone(),
        // Long chaos runs: keep the count, not every request.
        record: args.fault_rate == 0.0,
        ..FakeConfig::default()
    })
    .await;
    for _ in 0..args.flaky {
        fake.push(Script::status(503));
        fake.push(args.script.clone());
    }
    let stats = Arc::new(Mutex::new(Stats::default()));
    if args.fault_rate > 0.0 {
        let mut rng = Rng(args.seed);
        let stats = stats.clone();
        let Args {
            script,
            fault_rate,
            faults,
            retry_after,
            drip,
            ..
        } = args;
        fake.set_chooser(move |_, stream| {
            let mut stats = stats.lock().unwrap_or_else(|e| e.into_inner());
            stats.requests += 1;
            if rng.unit() >= fault_rate {
                return script.clone();
            }
            let kind = &faults[(rng.next_u64() % faults.len() as u64) as usize];
            *stats.faults.entry(kind.clone()).or_default() += 1;
            if stream {
                *stats.stream_faults.entry(kind.clone()).or_default() += 1;
            }
            fault(kind, &script, &retry_after, drip)
        });
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
    if args.fault_rate > 0.0 {
        let stats = stats.lock().unwrap_or_else(|e| e.into_inner());
        let line = serde_json::json!({"requests": stats.requests, "faults": stats.faults,
            "stream_faults": stats.stream_faults});
        println!("{line}");
    }
    drop(fake);
}
