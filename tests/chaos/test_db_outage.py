"""A database outage on a private PostgreSQL (stopped like a crash, `pg_ctl -m immediate`, for CHAOS_DB_OUTAGE_S
seconds, 30 by default): every request gets a prompt, clear 503 in the OpenAI envelope (never a 500, a hang or a
dropped connection), `/ready` says unavailable, and once the database is back the same process serves again (no
restart), conversations from before the outage included."""

import collections
import json
import threading
import time

from chaos import Load, chat, env_float, model_toml, request

OUTAGE = env_float("CHAOS_DB_OUTAGE_S", 30)
CLIENTS = 4
PROMPT = 10.0  # the longest a request may take during the outage (the pool's acquire timeout is 5 s)


def envelope(body: bytes) -> dict:
    err = json.loads(body)["error"]
    assert set(err) >= {"message", "type", "param", "code"} and err["message"], err
    return err


def test_database_outage_gives_clear_503s_and_recovers_without_restart(upstreams, gateways, private_postgres):
    pg = private_postgres()
    up = upstreams("--chunks", "2")
    gw = gateways(model_toml("default", up.url), database_url=pg.url).init_db().start()
    key = gw.create_key()
    before = chat(gw.url, key, "before the outage")
    assert before.ok, before
    pid = gw.proc.pid

    pg.stop("immediate")
    down_at = time.monotonic()
    stop = threading.Event()
    seen = collections.defaultdict(list)  # what -> [(status, seconds, body, headers)]
    lock = threading.Lock()

    def log(what, status, seconds, body=b"", headers=None):
        with lock:
            seen[what].append((status, seconds, body, headers or {}))

    def ready_poller():
        while not stop.is_set():
            for name, base in (("ready(dialog)", gw.url), ("ready(admin)", gw.admin_url)):
                r = request("GET", f"{base}/ready", timeout=PROMPT + 5)
                log(name, r.status, r.ended - r.started, r.body, r.headers)
            time.sleep(0.5)

    def other_requests():
        while not stop.is_set():
            for what, method, path in (("models", "GET", "/v1/models"),
                                       ("conversations", "GET", "/v1/conversations")):
                r = request(method, f"{gw.url}{path}", key=key, timeout=PROMPT + 5)
                log(what, r.status, r.ended - r.started, r.body, r.headers)
            time.sleep(0.2)

    threads = [threading.Thread(target=f, daemon=True) for f in (ready_poller, other_requests)]
    for t in threads:
        t.start()
    load = Load(lambda: gw.url, key, CLIENTS, pause_after_failure=0.2).start()
    time.sleep(max(0.0, OUTAGE - (time.monotonic() - down_at)))
    load.stop(timeout=PROMPT + 10)
    stop.set()
    for t in threads:
        t.join(timeout=PROMPT + 10)
    outage = time.monotonic() - down_at

    pg.start()
    up_at = time.monotonic()
    recovered, meanwhile = None, []
    while time.monotonic() - up_at < 30:
        r = chat(gw.url, key, "after the outage", conversation=before.conversation)
        if r.ok:
            recovered = time.monotonic() - up_at
            break
        meanwhile.append((r.status, r.body[:200]))
        time.sleep(0.2)
    assert recovered is not None, f"not serving 30 s after the database came back: {meanwhile[-3:]}"
    assert all(status == 503 for status, _ in meanwhile), meanwhile
    assert gw.alive() and gw.proc.pid == pid, "the process restarted"
    assert request("GET", f"{gw.url}/ready").status == 200

    # During the outage: chat turns (streamed and not) all got a prompt 503 in the envelope with Retry-After.
    turns = load.turns
    for t in turns:
        r = t.reply
        log("chat(stream)" if t.stream else "chat", r.status, r.ended - r.started, r.body,
            {"retry-after": r.retry_after} if r.retry_after else {})
    summary = {what: dict(collections.Counter(s for s, *_ in rs)) for what, rs in seen.items()}
    slowest = {what: round(max(sec for _, sec, *_ in rs), 2) for what, rs in seen.items()}
    print(f"\noutage {outage:.1f}s: statuses {summary}; slowest answer {slowest}; "
          f"recovered {recovered:.2f}s after the database came back")
    assert len(turns) >= CLIENTS
    for what, rs in seen.items():
        for status, seconds, body, headers in rs:
            assert seconds <= PROMPT, (what, status, seconds)
            if what.startswith("ready"):
                assert status == 503, (what, status, body)
                assert json.loads(body)["database"] == "unreachable", body
            elif what.startswith("chat"):
                assert status == 503, (what, status, body[:300])
                err = envelope(body)
                assert err["code"] == "database_unavailable", err
            else:
                # Reads may be served from a cache; if not, the same clear 503.
                assert status in (200, 503), (what, status, body[:300])
                if status == 503:
                    assert envelope(body)["code"] == "database_unavailable", body
    no_retry_after = [what for what, rs in seen.items() if not what.startswith("ready")
                      for status, _, _, h in rs if status == 503 and "retry-after" not in h]
    assert not no_retry_after, no_retry_after

    # After: the conversation from before the outage goes on, with its history.
    items = request("GET", f"{gw.url}/v1/conversations/{before.conversation}/items?order=asc", key=key).json()
    texts = ["".join(p.get("text", "") for p in i["content"]) for i in items["data"]]
    assert texts == ["before the outage", "echo: before the outage", "after the outage", "echo: after the outage"]
