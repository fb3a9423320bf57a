"""Processes for the cluster tests: moltbot replicas sharing one PostgreSQL database and a private Redis, the fake
upstream, a real nginx rendered from deploy/nginx, and small HTTP helpers. Everything listens on 127.0.0.1."""

from __future__ import annotations

import getpass
import http.client
import json
import os
import re
import secrets
import signal
import socket
import ssl
import subprocess
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

# nginx lives in /usr/sbin, which a non-root CI user's PATH may lack.
os.environ["PATH"] = os.pathsep.join([os.environ.get("PATH", ""), "/usr/local/sbin", "/usr/sbin", "/sbin"])

ROOT = Path(__file__).resolve().parents[2]
BIN = str(Path(os.environ.get("MOLTBOT_BIN", ROOT / "target" / "debug" / "moltbot")).resolve())
FAKE = str(
    Path(os.environ.get("MOLTBOT_FAKE_UPSTREAM_BIN", ROOT / "target" / "debug" / "moltbot-fake-upstream")).resolve()
)
PG_URL = os.environ.get("MOLTBOT_TEST_POSTGRES_URL", "postgres://postgres@127.0.0.1:5432/test")
RENDER = ROOT / "deploy" / "nginx" / "render.sh"
SWITCH = ROOT / "deploy" / "bluegreen" / "switch.sh"

ADMIN_KEY = "mb_cluster" + secrets.token_hex(24)
JWT_SECRET = "cluster-jwt-secret-" + secrets.token_hex(24)
UPSTREAM_KEY = "sk-cluster-upstream-key-DO-NOT-LEAK"


_handed_out: set[int] = set()


