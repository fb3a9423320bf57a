#!/usr/bin/env python3
"""Count the SQL statements moltbot runs per non-streaming request, by kind, from sqlx's statement log.

    python3 bench/statements.py BUILD [BUILD ...] [--requests 2000] [--record sqlite|postgres|off]
                                [--concurrency 64] [--target-dir target/bench]

Each BUILD is a `moltbot` executable (`label=path[,ENV=VALUE…]`, as for ab.py). moltbot runs against the fake
upstream with `sqlx::query=debug` logging in JSON, serves a warm-up of 500 requests, then --requests more; the
statements logged during the second run are grouped by their first words and divided by --requests. sqlx logs
each statement it executes (BEGIN and COMMIT of a transaction are not logged on SQLite). With group commit the
figure depends on how many turns share a group, so compare builds at the same concurrency. A statement costs a
round trip to the PostgreSQL server, or a hand-off to sqlx's SQLite worker thread and back.
"""

import collections
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402

WARM_UP = 500


def count(bins, fake_url, binary, env, requests, concurrency, record):
    pg = harness.PgDatabase() if record == "postgres" else None
    env = dict(env, MOLTBOT_LOG__LEVEL="warn,sqlx::query=debug", MOLTBOT_LOG__FORMAT="json")
    m = harness.Moltbot(dict(bins, moltbot=binary), fake_url, database_url=pg.url if pg else None,
                        record=record != "off", extra_env=env)
    log = os.path.join(m.dir.name, "log")
    try:
        harness.load(bins, m.chat_url, harness.CHAT, requests=WARM_UP, concurrency=concurrency)
        time.sleep(0.5)  # usage batches and webhook dispatch of the warm-up
        with open(log, errors="replace") as f:
            skip = sum(1 for _ in f)
        harness.load(bins, m.chat_url, harness.CHAT, requests=requests, concurrency=concurrency)
        time.sleep(0.5)
        kinds = collections.Counter()
        with open(log, errors="replace") as f:
            for i, line in enumerate(f):
                if i < skip:
                    continue
                try:
                    event = json.loads(line)
                except ValueError:
                    continue
                summary = event.get("summary") or event.get("fields", {}).get("summary")
                if summary:
                    kinds[" ".join(summary.split()[:4])] += 1
        return kinds
    finally:
        m.stop()
        if pg:
            pg.drop()


def main():
    ap = harness.comparison_args(__doc__, rounds=1, requests=2000)
    ap.add_argument("--record", choices=["off", "sqlite", "postgres"], default="sqlite")
    ap.add_argument("--concurrency", type=int, default=64)
    a = ap.parse_args()
    bins = harness.tool_bins(a.target_dir)
    fake = harness.Fake(bins, "--reply", "Hello from the fake upstream, a short reply.", "--chunks", "4")
    try:
        for label, path, env in (harness.build_spec(b) for b in a.builds):
            kinds = count(bins, fake.url, path, env, a.requests, a.concurrency, a.record)
            total = sum(kinds.values())
            print(f"{label}: {total / a.requests:.3f} statements per request ({a.record}, c={a.concurrency})")
            for kind, n in kinds.most_common():
                print(f"  {n / a.requests:7.3f}  {kind}")
    finally:
        fake.stop()


if __name__ == "__main__":
    main()
