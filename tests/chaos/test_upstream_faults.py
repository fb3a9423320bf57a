"""Upstream faults under concurrent load: a primary model whose upstream faults ~30 % of its requests (429 with
Retry-After, 500/502/503, connection closed without an answer, stream cut or garbage before the first token,
first-byte timeouts, slow drip), a model whose endpoint refuses connections, and a healthy fallback. Clients must
see ≥ 99.9 % success, and every request is recorded exactly once. Non-streamed turns get one JSON reply from the
upstream, so for them the same faults hit the whole reply (a hang is caught by the total timeout, not the first-byte
one). Faults after the first token of a stream cannot be retried (the client already has part of the answer): they
must fail cleanly, each once, and be recorded once; the same faults on a non-streamed turn's JSON reply are retried
or fall back, because its client has seen nothing yet."""

import collections
import json
import os

from chaos import Load, chat, closed_port_url, env_float, model_toml

REQUESTS = int(os.environ.get("CHAOS_REQUESTS", "1000"))
CLIENTS = 16
FAULT_RATE = 0.3
# Everything a retry or a fallback can absorb (see moltbot-fake-upstream's --faults).
EARLY_FAULTS = ["429", "500", "502", "503", "reset", "cut", "garbage", "timeout", "drip"]

RETRY = {"max_attempts": 3, "base_delay": "20ms", "max_delay": "200ms", "retry_after_cap": "2s"}
# `total` also ends a non-streamed turn's hung JSON reply (then the fallback answers).
TIMEOUTS = {"connect": "1s", "first_byte": "1s", "idle": "2s", "total": "5s"}
CIRCUIT = {"failure_threshold": 5, "open_for": "2s"}


def records_by_request(gw) -> tuple[dict, dict]:
    """request id -> [(role, status, content)] of its messages, and -> [outcome] of its usage records."""
    messages = collections.defaultdict(list)
    for rid, role, status, content in gw.rows(
            "SELECT request_id, role, status, content FROM messages ORDER BY conversation_id, seq"):
        messages[rid].append((role, status, content))
    usage = collections.defaultdict(list)
    for rid, outcome in gw.rows("SELECT request_id, outcome FROM usage_records"):
        usage[rid].append(outcome)
    return messages, usage


def test_thirty_percent_upstream_faults_with_a_fallback_leave_clients_unharmed(upstreams, gateways):
    faulty = upstreams("--chunks", "3", "--fault-rate", str(FAULT_RATE), "--faults", ",".join(EARLY_FAULTS),
                       "--seed", os.environ.get("CHAOS_SEED", "7"), "--retry-after", "1", "--drip-ms", "150")
    healthy = upstreams("--chunks", "3")
    models = (
        model_toml("chaos", faulty.url, fallbacks=["backup"], retry=RETRY, timeouts=TIMEOUTS, circuit=CIRCUIT)
        + model_toml("refused", closed_port_url(), fallbacks=["chaos", "backup"], retry=RETRY, timeouts=TIMEOUTS,
                     circuit=CIRCUIT)
        + model_toml("backup", healthy.url, timeouts=TIMEOUTS)
    )
    gw = gateways(models).start()
    key = gw.create_key()

    # One turn in ten goes to the model whose endpoint refuses connections (its chain: chaos, then backup).
    load = Load(lambda: gw.url, key, CLIENTS, total=REQUESTS,
                models=lambda c, seq: "refused" if (c + 3 * seq) % 10 == 0 else "chaos").start()
    load.join(timeout=240)
    gw.stop()
    stats = faulty.stop()

    turns = load.turns
    acked, failed = load.acknowledged(), load.failed()
    streamed = sum(t.stream for t in turns)
    refused = sum(t.model == "refused" for t in turns)
    success = len(acked) / len(turns)
    latencies = sorted(t.reply.ended - t.reply.started for t in turns)
    print(f"\n{len(turns)} requests ({streamed} streamed, {refused} to the refusing endpoint) from {CLIENTS} clients: "
          f"{len(acked)} succeeded ({success:.4%}); upstream: {stats}; "
          f"latency p50 {latencies[len(latencies) // 2]:.3f}s max {latencies[-1]:.3f}s")
    assert len(turns) == REQUESTS

    # The faults really happened: ~30 % of the faulty upstream's requests, every kind of them.
    assert stats and stats["requests"] > 0, stats
    rate = sum(stats["faults"].values()) / stats["requests"]
    assert 0.25 <= rate <= 0.35, stats
    assert sorted(stats["faults"]) == sorted(EARLY_FAULTS), stats

    assert success >= 0.999, [(t.model, t.stream, t.reply.status, t.reply.error) for t in failed]

    # Every request is recorded exactly once (one usage record, one user and at most one assistant message),
    # and every acknowledged answer is stored once, complete, beside its question.
    messages, usage = records_by_request(gw)
    rids = [t.reply.request_id for t in turns]
    assert None not in rids and len(set(rids)) == len(rids)
    assert set(usage) == set(rids), "usage records without a request, or requests without a record"
    duplicated = {rid: u for rid, u in usage.items() if len(u) != 1}
    assert not duplicated, duplicated
    for t in acked:
        rid = t.reply.request_id
        assert usage[rid] == ["ok"], (rid, usage[rid])
        assert messages[rid] == [("user", "completed", t.content), ("assistant", "completed", t.reply.text)], (
            rid, messages[rid])
    # Per conversation, the completed messages are exactly the acknowledged turns, in order.
    convs = collections.defaultdict(list)
    for t in sorted(acked, key=lambda t: (t.client, t.seq)):
        convs[t.reply.conversation].append(t)
    assert len(convs) == CLIENTS and None not in convs
    for conv, ts in convs.items():
        stored = gw.rows("SELECT role, content FROM messages WHERE conversation_id = ? AND status = 'completed' "
                         "ORDER BY seq", conv)
        want = [p for t in ts for p in (("user", t.content), ("assistant", f"echo: {t.content}"))]
        assert stored == want, conv


