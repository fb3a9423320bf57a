#!/usr/bin/env python3
"""Compare moltbot builds on user-space instructions per non-streaming request, counted by valgrind's
callgrind: repeatable to about ±1 % whatever else the machine is doing, where CPU time (bench/ab.py) moves by
±5-20 % on a shared VM. For changes too small for ab.py to see; kernel work (the TCP exchanges) is not
counted, so confirm a real change with ab.py or `make bench`.

    python3 bench/instructions.py BUILD [BUILD ...] [--rounds 2] [--requests 2000] [--keep DIR]
                                  [--record off|sqlite|postgres] [--target-dir target/bench]

Each BUILD is a `moltbot` executable, optionally labelled `label=path`, with environment overrides after commas
(as for ab.py). Per build and round, moltbot runs twice
under callgrind against one fake upstream (recording off unless --record, like ab.py): once warmed up with 200
requests only,
once with --requests more; the difference of the two totals, divided by --requests, is the cost of a request
without start-up and shutdown. Runs take ~10 s each. `--keep DIR` keeps the callgrind files
(`LABEL.N.out`) for `callgrind_annotate --inclusive=yes DIR/LABEL.N.out`.
"""

import os
import statistics
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402

WARM_UP = 200


def total_instructions(bins, fake_url, binary, env, requests, out_dir, name, record="off"):
    """Instructions of one moltbot process that served WARM_UP + `requests` requests."""
    out = os.path.join(out_dir, f"{name}.out")
    wrapper = os.path.join(out_dir, f"{name}.sh")
    with open(wrapper, "w") as f:
        f.write(f'#!/bin/sh\nexec valgrind -q --tool=callgrind --callgrind-out-file={out} {binary} "$@"\n')
    os.chmod(wrapper, 0o755)
    pg = harness.PgDatabase() if record == "postgres" else None
    m = harness.Moltbot(dict(bins, moltbot=wrapper), fake_url, database_url=pg.url if pg else None,
                        record=record != "off", extra_env=env)
    try:
        harness.load(bins, m.chat_url, harness.CHAT, requests=WARM_UP, concurrency=16)
        if requests:
            harness.load(bins, m.chat_url, harness.CHAT, requests=requests, concurrency=16)
    finally:
        m.stop()
        if pg:
            pg.drop()
    with open(out) as f:
        for line in f:
            if line.startswith(("summary:", "totals:")):
                return int(line.split()[1])
    raise RuntimeError(f"no instruction total in {out}")


def main():
    ap = harness.comparison_args(__doc__, rounds=2, requests=2000)
    ap.add_argument("--keep", default=None, help="directory for the callgrind files")
    ap.add_argument("--record", choices=["off", "sqlite", "postgres"], default="off")
    a = ap.parse_args()
    bins = harness.tool_bins(a.target_dir)
    builds = [harness.build_spec(b) for b in a.builds]
    tmp = None
    if a.keep:
        os.makedirs(a.keep, exist_ok=True)
        out_dir = a.keep
    else:
        tmp = tempfile.TemporaryDirectory(prefix="moltbot-instructions-")
        out_dir = tmp.name
    fake = harness.Fake(bins, "--reply", "Hello from the fake upstream, a short reply.", "--chunks", "4")
    results = {label: [] for label, _, _ in builds}
    try:
        for r in range(a.rounds):
            for label, path, env in builds:
                base = total_instructions(bins, fake.url, path, env, 0, out_dir, f"{label}.{r}.warm", a.record)
                full = total_instructions(bins, fake.url, path, env, a.requests, out_dir, f"{label}.{r}", a.record)
                per = (full - base) / a.requests
                results[label].append(per)
                print(f"round {r + 1} {label}: {per:,.0f} instructions per request", flush=True)
        for label, runs in results.items():
            print(f"median {label}: {statistics.median(runs):,.0f} instructions per request "
                  f"(runs: {', '.join(f'{x:,.0f}' for x in runs)})")
    finally:
        fake.stop()
        if tmp:
            tmp.cleanup()


if __name__ == "__main__":
    main()
