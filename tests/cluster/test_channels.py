"""Channels across replicas (issue 8), real processes on one PostgreSQL database, a fake Telegram Bot API over real
HTTP (this file), and an upstream that can hold a reply back:

- the same platform event delivered to two replicas at the same moment gets one reply;
- a replica killed (SIGKILL) after acknowledging an event and before replying: the reply is sent after restart;
- long polling runs on exactly one replica, and moves to the other when the holder is killed."""

from __future__ import annotations

import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from harness import request, wait_for

BOT_TOKEN = "123456:TEST-token"
SECRET = "tg-secret-token-for-tests"


class FakeTelegram:
    """The Bot API methods moltbot uses: sendMessage (recorded), getUpdates (long polling; a second concurrent call
    gets 409 Conflict, as Telegram answers) and deleteWebhook."""

    def __init__(self):
        self.sent: list[dict] = []
        self.updates: list[dict] = []
        self.polls_in_flight = 0
        self.max_in_flight = 0
        self.conflicts = 0
        self.poll_calls = 0
        self.lock = threading.Condition()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def _send(self, status: int, payload: dict):
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self):
                n = int(self.headers.get("Content-Length", "0"))
                raw = self.rfile.read(n) if n else b"{}"
                body = json.loads(raw or b"{}")
                m = re.fullmatch(r"/bot([^/]+)/(\w+)", self.path.split("?")[0])
                if not m or m.group(1) != BOT_TOKEN:
                    return self._send(401, {"ok": False, "error_code": 401, "description": "Unauthorized"})
                method = m.group(2)
                if method == "sendMessage":
                    with outer.lock:
                        outer.sent.append(body)
                    return self._send(200, {"ok": True, "result": {"message_id": len(outer.sent), "date": 0,
                                                                     "chat": {"id": body.get("chat_id")}}})
                if method in ("deleteWebhook", "setWebhook"):
                    return self._send(200, {"ok": True, "result": True})
                if method == "getMe":
                    return self._send(200, {"ok": True, "result": {"id": 1, "is_bot": True, "username": "molt_bot"}})
                if method == "getUpdates":
                    return self._get_updates(body)
                return self._send(404, {"ok": False, "error_code": 404, "description": "Not Found"})

            def _get_updates(self, body):
                with outer.lock:
                    outer.poll_calls += 1
                    if outer.polls_in_flight > 0:
                        outer.conflicts += 1
                        return self._send(409, {"ok": False, "error_code": 409,
                                                "description": "Conflict: terminated by other getUpdates request"})
                    outer.polls_in_flight += 1
                    outer.max_in_flight = max(outer.max_in_flight, outer.polls_in_flight)
                try:
                    offset = body.get("offset") or 0
                    timeout = min(float(body.get("timeout") or 0), 2.0)  # short long polls keep the test quick
                    deadline = time.monotonic() + timeout
                    with outer.lock:
                        while True:
                            ready = [u for u in outer.updates if u["update_id"] >= offset]
                            left = deadline - time.monotonic()
                            if ready or left <= 0:
                                break
                            outer.lock.wait(left)
                    self._send(200, {"ok": True, "result": ready})
                finally:
                    with outer.lock:
                        outer.polls_in_flight -= 1

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def push(self, update: dict):
        with self.lock:
            self.updates.append(update)
            self.lock.notify_all()

    def replies_to(self, text: str) -> list[dict]:
        with self.lock:
            return [s for s in self.sent if s.get("text") == f"echo: {text}"]

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


class HoldingUpstream:
    """An OpenAI-compatible upstream that answers `echo: <text>` but holds every reply until released."""

    def __init__(self):
        self.received: list[str] = []
        self.release = threading.Event()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", "0"))) or b"{}")
                text = body["messages"][-1]["content"]
                outer.received.append(text)
                outer.release.wait(60)
                payload = json.dumps({
                    "id": "chatcmpl-hold", "object": "chat.completion", "created": 1_700_000_000,
                    "model": body.get("model"),
                    "choices": [{"index": 0, "finish_reason": "stop",
                                 "message": {"role": "assistant", "content": f"echo: {text}"}}],
                    "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5},
                }).encode()
                try:
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                except OSError:
                    pass  # the replica that asked was killed

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def stop(self):
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


def channel_config(tmp_path, api_base: str, mode: str, **pipeline) -> dict:
    """A moltbot.toml with one Telegram account (plus the [pipeline] overrides) and the env pointing at it."""
    lines = [
        "[[channels]]",
        'platform = "telegram"',
        'account = "tg"',
        f'mode = "{mode}"',
        f'api_base = "{api_base}"',
        f'bot_token = "{BOT_TOKEN}"',
        'bot_id = "molt_bot"',
    ]
    if mode == "webhook":
        lines.append(f'secret_token = "{SECRET}"')
    lines.append("[pipeline]")
    lines += [f'{k} = "{v}"' if isinstance(v, str) else f"{k} = {v}" for k, v in pipeline.items()]
    path = tmp_path / "moltbot.toml"
    path.write_text("\n".join(lines) + "\n")
    return {"MOLTBOT_CONFIG": str(path)}


def update(update_id: int, text: str, chat_id: int = 42) -> dict:
    return {
        "update_id": update_id,
        "message": {
            "message_id": 1000 + update_id,
            "date": int(time.time()),
            "chat": {"id": chat_id, "type": "private", "first_name": "Ada"},
            "from": {"id": chat_id, "is_bot": False, "first_name": "Ada"},
            "text": text,
        },
    }


def post_update(replica, upd: dict):
    return request("POST", f"{replica.url}/channels/telegram/tg", body=upd,
                   headers={"X-Telegram-Bot-Api-Secret-Token": SECRET})


