"""Outbound webhooks across two replicas on one PostgreSQL database. Events nobody subscribes to are not written
(`EventGate`; the store's conformance case `unwanted_events_are_not_written` checks the rows): a subscription
made through one replica must still receive the events of turns that the other replica serves, once that
replica's dispatcher has re-read the subscriptions (every 250 ms)."""

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from harness import ADMIN_KEY, RecordingUpstream, request, wait_for


class Receiver:
    """A webhook endpoint on 127.0.0.1 that keeps every event body it is sent and answers 204."""

    def __init__(self):
        self.events: list[dict] = []
        events = self.events

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                events.append(json.loads(body))
                self.send_response(204)
                self.end_headers()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


def test_subscription_made_on_one_replica_gets_the_events_of_turns_on_another(cluster_factory):
    upstream = RecordingUpstream()
    receiver = Receiver()
    try:
        cluster = cluster_factory(upstream.url, None, MOLTBOT_WEBHOOKS__ALLOW_PRIVATE_TARGETS="true")
        a, b = cluster.add(), cluster.add()
        key = cluster.create_key()

        def chat(replica, text: str) -> str:
            body = {"model": "default", "messages": [{"role": "user", "content": text}]}
            r = request("POST", f"{replica.url}/v1/chat/completions", key=key, body=body)
            assert r.status == 200, (r.status, r.body)
            return r.headers["x-moltbot-conversation"]

        # Both dispatchers have read the (empty) subscription list: b writes no events for this turn.
        time.sleep(0.6)
        before = chat(b, "before")
        assert cluster.db.sql(f"SELECT count(*) FROM messages WHERE conversation_id = '{before}'") == "2"

        r = request("POST", f"{a.admin_url}/admin/api/webhooks/subscriptions", key=ADMIN_KEY,
                    body={"url": receiver.url, "events": ["message.created"]})
        assert r.status == 201, (r.status, r.body)
        # Replica b learns of the subscription at its dispatcher's next round.
        time.sleep(0.6)
        after = chat(b, "after")
        on_a = chat(a, "on a")
        wait_for("both message.created events", lambda: {e["data"]["conversation_id"] for e in receiver.events}
                 >= {after, on_a}, timeout=20)
        assert all(e["type"] == "message.created" for e in receiver.events), receiver.events
        assert before not in {e["data"]["conversation_id"] for e in receiver.events}
        texts = {e["data"]["conversation_id"]: e["data"]["text"] for e in receiver.events}
        assert texts[after] == "echo: after" and texts[on_a] == "echo: on a"
    finally:
        receiver.stop()
        upstream.stop()
