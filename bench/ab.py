#!/usr/bin/env python3
"""Compare moltbot builds on CPU per non-streaming request, alternately, in one session (the method of
docs/performance.md "How to profile": single runs differ by ±5 %, so builds take turns, round after round).

    python3 bench/ab.py BUILD [BUILD ...] [--rounds 3] [--requests 30000] [--concurrency 64]
                        [--record off|sqlite|postgres] [--target-dir target/bench] [--perf OUT.data]

Each BUILD is a `moltbot` executable, optionally labelled `label=path`, with environment overrides after a comma
(`jemalloc=/tmp/moltbot,LD_PRELOAD=/usr/lib/x86_64-linux-gnu/libjemalloc.so.2`). One fake upstream (from
--target-dir) serves every round; each round starts every build afresh, warms it up and measures moltbot's own
CPU (utime + stime from /proc) over --requests requests at --concurrency, pinned like `make bench`; recording
off unless --record names a database (postgres: a fresh database per run on MOLTBOT_TEST_POSTGRES_URL's server). Prints one line per run and the medians. `--perf FILE` records the first build's last round with
`perf record --call-graph dwarf` (needs linux-perf).
"""

import os
import statistics
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402


def main():
    ap = harness.comparison_args(__doc__, rounds=3, requests=30000)
    ap.add_argument("--concurrency", type=int, default=64)
    ap.add_argument("--perf", default=None)
    ap.add_argument("--record", choices=["off", "sqlite", "postgres"], default="off")
    a = ap.parse_args()
    bins = harness.tool_bins(a.target_dir)
    builds = [harness.build_spec(b) for b in a.builds]
    harness.raise_nofile()
    fake = harness.Fake(bins, "--reply", "Hello from the fake upstream, a short reply.", "--chunks", "4")
    results = {label: [] for label, _, _ in builds}
    try:
        for r in range(a.rounds):
            for i, (label, path, env) in enumerate(builds):
                pg = harness.PgDatabase() if a.record == "postgres" else None
                m = harness.Moltbot(dict(bins, moltbot=path), fake.url, database_url=pg.url if pg else None,
                                    record=a.record != "off", extra_env=env)
                perf = None
                try:
                    harness.load(bins, m.chat_url, harness.CHAT, requests=2000, concurrency=a.concurrency)
                    if a.perf and i == 0 and r == a.rounds - 1:
                        perf = subprocess.Popen(["perf", "record", "-q", "-F", "500", "--call-graph", "dwarf,16384",
                                                 "-o", a.perf, "-p", str(m.pid)])
                    run = harness.measured(bins, m.pid, m.chat_url, harness.CHAT, requests=a.requests,
                                           concurrency=a.concurrency)
                    if perf:
                        perf.send_signal(2)
                        perf.wait(timeout=120)
                    us = run["cpu_s"] / run["requests"] * 1e6
                    results[label].append((us, run["rps"], run["p50_us"]))
                    print(f"round {r + 1} {label}: {us:.1f} us/request, {run['rps']:.0f} req/s, "
                          f"p50 {run['p50_us']:.0f} us, RSS {harness.rss_kib(m.pid) / 1024:.1f} MiB", flush=True)
                finally:
                    m.stop()
                    if pg:
                        pg.drop()
    finally:
        fake.stop()
    for label, runs in results.items():
        print(f"median {label}: {statistics.median(u for u, _, _ in runs):.1f} us/request, "
              f"{statistics.median(x for _, x, _ in runs):.0f} req/s, "
              f"p50 {statistics.median(p for _, _, p in runs):.0f} us")


if __name__ == "__main__":
    main()
