"""Processes and clients for the chaos tests: one `moltbot serve` configured by a TOML file (SQLite or PostgreSQL),
the fake upstream with a seeded fault mix, a private PostgreSQL that a test may stop, a chat client that reads SSE
line by line, and a load of concurrent conversations that logs every acknowledged turn.

Builds on tests/cluster/harness.py (binaries, free ports, HTTP helpers, the admin key); everything listens on
127.0.0.1 and every process started here is stopped by the fixtures in conftest.py."""

from __future__ import annotations

import http.client
import json
import os
import secrets
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "cluster"))
import harness  # noqa: E402
from harness import ADMIN_KEY, BIN, FAKE, free_port, port_open, request, wait_for  # noqa: E402,F401

UPSTREAM_KEY = "sk-chaos-upstream-key-DO-NOT-LEAK"


def env_float(name: str, default: float) -> float:
    return float(os.environ.get(name, default))


# ---------------------------------------------------------------- upstreams


class Upstream:
    """target/debug/moltbot-fake-upstream with the given flags (see its --help); `stop()` returns the fault
    statistics it prints on exit (`{"requests": N, "faults": {...}}`) when a fault rate was given."""

    def __init__(self, *args: str):
        self.args = args
        self.proc = subprocess.Popen([FAKE, "--echo", *args], stdout=subprocess.PIPE, text=True)
        self.url = self.proc.stdout.readline().strip()
        assert self.url.startswith("http://127.0.0.1:"), self.url
        self.stats: dict | None = None

    def stop(self) -> dict | None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            out, _ = self.proc.communicate(timeout=10)
            lines = [ln for ln in out.splitlines() if ln.startswith("{")]
            self.stats = json.loads(lines[-1]) if lines else None
        return self.stats


def closed_port_url() -> str:
    """A base URL on which nothing listens (connection refused)."""
    return f"http://127.0.0.1:{free_port()}/v1"


# ---------------------------------------------------------------- PostgreSQL


class PrivatePostgres:
    """A PostgreSQL cluster of our own (`initdb` in a temp dir, `pg_ctl` on a free port) that a test may stop and
    start again on the same port. Run as the `postgres` OS user when we are root (initdb refuses root)."""

    def __init__(self):
        bins = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
        assert bins, "PostgreSQL server binaries (/usr/lib/postgresql/*/bin/initdb) are missing"
        self.bindir = bins[-1].parent
        # Not under pytest's tmp_path: its parent is private to us, and the server may run as another user.
        self.dir = Path(tempfile.mkdtemp(prefix="moltbot-chaos-pg-"))
        self.data = self.dir / "data"
        self.port = free_port()
        self.as_user: list[str] = []
        if os.geteuid() == 0:
            self.as_user = ["runuser", "-u", "postgres", "--"]
            shutil.chown(self.dir, "postgres")
        self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync", "-E", "UTF8")

    def _run(self, tool: str, *args: str, timeout: float = 60):
        r = subprocess.run([*self.as_user, str(self.bindir / tool), *args], capture_output=True, text=True,
                           timeout=timeout)
        assert r.returncode == 0, f"{tool} failed: {r.stdout}{r.stderr}"

    @property
    def url(self) -> str:
        return f"postgres://postgres@127.0.0.1:{self.port}/postgres"

    def start(self):
        opts = f"-p {self.port} -h 127.0.0.1 -k {self.dir} -c fsync=off -c max_connections=50"
        self._run("pg_ctl", "-D", str(self.data), "-o", opts, "-l", str(self.dir / "postgres.log"), "-w", "start")
        wait_for("postgres listening", lambda: port_open(self.port), timeout=15)
        return self

    def stop(self, mode: str = "immediate"):
        """`immediate`: like a crash (no checkpoint, clients cut off)."""
        if (self.data / "postmaster.pid").exists():
            self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop")
        wait_for("postgres port closed", lambda: not port_open(self.port), timeout=15)

    def remove(self):
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


# ---------------------------------------------------------------- moltbot


def model_toml(name: str, endpoint: str, *, fallbacks=(), retry=None, timeouts=None, circuit=None) -> str:
    lines = ["[[models]]", f'name = "{name}"', f'endpoint = "{endpoint}"', f'api_key = "{UPSTREAM_KEY}"',
             'upstream_model = "fake-model"']
    if fallbacks:
        lines.append("fallbacks = [" + ", ".join(f'"{f}"' for f in fallbacks) + "]")
    for table, values in (("retry", retry), ("timeouts", timeouts), ("circuit", circuit)):
        if values:
            lines.append(f"{table} = {{ " + ", ".join(f"{k} = {json.dumps(v)}" for k, v in values.items()) + " }")
    return "\n".join(lines) + "\n"


