#!/usr/bin/env python3
"""`make fuzz-api`: schemathesis against the running server's own `/openapi.json` on the dialog listener.

Starts the fake upstream and one moltbot (SQLite in a temp dir, one model `fuzz-model`, an API key with the chat
and conversations scopes), then runs every phase schemathesis has (schema examples, boundary coverage, random
fuzzing, stateful sequences) on every operation with `--checks not_a_server_error` and a per-request timeout:
any 5xx, timeout or dropped connection fails the run. Afterwards the server must still be alive and ready, and
its log must hold no panic.

Environment: FUZZ_API_EXAMPLES (cases per operation and phase, default 120), FUZZ_API_SEED (default 1),
FUZZ_API_TIMEOUT (seconds for one request, default 10). Reports (JUnit, JSON) go to target/fuzz-api/."""

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "chaos"))
import chaos  # noqa: E402

EXAMPLES = int(os.environ.get("FUZZ_API_EXAMPLES", "120"))
SEED = os.environ.get("FUZZ_API_SEED", "1")
TIMEOUT = float(os.environ.get("FUZZ_API_TIMEOUT", "10"))
WALL = 900  # the whole schemathesis run, hang or not
REPORTS = ROOT / "target" / "fuzz-api"
SCHEMATHESIS = Path(os.environ.get("SCHEMATHESIS", Path(sys.executable).parent / "schemathesis"))


def summary(report: Path) -> dict:
    """Case counts from schemathesis' JSON run report: generated, failing, and per phase how many the server
    accepted (2xx) or rejected (4xx)."""
    if not report.exists():
        return {}
    r = json.loads(report.read_text())
    rates = {"accepted": 0, "rejected": 0}
    for per_phase in r.get("valid_rates", {}).values():
        for counts in per_phase.values():
            for k in rates:
                rates[k] += counts.get(k, 0)
    cases = r.get("test_cases", {})
    return {"generated": cases.get("generated", 0), "with_failures": cases.get("with_failures", 0),
            "errored": cases.get("errored", 0), **rates, "complete": r.get("complete"),
            "operations": r.get("operations", {}).get("tested", 0)}


def main() -> int:
    REPORTS.mkdir(parents=True, exist_ok=True)
    for old in (REPORTS / "junit.xml", REPORTS / "report.json"):
        old.unlink(missing_ok=True)
    up = chaos.Upstream("--chunks", "2")
    tmp = tempfile.TemporaryDirectory(prefix="moltbot-fuzz-api-")
    models = chaos.model_toml("fuzz-model", up.url, retry={"max_attempts": 1},
                              timeouts={"connect": "1s", "first_byte": "5s", "idle": "5s", "total": "8s"})
    gw = chaos.Gateway(Path(tmp.name) / "gw", models)
    try:
        gw.start()
        key = gw.create_key()
        cmd = [
            str(SCHEMATHESIS), "run", f"{gw.url}/openapi.json",
            "--header", f"Authorization: Bearer {key}",
            "--checks", "not_a_server_error",
            "--max-examples", str(EXAMPLES),
            "--seed", SEED,
            "--request-timeout", str(TIMEOUT),
            "--max-response-time", str(TIMEOUT),
            "--workers", "1",  # with 2, schemathesis 4.32 cuts some operations' fuzzing short
            "--generation-database", "none",
            "--report", "junit,json",
            "--report-junit-path", str(REPORTS / "junit.xml"),
            "--report-json-path", str(REPORTS / "report.json"),
            "--no-color",
        ]
        env = {**os.environ, "SCHEMATHESIS_HOOKS": str(Path(__file__).with_name("hooks.py"))}
        started = time.monotonic()
        try:
            rc = subprocess.run(cmd, env=env, timeout=WALL).returncode
        except subprocess.TimeoutExpired:
            print(f"fuzz-api: schemathesis did not finish within {WALL}s (a hang?)")
            rc = 1
        took = time.monotonic() - started
        figures = summary(REPORTS / "report.json")
        ready = chaos.request("GET", f"{gw.url}/ready")
        alive = gw.alive() and ready.status == 200
        log = gw.log.read_text(errors="replace")
        panics = log.count("panicked")
        print(f"fuzz-api: {figures} in {took:.0f}s; schemathesis exit {rc}; "
              f"server {'alive and ready' if alive else 'NOT READY'}; {panics} panics in its log")
        if not alive or panics:
            return 1
        return rc
    finally:
        if gw.alive():
            gw.stop(timeout=20)
        up.stop()
        tmp.cleanup()


if __name__ == "__main__":
    sys.exit(main())
