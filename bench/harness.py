#!/usr/bin/env python3
"""moltbot's benchmark harness (`make bench`): one reproducible run, every figure a ratio against a baseline
measured in the same run, written to bench/REPORT.md.

Processes (release builds): the fake OpenAI-compatible upstream (`moltbot-fake-upstream`, Rust), moltbot, and the
load generator (`moltbot-load`, Rust, HDR histograms; open-loop mode corrects coordinated omission). On a machine
with several cores they are pinned with taskset: moltbot alone on core 0, the upstream and the load generator on
the others (on 2 cores they share core 1). CPU is read from /proc/<pid>/stat (utime + stime) around each
measured phase, so "gateway CPU per request" is moltbot's own CPU, not the machine's.

Figures (median of --runs runs each):
- non-streaming proxy at concurrency 1, 16, 64, 256: requests/s, p50/p99 and moltbot CPU per request — direct
  to the upstream (baseline), through a minimal proxy built from the same crates (`moltbot-floor-proxy`: the
  floor, what two HTTP exchanges cost here) and through moltbot with recording off, on SQLite and on PostgreSQL;
- streaming: time to first token added, moltbot CPU per streamed chunk;
- concurrent SSE streams held (1k, 5k, 10k): RSS per stream;
- startup to /ready and idle RSS;
- persisted turns per second (SQLite, PostgreSQL): the recording-on throughput, checked against the rows stored.

Only 127.0.0.1 is contacted; every phase is bounded in requests and time.

    python3 bench/harness.py [--quick] [--runs 3] [--out bench/REPORT.md] [--target-dir target/bench]
"""

import argparse
import datetime
import json
import os
import platform
import resource
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLK = os.sysconf("SC_CLK_TCK")
KEY = "mb_bench_" + os.urandom(16).hex()
LITELLM_KEY = "sk-bench-" + os.urandom(16).hex()
PG_URL = os.environ.get("MOLTBOT_TEST_POSTGRES_URL", "postgres://postgres@127.0.0.1:5432/test")
CORES = os.cpu_count() or 1


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK


def tree_cpu_seconds(pid):
    """CPU seconds of a process and all its descendants (a Python server may fork workers)."""
    children = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
                children.setdefault(ppid, []).append(int(d))
            except (OSError, ValueError, IndexError):
                pass
    total, todo = 0.0, [pid]
    while todo:
        p = todo.pop()
        try:
            total += cpu_seconds(p)
        except OSError:
            continue
        todo.extend(children.get(p, []))
    return total


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def rss_parts_kib(pid):
    """(anonymous, file-backed) resident KiB: the process's own memory, and the pages of its binary and libraries
    mapped from the page cache (shared by every process running the same file; how much of the text is resident
    moves by a MiB or two between builds with where the linker put the code a start touches)."""
    parts = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key = line.split(":")[0]
            if key in ("RssAnon", "RssFile", "RssShmem"):
                parts[key] = int(line.split()[1])
    return parts.get("RssAnon", 0), parts.get("RssFile", 0) + parts.get("RssShmem", 0)


def pin(cmd, role):
    """taskset prefix: moltbot on core 0, everything else on the remaining cores."""
    if CORES < 2:
        return cmd
    cores = "0" if role == "moltbot" else f"1-{CORES - 1}"
    return ["taskset", "-c", cores, *cmd]


# deploy/systemd/moltbot.service's LimitNOFILE. A proxied stream holds two sockets in moltbot (the client's
# and the upstream's): 10,000 streams need 20,000+ descriptors.
PRODUCTION_NOFILE = 65536


def raise_nofile():
    """Soft limit to the hard limit; where allowed (root), both up to the production unit's value."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    raised = hard
    if hard != resource.RLIM_INFINITY and hard < PRODUCTION_NOFILE:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (PRODUCTION_NOFILE, PRODUCTION_NOFILE))
            raised = PRODUCTION_NOFILE
        except (ValueError, OSError):
            pass
    resource.setrlimit(resource.RLIMIT_NOFILE, (raised, raised))
    return soft, hard, raised


def wait_ok(url, proc, deadline, log_path, poll_s):
    """Poll `url` until it answers 200; fail with the log's tail if `proc` exits or `deadline` passes."""
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5) as r:
                if r.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError):
            pass
        if proc.poll() is not None or time.perf_counter() > deadline:
            with open(log_path, errors="replace") as f:
                raise RuntimeError(f"{url} did not answer 200: " + f.read()[-2000:])
        time.sleep(poll_s)


