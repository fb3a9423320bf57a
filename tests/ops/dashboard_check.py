#!/usr/bin/env python3
"""Real Prometheus, real moltbot, known traffic: every Grafana panel's query must return what the traffic
implies. Standard library only.

  MOLTBOT_BIN, FAKE_UPSTREAM_BIN   the binaries (default: target/debug/…)
  PROMETHEUS_BIN                   default: `prometheus` on PATH (Debian package `prometheus`)

Everything binds ephemeral ports. Counters are compared as rates over a window that starts after a
warm-up (so every series already exists) and ends after the traffic: rate = count / window, within 10 %
(Prometheus extrapolates to the window edges). Quantiles must fall in the range the fake upstream's
timing implies. A panel without an expectation here fails the check, and so does `or vector(0)`.
"""
import json
import math
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "deploy/grafana/moltbot.json"
RULES = ROOT / "deploy/prometheus/rules/moltbot.rules.yml"

# Traffic in the measured window.
N_OK, N_STREAM, N_404, N_400, N_BROKEN, N_LIMITED, N_FLAKY, N_TRIPPED, K_SLOW = 12, 4, 5, 3, 4, 3, 3, 2, 3
OK_CHUNKS, FLAKY_CHUNKS, SLOW_CHUNKS, INTERVAL_MS = 4, 2, 150, 30
QUIET = 12


_handed_out = set()


