"""Start moltbot the way a user would (the binary, env vars, a working directory) against the fake
upstream process, and hand the tests an official OpenAI client pointed at it."""

import json
import os
import secrets
import signal
import subprocess
import time
from pathlib import Path

import openai
import pytest

ROOT = Path(__file__).resolve().parents[2]
BIN = str(Path(os.environ.get("MOLTBOT_BIN", ROOT / "target" / "debug" / "moltbot")).resolve())
FAKE = str(Path(os.environ.get("MOLTBOT_FAKE_UPSTREAM_BIN", ROOT / "target" / "debug" / "moltbot-fake-upstream")).resolve())
UPSTREAM_KEY = "sk-e2e-upstream-key-DO-NOT-LEAK"
# The bootstrap admin key the fresh database starts with (MOLTBOT_BOOTSTRAP_ADMIN_KEY): the SDK uses it.
ADMIN_KEY = "mb_e2e" + secrets.token_hex(24)
JWT_SECRET = "e2e-jwt-secret-" + secrets.token_hex(24)


@pytest.fixture(scope="session")
def fake_upstream():
    proc = subprocess.Popen([FAKE, "--echo", "--chunks", "4"], stdout=subprocess.PIPE, text=True)
    url = proc.stdout.readline().strip()
    assert url.startswith("http://127.0.0.1:"), url
    yield url
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=10)


class Moltbot:
    """One moltbot process in a working directory; restartable on the same data."""

    def __init__(self, workdir: Path, upstream: str):
        self.workdir = workdir
        self.upstream = upstream
        self.proc = None
        self.addrs = None
        self.log = workdir / "moltbot.log"

    def start(self):
        ready = self.workdir / "ready.json"
        ready.unlink(missing_ok=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("MOLTBOT_", "OPENAI_"))}
        env.update(
            {
                "MODEL_ENDPOINT": self.upstream,
                "API_KEY": UPSTREAM_KEY,
                "MODEL_NAME": "fake-model",
                "MOLTBOT_CHAT_ADDR": "127.0.0.1:0",
                "MOLTBOT_ADMIN_ADDR": "127.0.0.1:0",
                "MOLTBOT_SERVER__SHUTDOWN_DELAY": "100ms",
                "MOLTBOT_LOG__FORMAT": "json",
                "MOLTBOT_BOOTSTRAP_ADMIN_KEY": ADMIN_KEY,
                "MOLTBOT_AUTH__JWT_SECRET": JWT_SECRET,
            }
        )
        started = time.monotonic()
        self.proc = subprocess.Popen(
            [BIN, "serve", "--ready-file", str(ready)],
            cwd=self.workdir,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=open(self.log, "ab"),
        )
        while not ready.exists():
            if self.proc.poll() is not None:
                raise RuntimeError(f"moltbot exited: {self.log.read_text()[-2000:]}")
            if time.monotonic() - started > 30:
                raise RuntimeError("moltbot did not become ready within 30 s")
            time.sleep(0.02)
        self.addrs = json.loads(ready.read_text())
        return self

    @property
    def base_url(self) -> str:
        return f"http://{self.addrs['chat_addr']}/v1"

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=30)

    def client(self, api_key: str = ADMIN_KEY) -> openai.OpenAI:
        # max_retries=0: retries must not hide errors.
        return openai.OpenAI(base_url=self.base_url, api_key=api_key, max_retries=0)


@pytest.fixture
def moltbot(tmp_path, fake_upstream):
    m = Moltbot(tmp_path, fake_upstream).start()
    yield m
    if m.proc.poll() is None:
        m.stop()
    log = m.log.read_text()
    assert UPSTREAM_KEY not in log, "the upstream key leaked into the logs"
    assert ADMIN_KEY not in log and JWT_SECRET not in log, "a moltbot secret leaked into the logs"