def test_faults_after_the_first_token_fail_cleanly_once_and_are_recorded_once(upstreams, gateways):
    requests = max(40, REQUESTS // 5)
    faulty = upstreams("--chunks", "4", "--fault-rate", str(FAULT_RATE), "--faults", "cut-late,stall-late",
                       "--seed", "11")
    healthy = upstreams()
    timeouts = {**TIMEOUTS, "idle": "500ms", "total": "3s"}
    # The circuit stays closed: non-streamed turns whose reply stalled count as failed calls, and an open
    # circuit would send streams to the fallback before their first token.
    circuit = {**CIRCUIT, "failure_threshold": 1000}
    models = (model_toml("chaos", faulty.url, fallbacks=["backup"], retry=RETRY, timeouts=timeouts, circuit=circuit)
              + model_toml("backup", healthy.url))
    gw = gateways(models).start()
    key = gw.create_key()
    load = Load(lambda: gw.url, key, 8, total=requests, models=lambda c, seq: "chaos").start()
    load.join(timeout=120)
    gw.stop()
    stats = faulty.stop()
    failed = load.failed()
    print(f"\n{requests} requests, {len(failed)} failed after their first token; upstream: {stats}")

    # Nothing is retried or sent to the fallback once a streamed answer has begun: each fault injected into a
    # stream is exactly one failed streamed turn. A non-streamed turn's client has seen nothing when its JSON
    # reply breaks off or stalls: it is retried or falls back, and succeeds.
    assert len(load.turns) == requests
    assert stats["requests"] >= requests
    assert all(t.stream for t in failed), [(t.stream, t.reply.status, t.reply.error) for t in failed]
    assert len(failed) == sum(stats["stream_faults"].values()) > 0, stats
    assert sum(stats["faults"].values()) > len(failed), stats
    messages, usage = records_by_request(gw)
    backends = dict(gw.rows("SELECT request_id, backend FROM usage_records"))
    assert all(backends[t.reply.request_id] == "chaos" for t in load.turns if t.stream), "a stream fell back"
    for t in failed:
        r = t.reply
        # Part of the answer, then one error event in the OpenAI envelope, and no [DONE].
        assert r.status == 200 and not r.done and r.error.startswith("error event"), r
        assert f"echo: {t.content}".startswith(r.text) and r.text, r
        last = [ln for ln in r.body.decode().splitlines() if ln.startswith("data:")][-1]
        err = json.loads(last[5:])["error"]
        assert err["type"] == "server_error" and err["message"], err
        # Recorded once: the question and the partial answer marked failed, one usage record.
        assert usage[r.request_id] == ["error"], usage[r.request_id]
        roles = [(role, status) for role, status, _ in messages[r.request_id]]
        assert roles in ([("user", "failed"), ("assistant", "failed")], [("user", "failed")]), roles
    for t in load.acknowledged():
        assert usage[t.reply.request_id] == ["ok"]
        assert t.reply.text == f"echo: {t.content}", t.reply
    # A conversation goes on after a failed turn: the next turn of each client succeeded or failed on its own.
    assert all(t.reply.status == 200 for t in load.turns)


def test_a_healthy_turn_round_trips(upstreams, gateways):
    """The client itself: a streamed and a plain turn through a healthy upstream are read as complete."""
    up = upstreams("--chunks", "3")
    gw = gateways(model_toml("default", up.url)).start()
    key = gw.create_key()
    for stream in (False, True):
        r = chat(gw.url, key, f"hello {stream}", stream=stream)
        assert r.ok, r
        assert r.finish_reason == "stop" and r.text == f"echo: hello {stream}"
        assert r.done == stream