class Fake:
    def __init__(self, bins, *args):
        self.proc = subprocess.Popen(pin([bins["fake"], *args], "fake"), stdout=subprocess.PIPE, text=True)
        self.url = self.proc.stdout.readline().strip()
        u = urllib.parse.urlsplit(self.url)
        self.chat_url = f"http://{u.netloc}/v1/chat/completions"

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=30)


class Floor:
    """moltbot-floor-proxy: forwards the body untouched (the baseline for "what a proxy costs at all")."""

    def __init__(self, bins, upstream_chat_url):
        self.proc = subprocess.Popen(pin([bins["floor"], "--upstream", upstream_chat_url], "moltbot"),
                                     stdout=subprocess.PIPE, text=True)
        self.chat_url = self.proc.stdout.readline().strip() + "/v1/chat/completions"

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=30)


class Moltbot:
    def __init__(self, bins, upstream, database_url=None, record=True, extra_env=None):
        self.dir = tempfile.TemporaryDirectory(prefix="moltbot-bench-")
        ready = os.path.join(self.dir.name, "ready.json")
        env = {k: v for k, v in os.environ.items() if not k.startswith("MOLTBOT_")}
        env.update({
            "MODEL_ENDPOINT": upstream, "API_KEY": "sk-bench", "MODEL_NAME": "fake-model",
            "MOLTBOT_CHAT_ADDR": "127.0.0.1:0", "MOLTBOT_ADMIN_ADDR": "127.0.0.1:0",
            "MOLTBOT_LOG__LEVEL": "warn", "MOLTBOT_SERVER__SHUTDOWN_DELAY": "10ms",
            "MOLTBOT_BOOTSTRAP_ADMIN_KEY": KEY,
            "MOLTBOT_STORE__RECORD_EXCHANGES": "true" if record else "false",
        })
        if database_url:
            env["MOLTBOT_DATABASE_URL"] = database_url
        env.update(extra_env or {})
        if database_url:
            # PostgreSQL is prepared by the operator command (it also creates the admin key there).
            subprocess.run([bins["moltbot"], "init-db"], cwd=self.dir.name, env=env, check=True,
                           capture_output=True)
        self.t0 = time.perf_counter()
        self.proc = subprocess.Popen(pin([bins["moltbot"], "serve", "--migrate", "--ready-file", ready], "moltbot"),
                                     cwd=self.dir.name, env=env, stdout=subprocess.DEVNULL,
                                     stderr=open(os.path.join(self.dir.name, "log"), "wb"))
        while not os.path.exists(ready) or os.path.getsize(ready) == 0:
            if self.proc.poll() is not None or time.perf_counter() - self.t0 > 60:
                raise RuntimeError("moltbot did not start: " + open(os.path.join(self.dir.name, "log")).read()[-2000:])
            time.sleep(0.0005)
        self.addr = json.load(open(ready))["chat_addr"]
        wait_ok(f"http://{self.addr}/ready", self.proc, self.t0 + 60, os.path.join(self.dir.name, "log"), 0.0005)
        self.startup_s = time.perf_counter() - self.t0
        self.pid = self.proc.pid

    @property
    def chat_url(self):
        return f"http://{self.addr}/v1/chat/completions"

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=60)
        self.dir.cleanup()


