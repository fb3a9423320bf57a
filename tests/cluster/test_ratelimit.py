"""A key's rate limit holds in total across three replicas (shared through Redis), and a Redis outage follows the
stated policy ("open", the default): requests keep being served with per-replica limits, and once Redis is back
the limits are shared again without restarting anything.

Limit arithmetic (crates/moltbot-core/src/ratelimit.rs): with R per minute and limits.burst_window W, the burst is
B = R·W and at most B + R·t requests pass in any t minutes."""

import collections
import json
import re
import signal
import threading
import time

from harness import ADMIN_KEY, FakeUpstream, request, wait_for

R = 120  # per minute
WINDOW_S = 5  # limits.burst_window
B = R * WINDOW_S // 60  # = 10
SECONDS = 6.0


def hammer(replicas, key: str, seconds: float = SECONDS):
    """GET /v1/models round-robin over the replicas from three threads for `seconds`. Returns the number of
    200s, a Counter of all statuses, and t, the time from the first request sent to the last answer received
    (an upper bound of the time the limiter saw)."""
    statuses = collections.Counter()
    lock = threading.Lock()
    first, last = [], []
    stop = time.monotonic() + seconds

    def run(offset: int):
        n = offset
        while time.monotonic() < stop:
            rep = replicas[n % len(replicas)]
            n += 1
            r = request("GET", f"{rep.url}/v1/models", key=key, timeout=5)
            with lock:
                statuses[r.status] += 1
                first.append(r.started)
                last.append(r.ended)
            time.sleep(0.01)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=seconds + 30)
    return statuses[200], statuses, max(last) - min(first)


def shared_bound(t: float) -> int:
    """B + R·t, plus one. t is measured by the client (first request sent to last answer received), so it is
    never shorter than the span the limiter saw, and a full bucket admits B at once and then one unit every 60/R s:
    B + ⌊R·t⌋ at most. The +1 is the window edge: the limiter keeps time in whole milliseconds (and the replicas'
    clocks and Redis's are read at different instants), so the unit that falls due exactly at the end of the span
    can be admitted a moment early — one unit, never more, since units are 500 ms apart."""
    return B + int(R * t / 60) + 1


def test_rate_limit_holds_in_total_across_three_replicas(cluster_factory, redis_factory):
    upstream = FakeUpstream()
    try:
        cluster = cluster_factory(upstream.url, redis_factory(), MOLTBOT_LIMITS__BURST_WINDOW=f"{WINDOW_S}s")
        replicas = [cluster.add() for _ in range(3)]
        key = cluster.create_key(requests_per_minute=R)

        passed, statuses, t = hammer(replicas, key)
        assert set(statuses) <= {200, 429}, statuses
        # Three independent limiters would let about 3·(B + R·t) through.
        assert B <= passed <= shared_bound(t), f"{passed} passed in {t:.1f}s, bound {shared_bound(t)} ({statuses})"
        assert statuses[429] > 0
        print(f"{passed} of {sum(statuses.values())} passed in {t:.2f}s across 3 replicas; bound {shared_bound(t)}")
    finally:
        upstream.stop()


def redis_up(replica) -> str | None:
    """The replica's moltbot_redis_up gauge ("1"/"0"), from /metrics on its admin listener (loopback is in
    server.admin_allow_cidrs)."""
    r = request("GET", f"{replica.admin_url}/metrics", timeout=5)
    if r.status != 200:
        return None
    m = re.search(r"^moltbot_redis_up(?:\{[^}]*\})? (\S+)$", r.body.decode(), re.M)
    return m and str(int(float(m.group(1))))