def free_port():
    """A free port on 127.0.0.1, never one already given out here: two binds in a row may get the same port."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in _handed_out:
            _handed_out.add(port)
            return port


# The API key chat requests carry: the bootstrap key moltbot writes at first start.
CHAT_KEY = {"secret": None}


def http(method, url, body=None, key=None, timeout=30):
    data = json.dumps(body).encode() if body is not None else None
    headers = {"content-type": "application/json"}
    if key:
        headers["authorization"] = f"Bearer {key}"
    req = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


class Procs:
    def __init__(self, tmp):
        self.tmp, self.procs = tmp, []

    def start(self, name, args, **kw):
        log = open(self.tmp / f"{name}.log", "w")
        p = subprocess.Popen(args, stdout=kw.pop("stdout", log), stderr=log, **kw)
        self.procs.append((name, p))
        return p

    def stop(self):
        for _, p in reversed(self.procs):
            p.terminate()
        for _, p in self.procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()


def fake(procs, name, *args):
    p = procs.start(name, [os.environ.get("FAKE_UPSTREAM_BIN", str(ROOT / "target/debug/moltbot-fake-upstream")),
                           *args], stdout=subprocess.PIPE, text=True)
    return p.stdout.readline().strip()


def wait_for(what, fn, timeout=60):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            if fn():
                return
        except (OSError, ValueError, KeyError):
            pass
        time.sleep(0.2)
    sys.exit(f"timed out waiting for {what}")


def moltbot_config(tmp, urls):
    chat, admin = free_port(), free_port()
    fast_retry = 'retry = { max_attempts = 2, base_delay = "10ms", max_delay = "20ms", retry_after_cap = "100ms" }'
    models = [
        ("ok", urls["ok"], fast_retry, 'api_key = "sk-ops-check-key-000000000000"'),
        ("broken", urls["broken"], fast_retry + "\ncircuit = { failure_threshold = 1000 }", ""),
        ("limited", urls["limited"], fast_retry + '\nkey_cooldown = "10ms"', ""),
        ("flaky", urls["flaky"], fast_retry, ""),
        ("tripped", urls["broken"], 'retry = { max_attempts = 1 }\ncircuit = { failure_threshold = 1, open_for = "1h" }', ""),
        ("slow", urls["slow"], fast_retry, ""),
    ]
    text = f'chat_addr = "127.0.0.1:{chat}"\nadmin_addr = "127.0.0.1:{admin}"\n' \
           f'database_url = "sqlite://{tmp}/moltbot.db"\n[log]\nformat = "json"\n' \
           '[server]\n# Prometheus scrapes from loopback: allowed without a `metrics` key.\n' \
           'admin_allow_cidrs = ["127.0.0.1/32"]\n' \
           f'[auth]\nbootstrap_key_file = "{tmp}/admin-key.txt"\n'
    for name, url, extra, key in models:
        text += f'\n[[models]]\nname = "{name}"\nendpoint = "{url}"\n{key}\n{extra}\n'
    (tmp / "moltbot.toml").write_text(text)
    return chat, admin


def chat(base, model, stream=False, body=None):
    payload = body if body is not None else {
        "model": model, "stream": stream, "messages": [{"role": "user", "content": "hi"}]}
    return http("POST", f"{base}/v1/chat/completions", payload, key=CHAT_KEY["secret"])[0]


def traffic(base, counts):
    """One round of every kind; `counts` scales each kind."""
    def expect(got, want, what):
        if got != want:
            sys.exit(f"{what}: status {got}, expected {want}")
    for _ in range(counts["ok"]):
        expect(chat(base, "ok"), 200, "ok")
    for _ in range(counts["stream"]):
        expect(chat(base, "ok", stream=True), 200, "stream")
    for _ in range(counts["404"]):
        expect(chat(base, "no-such-model"), 404, "unknown model")
    for _ in range(counts["400"]):
        expect(chat(base, None, body={"model": "ok"}), 400, "missing messages")
    for _ in range(counts["broken"]):
        expect(chat(base, "broken"), 502, "upstream 500")
    for _ in range(counts["limited"]):
        expect(chat(base, "limited"), 503, "upstream 429")
    for _ in range(counts["flaky"]):
        expect(chat(base, "flaky"), 200, "retried 503")
    for i in range(counts["tripped"]):
        # The first call of the warm-up fails upstream and opens the circuit; later ones are refused.
        expect(chat(base, "tripped"), 502 if counts.get("first_trip") and i == 0 else 503, "tripped circuit")


class Prom:
    def __init__(self, url):
        self.url = url

    def query(self, expr, at):
        q = urllib.parse.urlencode({"query": expr, "time": f"{at:.3f}"})
        status, body = http("GET", f"{self.url}/api/v1/query?{q}")
        data = json.loads(body)
        if data.get("status") != "success":
            sys.exit(f"query failed ({status}): {expr}: {body}")
        return {tuple(sorted(r["metric"].items())): float(r["value"][1]) for r in data["data"]["result"]}


def expectations(window):
    r = lambda n: n / window  # noqa: E731
    ok_success = N_OK + N_STREAM
    successes = ok_success + N_FLAKY + K_SLOW
    non_stream = N_OK + N_404 + N_400 + N_BROKEN + N_LIMITED + N_FLAKY + N_TRIPPED
    total = non_stream + N_STREAM + K_SLOW
    errors = N_BROKEN + N_LIMITED + N_TRIPPED
    fast = (0.0005, 0.5)
    return {
        "Requests per second by status": {"by": "status", "rates": {
            "200": r(ok_success + N_FLAKY + K_SLOW), "404": r(N_404), "400": r(N_400), "502": r(N_BROKEN),
            "503": r(N_LIMITED + N_TRIPPED)}},
        "Error ratio (5xx)": {"scalar": errors / total},
        "Latency, non-streaming": {"ranges": {"p50": fast, "p95": fast, "p99": (0.0005, 1.0)}},
        "Time to first token": {"ranges": {"p50": (0.0005, 0.25), "p95": (0.0005, 0.5)}},
        "Inter-token latency": {"ranges": {"p50": (0.02, 0.05), "p95": (0.02, 0.1)}},
        "Tokens per second": {"by": "kind", "rates": {
            "prompt": r(successes),
            "completion": r(OK_CHUNKS * ok_success + FLAKY_CHUNKS * N_FLAKY + SLOW_CHUNKS * K_SLOW)}},
        "Requests in flight": {"at_mid": K_SLOW},
        "Chat outcomes": {"by": ("model", "outcome"), "rates": {
            ("ok", "success"): r(ok_success), ("<unknown>", "invalid_request"): r(N_404),
            ("broken", "upstream_error"): r(N_BROKEN), ("limited", "rate_limited"): r(N_LIMITED),
            ("flaky", "success"): r(N_FLAKY), ("tripped", "circuit_open"): r(N_TRIPPED),
            ("slow", "success"): r(K_SLOW)}},
        "Upstream requests by status": {"by": ("backend", "status"), "rates": {
            ("ok", "200"): r(ok_success), ("broken", "500"): r(2 * N_BROKEN), ("limited", "429"): r(2 * N_LIMITED),
            ("flaky", "503"): r(N_FLAKY), ("flaky", "200"): r(N_FLAKY), ("slow", "200"): r(K_SLOW)}},
        "Upstream retries": {"by": "backend", "rates": {
            "broken": r(N_BROKEN), "limited": r(N_LIMITED), "flaky": r(N_FLAKY)}},
        "Rate limited": {"by": "reason", "rates": {"upstream": r(N_LIMITED)}},
        "Circuit breaker state": {"by": "backend", "values": {
            "ok": 0, "broken": 0, "limited": 0, "flaky": 0, "slow": 0, "tripped": 2}},
        "CPU (cores)": {"positive": True},
        "Resident memory": {"positive": True},
    }


def substitute(expr, window):
    return (expr.replace("$__rate_interval", f"{window}s").replace("$job", "moltbot")
            .replace('instance=~"$instance"', 'instance=~".*"'))


def key_of(labels, by):
    d = dict(labels)
    return tuple(d.get(k, "") for k in by) if isinstance(by, tuple) else d.get(by, "")


def close(got, want):
    return abs(got - want) <= max(0.10 * abs(want), 1e-9)


def check_panel(prom, panel, exp, t_end, t_mid, window):
    title, errors = panel["title"], []
    targets = panel["targets"]
    results = {t["legendFormat"]: prom.query(substitute(t["expr"], window), t_end) for t in targets}
    first = prom.query(substitute(targets[0]["expr"], window), t_end)
    if "rates" in exp or "values" in exp:
        want = exp.get("rates") or exp.get("values")
        got = {key_of(labels, exp["by"]): v for labels, v in first.items()}
        for k, w in want.items():
            if k not in got or not close(got[k], w):
                errors.append(f"{k}: got {got.get(k)}, expected {w:.4f}")
        for k, v in got.items():
            if k not in want and v != 0:
                errors.append(f"unexpected series {k} = {v}")
    elif "scalar" in exp:
        vals = list(first.values())
        if len(vals) != 1 or not close(vals[0], exp["scalar"]):
            errors.append(f"got {vals}, expected {exp['scalar']:.4f}")
    elif "ranges" in exp:
        for legend, (lo, hi) in exp["ranges"].items():
            vals = list(results[legend].values())
            if len(vals) != 1 or not (lo < vals[0] <= hi) or math.isnan(vals[0]):
                errors.append(f"{legend}: got {vals}, expected in ({lo}, {hi}]")
    elif "at_mid" in exp:
        mid = list(prom.query(substitute(targets[0]["expr"], window), t_mid).values())
        end = list(first.values())
        if mid != [float(exp["at_mid"])]:
            errors.append(f"while {K_SLOW} streams were open: got {mid}, expected {exp['at_mid']}")
        if end != [0.0]:
            errors.append(f"after the traffic: got {end}, expected 0")
    elif exp.get("positive"):
        vals = list(first.values())
        if not vals or not all(v > 0 for v in vals):
            errors.append(f"got {vals}, expected > 0")
    return title, errors


def check_logs(path):
    """The binary's JSON log so far: one ECS object per line, an access line per request, no secrets."""
    failures, access = 0, 0
    text = path.read_text()
    for n, line in enumerate(text.splitlines(), 1):
        try:
            entry = json.loads(line)
        except ValueError:
            print(f"FAIL  log line {n} is not JSON: {line[:200]}")
            return 1
        if not all(k in entry for k in ("@timestamp", "log.level", "message")):
            print(f"FAIL  log line {n} lacks ECS fields: {line[:200]}")
            failures += 1
        access += "http.response.status_code" in entry
    for secret in (CHAT_KEY["secret"], "sk-ops-check-key-000000000000"):
        if secret and secret in text:
            print("FAIL  a key appears in the logs")
            failures += 1
    if access == 0:
        print("FAIL  no access log lines")
        failures += 1
    print(f"{'FAIL' if failures else 'ok  '}  logs: {len(text.splitlines())} JSON lines, {access} access lines")
    return failures