def load(bins, url, body, key=KEY, **kw):
    cmd = [bins["load"], "--url", url, "--body", json.dumps(body), "--key", key]
    for k, v in kw.items():
        flag = "--" + k.replace("_", "-")
        if v is True:
            cmd.append(flag)
        elif v is not None and v is not False:
            cmd += [flag, str(v)]
    out = subprocess.run(pin(cmd, "load"), capture_output=True, text=True, timeout=900)
    if out.returncode != 0:
        raise RuntimeError(f"moltbot-load failed: {out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def measured(bins, target_pid, url, body, cpu=cpu_seconds, **kw):
    """One load run; adds the target's CPU seconds spent during it (`cpu=tree_cpu_seconds`: with its children)."""
    c0 = cpu(target_pid)
    r = load(bins, url, body, **kw)
    r["cpu_s"] = cpu(target_pid) - c0
    if r["errors"]:
        raise RuntimeError(f"{r['errors']} errors, e.g. {r['first_error']}")
    return r


def build_spec(spec):
    """`[label=]path[,ENV=VALUE…]` (bench/ab.py, bench/instructions.py) → (label, absolute path, env)."""
    first, *envs = spec.split(",")
    label, _, path = first.rpartition("=")
    # moltbot runs in a temporary directory: a relative path must not be resolved there.
    return (label or path), os.path.abspath(path), dict(e.split("=", 1) for e in envs)


def comparison_args(description, rounds, requests):
    """The arguments every build comparison takes: builds, --target-dir, --rounds, --requests."""
    ap = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("builds", nargs="+")
    ap.add_argument("--target-dir", default=os.path.join(ROOT, "target", "bench"))
    ap.add_argument("--rounds", type=int, default=rounds)
    ap.add_argument("--requests", type=int, default=requests)
    return ap


def tool_bins(target_dir):
    """The fake upstream and the load generator of a `make bench-bins` build."""
    rel = os.path.join(target_dir, "release")
    return {"fake": os.path.join(rel, "moltbot-fake-upstream"), "load": os.path.join(rel, "moltbot-load")}


def median_of(runs, key):
    return statistics.median(r[key] for r in runs)


class PgDatabase:
    def __init__(self):
        self.name = "moltbot_bench_" + os.urandom(4).hex()
        u = urllib.parse.urlsplit(PG_URL)
        self.url = urllib.parse.urlunsplit(u._replace(path="/" + self.name))
        subprocess.run(["psql", PG_URL, "-qc", f'CREATE DATABASE "{self.name}"'], check=True, capture_output=True)

    def count(self, table):
        out = subprocess.run(["psql", self.url, "-tAc", f"SELECT count(*) FROM {table}"], check=True,
                             capture_output=True, text=True)
        return int(out.stdout.strip())

    def drop(self):
        subprocess.run(["psql", PG_URL, "-qc", f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)'],
                       capture_output=True)


def sqlite_count(m, table):
    db = os.path.join(m.dir.name, "data", "moltbot.db")
    with sqlite3.connect(db) as c:
        return c.execute(f"SELECT count(*) FROM {table}").fetchone()[0]


CHAT = {"model": "default", "messages": [{"role": "user", "content": "Say hello."}]}


def non_streaming(bins, a, results, pg_ok):
    fake = Fake(bins, "--reply", "Hello from the fake upstream, a short reply.", "--chunks", "4")
    direct_body = dict(CHAT, model="fake-model")
    # Every path is up at once and the runs take turns (direct, floor, moltbot in each mode, then again), so a
    # slow minute of a shared VM lands on all of them alike instead of on one path's three runs.
    targets = {"direct": (fake.proc.pid, fake.chat_url, direct_body)}
    floor = None
    moltbots = {}
    pgs = {}
    sent = {}
    try:
        # The floor: a minimal proxy from the same crates (no auth, parsing, logging or storage), pinned
        # like moltbot — what two HTTP exchanges on loopback cost on this machine.
        floor = Floor(bins, fake.chat_url)
        targets["floor"] = (floor.proc.pid, floor.chat_url, direct_body)
        modes = [("off", None, False), ("sqlite", None, True)]
        if pg_ok:
            modes.append(("postgres", "pg", True))
        for mode, db, record in modes:
            pg = PgDatabase() if db == "pg" else None
            if pg:
                pgs[mode] = pg
            m = Moltbot(bins, fake.url, database_url=pg.url if pg else None, record=record)
            moltbots[mode] = m
            targets[mode] = (m.pid, m.chat_url, CHAT)
            sent[mode] = 0
        table = {}
        for c in a.concurrency:
            n = max(a.requests, c * 20)
            for _ in range(a.runs):
                for path, (pid, url, body) in targets.items():
                    table.setdefault((path, c), []).append(
                        measured(bins, pid, url, body, requests=n, concurrency=c, warmup=c * 2))
                    if path in sent:
                        sent[path] += n + c * 2
        for mode, db, record in modes:
            m = moltbots[mode]
            if record:
                stored = pgs[mode].count("messages") if db else sqlite_count(m, "messages")
                # Every acknowledged turn is stored: one user message and one reply, grouped or not.
                results[f"stored_messages_{mode}"] = stored
                results[f"sent_requests_{mode}"] = sent[mode]
            results[f"rss_after_load_mib_{mode}"] = round(rss_kib(m.pid) / 1024, 1)
        results["non_streaming"] = {f"{k[0]}@{k[1]}": {
            "rps": median_of(v, "rps"), "p50_us": median_of(v, "p50_us"), "p99_us": median_of(v, "p99_us"),
            "cpu_us_per_req": statistics.median(r["cpu_s"] / r["requests"] * 1e6 for r in v),
        } for k, v in table.items()}
    finally:
        for m in moltbots.values():
            m.stop()
        for pg in pgs.values():
            pg.drop()
        if floor:
            floor.stop()
        fake.stop()


def streaming(bins, a, results):
    # Two stream lengths through two otherwise identical moltbots, runs interleaved: the difference in CPU per
    # stream over the difference in chunks is what one more chunk costs (the request's own handling, the same
    # for both, drops out); CPU per stream / chunks is reported beside it.
    chunks, long_chunks = 32, 128
    fake = Fake(bins, "--reply", "x" * chunks * 4, "--chunks", str(chunks))
    long_fake = None
    body = dict(CHAT, stream=True)
    try:
        long_fake = Fake(bins, "--reply", "x" * long_chunks * 4, "--chunks", str(long_chunks))
        direct = [measured(bins, fake.proc.pid, fake.chat_url, dict(body, model="fake-model"), requests=a.stream_requests,
                           concurrency=1, stream=True, warmup=5) for _ in range(a.runs)]
        m = Moltbot(bins, fake.url, record=False)
        m_long = None
        try:
            m_long = Moltbot(bins, long_fake.url, record=False)
            via = [measured(bins, m.pid, m.chat_url, body, requests=a.stream_requests, concurrency=1, stream=True,
                            warmup=5) for _ in range(a.runs)]
            via16, long16 = [], []
            for _ in range(a.runs):
                for target, runs in ((m, via16), (m_long, long16)):
                    runs.append(measured(bins, target.pid, target.chat_url, body, requests=a.stream_requests * 4,
                                         concurrency=16, stream=True, warmup=16))
        finally:
            m.stop()
            if m_long:
                m_long.stop()
        per_stream = [r["cpu_s"] / r["requests"] * 1e6 for r in via16]
        per_long_stream = [r["cpu_s"] / r["requests"] * 1e6 for r in long16]
        results["streaming"] = {
            "chunks_per_stream": chunks,
            "long_chunks_per_stream": long_chunks,
            "ttft_direct_p50_us": median_of(direct, "ttft_p50_us"),
            "ttft_via_p50_us": median_of(via, "ttft_p50_us"),
            "ttft_direct_p99_us": median_of(direct, "ttft_p99_us"),
            "ttft_via_p99_us": median_of(via, "ttft_p99_us"),
            "cpu_us_per_chunk_c16": statistics.median(s / chunks for s in per_stream),
            "cpu_us_per_stream_c16": statistics.median(per_stream),
            "cpu_us_per_long_stream_c16": statistics.median(per_long_stream),
            # Median of the paired runs' slopes.
            "cpu_us_per_added_chunk_c16": statistics.median(
                (b - a_) / (long_chunks - chunks) for a_, b in zip(per_stream, per_long_stream)),
        }
    finally:
        fake.stop()
        if long_fake:
            long_fake.stop()


def held_streams(bins, a, results):
    out = {}
    for n in a.streams:
        # Each stream: a role chunk at once, then chunks every hold/2 seconds: open for the whole hold.
        interval_ms = int(a.hold_s * 1000 / 2)
        fake = Fake(bins, "--reply", "ab", "--chunks", "2", "--interval-ms", str(interval_ms))
        m = Moltbot(bins, fake.url, record=False)
        try:
            time.sleep(0.5)
            idle = rss_kib(m.pid)
            cmd = [bins["load"], "--url", m.chat_url, "--body", json.dumps(dict(CHAT, stream=True)), "--key", KEY,
                   "--hold", str(n), "--hold-s", str(a.hold_s)]
            p = subprocess.Popen(pin(cmd, "load"), stdout=subprocess.PIPE, text=True)
            held = json.loads(p.stdout.readline())
            time.sleep(1.0)
            peak = rss_kib(m.pid)
            fds = len(os.listdir(f"/proc/{m.pid}/fd"))
            done = json.loads(p.stdout.readline())
            p.wait(timeout=300)
            with open(os.path.join(m.dir.name, "log"), errors="replace") as f:
                emfile = f.read().count("Too many open files")
            out[str(n)] = {
                "opened": held["open"], "all_open_after_s": round(held["after_s"], 2), "errors": done["errors"],
                "first_error": done["first_error"], "idle_rss_mib": round(idle / 1024, 1),
                "rss_mib_with_streams": round(peak / 1024, 1),
                "kib_per_stream": round((peak - idle) / max(held["open"], 1), 1),
                "moltbot_fds_held": fds, "moltbot_nofile": resource.getrlimit(resource.RLIMIT_NOFILE)[0],
                "refused_emfile": emfile,
            }
        finally:
            m.stop()
            fake.stop()
    results["held_streams"] = out


def startup(bins, a, results):
    fake = Fake(bins, "--echo")
    try:
        times, rss, anon, mapped = [], [], [], []
        for _ in range(a.starts):
            m = Moltbot(bins, fake.url)
            times.append(m.startup_s)
            time.sleep(1.0)
            rss.append(rss_kib(m.pid))
            own, shared = rss_parts_kib(m.pid)
            anon.append(own)
            mapped.append(shared)
            m.stop()
        results["startup"] = {"to_ready_ms_median": round(statistics.median(times) * 1000, 1),
                              "to_ready_ms_all": [round(t * 1000, 1) for t in times],
                              "idle_rss_mib_median": round(statistics.median(rss) / 1024, 1),
                              "idle_rss_anon_mib_median": round(statistics.median(anon) / 1024, 1),
                              "idle_rss_file_mib_median": round(statistics.median(mapped) / 1024, 1)}
    finally:
        fake.stop()


def free_port():
    import socket
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def litellm_peer(bins, a, results):
    """LiteLLM proxy (PyPI `litellm[proxy]`, `make bench-peers` installs it) against the same fake upstream,
    pinned like moltbot: the same non-streaming figures. One worker, no database, a master key (its cheapest
    authenticated configuration: a string comparison), its cost map read locally (no network)."""
    exe = a.litellm
    fake = Fake(bins, "--reply", "Hello from the fake upstream, a short reply.", "--chunks", "4")
    tmp = tempfile.TemporaryDirectory(prefix="moltbot-bench-litellm-")
    cfg = os.path.join(tmp.name, "config.yaml")
    with open(cfg, "w") as f:
        f.write("model_list:\n  - model_name: fake-model\n    litellm_params:\n      model: openai/fake-model\n"
                f"      api_base: {fake.url}\n      api_key: sk-bench\n"
                "litellm_settings:\n  telemetry: false\n  drop_params: true\n"
                f"general_settings:\n  master_key: {LITELLM_KEY}\n")
    port = free_port()
    env = dict(os.environ, LITELLM_LOCAL_MODEL_COST_MAP="True", LITELLM_LOG="ERROR", NO_PROXY="127.0.0.1")
    log = open(os.path.join(tmp.name, "log"), "wb")
    t0 = time.perf_counter()
    proc = subprocess.Popen(pin([exe, "--config", cfg, "--host", "127.0.0.1", "--port", str(port),
                                 "--num_workers", "1"], "moltbot"), env=env, stdout=log, stderr=log,
                            cwd=tmp.name)
    try:
        wait_ok(f"http://127.0.0.1:{port}/health/liveliness", proc, t0 + 180, log.name, 0.05)
        startup_s = time.perf_counter() - t0
        time.sleep(2.0)
        idle = rss_kib(proc.pid)
        url = f"http://127.0.0.1:{port}/v1/chat/completions"
        body = dict(CHAT, model="fake-model")
        out = {"version": subprocess.run([os.path.join(os.path.dirname(exe), "python"), "-c",
                                          "import importlib.metadata as m; print(m.version('litellm'))"],
                                         capture_output=True, text=True).stdout.strip(),
               "to_ready_ms": round(startup_s * 1000), "idle_rss_mib": round(idle / 1024, 1)}
        for c in a.litellm_concurrency:
            n = max(a.litellm_requests, c * 10)
            runs = [measured(bins, proc.pid, url, body, cpu=tree_cpu_seconds, key=LITELLM_KEY, requests=n,
                             concurrency=c, warmup=c * 2) for _ in range(a.runs)]
            out[f"c{c}"] = {"rps": median_of(runs, "rps"), "p50_us": median_of(runs, "p50_us"),
                            "p99_us": median_of(runs, "p99_us"),
                            "cpu_us_per_req": statistics.median(r["cpu_s"] / r["requests"] * 1e6 for r in runs)}
        out["rss_after_load_mib"] = round(rss_kib(proc.pid) / 1024, 1)
        results["litellm"] = out
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
        fake.stop()
        tmp.cleanup()


def versions(bins):
    def cmd(*c):
        try:
            return subprocess.run(c, capture_output=True, text=True, timeout=10).stdout.strip().splitlines()[0]
        except (OSError, IndexError):
            return "?"
    cpu = "?"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{CORES} cores ({cpu}), {mem:.0f} GiB, {platform.platform()}",
        "moltbot": cmd(bins["moltbot"], "--version") + ", built " + datetime.datetime.fromtimestamp(
            os.path.getmtime(bins["moltbot"]), datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "git": cmd("git", "-C", ROOT, "describe", "--always") + (
            # Dirty means changed code: the previous run's report files do not count.
            "-dirty" if cmd("git", "-C", ROOT, "status", "--porcelain", "--untracked-files=no", "--", ".",
                            ":!bench/REPORT.md", ":!bench/report.json") not in ("", "?") else ""),
        "rustc": cmd("rustc", "--version"),
        "postgres": cmd("psql", PG_URL, "-tAc", "SHOW server_version"),
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--target-dir", default=os.path.join(ROOT, "target", "bench"))
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--requests", type=int, default=3000)
    ap.add_argument("--stream-requests", type=int, default=300)
    ap.add_argument("--concurrency", type=lambda s: [int(x) for x in s.split(",")], default=[1, 16, 64, 256])
    ap.add_argument("--streams", type=lambda s: [int(x) for x in s.split(",")], default=[1000, 5000, 10000])
    ap.add_argument("--hold-s", type=float, default=8.0)
    ap.add_argument("--starts", type=int, default=5)
    ap.add_argument("--quick", action="store_true", help="fewer requests and streams (a smoke run)")
    ap.add_argument("--litellm", default=os.path.join(ROOT, "target", "bench", "litellm-venv", "bin", "litellm"),
                    help="LiteLLM proxy's executable (`make bench-peers`); skipped when absent")
    ap.add_argument("--litellm-requests", type=int, default=1000)
    ap.add_argument("--litellm-concurrency", type=lambda s: [int(x) for x in s.split(",")], default=[1, 64])
    ap.add_argument("--only", default=None, help="comma-separated phases to run (default: all)")
    ap.add_argument("--json", default=os.path.join(ROOT, "bench", "report.json"))
    ap.add_argument("--out", default=os.path.join(ROOT, "bench", "REPORT.md"))
    a = ap.parse_args()
    if a.quick:
        a.runs, a.requests, a.stream_requests, a.streams, a.starts = 1, 500, 50, [500], 2
        a.litellm_requests = 200
    rel = os.path.join(a.target_dir, "release")
    bins = {"moltbot": os.path.join(rel, "moltbot"), "fake": os.path.join(rel, "moltbot-fake-upstream"),
            "load": os.path.join(rel, "moltbot-load"), "floor": os.path.join(rel, "moltbot-floor-proxy")}
    for b in bins.values():
        if not os.access(b, os.X_OK):
            sys.exit(f"{b} is missing: CARGO_TARGET_DIR={a.target_dir} cargo build --release -p moltbot "
                     "-p moltbot-testkit -p moltbot-bench")
    soft, hard, raised = raise_nofile()
    pg_ok = subprocess.run(["psql", PG_URL, "-tAc", "SELECT 1"], capture_output=True).returncode == 0
    results = {"versions": versions(bins), "nofile": {"soft_before": soft, "hard": hard, "raised_to": raised},
               "args": {k: v for k, v in vars(a).items() if k not in ("json", "out")}, "cores": CORES}
    t0 = time.time()
    for name, phase in [("startup", lambda: startup(bins, a, results)),
                        ("non-streaming", lambda: non_streaming(bins, a, results, pg_ok)),
                        ("streaming", lambda: streaming(bins, a, results)),
                        ("held streams", lambda: held_streams(bins, a, results)),
                        ("litellm", lambda: litellm_peer(bins, a, results))]:
        if a.only and name not in a.only.split(","):
            continue
        if name == "litellm" and not os.access(a.litellm, os.X_OK):
            print(f"::: {name}: skipped ({a.litellm} is missing; `make bench-peers` installs it)", file=sys.stderr)
            continue
        t = time.time()
        print(f"::: {name}", file=sys.stderr, flush=True)
        phase()
        print(f"    {time.time() - t:.0f} s", file=sys.stderr, flush=True)
    results["wall_s"] = round(time.time() - t0)
    with open(a.json, "w") as f:
        json.dump(results, f, indent=2)
    import report  # bench/report.py: the Markdown rendering
    with open(a.out, "w") as f:
        f.write(report.render(results, " ".join(["python3", "bench/harness.py", *sys.argv[1:]])))
    print(f"wrote {a.out} and {a.json}", file=sys.stderr)


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    main()
