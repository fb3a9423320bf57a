#!/usr/bin/env python3
"""Compare moltbot builds on start-up, alternately, in one session: spawn → `/ready` (wall time, as `make bench`
measures it), the CPU its threads had spent when it was (read from schedstat right after), and its RSS a second later (idle).

    python3 bench/ab_start.py BUILD [BUILD ...] [--rounds 15] [--target-dir target/bench]

Each BUILD is a `moltbot` executable, optionally labelled `label=path`, with environment overrides after a comma
(as for bench/ab.py). Every round starts each build once against the same fake upstream, with a new SQLite
database (`serve --migrate`), pinned like `make bench`. Prints one line per start and the medians.
"""

import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402


def cpu_ms(pid):
    """CPU time of the live threads in ms, from each one's schedstat (nanoseconds; /proc/PID/stat counts 10 ms
    ticks, too coarse for a start)."""
    total = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                total += int(f.read().split()[0])
        except FileNotFoundError:
            pass
    return total / 1e6


def main():
    ap = harness.comparison_args(__doc__, rounds=15, requests=0)
    a = ap.parse_args()
    bins = harness.tool_bins(a.target_dir)
    builds = [harness.build_spec(b) for b in a.builds]
    fake = harness.Fake(bins, "--echo")
    results = {label: [] for label, _, _ in builds}
    try:
        for r in range(a.rounds):
            for label, path, env in builds:
                m = harness.Moltbot(dict(bins, moltbot=path), fake.url, extra_env=env)
                try:
                    cpu = cpu_ms(m.pid)
                    time.sleep(1.0)
                    rss = harness.rss_kib(m.pid) / 1024
                    results[label].append((m.startup_s * 1000, cpu, rss))
                    print(f"round {r + 1} {label}: /ready after {m.startup_s * 1000:.1f} ms, {cpu:.1f} ms CPU "
                          f"by then, idle RSS {rss:.1f} MiB", flush=True)
                finally:
                    m.stop()
    finally:
        fake.stop()
    for label, runs in results.items():
        print(f"median {label}: /ready after {statistics.median(w for w, _, _ in runs):.1f} ms, "
              f"{statistics.median(c for _, c, _ in runs):.1f} ms CPU, "
              f"idle RSS {statistics.median(x for _, _, x in runs):.1f} MiB")


if __name__ == "__main__":
    main()
