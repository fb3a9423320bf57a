"""Fixtures for the chaos tests (`make chaos`): factories for fake upstreams, moltbot gateways and private
PostgreSQL clusters, each stopped after its test (a gateway's log is checked for leaked secrets)."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
import chaos  # noqa: E402


@pytest.fixture(scope="session", autouse=True)
def tools():
    for binary in (chaos.BIN, chaos.FAKE):
        assert Path(binary).exists(), f"{binary} is missing: run `make bins`"
    missing = [t for t in ("psql",) if shutil.which(t) is None]
    assert not missing, f"missing tools: {missing}"


@pytest.fixture
def upstreams():
    made = []

    def make(*args: str) -> chaos.Upstream:
        up = chaos.Upstream(*args)
        made.append(up)
        return up

    yield make
    for up in made:
        up.stop()


@pytest.fixture
def gateways(tmp_path):
    made = []

    def make(models: str, name: str = "gw", **kw) -> chaos.Gateway:
        gw = chaos.Gateway(tmp_path / f"{name}{len(made)}", models, **kw)
        made.append(gw)
        return gw

    yield make
    for gw in made:
        if gw.alive():
            try:
                gw.stop(timeout=20)
            except subprocess.TimeoutExpired:
                gw.kill()
    leaks = [str(gw.workdir) for gw in made if gw.leaked_secret()]
    assert not leaks, f"a secret leaked into the logs in {leaks}"


@pytest.fixture
def private_postgres():
    started = []

    def make() -> chaos.PrivatePostgres:
        pg = chaos.PrivatePostgres()
        started.append(pg)
        return pg.start()

    yield make
    for pg in started:
        pg.remove()


@pytest.fixture
def shared_database():
    """A fresh database on the shared PostgreSQL (MOLTBOT_TEST_POSTGRES_URL), dropped afterwards."""
    made = []

    def make() -> chaos.harness.Database:
        db = chaos.harness.Database()
        made.append(db)
        return db

    yield make
    for db in made:
        db.drop()