class Gateway(harness.Replica):
    """One `moltbot serve` whose working directory holds its `moltbot.toml`; SQLite by default (the file
    `moltbot.db` in that directory, kept across restarts), or `database_url`."""

    def __init__(self, workdir: Path, models: str, *, database_url: str | None = None, server: dict | None = None):
        workdir.mkdir(parents=True, exist_ok=True)
        self.db_path = workdir / "moltbot.db"
        self.database_url = database_url or f"sqlite://{self.db_path}"
        srv = {"shutdown_delay": "300ms", "shutdown_grace": "10s", **(server or {})}
        toml = "\n".join([
            'chat_addr = "127.0.0.1:0"',
            'admin_addr = "127.0.0.1:0"',
            f'database_url = "{self.database_url}"',
            "",
            "[server]",
            *(f"{k} = {json.dumps(v)}" for k, v in srv.items()),
            "",
            models,
        ])
        (workdir / "moltbot.toml").write_text(toml)
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("MOLTBOT_", "OPENAI_")) and k not in ("MODEL_ENDPOINT", "API_KEY", "MODEL_NAME")}
        env.update({
            "MOLTBOT_BOOTSTRAP_ADMIN_KEY": ADMIN_KEY,
            "MOLTBOT_AUTH__JWT_SECRET": "chaos-jwt-secret-" + secrets.token_hex(24),
            "MOLTBOT_LOG__FORMAT": "json",
        })
        super().__init__("moltbot", workdir, env)
        self.key: str | None = None

    def init_db(self):
        """PostgreSQL: migrate and create the admin key, as a deployment would (SQLite does it on first start)."""
        r = subprocess.run([BIN, "init-db"], cwd=self.workdir, env=self.env, capture_output=True, text=True,
                           timeout=60)
        assert r.returncode == 0, f"moltbot init-db failed: {r.stderr}"
        return self

    def create_key(self) -> str:
        resp = request("POST", f"{self.admin_url}/admin/api/keys", key=ADMIN_KEY,
                       body={"name": "chaos", "scopes": ["chat", "conversations"]})
        assert resp.status in (200, 201), (resp.status, resp.body)
        self.key = resp.json()["secret"]
        return self.key

    def sigterm(self):
        self.proc.send_signal(signal.SIGTERM)

    def rows(self, sql: str, *params) -> list[tuple]:
        """Read the SQLite database (read-only; WAL lets it run beside the server)."""
        conn = sqlite3.connect(f"file:{self.db_path}?mode=ro", uri=True, timeout=30)
        try:
            return conn.execute(sql, params).fetchall()
        finally:
            conn.close()

    def leaked_secret(self) -> bool:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return UPSTREAM_KEY in text or ADMIN_KEY in text or (self.key is not None and self.key in text)


# ---------------------------------------------------------------- chat client


@dataclass
class Reply:
    """One chat request as the client saw it. `ok`: a 200 whose body is complete (JSON with a message, or SSE
    with a finish chunk and `[DONE]`) and whose text is the expected echo."""

    status: int
    text: str = ""
    conversation: str | None = None
    request_id: str | None = None
    retry_after: str | None = None
    finish_reason: str | None = None
    done: bool = False
    error: str | None = None
    body: bytes = b""
    started: float = 0.0
    first_chunk: float | None = None
    ended: float = 0.0
    events: int = 0

    @property
    def ok(self) -> bool:
        return self.status == 200 and self.error is None and self.finish_reason is not None


