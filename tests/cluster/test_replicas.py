"""Three replicas on one PostgreSQL database (and a Redis) behind a real nginx: a conversation moves between
replicas without losing its order, and a replica killed with SIGKILL under load loses no acknowledged turn."""

import time

from conftest import chat_servers
from harness import ADMIN_KEY, FakeUpstream, Load, RecordingUpstream, conversation_items, request, sse_events


def test_conversation_continued_through_different_replicas_keeps_its_history(
    cluster_factory, redis_factory, nginx_factory, tls
):
    upstream = RecordingUpstream()
    try:
        cluster = cluster_factory(upstream.url, redis_factory())
        replicas = [cluster.add() for _ in range(3)]
        nginx = nginx_factory(chat_servers=chat_servers(replicas)).start()
        key = cluster.create_key()

        # Each turn goes somewhere else: replica 1, 2, 3 directly, then nginx (streamed, then not).
        routes = [(r.url, None, False) for r in replicas] + [(nginx.https, tls, True), (nginx.https, tls, False)]
        expected = [{"role": "system", "content": "Be brief."}]
        conv = None
        for n, (base, ctx, stream) in enumerate(routes):
            content = f"turn {n}"
            body = {"model": "default", "messages": [{"role": "user", "content": content}], "stream": stream}
            if conv is None:
                body["messages"].insert(0, expected[0])
            else:
                body["conversation"] = conv
            r = request("POST", f"{base}/v1/chat/completions", key=key, body=body, context=ctx)
            assert r.status == 200, (n, r.status, r.body)
            conv = conv or r.headers["x-moltbot-conversation"]
            assert r.headers["x-moltbot-conversation"] == conv
            if stream:
                events = sse_events(r.body)
                assert events[-1] == "[DONE]"
                text = "".join(e["choices"][0]["delta"].get("content") or "" for e in events[:-1] if e["choices"])
            else:
                text = r.json()["choices"][0]["message"]["content"]
            assert text == f"echo: {content}"
            expected.append({"role": "user", "content": content})
            # What the model received is the whole history so far, in order, whichever replica served it.
            sent = [{"role": m["role"], "content": m["content"]} for m in upstream.chats[-1]]
            assert sent == expected, f"turn {n}: upstream got {sent}"
            expected.append({"role": "assistant", "content": text})

        assert len(upstream.chats) == len(routes)
        want = [(m["role"], m["content"]) for m in expected]
        for base, ctx in [(r.url, None) for r in replicas] + [(nginx.https, tls)]:
            assert conversation_items(base, key, conv, context=ctx) == want, base
    finally:
        upstream.stop()


def test_sigkill_of_one_replica_under_load_loses_no_acknowledged_turn(
    cluster_factory, redis_factory, nginx_factory, tls
):
    # Each turn takes ~150 ms upstream (3 chunks × 50 ms), so turns are in flight when the replica dies.
    upstream = FakeUpstream("--chunks", "3", "--interval-ms", "50")
    try:
        cluster = cluster_factory(upstream.url, redis_factory())
        replicas = [cluster.add() for _ in range(3)]
        nginx = nginx_factory(chat_servers=chat_servers(replicas)).start()
        key = cluster.create_key()

        clients = 6
        load = Load(nginx.https, key, clients, context=tls).start()
        time.sleep(2.0)
        victim = replicas[1]
        killed_at = time.monotonic()
        victim.kill()
        dead_at = time.monotonic()  # SIGKILL sent at killed_at, the process reaped by dead_at
        time.sleep(2.5)
        load.stop()

        acked, failed = load.acknowledged(), load.failed()
        before = [t for t in acked if t.ended < killed_at]
        after = [t for t in acked if t.started > killed_at]
        assert len(before) >= clients and len(after) >= clients, (len(before), len(after))
        # Only turns that were in flight at the kill may fail: each client has at most one, so at most `clients`,
        # and each failed turn was sent before the kill and answered after it (as a 502 from nginx: a chat turn
        # already sent is never retried elsewhere, which could run it twice).
        assert len(failed) <= clients, [(t.status, t.error) for t in failed]
        for t in failed:
            window = (round(t.started - killed_at, 4), round(t.ended - killed_at, 4), round(dead_at - killed_at, 4))
            assert t.started <= dead_at and t.ended >= killed_at, ("not in flight at the kill", window, t)
            assert t.status == 502, t
        print("failures (started, ended, dead) relative to the kill:", [
            (round(t.started - killed_at, 4), round(t.ended - killed_at, 4), round(dead_at - killed_at, 4))
            for t in failed])

        # Every acknowledged turn is in the database, in order, read through a surviving replica.
        survivor = replicas[0]
        by_conv = {}
        for t in sorted(acked, key=lambda t: (t.client, t.seq)):
            by_conv.setdefault(t.conversation, []).append(t)
        assert len(by_conv) == clients and None not in by_conv
        for conv, turns in by_conv.items():
            items = conversation_items(survivor.url, key, conv)
            stored = [text for role, text in items if role == "user"]
            positions = [stored.index(t.content) if t.content in stored else -1 for t in turns]
            assert -1 not in positions, f"{conv}: acknowledged turns missing: " + str(
                [t.content for t, p in zip(turns, positions) if p == -1])
            assert positions == sorted(positions), f"{conv}: stored out of order"
            for t in turns:  # each acknowledged question is followed by its answer
                i = items.index(("user", t.content))
                assert items[i + 1] == ("assistant", f"echo: {t.content}"), items[i : i + 2]

        # The survivors still answer through nginx, and the killed replica is reported as such by its absence.
        r = request("GET", f"{nginx.https}/v1/models", key=ADMIN_KEY, context=tls)
        assert r.status == 200
        print(f"acknowledged {len(acked)} turns, {len(failed)} in-flight failures at the kill")
    finally:
        upstream.stop()
