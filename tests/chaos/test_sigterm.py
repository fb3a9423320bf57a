"""SIGTERM with 100 live streams: `/ready` turns 503 at once (before any stream ends), every stream still runs to
its end within the grace period (finish chunk, usage, `[DONE]`, the whole text), each reply is stored complete,
and the process exits 0 once they are done."""

import threading
import time

from chaos import chat, model_toml, request

STREAMS = 100
DELAY, GRACE = 1.0, 10.0  # server.shutdown_delay, server.shutdown_grace


def test_sigterm_with_100_live_streams_drops_readiness_first_and_finishes_every_stream(upstreams, gateways):
    # Each stream: 20 chunks 100 ms apart, so ~2 s, most of it after the SIGTERM.
    up = upstreams("--chunks", "20", "--interval-ms", "100")
    gw = gateways(model_toml("default", up.url),
                  server={"shutdown_delay": f"{int(DELAY * 1000)}ms", "shutdown_grace": f"{int(GRACE)}s"}).start()
    key = gw.create_key()

    started = threading.Semaphore(0)
    replies = [None] * STREAMS
    contents = [f"stream {i} " + "x" * 40 for i in range(STREAMS)]

    def client(i):
        replies[i] = chat(gw.url, key, contents[i], stream=True, timeout=DELAY + GRACE + 10,
                          on_first_chunk=lambda _r: started.release())

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(STREAMS)]
    for t in threads:
        t.start()
    for _ in range(STREAMS):
        assert started.acquire(timeout=30), "not every stream started"
    assert request("GET", f"{gw.admin_url}/ready").status == 200

    polls = []  # (seconds after SIGTERM, listener, status)
    polling = threading.Event()

    def poll():
        while not polling.is_set():
            for name, base in (("dialog", gw.url), ("admin", gw.admin_url)):
                r = request("GET", f"{base}/ready", timeout=2)
                polls.append((r.started - t0, name, r.status))
            time.sleep(0.02)

    t0 = time.monotonic()
    gw.sigterm()
    poller = threading.Thread(target=poll, daemon=True)
    poller.start()
    rc = gw.proc.wait(timeout=DELAY + GRACE + 10)
    exited = time.monotonic() - t0
    polling.set()
    poller.join(timeout=5)
    for t in threads:
        t.join(timeout=5)

    ends = sorted(r.ended - t0 for r in replies)
    dropped = min((s for s, _, status in polls if status == 503), default=None)
    refused = min((s for s, _, status in polls if status == 0), default=None)
    print(f"\nSIGTERM with {STREAMS} live streams: /ready 503 after {dropped:.3f}s, connections refused after "
          f"{refused:.3f}s; streams ended {ends[0]:.3f}s..{ends[-1]:.3f}s after it; exit {rc} after {exited:.3f}s "
          f"(delay {DELAY}s, grace {GRACE}s)")

    # Readiness drops first: /ready says 503 right after the signal, before any stream ended, and never 200
    # again; the listeners stop accepting only after the delay.
    assert dropped is not None and dropped < 0.25, polls[:6]
    assert all(s < dropped for s, _, status in polls if status == 200), polls[:6]
    assert dropped < ends[0], (dropped, ends[0])
    assert refused is None or refused >= DELAY - 0.1, refused

    # Every stream ended cleanly, complete, within the grace period.
    bad = [(i, r.error, r.text) for i, r in enumerate(replies) if not r.ok]
    assert not bad, bad
    for i, r in enumerate(replies):
        assert r.done and r.finish_reason == "stop" and r.text == f"echo: {contents[i]}", (i, r)
    assert ends[-1] <= DELAY + GRACE, ends[-1]
    assert rc == 0 and exited >= ends[-1] - 0.05, (rc, exited, ends[-1])

    # Nothing truncated in the database: each reply stored whole and completed.
    rows = gw.rows("SELECT content, status FROM messages WHERE role = 'assistant'")
    stored = dict(rows)
    assert len(rows) == len(stored) == STREAMS
    for c in contents:
        assert stored.get(f"echo: {c}") == "completed", (c, stored.get(f"echo: {c}"))