def main():
    prometheus = os.environ.get("PROMETHEUS_BIN") or shutil.which("prometheus")
    if not prometheus:
        sys.exit("prometheus not found: apt-get install prometheus (or set PROMETHEUS_BIN)")
    dashboard = json.loads(DASHBOARD.read_text())
    if "or vector(0)" in DASHBOARD.read_text():
        sys.exit("the dashboard pads queries with `or vector(0)`")
    tmp = Path(tempfile.mkdtemp(prefix="moltbot-ops-"))
    procs = Procs(tmp)
    try:
        urls = {
            "ok": fake(procs, "fake-ok", "--reply", "one two three four", "--chunks", str(OK_CHUNKS),
                       "--interval-ms", str(INTERVAL_MS)),
            "broken": fake(procs, "fake-broken", "--status", "500"),
            "limited": fake(procs, "fake-limited", "--status", "429"),
            "flaky": fake(procs, "fake-flaky", "--flaky", str(N_FLAKY + 1), "--reply", "a b",
                          "--chunks", str(FLAKY_CHUNKS), "--interval-ms", str(INTERVAL_MS)),
            "slow": fake(procs, "fake-slow", "--reply", " ".join(["w"] * SLOW_CHUNKS), "--chunks", str(SLOW_CHUNKS),
                         "--interval-ms", str(INTERVAL_MS)),
        }
        chat_port, admin_port = moltbot_config(tmp, urls)
        moltbot = os.environ.get("MOLTBOT_BIN", str(ROOT / "target/debug/moltbot"))
        # Logs go to stderr (moltbot.log); stdout carries command output only.
        procs.start("moltbot", [moltbot, "--config", str(tmp / "moltbot.toml"), "serve",
                                "--ready-file", str(tmp / "ready.json")], cwd=tmp, env={"PATH": os.environ["PATH"]},
                    stdout=open(tmp / "moltbot.stdout", "w"))
        wait_for("moltbot", lambda: (tmp / "ready.json").exists())
        CHAT_KEY["secret"] = (tmp / "admin-key.txt").read_text().strip()
        base = f"http://127.0.0.1:{chat_port}"

        prom_port = free_port()
        config = {"global": {"scrape_interval": "1s", "evaluation_interval": "1s"}, "rule_files": [str(RULES)],
                  "scrape_configs": [{"job_name": "moltbot", "metrics_path": "/metrics",
                                      "static_configs": [{"targets": [f"127.0.0.1:{admin_port}"]}]}]}
        (tmp / "prometheus.yml").write_text(json.dumps(config))
        procs.start("prometheus", [prometheus, f"--config.file={tmp / 'prometheus.yml'}",
                                   f"--storage.tsdb.path={tmp / 'tsdb'}", f"--web.listen-address=127.0.0.1:{prom_port}"])
        prom = Prom(f"http://127.0.0.1:{prom_port}")
        wait_for("prometheus to scrape moltbot",
                 lambda: prom.query('up{job="moltbot"}', time.time()) and
                 list(prom.query('up{job="moltbot"}', time.time()).values()) == [1.0])

        # Warm-up: one of each, so every series exists before the window (first samples are not lost).
        traffic(base, {"ok": 1, "stream": 1, "404": 1, "400": 1, "broken": 1, "limited": 1, "flaky": 1,
                       "tripped": 2, "first_trip": True})
        chat(base, "slow", stream=True)
        # Quiet periods before and after the traffic make the window long against the 1 s scrape
        # interval, so rate()'s extrapolation to the window edges stays within a few percent.
        time.sleep(3)
        t0 = time.time()
        time.sleep(QUIET)

        slow = [threading.Thread(target=chat, args=(base, "slow", True)) for _ in range(K_SLOW)]
        for t in slow:
            t.start()
        # The slow streams last ~4.5 s; by now at least one scrape saw all of them open.
        time.sleep(2.5)
        t_mid = time.time()
        traffic(base, {"ok": N_OK, "stream": N_STREAM, "404": N_404, "400": N_400, "broken": N_BROKEN,
                       "limited": N_LIMITED, "flaky": N_FLAKY, "tripped": N_TRIPPED})
        for t in slow:
            t.join()
        time.sleep(QUIET)
        t_end = time.time()
        window = math.ceil(t_end - t0)
        if time.time() - t_mid < 1.5:
            time.sleep(1.5)

        exps = expectations(window)
        failures = 0
        for panel in dashboard["panels"]:
            exp = exps.get(panel["title"])
            if exp is None:
                print(f"FAIL  {panel['title']}: no expectation in tests/ops/dashboard_check.py")
                failures += 1
                continue
            title, errors = check_panel(prom, panel, exp, t_end, t_mid, window)
            print(f"{'FAIL' if errors else 'ok  '}  {title}")
            for e in errors:
                print(f"        {e}")
            failures += bool(errors)
        rule = prom.query("job:http_requests:rate5m", t_end)
        if not rule or not all(v > 0 for v in rule.values()):
            print(f"FAIL  recording rule job:http_requests:rate5m: {rule}")
            failures += 1
        failures += check_logs(tmp / "moltbot.log")
        print(f"{len(dashboard['panels'])} panels, window {window}s, {failures} failed")
        return 1 if failures else 0
    finally:
        procs.stop()
        if os.environ.get("KEEP_OPS_TMP"):
            print(f"logs in {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