def free_port() -> int:
    """A free ephemeral port on 127.0.0.1, never one this process was already given: the kernel may hand
    the same port to two binds in a row once the first socket is closed (nginx once got its HTTP and HTTPS
    ports equal: "a duplicate default server")."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in _handed_out:
            _handed_out.add(port)
            return port


def wait_for(what: str, check, timeout: float = 20.0, interval: float = 0.05):
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


# ---------------------------------------------------------------- HTTP


@dataclass
class Resp:
    status: int
    headers: dict
    body: bytes
    started: float = 0.0
    ended: float = 0.0
    error: str | None = None

    def json(self):
        return json.loads(self.body)


def request(
    method: str,
    url: str,
    *,
    key: str | None = None,
    body=None,
    headers: dict | None = None,
    timeout: float = 15.0,
    context: ssl.SSLContext | None = None,
    server_hostname: str | None = None,
) -> Resp:
    """One request on a fresh connection (no client-side keep-alive, so a closed idle connection can never be
    mistaken for a server failure). Transport errors come back as status 0 with `error` set."""
    u = urllib.parse.urlsplit(url)
    started = time.monotonic()
    hdrs = {"Connection": "close"}
    if key:
        hdrs["Authorization"] = f"Bearer {key}"
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        hdrs["Content-Type"] = "application/json"
    hdrs.update(headers or {})
    try:
        if u.scheme == "https":
            conn = http.client.HTTPSConnection(u.hostname, u.port, timeout=timeout, context=context)
            if server_hostname:
                # Connect to the address in the URL, but send (and verify) another name: a pre-opened socket.
                sock = socket.create_connection((u.hostname, u.port), timeout)
                conn.sock = context.wrap_socket(sock, server_hostname=server_hostname)
        else:
            conn = http.client.HTTPConnection(u.hostname, u.port, timeout=timeout)
        path = u.path + (f"?{u.query}" if u.query else "")
        conn.request(method, path or "/", body=data, headers=hdrs)
        r = conn.getresponse()
        payload = r.read()
        out = Resp(r.status, {k.lower(): v for k, v in r.getheaders()}, payload)
        conn.close()
    except (OSError, http.client.HTTPException) as e:
        out = Resp(0, {}, b"", error=f"{type(e).__name__}: {e}")
    out.started, out.ended = started, time.monotonic()
    return out


def sse_events(body: bytes) -> list:
    """`data:` payloads of an SSE body, parsed (the final [DONE] kept as the string)."""
    events = []
    for line in body.decode().splitlines():
        if line.startswith("data:"):
            data = line[5:].strip()
            events.append(data if data == "[DONE]" else json.loads(data))
    return events


# ---------------------------------------------------------------- PostgreSQL


def psql(url: str, sql: str) -> str:
    r = subprocess.run(
        ["psql", url, "-v", "ON_ERROR_STOP=1", "-qAtc", sql], capture_output=True, text=True, timeout=30
    )
    if r.returncode != 0:
        raise RuntimeError(f"psql failed: {r.stderr.strip()}")
    return r.stdout.strip()


class Database:
    """A fresh database on the shared PostgreSQL server, dropped afterwards."""

    def __init__(self):
        self.name = "moltbot_cluster_" + secrets.token_hex(6)
        u = urllib.parse.urlsplit(PG_URL)
        self.url = urllib.parse.urlunsplit(u._replace(path="/" + self.name))
        psql(PG_URL, f'CREATE DATABASE "{self.name}"')

    def sql(self, sql: str) -> str:
        return psql(self.url, sql)

    def drop(self):
        psql(PG_URL, f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')


# ---------------------------------------------------------------- Redis


class Redis:
    """A private redis-server on a free port (never the shared 6379: this one gets killed)."""

    def __init__(self, workdir: Path):
        self.workdir = workdir
        self.port = free_port()
        self.proc = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}"

    def start(self):
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(self.workdir), "--daemonize", "no", "--loglevel", "warning"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for(f"redis on {self.port}", lambda: port_open(self.port), timeout=10)
        return self

    def kill(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        wait_for("redis port closed", lambda: not port_open(self.port), timeout=5)


# ---------------------------------------------------------------- upstreams


class FakeUpstream:
    """target/debug/moltbot-fake-upstream: replies `echo: <last user text>`."""

    def __init__(self, *args: str):
        self.proc = subprocess.Popen([FAKE, "--echo", *args], stdout=subprocess.PIPE, text=True)
        self.url = self.proc.stdout.readline().strip()
        assert self.url.startswith("http://127.0.0.1:"), self.url

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=10)


class RecordingUpstream:
    """An OpenAI-compatible upstream in this process that records the full `messages` of every chat request, so
    a test can check exactly what context each turn sent. Replies `echo: <last user text>`, JSON or SSE."""

    def __init__(self):
        self.chats: list[list[dict]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def _send(self, status, ctype, payload: bytes):
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def do_GET(self):
                self._send(200, "application/json", json.dumps(
                    {"object": "list", "data": [{"id": "fake-model", "object": "model", "owned_by": "t"}]}).encode())

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", "0"))) or b"{}")
                messages = body.get("messages", [])
                outer.chats.append(messages)
                last = next((m for m in reversed(messages) if m.get("role") == "user"), {})
                content = last.get("content", "")
                if isinstance(content, list):
                    content = "".join(p.get("text", "") for p in content)
                text = f"echo: {content}"
                usage = {"prompt_tokens": len(messages), "completion_tokens": 2, "total_tokens": len(messages) + 2}
                base = {"id": f"chatcmpl-rec-{len(outer.chats)}", "created": 1_700_000_000,
                        "model": body.get("model", "fake-model")}
                if not body.get("stream"):
                    self._send(200, "application/json", json.dumps({
                        **base, "object": "chat.completion",
                        "choices": [{"index": 0, "finish_reason": "stop",
                                     "message": {"role": "assistant", "content": text}}],
                        "usage": usage}).encode())
                    return
                chunks = [
                    {"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]},
                    {"choices": [{"index": 0, "delta": {"content": text}, "finish_reason": None}]},
                    {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]},
                ]
                if (body.get("stream_options") or {}).get("include_usage"):
                    chunks.append({"choices": [], "usage": usage})
                payload = "".join(
                    f"data: {json.dumps({**base, 'object': 'chat.completion.chunk', **c})}\n\n" for c in chunks
                ) + "data: [DONE]\n\n"
                self._send(200, "text/event-stream", payload.encode())

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


# ---------------------------------------------------------------- moltbot


class Replica:
    """One `moltbot serve` process with its own working directory, configured through the environment."""

    def __init__(self, name: str, workdir: Path, env: dict):
        self.name = name
        self.workdir = workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.env = env
        self.proc = None
        self.addrs = None
        self.log = workdir / "moltbot.log"

    def start(self, *args: str):
        ready = self.workdir / "ready.json"
        ready.unlink(missing_ok=True)
        started = time.monotonic()
        self.proc = subprocess.Popen(
            [BIN, "serve", "--ready-file", str(ready), *args],
            cwd=self.workdir,
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=open(self.log, "ab"),
        )
        while not ready.exists() or not ready.read_text().strip().endswith("}"):
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited: {self.log.read_text()[-3000:]}")
            if time.monotonic() - started > 30:
                raise RuntimeError(f"{self.name} did not become ready within 30 s")
            time.sleep(0.02)
        self.addrs = json.loads(ready.read_text())
        return self

    @property
    def chat(self) -> str:
        return self.addrs["chat_addr"]

    @property
    def url(self) -> str:
        return f"http://{self.chat}"

    @property
    def admin_url(self) -> str:
        return f"http://{self.addrs['admin_addr']}"

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float = 30) -> int:
        if not self.alive():
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=timeout)

    def kill(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)


class Cluster:
    """N replicas on one fresh database (migrated with `moltbot init-db`, as a deployment would) and one Redis."""

    def __init__(self, tmp: Path, upstream_url: str, redis: Redis | None, extra_env: dict | None = None):
        self.tmp = tmp
        self.db = Database()
        self.redis = redis
        self.replicas: list[Replica] = []
        env = {k: v for k, v in os.environ.items() if not k.startswith(("MOLTBOT_", "OPENAI_"))}
        env.update({
            "MODEL_ENDPOINT": upstream_url,
            "API_KEY": UPSTREAM_KEY,
            "MODEL_NAME": "fake-model",
            "MOLTBOT_DATABASE_URL": self.db.url,
            "MOLTBOT_CHAT_ADDR": "127.0.0.1:0",
            "MOLTBOT_ADMIN_ADDR": "127.0.0.1:0",
            "MOLTBOT_SERVER__SHUTDOWN_DELAY": "300ms",
            "MOLTBOT_SERVER__SHUTDOWN_GRACE": "10s",
            "MOLTBOT_SERVER__TRUSTED_PROXIES": "127.0.0.1/32",
            "MOLTBOT_SERVER__ADMIN_ALLOW_CIDRS": "127.0.0.1/32",
            "MOLTBOT_LOG__FORMAT": "json",
            "MOLTBOT_AUTH__JWT_SECRET": JWT_SECRET,
            "MOLTBOT_BOOTSTRAP_ADMIN_KEY": ADMIN_KEY,
        })
        if redis is not None:
            env["MOLTBOT_REDIS_URL"] = redis.url
        env.update(extra_env or {})
        self.env = env
        r = subprocess.run([BIN, "init-db"], cwd=tmp, env=env, capture_output=True, text=True, timeout=60)
        if r.returncode != 0:
            self.db.drop()  # the factory never sees this object, so its teardown cannot drop the database
            raise AssertionError(f"moltbot init-db failed: {r.stderr}")

    def add(self, name: str | None = None, *args: str, env: dict | None = None) -> Replica:
        name = name or f"replica{len(self.replicas) + 1}"
        rep = Replica(name, self.tmp / name, {**self.env, **(env or {})}).start(*args)
        self.replicas.append(rep)
        return rep

    def create_key(self, **fields) -> str:
        """A key through the admin API of the first live replica (the same path an operator takes)."""
        rep = next(r for r in self.replicas if r.alive())
        resp = request("POST", f"{rep.admin_url}/admin/api/keys", key=ADMIN_KEY,
                       body={"name": "cluster-test", "scopes": ["chat", "conversations"], **fields})
        assert resp.status in (200, 201), (resp.status, resp.body)
        return resp.json()["secret"]

    def close(self):
        for rep in self.replicas:
            try:
                if rep.alive():
                    rep.stop(timeout=15)
            except subprocess.TimeoutExpired:
                rep.kill()
        leaks = [r.name for r in self.replicas if r.log.exists() and (
            UPSTREAM_KEY in (text := r.log.read_text(errors="replace")) or ADMIN_KEY in text or JWT_SECRET in text)]
        self.db.drop()
        assert not leaks, f"a secret leaked into the logs of {leaks}"


def conversation_items(base: str, key: str, conv: str, **req) -> list[tuple[str, str]]:
    """(role, text) of every item of a conversation, oldest first, following pagination."""
    out, after = [], None
    for _ in range(100):
        q = "order=asc&limit=100" + (f"&after={after}" if after else "")
        r = request("GET", f"{base}/v1/conversations/{conv}/items?{q}", key=key, **req)
        assert r.status == 200, (r.status, r.body)
        page = r.json()
        for item in page["data"]:
            text = "".join(p.get("text", "") for p in item.get("content", []) if isinstance(p, dict))
            out.append((item.get("role"), text))
        if not page.get("has_more"):
            return out
        after = page["last_id"]
    raise AssertionError("too many pages")


# ---------------------------------------------------------------- nginx


class Nginx:
    """A real nginx running deploy/nginx's rendered configuration from a private prefix directory."""

    def __init__(self, workdir: Path, cert: Path, key: Path, *, server_name: str = "localhost", **servers: str):
        self.dir = workdir
        self.conf = workdir / "conf"
        self.webroot = workdir / "acme"
        for d in ("conf", "logs", "temp", "acme"):
            (workdir / d).mkdir(parents=True, exist_ok=True)
        self.http_port = free_port()
        self.https_port = free_port()
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("MOLTBOT_NGINX_")},
            "MOLTBOT_NGINX_SERVER_NAME": server_name,
            "MOLTBOT_NGINX_HTTP_LISTEN": f"127.0.0.1:{self.http_port}",
            "MOLTBOT_NGINX_HTTPS_LISTEN": f"127.0.0.1:{self.https_port}",
            "MOLTBOT_NGINX_TLS_CERT": str(cert),
            "MOLTBOT_NGINX_TLS_KEY": str(key),
            "MOLTBOT_NGINX_ACME_WEBROOT": str(self.webroot),
            "MOLTBOT_NGINX_USER": getpass.getuser(),
            "MOLTBOT_NGINX_WORKER_PROCESSES": "2",
            "MOLTBOT_NGINX_WORKER_CONNECTIONS": "1024",
            "MOLTBOT_NGINX_PID_FILE": str(workdir / "nginx.pid"),
            "MOLTBOT_NGINX_LOG_DIR": str(workdir / "logs"),
            "MOLTBOT_NGINX_TEMP_DIR": str(workdir / "temp"),
            # One client address (127.0.0.1) generates all the load here: keep the edge limits out of the way.
            "MOLTBOT_NGINX_RATE": "2000r/s",
            "MOLTBOT_NGINX_RATE_BURST": "2000",
            "MOLTBOT_NGINX_CONN_PER_IP": "1000",
            **{f"MOLTBOT_NGINX_{k.upper()}": v for k, v in servers.items()},
        }
        self.proc = None

    @property
    def base_args(self) -> list[str]:
        return ["nginx", "-p", str(self.dir), "-e", str(self.dir / "logs" / "error.log"),
                "-c", str(self.conf / "nginx.conf")]

    @property
    def https(self) -> str:
        return f"https://127.0.0.1:{self.https_port}"

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def render(self):
        r = subprocess.run([str(RENDER), str(self.conf)], env=self.env, capture_output=True, text=True, timeout=30)
        assert r.returncode == 0, r.stderr
        t = subprocess.run([*self.base_args, "-t"], capture_output=True, text=True, timeout=30)
        # Not as root, nginx ignores `user` with a warning; any other warning fails.
        warnings = [w for w in t.stderr.splitlines() if "[warn]" in w and '"user" directive' not in w]
        assert t.returncode == 0 and not warnings, t.stderr
        return self

    def start(self):
        self.render()
        self.proc = subprocess.Popen([*self.base_args, "-g", "daemon off;"], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        wait_for("nginx listening", lambda: port_open(self.https_port) and port_open(self.http_port), timeout=15)
        return self

    def worker_pids(self) -> set[int]:
        out = subprocess.run(["pgrep", "-P", str(self.proc.pid)], capture_output=True, text=True).stdout
        return {int(p) for p in out.split()}

    def access_log(self) -> list[str]:
        p = self.dir / "logs" / "access.log"
        return p.read_text().splitlines() if p.exists() else []

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGQUIT)  # graceful: finish requests, then exit
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)


