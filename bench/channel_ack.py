#!/usr/bin/env python3
"""How fast moltbot acknowledges a chat-platform webhook: verify, store durably (deduplicated), answer.

Starts `moltbot serve` (BIN, default target/debug/moltbot — use target/release/moltbot for real figures) on
127.0.0.1:0 with a fresh SQLite database and one Telegram webhook account whose API and model point at a closed
port (the workers' retries keep running meanwhile, as under load), posts N signed updates sequentially on one
keep-alive connection (50 chats), and prints the acknowledgement latency percentiles after a warm-up.
Platforms' deadlines: Feishu/Slack 3 s, DingTalk/WeCom 5 s.

    python3 bench/channel_ack.py [N]
"""

import http.client
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = os.environ.get("BIN", str(ROOT / "target" / "debug" / "moltbot"))
N = int(sys.argv[1]) if len(sys.argv) > 1 else 400
WARMUP = 20

CONFIG = """
chat_addr = "127.0.0.1:0"
admin_addr = "127.0.0.1:0"
database_url = "sqlite://./data/moltbot.db"

[[models]]
name = "closed"
endpoint = "http://127.0.0.1:9/v1"

[[channels]]
platform = "telegram"
account = "tg"
bot_token = "1:abc"
secret_token = "bench-secret"
api_base = "http://127.0.0.1:9"

[pipeline]
workers = 1
"""


def main():
    with tempfile.TemporaryDirectory() as d:
        Path(d, "moltbot.toml").write_text(CONFIG)
        ready = Path(d, "ready.json")
        env = {k: v for k, v in os.environ.items() if not k.startswith(("MOLTBOT_", "MODEL_", "API_KEY"))}
        proc = subprocess.Popen([BIN, "serve", "--ready-file", str(ready)], cwd=d, env=env,
                                stdout=subprocess.DEVNULL, stderr=open(Path(d, "log"), "w"))
        try:
            while not ready.exists() or not ready.read_text().strip().endswith("}"):
                if proc.poll() is not None:
                    sys.exit(Path(d, "log").read_text())
                time.sleep(0.02)
            host, port = json.loads(ready.read_text())["chat_addr"].rsplit(":", 1)
            conn = http.client.HTTPConnection(host, int(port))
            lat = []
            for i in range(N + WARMUP):
                body = json.dumps({"update_id": i, "message": {
                    "message_id": i, "date": 0, "chat": {"id": 1000 + i % 50, "type": "private"},
                    "from": {"id": 7, "is_bot": False, "first_name": "A"}, "text": f"m{i}"}})
                t = time.perf_counter()
                conn.request("POST", "/channels/telegram/tg", body=body, headers={
                    "Content-Type": "application/json", "X-Telegram-Bot-Api-Secret-Token": "bench-secret"})
                r = conn.getresponse()
                r.read()
                assert r.status == 200, r.status
                if i >= WARMUP:
                    lat.append((time.perf_counter() - t) * 1000)
        finally:
            proc.terminate()
            proc.wait()
    lat.sort()
    print(f"{BIN}: {len(lat)} webhook acks (SQLite): p50 {statistics.median(lat):.2f} ms, "
          f"p99 {lat[int(len(lat) * 0.99) - 1]:.2f} ms, max {lat[-1]:.2f} ms")


if __name__ == "__main__":
    main()
