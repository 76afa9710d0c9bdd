"""Refinement against the networked dedup stores: the machine of
:mod:`tests.formal.test_refinement` (same rules, same model, same invariants)
with the real Redis and PostgreSQL stores from ``scripts/services.sh``.

Each machine instance gets its own Redis key prefix / Postgres table (unique
per run and per instance), so examples never see each other's keys; both are
removed in ``teardown``. A crash closes the store client and opens a new one
on the same prefix/table (the store is durable, as in the model with
``dedup_durable=True``); restart replays the inbox WAL through the pipeline.
Fewer examples than the in-process run: every step is a network round trip.
"""

from __future__ import annotations

import uuid

import pytest
from dedup.contract import redis_cleanup
from hypothesis import settings

from flk.impl.dedup import open_store

from .test_refinement import SETTINGS, Refinement

RUN = uuid.uuid4().hex[:10]
BACKEND_SETTINGS = settings(SETTINGS, max_examples=15)


class NetworkStoreRefinement(Refinement):
    store_kind = "redis"
    url = ""
    timeout_s = 2.0  # the test's slow_machine_s (tests/conftest.py): a CREATE TABLE took > 2 s in CI

    def _open(self):
        if self.store_kind == "redis":
            return open_store(self.url, prefix=f"flk:refine:{RUN}:{self.n}:", timeout_s=self.timeout_s)
        return open_store(self.url, table=f"flk_refine_{RUN}_{self.n}", timeout_s=self.timeout_s)

    def teardown(self):
        """Removes this instance's keys or table through a connection of its own: it runs
        after a failed step too, when ``self.store`` may be closed."""
        self.store.close()
        if self.store_kind == "redis":
            redis_cleanup(self.url, f"flk:refine:{RUN}:{self.n}:")
            return
        import psycopg

        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute(f"DROP TABLE IF EXISTS flk_refine_{RUN}_{self.n}")


def _run(kind: str, url: str, timeout_s: float) -> None:
    NetworkStoreRefinement.store_kind = kind
    NetworkStoreRefinement.url = url
    NetworkStoreRefinement.timeout_s = timeout_s
    NetworkStoreRefinement.TestCase.settings = BACKEND_SETTINGS
    NetworkStoreRefinement.TestCase().runTest()


@pytest.mark.redis
def test_inv_fww_inv_verify_before_dedup_refinement_redis_store(redis_url, slow_machine_s):
    _run("redis", redis_url, slow_machine_s)
    import redis

    assert not list(redis.Redis.from_url(redis_url).scan_iter(match=f"flk:refine:{RUN}:*"))  # cleaned up


@pytest.mark.postgres
def test_inv_fww_inv_verify_before_dedup_refinement_postgres_store(postgres_dsn, slow_machine_s):
    _run("postgres", postgres_dsn, slow_machine_s)
    import psycopg

    with psycopg.connect(postgres_dsn) as conn:
        left = conn.execute("SELECT count(*) FROM pg_tables WHERE tablename LIKE %s",
                            (f"flk_refine_{RUN}_%",)).fetchone()[0]
    assert left == 0  # cleaned up


@pytest.mark.redis
@pytest.mark.postgres
@pytest.mark.parametrize("kind", ["redis", "postgres"])
def test_inv_idempotent_replay_network_refinement_is_not_vacuous(kind, request):
    """One fixed trace reaching every answer kind (200, 401, 409) and a crash + WAL replay."""
    NetworkStoreRefinement.store_kind = kind
    NetworkStoreRefinement.url = request.getfixturevalue("redis_url" if kind == "redis" else "postgres_dsn")
    m = NetworkStoreRefinement()
    try:
        m._submit("ta", 1, 0, "own")
        m._submit("ta", 1, 0, "own")
        m._submit("ta", 1, 1, "own")
        m._submit("tb", 2, 0, "forged")
        m._submit("tb", 2, 0, "other")
        m.crash_and_restart()
        m.store_refines_model()
        m.rotate_key()
        m._submit("ta", 3, 0, "own")
        m.store_refines_model()
        assert sorted(set(m.model.answers.values())) == [200, 401, 409]
        assert m.store.count(m.now) == 2
    finally:
        m.teardown()
