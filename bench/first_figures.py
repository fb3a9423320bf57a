#!/usr/bin/env python3
"""First figures for the core: startup time to /ready, idle RSS, and CPU per proxied request.

Starts the fake upstream and moltbot (release builds), measures:
- startup: wall time from spawning `moltbot serve` until /ready answers 200 (median of N starts);
- idle RSS: VmRSS of the moltbot process after it is ready and has served nothing;
- CPU per request: (utime+stime of the process) / requests, for non-streaming chat completions through
  moltbot, with recording on and off, and as the baseline the same requests sent directly to the fake
  upstream (the fake's own CPU per request), all in this one run.

Usage: python3 bench/first_figures.py [--bin target/release/moltbot] [--fake target/release/moltbot-fake-upstream]
                                      [--requests 2000] [--concurrency 8]
Only 127.0.0.1 is contacted; every loop is bounded.
"""

import argparse
import http.client
import json
import os
import signal
import statistics
import subprocess
import tempfile
import threading
import time

CLK = os.sysconf("SC_CLK_TCK")
# Every route needs a key: the fresh database's bootstrap admin key is set from the environment.
KEY = "mb_bench_" + os.urandom(16).hex()


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK


def rss_mib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def start_fake(fake_bin):
    p = subprocess.Popen([fake_bin, "--reply", "Hello from the fake upstream, a short reply.", "--chunks", "4"],
                         stdout=subprocess.PIPE, text=True)
    return p, p.stdout.readline().strip()


def start_moltbot(bin_, workdir, upstream, record=True):
    ready = os.path.join(workdir, "ready.json")
    if os.path.exists(ready):
        os.unlink(ready)
    env = {k: v for k, v in os.environ.items() if not k.startswith("MOLTBOT_")}
    env.update({"MODEL_ENDPOINT": upstream, "API_KEY": "sk-bench", "MODEL_NAME": "fake-model",
                "MOLTBOT_CHAT_ADDR": "127.0.0.1:0", "MOLTBOT_ADMIN_ADDR": "127.0.0.1:0",
                "MOLTBOT_LOG__LEVEL": "warn", "MOLTBOT_SERVER__SHUTDOWN_DELAY": "10ms",
                "MOLTBOT_BOOTSTRAP_ADMIN_KEY": KEY,
                "MOLTBOT_STORE__RECORD_EXCHANGES": "true" if record else "false"})
    t0 = time.perf_counter()
    p = subprocess.Popen([bin_, "serve", "--ready-file", ready], cwd=workdir, env=env,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while not os.path.exists(ready):
        if p.poll() is not None or time.perf_counter() - t0 > 30:
            raise RuntimeError("moltbot did not start")
        time.sleep(0.001)
    addr = json.load(open(ready))["chat_addr"]
    host, port = addr.rsplit(":", 1)
    while True:
        try:
            c = http.client.HTTPConnection(host, int(port), timeout=5)
            c.request("GET", "/ready")
            if c.getresponse().status == 200:
                break
        except OSError:
            pass
        time.sleep(0.001)
    return p, (host, int(port)), time.perf_counter() - t0


def drive(hostport, path, body, requests, concurrency):
    """Send `requests` POSTs over `concurrency` keep-alive connections; returns wall seconds."""
    per = requests // concurrency
    errors = []

    def worker():
        c = http.client.HTTPConnection(*hostport, timeout=30)
        payload = json.dumps(body)
        for _ in range(per):
            c.request("POST", path, payload, {"content-type": "application/json", "authorization": f"Bearer {KEY}"})
            r = c.getresponse()
            r.read()
            if r.status != 200:
                errors.append(r.status)

    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise RuntimeError(f"{len(errors)} failed requests, e.g. {errors[0]}")
    return time.perf_counter() - t0, per * concurrency


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default="target/release/moltbot")
    ap.add_argument("--fake", default="target/release/moltbot-fake-upstream")
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--starts", type=int, default=5)
    a = ap.parse_args()
    fake, upstream = start_fake(a.fake)
    body = {"model": "default", "messages": [{"role": "user", "content": "Say hello."}]}
    results = {}
    try:
        with tempfile.TemporaryDirectory() as d:
            starts = []
            for _ in range(a.starts):
                p, _, took = start_moltbot(a.bin, d, upstream)
                starts.append(took)
                idle = rss_mib(p.pid)
                p.send_signal(signal.SIGTERM)
                p.wait(timeout=30)
            results["startup_to_ready_ms_median"] = round(statistics.median(starts) * 1000, 1)
            results["idle_rss_mib"] = round(idle, 1)

        # Baseline: the fake upstream's own CPU per request, direct.
        uhost, uport = upstream.split("//")[1].split("/")[0].rsplit(":", 1)
        fake_body = dict(body, model="fake-model")
        c0 = cpu_seconds(fake.pid)
        wall, n = drive((uhost, int(uport)), "/v1/chat/completions", fake_body, a.requests, a.concurrency)
        results["direct_fake_cpu_us_per_req"] = round((cpu_seconds(fake.pid) - c0) / n * 1e6, 1)
        results["direct_req_per_s"] = round(n / wall)

        for record in (True, False):
            with tempfile.TemporaryDirectory() as d:
                p, hp, _ = start_moltbot(a.bin, d, upstream, record=record)
                drive(hp, "/v1/chat/completions", body, 200, a.concurrency)  # warm-up
                c0 = cpu_seconds(p.pid)
                wall, n = drive(hp, "/v1/chat/completions", body, a.requests, a.concurrency)
                key = "recording_on" if record else "recording_off"
                results[f"moltbot_cpu_us_per_req_{key}"] = round((cpu_seconds(p.pid) - c0) / n * 1e6, 1)
                results[f"moltbot_req_per_s_{key}"] = round(n / wall)
                results[f"moltbot_rss_mib_after_load_{key}"] = round(rss_mib(p.pid), 1)
                p.send_signal(signal.SIGTERM)
                p.wait(timeout=30)
        results["ratio_cpu_moltbot_recording_off_vs_fake"] = round(
            results["moltbot_cpu_us_per_req_recording_off"] / results["direct_fake_cpu_us_per_req"], 2)
    finally:
        fake.send_signal(signal.SIGTERM)
        fake.wait(timeout=10)
    print(json.dumps({"requests": a.requests, "concurrency": a.concurrency, **results}, indent=2))


if __name__ == "__main__":
    main()
