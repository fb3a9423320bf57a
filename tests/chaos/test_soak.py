"""Soak: mixed traffic for SOAK_S seconds (default 60; `make soak` runs 30 minutes) with moltbot's RSS sampled every
second. The mix, drawn per turn by a seeded PRNG on every client: plain turns, conversation turns (a conversation is
restarted after 20 turns), streamed turns read to the end, streams the client abandons after the first content
chunk (cancels), invalid requests (400), unknown models (404), and an upstream that faults 10 % of its requests —
some early (retried or sent to the fallback), some after the first token (a visible, recorded failure).

It shows: RSS stays flat after warm-up — every sample after the first WARMUP_FRACTION of the run is within 10 % of
the warm-up's last level, and the last third's mean within 10 % of the first third's (no slow leak hidden under the
ceiling); no 500, no hang, no malformed response; the process serves `/ready` at the end; every request that reached
the chat service has its usage record. Writes the samples and a summary to target/soak/ (SOAK_OUT)."""

import collections
import http.client
import json
import os
import random
import secrets
import statistics
import threading
import time
import urllib.parse
from pathlib import Path

from chaos import chat, model_toml, request

SOAK_S = float(os.environ.get("SOAK_S", "60"))
CLIENTS = int(os.environ.get("SOAK_CLIENTS", "8"))
WARMUP_FRACTION = 0.25
OUT = Path(os.environ.get("SOAK_OUT", Path(__file__).resolve().parents[2] / "target" / "soak"))

