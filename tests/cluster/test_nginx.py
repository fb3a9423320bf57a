"""nginx's failover rules from deploy/nginx, checked against a replica that takes a request and dies without
answering: a GET is retried on the next replica, a POST that was sent is not (a chat turn must never run twice)."""

import socket
import threading

from harness import RecordingUpstream, request


class Crasher:
    """Accepts a connection, reads one whole request, then closes without a response (a replica dying mid-turn)."""

    def __init__(self):
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.seen: list[str] = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                data = b""
                while b"\r\n\r\n" not in data and (chunk := conn.recv(65536)):
                    data += chunk
                head, _, body = data.partition(b"\r\n\r\n")
                length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                               if line.lower().startswith(b"content-length:")), 0)
                while len(body) < length and (chunk := conn.recv(65536)):
                    body += chunk
                if head:
                    self.seen.append(head.split(b" ")[0].decode())

    def close(self):
        self.sock.close()


def test_get_is_retried_on_the_next_replica_but_a_sent_post_is_not(nginx_factory, tls):
    healthy = RecordingUpstream()
    crasher = Crasher()
    try:
        # The crasher first: each worker's round robin starts there. max_fails high, so it stays in rotation.
        nginx = nginx_factory(chat_servers=f"127.0.0.1:{crasher.port} {healthy.url[7:-3]}", max_fails="1000").start()

        statuses = []
        for i in range(6):
            body = {"model": "default", "messages": [{"role": "user", "content": f"turn {i}"}]}
            statuses.append(request("POST", f"{nginx.https}/v1/chat/completions", body=body, context=tls).status)
        posts_to_crasher = crasher.seen.count("POST")
        assert posts_to_crasher >= 1, "the crasher never got a POST: the test would show nothing"
        # Each POST reached exactly one replica: a 502 where it died, a 200 where it was answered — never both.
        assert statuses.count(502) == posts_to_crasher, (statuses, crasher.seen)
        assert statuses.count(200) == len(healthy.chats) == 6 - posts_to_crasher, statuses

        for _ in range(6):
            assert request("GET", f"{nginx.https}/v1/models", context=tls).status == 200
        assert crasher.seen.count("GET") >= 1, "no GET was retried: the test would show nothing"
    finally:
        crasher.close()
        healthy.stop()
