"""JSON bodies nested past the parser's depth, or holding a number past Python's digit limit,
get a 400 problem+json on every route that reads a JSON body (within its size limit) -- never a 500 (the standard
parser raises RecursionError for the first, which no route's ``except ValueError`` caught)."""

from __future__ import annotations

import pytest

from flk.impl.lab.cli import main
from server.test_app import is_problem, make_client

DEEP = [b"[" * 60_000, b'{"op": ' * 5_000 + b"1" + b"}" * 5_000]
LONG_NUMBER = b'{"op": "crr.apply", "generation": ' + b"7" * 5_000 + b"}"
BODIES = [*DEEP, LONG_NUMBER]
IDS = ["deep-list", "deep-object", "long-number"]


def _crr_client(tmp_path):
    return make_client(tmp_path / "d", REGION="eu", CRR_PEERS="us", CRR_STORE_URL=f"file://{tmp_path}/objects")[0]


@pytest.mark.parametrize("body", BODIES, ids=IDS)
def test_the_replication_routes_answer_a_problem(tmp_path, body):
    with _crr_client(tmp_path) as client:
        for path in ("/api/operator/crr/actions", "/v1/crr/decisions"):
            r = client.post(path, content=body, headers={"content-type": "application/json"})
            is_problem(r, 400, "invalid-query")


@pytest.mark.parametrize("body", BODIES, ids=IDS)
def test_the_migration_action_route_answers_a_problem(tmp_path, capsys, body):
    old = ",".join(f"s{i}=sqlite:///{tmp_path}/s{i}.db" for i in range(2))
    state = str(tmp_path / "m.json")
    assert main(["dedup-migrate", "plan", "--state", state, "--old", old,
                 "--new", old + f",s2=sqlite:///{tmp_path}/s2.db"]) == 0
    capsys.readouterr()
    client = make_client(tmp_path / "d", DEDUP_BACKEND="sharded", DEDUP_MIGRATION_STATE=state)[0]
    with client:
        r = client.post("/api/operator/migration/actions", content=body, headers={"content-type": "application/json"})
        is_problem(r, 400, "invalid-query")


@pytest.mark.parametrize("body", BODIES, ids=IDS)
def test_a_submission_answers_a_problem(tmp_path, body):
    client = make_client(tmp_path / "d")[0]
    with client:
        r = client.post("/v1/pcs/submit", content=body, headers={"content-type": "application/json"})
        assert r.status_code == 400 and r.headers["content-type"].startswith("application/problem+json"), r.text