def test_redis_outage_fails_open_and_recovers_without_restart(cluster_factory, redis_factory):
    upstream = FakeUpstream()
    try:
        redis = redis_factory()
        cluster = cluster_factory(upstream.url, redis, MOLTBOT_LIMITS__BURST_WINDOW=f"{WINDOW_S}s")
        replicas = [cluster.add() for _ in range(3)]
        pids = [r.proc.pid for r in replicas]

        # Redis up: shared.
        passed, statuses, t = hammer(replicas, cluster.create_key(requests_per_minute=R), 3.0)
        assert B <= passed <= shared_bound(t), (passed, t, statuses)

        # Redis hanging (SIGSTOP: connections open, no answers): cluster.redis_timeout (250 ms) bounds each
        # operation, so every request is still answered quickly, with per-replica limits.
        key = cluster.create_key(requests_per_minute=R)
        redis.proc.send_signal(signal.SIGSTOP)
        try:
            slowest = 0.0
            for i in range(9):
                r = request("GET", f"{replicas[i % 3].url}/v1/models", key=key, timeout=10)
                assert r.status in (200, 429), (r.status, r.body)
                slowest = max(slowest, r.ended - r.started)
            assert slowest < 2.0, f"a request took {slowest:.2f}s while Redis hung"
        finally:
            redis.proc.send_signal(signal.SIGCONT)

        # Redis down (SIGKILL of the private server): policy "open" keeps serving, with per-replica limits —
        # so more than the shared bound passes, never a 5xx, and every replica stays ready.
        redis.kill()
        key = cluster.create_key(requests_per_minute=R)
        passed, statuses, t = hammer(replicas, key, 3.0)
        assert set(statuses) <= {200, 429}, statuses
        assert passed > shared_bound(t), f"only {passed} passed with Redis down: not failing open? {statuses}"
        assert passed <= 3 * shared_bound(t), f"{passed} passed: no local limits at all? {statuses}"
        for rep in replicas:
            ready = request("GET", f"{rep.url}/ready")
            assert ready.status == 200, ready.body
            assert "degraded" in json.dumps(ready.json().get("redis")), ready.body
            assert redis_up(rep) == "0"

        # Redis back on the same port (empty): the replicas reconnect by themselves.
        redis.start()

        def reconnected():
            for rep in replicas:
                request("GET", f"{rep.url}/v1/models", key=ADMIN_KEY, timeout=5)
            return all(redis_up(rep) == "1" for rep in replicas)

        wait_for("replicas back on Redis", reconnected, timeout=20, interval=0.5)
        for rep in replicas:
            ready = request("GET", f"{rep.url}/ready")
            assert ready.status == 200 and "degraded" not in json.dumps(ready.json().get("redis")), ready.body
        passed, statuses, t = hammer(replicas, cluster.create_key(requests_per_minute=R), 3.0)
        assert B <= passed <= shared_bound(t), f"not shared again after recovery: {passed} in {t:.1f}s {statuses}"
        assert [r.proc.pid for r in replicas] == pids and all(r.alive() for r in replicas), "a replica restarted"
    finally:
        upstream.stop()


def test_redis_outage_with_policy_closed_refuses_limited_requests_until_redis_is_back(cluster_factory,
                                                                                      redis_factory):
    upstream = FakeUpstream()
    try:
        redis = redis_factory()
        cluster = cluster_factory(upstream.url, redis, MOLTBOT_CLUSTER__REDIS_FAILURE="closed")
        replicas = [cluster.add() for _ in range(2)]
        key = cluster.create_key(requests_per_minute=R)
        for rep in replicas:
            assert request("GET", f"{rep.url}/v1/models", key=key).status == 200

        redis.kill()
        for rep in replicas:
            r = request("GET", f"{rep.url}/v1/models", key=key, timeout=10)
            assert r.status == 503, (r.status, r.body)
            assert r.json()["error"]["code"] == "redis_unavailable"
            assert int(r.headers["retry-after"]) > 0

        redis.start()
        for rep in replicas:
            wait_for(f"{rep.name} serving again",
                     lambda rep=rep: request("GET", f"{rep.url}/v1/models", key=key).status == 200, 20, 0.5)
    finally:
        upstream.stop()
