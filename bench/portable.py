#!/usr/bin/env python3
"""The portable release package against the default build, in one script (runs alternate, so a noisy
machine affects both alike): per binary, single-stream engine vs raw-decode-loop ratios (target >= 0.95)
and aggregate generation at 4 streams vs 1 (target >= 1.5), medians over --runs.

    make dist && cargo build --release -p moltbot && python3 bench/portable.py
"""
import argparse
import glob
import json
import statistics
import subprocess

p = argparse.ArgumentParser()
p.add_argument("--default", default="target/release/moltbot")
p.add_argument("--portable", default=(sorted(glob.glob("dist/moltbot-*-linux-x86_64/moltbot")) or [""])[-1])
p.add_argument("--model", default="models/gemma-3-270m-q4_k_m.gguf")
p.add_argument("--threads", default="1")
p.add_argument("--runs", type=int, default=3)
a = p.parse_args()

bins = {"default": a.default, "portable": a.portable}
runs = {name: [] for name in bins}
for i in range(a.runs):
    for name, path in bins.items():
        out = subprocess.run(
            [path, "bench-engine", "--model", a.model, "--threads", a.threads, "--prompt", "512",
             "--gen", "128", "--streams", "4", "--baseline", "--json"],
            check=True, capture_output=True, text=True).stdout
        d = json.loads(out.strip().splitlines()[-1])
        runs[name].append(d)
        print(f"run {i + 1} {name:8} ({d['cpu_backend']}): prompt {d['prompt_tps']:.1f} vs raw "
              f"{d['baseline_prompt_tps']:.1f}; gen {d['gen_tps']:.1f} vs raw {d['baseline_gen_tps']:.1f}; "
              f"aggregate 1 {d['aggregate_1_tps']:.1f}, 4 {d['aggregate_n_tps']:.1f}", flush=True)

print(f"\nmedians over {a.runs} runs, {a.threads} thread(s), {a.model}")
for name, ds in runs.items():
    med = lambda f: statistics.median(f(d) for d in ds)  # noqa: E731
    print(f"{name:8} prompt {med(lambda d: d['prompt_tps']):7.1f} tok/s "
          f"(x{med(lambda d: d['prompt_tps'] / d['baseline_prompt_tps']):.2f} raw)  "
          f"gen {med(lambda d: d['gen_tps']):6.1f} tok/s (x{med(lambda d: d['gen_tps'] / d['baseline_gen_tps']):.2f} raw)  "
          f"4 streams vs 1: x{med(lambda d: d['aggregate_n_tps'] / d['aggregate_1_tps']):.2f}")