def test_same_event_at_two_replicas_at_once_gets_one_reply(cluster_factory, fake_upstream, tmp_path):
    tg = FakeTelegram()
    try:
        cluster = cluster_factory(fake_upstream.url, None, **channel_config(tmp_path, tg.url, "webhook"))
        a, b = cluster.add(), cluster.add()

        # Unsigned and wrongly signed deliveries are refused and queue nothing.
        assert request("POST", f"{a.url}/channels/telegram/tg", body=update(1, "x")).status == 401
        assert request("POST", f"{a.url}/channels/telegram/tg", body=update(1, "x"),
                       headers={"X-Telegram-Bot-Api-Secret-Token": "wrong"}).status == 401

        events = [update(100 + i, f"hello {i}", chat_id=500 + i % 4) for i in range(20)]
        for upd in events:
            barrier = threading.Barrier(2)
            results = []

            def deliver(rep, upd=upd, barrier=barrier, results=results):
                barrier.wait()
                results.append(post_update(rep, upd).status)

            threads = [threading.Thread(target=deliver, args=(r,)) for r in (a, b)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            # Both deliveries are acknowledged (the platform must not retry), only one is queued.
            assert results == [200, 200], results

        for i in range(20):
            wait_for(f"reply {i}", lambda i=i: tg.replies_to(f"hello {i}"), timeout=30)
        time.sleep(1.5)  # time for a duplicate to show up, were there one
        for i in range(20):
            replies = tg.replies_to(f"hello {i}")
            assert len(replies) == 1, (i, replies)
            assert replies[0]["chat_id"] in (500 + i % 4, str(500 + i % 4))
        assert cluster.db.sql("SELECT count(*) FROM channel_events").strip() == "20"
        wait_for("every event marked done", lambda: cluster.db.sql(
            "SELECT count(*) FROM channel_events WHERE status = 'done'").strip() == "20", timeout=10)
        # A platform retry later (e.g. after a timeout on its side) is still a duplicate.
        assert post_update(b, events[0]).status == 200
        time.sleep(1.0)
        assert len(tg.replies_to("hello 0")) == 1
    finally:
        tg.stop()


def test_replica_killed_after_ack_and_before_reply_replies_after_restart(cluster_factory, tmp_path):
    tg = FakeTelegram()
    upstream = HoldingUpstream()
    try:
        env = channel_config(tmp_path, tg.url, "webhook", lock_timeout="2s", retry_base="200ms")
        cluster = cluster_factory(upstream.url, None, **env)
        rep = cluster.add()
        assert post_update(rep, update(7, "survive the kill")).status == 200
        # The worker claimed it and is waiting for the model: the event is acknowledged, not yet answered.
        wait_for("the model request", lambda: "survive the kill" in upstream.received, timeout=15)
        rep.kill()
        assert tg.sent == []
        upstream.release.set()
        rep.start()
        wait_for("the reply after restart", lambda: tg.replies_to("survive the kill"), timeout=30)
        time.sleep(1.0)
        assert len(tg.replies_to("survive the kill")) == 1
        wait_for("the event marked done", lambda: cluster.db.sql(
            "SELECT status FROM channel_events").strip() == "done", timeout=10)
        assert cluster.db.sql("SELECT status, attempts FROM channel_events").strip() == "done|2"
    finally:
        upstream.stop()
        tg.stop()


def test_long_polling_runs_on_one_replica_and_moves_when_it_dies(cluster_factory, fake_upstream, tmp_path):
    tg = FakeTelegram()
    try:
        env = channel_config(tmp_path, tg.url, "polling", lease_ttl="1500ms")
        cluster = cluster_factory(fake_upstream.url, None, **env)
        a, b = cluster.add(), cluster.add()
        tg.push(update(1, "first"))
        wait_for("reply to the first update", lambda: tg.replies_to("first"), timeout=20)

        holder = wait_for("a lease holder", lambda: cluster.db.sql(
            "SELECT holder FROM leases WHERE name = 'channel:telegram:tg'").strip())
        by_pid = {str(r.proc.pid): r for r in (a, b)}
        owner = next(r for pid, r in by_pid.items() if f"-{pid}-" in holder)
        other = b if owner is a else a
        time.sleep(3)  # several long polls and lease renewals
        assert tg.max_in_flight == 1 and tg.conflicts == 0, (tg.max_in_flight, tg.conflicts)

        owner.kill()
        killed_at = time.monotonic()
        tg.push(update(2, "second"))
        wait_for("reply from the other replica", lambda: tg.replies_to("second"), timeout=20)
        took = time.monotonic() - killed_at
        new_holder = cluster.db.sql("SELECT holder FROM leases WHERE name = 'channel:telegram:tg'").strip()
        assert f"-{other.proc.pid}-" in new_holder, new_holder
        for i in range(3, 8):
            tg.push(update(i, f"more {i}"))
        for i in range(3, 8):
            wait_for(f"reply {i}", lambda i=i: tg.replies_to(f"more {i}"), timeout=20)
        time.sleep(2)
        assert tg.max_in_flight == 1 and tg.conflicts == 0, (tg.max_in_flight, tg.conflicts)
        for text in ["first", "second"] + [f"more {i}" for i in range(3, 8)]:
            assert len(tg.replies_to(text)) == 1, text
        # The stored offset is past the last update: a restart does not re-read anything.
        assert cluster.db.sql("SELECT value FROM channel_state WHERE name = 'offset:telegram:tg'").strip() == "8"
        print(f"failover took {took:.1f} s (lease_ttl 1.5 s)")
    finally:
        tg.stop()
