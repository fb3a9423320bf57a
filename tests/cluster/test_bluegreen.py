"""Blue-green through nginx under load: blue serves; the new release's expand-only migration is applied while blue
keeps serving on the newer schema; green starts; deploy/bluegreen/switch.sh flips nginx to green; blue stops.
Zero failed requests throughout.

How "the new release" is simulated with one binary: the test applies a real expand-only migration (a nullable
column and a partial index, which the current code never reads) and records it in `_sqlx_migrations` exactly as
sqlx does for a release that ships it (a version this binary does not know, success, SHA-384 checksum). That is
the state a newer `moltbot init-db` leaves behind. Blue (this binary) must keep serving on it, a `moltbot init-db`
of the old release must accept it as a no-op (the migrator ignores versions it does not know), and green — the
same binary, started with `serve --migrate` after the migration — must start on it."""

import hashlib
import subprocess
import time

from harness import BIN, SWITCH, FakeUpstream, Load, conversation_items, free_port, upstream_ports, wait_for

EXPAND_VERSION = 90_001
EXPAND_SQL = (
    "ALTER TABLE conversations ADD COLUMN IF NOT EXISTS archived_at TIMESTAMPTZ NULL; "
    "CREATE INDEX IF NOT EXISTS conversations_archived_at ON conversations (archived_at) "
    "WHERE archived_at IS NOT NULL;"
)


def apply_expand_migration(db):
    checksum = hashlib.sha384(EXPAND_SQL.encode()).hexdigest()
    db.sql(
        f"BEGIN; {EXPAND_SQL} "
        "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) "
        f"VALUES ({EXPAND_VERSION}, 'conversation archive (expand)', TRUE, '\\x{checksum}', 1); COMMIT;"
    )


def test_blue_green_switch_through_nginx_under_load_has_zero_failures(cluster_factory, redis_factory, nginx_factory,
                                                                      tls):
    upstream = FakeUpstream("--chunks", "2", "--interval-ms", "20")
    try:
        cluster = cluster_factory(upstream.url, redis_factory())
        blue = [cluster.add(f"blue{i}") for i in range(2)]
        # Green's addresses are only known once it runs; until then its colour file points at a closed port.
        nginx = nginx_factory(chat_servers_blue=" ".join(r.chat for r in blue),
                              chat_servers_green=f"127.0.0.1:{free_port()}").start()
        nginx_cmd = " ".join(nginx.base_args)
        switch = [str(SWITCH), "--conf-dir", str(nginx.conf), "--nginx", nginx_cmd, "green"]
        # The switch script refuses a colour whose replicas are not ready, so the placeholder never gets traffic.
        refused = subprocess.run(switch, capture_output=True, text=True, timeout=60)
        assert refused.returncode != 0 and "not ready" in refused.stderr, refused.stderr
        assert (nginx.conf / "active-color").read_text().strip() == "blue"
        blue_ports = {int(r.chat.rsplit(":", 1)[1]) for r in blue}
        key = cluster.create_key()

        load = Load(nginx.https, key, clients=4, context=tls).start()
        time.sleep(1.0)

        # The new release migrates (expand only) while blue serves.
        apply_expand_migration(cluster.db)
        log_at_migration = len(nginx.access_log())
        old_init = subprocess.run([BIN, "init-db"], cwd=cluster.tmp, env=cluster.env, capture_output=True,
                                  text=True, timeout=60)
        assert old_init.returncode == 0, old_init.stderr
        time.sleep(1.0)

        green = [cluster.add(f"green{i}", "--migrate") for i in range(2)]
        green_ports = {int(r.chat.rsplit(":", 1)[1]) for r in green}
        # The operator re-renders with green's addresses; the active colour (blue) is kept, nothing reloads.
        nginx.env["MOLTBOT_NGINX_CHAT_SERVERS_GREEN"] = " ".join(r.chat for r in green)
        nginx.render()
        active = (nginx.conf / "upstream-chat.conf").read_text()
        assert active == (nginx.conf / "upstream-chat.blue.conf").read_text() and blue[0].chat in active
        log_at_switch = len(nginx.access_log())

        old_workers = nginx.worker_pids()
        switched = subprocess.run(switch, capture_output=True, text=True, timeout=60)
        assert switched.returncode == 0, switched.stderr
        assert (nginx.conf / "active-color").read_text().strip() == "green"
        # The old workers finish what they have in flight and exit; only then is blue stopped.
        wait_for("old nginx workers to drain", lambda: not (nginx.worker_pids() & old_workers), timeout=30)
        time.sleep(0.5)
        for r in blue:
            assert r.stop() == 0
        log_at_blue_stop = len(nginx.access_log())
        time.sleep(1.0)
        load.stop()

        failed = load.failed()
        assert not failed, [(t.status, t.error) for t in failed[:5]]
        acked = load.acknowledged()
        assert len(acked) >= 40, len(acked)

        ports = upstream_ports(nginx.access_log())
        on_newer_schema = ports[log_at_migration:log_at_switch]
        assert on_newer_schema and all(p <= blue_ports for p in on_newer_schema), "blue stopped serving"
        after = ports[log_at_blue_stop:]
        assert after and all(p <= green_ports for p in after), "requests still went to blue"

        # The conversations carried on across the switch, and green reads everything blue wrote.
        turns = {}
        for t in acked:
            turns.setdefault(t.conversation, []).append(t.content)
        for conv, contents in turns.items():
            stored = [text for role, text in conversation_items(green[0].url, key, conv) if role == "user"]
            assert stored == contents, conv
    finally:
        upstream.stop()