def chat(base: str, key: str, content: str, *, model: str = "default", stream: bool = False,
         conversation: str | None = None, timeout: float = 30.0, on_first_chunk=None) -> Reply:
    """One chat completion on a fresh connection. A streamed reply is read line by line, so `first_chunk` is
    the time its first content arrived and a cut stream shows as `error` (never as a hang)."""
    body = {"model": model, "messages": [{"role": "user", "content": content}], "stream": stream}
    if stream:
        body["stream_options"] = {"include_usage": True}
    if conversation:
        body["conversation"] = conversation
    u = urllib.parse.urlsplit(base)
    # Our own request id, so that even a turn whose answer never arrived can be found in the database.
    out = Reply(status=0, started=time.monotonic(), request_id="chaos" + secrets.token_hex(12))
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=timeout)
    try:
        conn.request("POST", "/v1/chat/completions", body=json.dumps(body), headers={
            "Authorization": f"Bearer {key}", "Content-Type": "application/json", "Connection": "close",
            "X-Request-Id": out.request_id})
        r = conn.getresponse()
        out.status = r.status
        out.conversation = r.getheader("x-moltbot-conversation")
        out.retry_after = r.getheader("retry-after")
        if r.getheader("x-request-id") != out.request_id:
            raise ValueError(f"x-request-id {r.getheader('x-request-id')!r} is not ours")
        if r.status != 200 or not stream:
            out.body = r.read()
            if r.status == 200:
                msg = json.loads(out.body)["choices"][0]
                out.text, out.finish_reason = msg["message"]["content"] or "", msg["finish_reason"]
            else:
                out.error = out.body[:400].decode(errors="replace")
        else:
            _read_sse(r, out, on_first_chunk)
    except (OSError, http.client.HTTPException, ValueError, KeyError) as e:
        out.error = f"{type(e).__name__}: {e}"
    finally:
        conn.close()
    out.ended = time.monotonic()
    if out.error is None and out.status == 200 and out.text != f"echo: {content}":
        out.error = f"wrong reply {out.text!r}"
    return out


def _read_sse(r, out: Reply, on_first_chunk):
    text = []
    while True:
        line = r.fp.readline()
        if not line:
            break
        out.body += line
        line = line.decode().rstrip("\r\n")
        if not line.startswith("data:"):
            continue
        data = line[5:].strip()
        out.events += 1
        if data == "[DONE]":
            out.done = True
            break
        ev = json.loads(data)
        if "error" in ev:
            out.error = f"error event: {data[:300]}"
            break
        for choice in ev.get("choices") or []:
            piece = (choice.get("delta") or {}).get("content")
            if piece:
                if out.first_chunk is None:
                    out.first_chunk = time.monotonic()
                    if on_first_chunk:
                        on_first_chunk(out)
                text.append(piece)
            if choice.get("finish_reason"):
                out.finish_reason = choice["finish_reason"]
    out.text = "".join(text)
    if out.error:
        return
    if not out.done:
        out.error = "stream ended without [DONE]"
    elif out.finish_reason is None:
        out.error = "stream without a finish chunk"


# ---------------------------------------------------------------- load


@dataclass
class Turn:
    client: int
    seq: int
    content: str
    stream: bool
    model: str
    base: str
    reply: Reply


@dataclass
class Load:
    """`clients` threads, each keeping one conversation going, one turn at a time, alternating streamed and
    non-streamed turns, until `total` turns were sent overall or `stop()`. `base()` is read before every turn,
    so a restarted server on new ports is picked up. Every turn is logged; `Reply.ok` is an acknowledged one."""

    base: callable
    key: str
    clients: int
    total: int = 10**9
    models: callable = field(default=lambda client, seq: "default")
    pause_after_failure: float = 0.05
    turns: list[Turn] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    stop_event: threading.Event = field(default_factory=threading.Event)
    threads: list[threading.Thread] = field(default_factory=list)
    sent: int = 0

    def _next(self) -> bool:
        with self.lock:
            if self.stop_event.is_set() or self.sent >= self.total:
                return False
            self.sent += 1
            return True

    def _client(self, c: int):
        conv = None
        seq = 0
        while self._next():
            content = f"c{c}-t{seq}-{secrets.token_hex(4)}"
            stream = (c + seq) % 2 == 1
            model = self.models(c, seq)
            base = self.base()
            reply = chat(base, self.key, content, model=model, stream=stream, conversation=conv)
            if reply.ok and conv is None:
                conv = reply.conversation
            with self.lock:
                self.turns.append(Turn(c, seq, content, stream, model, base, reply))
            seq += 1
            if not reply.ok:
                time.sleep(self.pause_after_failure)

    def start(self):
        for c in range(self.clients):
            t = threading.Thread(target=self._client, args=(c,), daemon=True)
            t.start()
            self.threads.append(t)
        return self

    def join(self, timeout: float):
        deadline = time.monotonic() + timeout
        for t in self.threads:
            t.join(timeout=max(0.0, deadline - time.monotonic()))
        assert not any(t.is_alive() for t in self.threads), "a load client hung"

    def stop(self, timeout: float = 60):
        self.stop_event.set()
        self.join(timeout)

    def acknowledged(self) -> list[Turn]:
        return [t for t in self.turns if t.reply.ok]

    def failed(self) -> list[Turn]:
        return [t for t in self.turns if not t.reply.ok]


def pg_rows(url: str, sql: str) -> list[list[str]]:
    out = harness.psql(url, sql)
    return [line.split("|") for line in out.splitlines() if line]
