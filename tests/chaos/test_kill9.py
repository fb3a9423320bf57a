"""kill -9 under load, restart on the same database, repeatedly: every turn a client saw acknowledged (a complete
JSON answer, or a stream that reached its finish chunk and `[DONE]`) is in the database with its answer, and the
only failures are turns in flight at a kill or sent while the process was down."""

import collections
import os
import time

import pytest
from chaos import Load, model_toml, pg_rows

CLIENTS = 8
KILLS = int(os.environ.get("CHAOS_KILLS", "4"))
LOAD_BETWEEN_KILLS = 1.5  # seconds


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_repeated_kill9_under_load_loses_no_acknowledged_turn(backend, upstreams, gateways, shared_database):
    # Each upstream answer takes ~60 ms (3 chunks, 30 ms apart), so turns are in flight at every kill.
    up = upstreams("--chunks", "3", "--interval-ms", "30")
    if backend == "postgres":
        db = shared_database()
        gw = gateways(model_toml("default", up.url), database_url=db.url).init_db()
    else:
        gw = gateways(model_toml("default", up.url))
    gw.start()
    key = gw.create_key()

    where = {"base": gw.url}
    load = Load(lambda: where["base"], key, CLIENTS).start()
    windows = []  # (SIGKILL sent, restarted and ready, the killed process's URL)
    acked_before = 0
    for _ in range(KILLS):
        time.sleep(LOAD_BETWEEN_KILLS)
        acked_now = len(load.acknowledged())
        assert acked_now >= acked_before + CLIENTS, "no progress under load since the last restart"
        acked_before = acked_now
        killed, dead = time.monotonic(), gw.url
        gw.kill()
        gw.start()
        where["base"] = gw.url
        windows.append((killed, time.monotonic(), dead))
    time.sleep(LOAD_BETWEEN_KILLS)
    load.stop()
    gw.stop()

    acked, failed = load.acknowledged(), load.failed()
    downtime = [round(b - a, 3) for a, b, _ in windows]
    print(f"\n{backend}: {KILLS} kills, {len(load.turns)} turns, {len(acked)} acknowledged, {len(failed)} failed "
          f"(in flight at a kill or sent while down); restart took {downtime} s")
    assert len(acked) >= (KILLS + 1) * CLIENTS

    # Failures only around the kills: each failed turn was sent before a restart finished and ended after a kill
    # (or was sent to the killed process's address by a client that read it just before the switch).
    for t in failed:
        r = t.reply
        assert any(r.ended >= killed and (r.started <= up_at or t.base == dead) for killed, up_at, dead in windows), (
            "a failure outside the kill windows", t)

    # Zero lost: every acknowledged turn is stored, complete, with its answer, once.
    if backend == "postgres":
        rows = pg_rows(db.url, "SELECT request_id, role, status, content FROM messages ORDER BY conversation_id, seq")
    else:
        rows = gw.rows("SELECT request_id, role, status, content FROM messages ORDER BY conversation_id, seq")
    by_request = collections.defaultdict(list)
    for rid, role, status, content in rows:
        by_request[rid].append((role, status, content))
    lost = [t for t in acked if by_request.get(t.reply.request_id) != [
        ("user", "completed", t.content), ("assistant", "completed", f"echo: {t.content}")]]
    assert not lost, [(t.content, by_request.get(t.reply.request_id)) for t in lost]

    # Turns cut off by a kill are never mistaken for acknowledged ones: what they left is in progress (the
    # process died before deciding), and it belongs to a failed turn.
    failed_rids = {t.reply.request_id for t in failed}
    unfinished = [rid for rid, msgs in by_request.items() if any(s == "in_progress" for _, s, _ in msgs)]
    assert set(unfinished) <= failed_rids, set(unfinished) - failed_rids
    print(f"{backend}: lost 0 of {len(acked)} acknowledged turns; {len(unfinished)} turns left in progress by kills")

    # Every client's conversation went on across the restarts.
    per_client = collections.defaultdict(set)
    for t in acked:
        per_client[t.client].add(t.reply.conversation)
    assert all(len(convs) == 1 for convs in per_client.values()), per_client
    last_kill = windows[-1][1]
    assert {t.client for t in acked if t.reply.started > last_kill} == set(range(CLIENTS))
