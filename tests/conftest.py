"""Shared test fixtures: real Redis/PostgreSQL from scripts/services.sh.

A test that needs a service skips when it is not running -- except under
CI=true, where a missing service is a failure, never a skip.
"""

from __future__ import annotations

import os
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
IN_CI = os.environ.get("CI", "").lower() == "true"


def _services_env() -> dict[str, str]:
    env = {}
    path = ROOT / ".services.env"
    if path.exists():
        for line in path.read_text().splitlines():
            if "=" in line:
                k, v = line.split("=", 1)
                env[k.strip()] = v.strip()
    env.update({k: v for k, v in os.environ.items() if k.startswith("FLK_TEST_")})
    return env


def _need(name: str) -> str:
    value = _services_env().get(name)
    if not value:
        msg = f"{name} not set: run `bash scripts/services.sh up`"
        if IN_CI:
            pytest.fail(msg)
        pytest.skip(msg)
    return value


@pytest.fixture(scope="session")
def redis_url() -> str:
    url = _need("FLK_TEST_REDIS_URL")
    try:
        import redis

        redis.Redis.from_url(url, socket_connect_timeout=2).ping()
    except Exception as exc:  # noqa: BLE001
        if IN_CI:
            pytest.fail(f"redis at {url} unusable: {exc}")
        pytest.skip(f"redis unusable: {exc}")
    return url


@pytest.fixture(scope="session")
def postgres_dsn() -> str:
    dsn = _need("FLK_TEST_POSTGRES_DSN")
    try:
        import psycopg

        with psycopg.connect(dsn, connect_timeout=3) as conn:
            conn.execute("SELECT 1")
    except Exception as exc:  # noqa: BLE001
        if IN_CI:
            pytest.fail(f"postgres at {dsn} unusable: {exc}")
        pytest.skip(f"postgres unusable: {exc}")
    return dsn


@pytest.fixture(scope="session")
def slow_machine_s() -> float:
    """The call deadline (``timeout_s``) of a networked store in a test that checks what the
    store answers, not how fast: a loaded CI machine held a Postgres CREATE TABLE past the 2 s
    default. The stores' deadlines have tests of their own (tests/server/test_store_faults.py,
    tests/dedup/test_backends.py)."""
    return 30.0


# ---- differential tests of the compiled fast paths (flk.impl.core.accel) ----
@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item):
    """A test marked ``@pytest.mark.differential(ENTRY, ...)`` must really run the compiled
    function of each entry it names whenever that function is active (else it compares the
    reference with itself): the calls are counted through the registry."""
    marker = item.get_closest_marker("differential")
    if marker is None:
        return (yield)
    from flk.impl.core import accel

    with accel.counting() as counts:
        result = yield
    idle = [name for name in marker.args if accel.entry(name).compiled is not None and counts[name] == 0]
    if idle:
        pytest.fail(f"differential test never called the compiled {', '.join(idle)} (accel registry)")
    return result