def upstream_ports(log_lines: list[str]) -> list[set[int]]:
    """For each access-log line, the replica ports nginx tried (`upstream=127.0.0.1:P, 127.0.0.1:Q`)."""
    out = []
    for line in log_lines:
        m = re.search(r"upstream=(\S.*?) ustatus=", line)
        out.append({int(p) for p in re.findall(r":(\d+)", m.group(1))} if m else set())
    return out


# ---------------------------------------------------------------- load


@dataclass
class Turn:
    client: int
    seq: int
    content: str
    conversation: str | None
    status: int
    started: float
    ended: float
    error: str | None = None


@dataclass
class Load:
    """Clients that each keep one conversation going with chat turns, one request at a time, logging every
    turn; a 200 is an acknowledged turn."""

    base: str
    key: str
    clients: int
    context: ssl.SSLContext | None = None
    turns: list[Turn] = field(default_factory=list)
    stop_event: threading.Event = field(default_factory=threading.Event)
    threads: list[threading.Thread] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    max_turns: int = 400

    def _client(self, c: int):
        conv = None
        for seq in range(self.max_turns):
            if self.stop_event.is_set():
                return
            content = f"c{c}-t{seq}-{secrets.token_hex(3)}"
            body = {"model": "default", "messages": [{"role": "user", "content": content}]}
            if conv:
                body["conversation"] = conv
            r = request("POST", f"{self.base}/v1/chat/completions", key=self.key, body=body, timeout=20,
                        context=self.context)
            status = r.status
            if status == 200:
                if r.json()["choices"][0]["message"]["content"] != f"echo: {content}":
                    status = -1  # a 200 with someone else's answer is a failure too
                elif conv is None:
                    conv = r.headers.get("x-moltbot-conversation")
            turn = Turn(c, seq, content, conv, status, r.started, r.ended,
                        r.error or (None if status == 200 else r.body[:300].decode(errors="replace")))
            with self.lock:
                self.turns.append(turn)
            if r.status != 200:
                time.sleep(0.05)

    def start(self):
        for c in range(self.clients):
            t = threading.Thread(target=self._client, args=(c,), daemon=True)
            t.start()
            self.threads.append(t)
        return self

    def stop(self):
        self.stop_event.set()
        for t in self.threads:
            t.join(timeout=30)
        assert not any(t.is_alive() for t in self.threads), "a load client hung"

    def acknowledged(self) -> list[Turn]:
        return [t for t in self.turns if t.status == 200]

    def failed(self) -> list[Turn]:
        return [t for t in self.turns if t.status != 200]