RETRY = {"max_attempts": 2, "base_delay": "10ms", "max_delay": "100ms", "retry_after_cap": "1s"}
TIMEOUTS = {"connect": "1s", "first_byte": "1s", "idle": "1s", "total": "10s"}
KINDS = ["plain", "conversation", "stream", "cancel", "invalid", "unknown_model"]
WEIGHTS = [3, 3, 3, 2, 1, 1]


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def cancel_after_first_chunk(base: str, key: str, content: str) -> str:
    """A streamed turn the client abandons once content arrived: returns what it saw."""
    u = urllib.parse.urlsplit(base)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=30)
    try:
        conn.request("POST", "/v1/chat/completions", body=json.dumps(
            {"model": "soak", "messages": [{"role": "user", "content": content}], "stream": True}),
            headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"})
        r = conn.getresponse()
        if r.status != 200:
            r.read()
            return f"status {r.status}"
        while True:
            line = r.fp.readline()
            if not line:
                return "ended before content"
            if line.startswith(b"data:") and b'"content"' in line:
                return "cancelled"
    finally:
        conn.close()  # closes the socket mid-stream


def raw(base: str, key: str, body: dict) -> int:
    u = urllib.parse.urlsplit(base)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=30)
    try:
        conn.request("POST", "/v1/chat/completions", body=json.dumps(body),
                     headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"})
        r = conn.getresponse()
        payload = json.loads(r.read())
        assert "error" in payload and payload["error"]["message"], payload
        return r.status
    finally:
        conn.close()


def test_soak_rss_stays_flat_under_mixed_traffic(upstreams, gateways):
    faulty = upstreams("--chunks", "4", "--fault-rate", "0.1", "--faults", "429,500,503,reset,cut,cut-late",
                       "--seed", os.environ.get("SOAK_SEED", "11"), "--retry-after", "1")
    healthy = upstreams("--chunks", "4")
    models = (model_toml("soak", faulty.url, fallbacks=["backup"], retry=RETRY, timeouts=TIMEOUTS)
              + model_toml("backup", healthy.url, timeouts=TIMEOUTS))
    gw = gateways(models).start()
    key = gw.create_key()
    pid = gw.proc.pid

    outcomes = collections.Counter()
    problems: list[str] = []
    lock = threading.Lock()
    stop = threading.Event()

    def client(c: int):
        rng = random.Random(c)
        conv, turns_in_conv = None, 0
        while not stop.is_set():
            kind = rng.choices(KINDS, WEIGHTS)[0]
            content = f"s{c}-{secrets.token_hex(4)}"
            try:
                if kind in ("plain", "conversation", "stream"):
                    reply = chat(gw.url, key, content, model="soak", stream=kind == "stream",
                                 conversation=conv if kind == "conversation" else None)
                    if reply.ok:
                        label = "ok"
                        if kind == "conversation":
                            conv, turns_in_conv = reply.conversation, turns_in_conv + 1
                            if turns_in_conv >= 20:
                                conv, turns_in_conv = None, 0
                    elif reply.status in (200, 502, 504) and "upstream" in (reply.error or "").lower():
                        label = "upstream_fault"  # after the first token: visible by design
                    else:
                        label = "problem"
                        with lock:
                            problems.append(f"{kind}: {reply.status} {reply.error}")
                elif kind == "cancel":
                    label = cancel_after_first_chunk(gw.url, key, content)
                    if label not in ("cancelled", "ended before content"):
                        with lock:
                            problems.append(f"cancel: {label}")
                elif kind == "invalid":
                    status = raw(gw.url, key, {"model": "soak", "messages": "not a list"})
                    label = "invalid_400" if status == 400 else f"invalid_{status}"
                else:
                    status = raw(gw.url, key, {"model": "no-such-model",
                                               "messages": [{"role": "user", "content": content}]})
                    label = "unknown_404" if status == 404 else f"unknown_{status}"
            except Exception as e:  # noqa: BLE001 - every surprise is a finding
                label = "problem"
                with lock:
                    problems.append(f"{kind}: {type(e).__name__}: {e}")
            with lock:
                outcomes[(kind, label)] += 1

    threads = [threading.Thread(target=client, args=(c,), daemon=True) for c in range(CLIENTS)]
    started = time.monotonic()
    samples: list[tuple[float, int]] = []
    for t in threads:
        t.start()
    while time.monotonic() - started < SOAK_S:
        samples.append((round(time.monotonic() - started, 1), rss_kib(pid)))
        time.sleep(1)
    stop.set()
    for t in threads:
        t.join(timeout=60)
    assert not any(t.is_alive() for t in threads), "a soak client hung"

    ready = request("GET", f"{gw.url}/ready")
    assert ready.status == 200, ready.body
    warm_end = SOAK_S * WARMUP_FRACTION
    warm = [kib for t, kib in samples if t <= warm_end]
    after = [kib for t, kib in samples if t > warm_end]
    baseline = statistics.median(warm[-max(1, len(warm) // 4):])
    third = max(1, len(after) // 3)
    first_mean, last_mean = statistics.mean(after[:third]), statistics.mean(after[-third:])
    total = sum(outcomes.values())
    summary = {
        "seconds": SOAK_S, "clients": CLIENTS, "requests": total,
        "outcomes": {f"{k}/{label}": n for (k, label), n in sorted(outcomes.items())},
        "rss_kib": {"warmup_level": baseline, "max_after_warmup": max(after), "min_after_warmup": min(after),
                    "first_third_mean": round(first_mean), "last_third_mean": round(last_mean)},
        "upstream": faulty.stop(),
        "problems": problems[:20],
    }
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "samples.csv").write_text("seconds,rss_kib\n" + "".join(f"{t},{k}\n" for t, k in samples))
    (OUT / "summary.json").write_text(json.dumps(summary, indent=2))
    print(f"\nsoak: {json.dumps(summary)}")

    assert not problems, problems[:20]
    for kind in KINDS:
        assert any(k == kind for k, _ in outcomes), f"no {kind} traffic in {dict(outcomes)}"
    assert outcomes[("cancel", "cancelled")] > 0, dict(outcomes)
    assert summary["upstream"]["faults"], summary["upstream"]
    assert max(after) <= baseline * 1.10, f"RSS grew past 10 % of the warm-up level: {summary['rss_kib']}"
    assert last_mean <= first_mean * 1.10, f"RSS trends upward: {summary['rss_kib']}"

    # Every request that reached the chat service (all but the 400s and 404s) has exactly one usage record,
    # once the process has written what it queued (a graceful stop flushes).
    gw.stop()
    served = sum(n for (k, _), n in outcomes.items() if k not in ("invalid", "unknown_model"))
    rows = gw.rows("SELECT count(*) FROM usage_records")[0][0]
    by_outcome = dict(gw.rows("SELECT outcome, count(*) FROM usage_records GROUP BY outcome"))
    assert rows == served, f"{rows} usage records ({by_outcome}) for {served} requests served: {dict(outcomes)}"
