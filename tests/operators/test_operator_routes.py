"""The operator routes in process: observe a migration, carry out idempotent actions,
answer bad input and refused steps with problem+json (never a 500)."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st
from server.test_app import is_problem, make_client

from flk.impl.lab.cli import main


def _client(tmp_path, capsys):
    old = ",".join(f"s{i}=sqlite:///{tmp_path}/s{i}.db" for i in range(3))
    new = old + f",s3=sqlite:///{tmp_path}/s3.db"
    state = str(tmp_path / "m.json")
    assert main(["dedup-migrate", "plan", "--state", state, "--old", old, "--new", new]) == 0
    capsys.readouterr()
    return make_client(tmp_path / "d", DEDUP_BACKEND="sharded", DEDUP_MIGRATION_STATE=state)[0]


def test_observe_then_act_idempotently_and_refuse_a_wrong_step(tmp_path, capsys):
    with _client(tmp_path, capsys) as client:
        doc = client.get("/api/operator/migration").json()
        assert doc["applied_phase"] == "planned" and doc["migration"]["phase"] == "planned"
        step = {"op": "migration.phase", "to": "dual_write", "from": ["planned"]}
        assert client.post("/api/operator/migration/actions", json=step).json()["result"]["changed"] is True
        assert client.post("/api/operator/migration/actions", json=step).json()["result"]["changed"] is False
        assert client.get("/api/operator/migration").json()["applied_phase"] == "dual_write"
        cut = {"op": "migration.phase", "to": "cut_over", "from": ["verified"]}
        is_problem(client.post("/api/operator/migration/actions", json=cut), 409, "migration-refused")
        for _ in range(10):
            r = client.post("/api/operator/migration/actions", json={"op": "migration.copy", "round": 1, "batch": 50})
            assert r.status_code == 200, r.text
        assert client.get("/api/operator/migration").json()["migration"]["phase"] == "copied"
        # a prune before the cleanup is a no-op that says where the migration is; without a batch, 400
        r = client.post("/api/operator/migration/actions", json={"op": "migration.prune", "batch": 50})
        assert r.status_code == 200 and r.json()["result"] == {"phase": "copied", "done": False}, r.text
        is_problem(client.post("/api/operator/migration/actions", json={"op": "migration.prune"}), 400,
                   "invalid-query")
        assert client.get("/api/operator/migration").json()["migration"]["prune"]["done"] is False


def test_without_a_migration_the_routes_answer_503(tmp_path):
    client, _ = make_client(tmp_path)
    with client:
        is_problem(client.get("/api/operator/migration"), 503, "migration-disabled")
        is_problem(client.post("/api/operator/migration/actions", json={"op": "migration.copy"}), 503,
                   "migration-disabled")


@settings(max_examples=25, deadline=None, derandomize=True, database=None)
@given(body=st.one_of(st.binary(max_size=60), st.dictionaries(
    st.sampled_from(["op", "to", "from", "round", "batch", "settle_s"]),
    st.one_of(st.none(), st.integers(-3, 3), st.text(max_size=10), st.sampled_from(
        ["migration.copy", "migration.phase", "migration.verify", "migration.plan", "migration.catchup",
         "migration.prune"])), max_size=5).map(
    lambda d: json.dumps(d).encode())))
def test_any_action_body_gets_a_problem_or_a_result_never_a_500(tmp_path_factory, body):
    tmp = tmp_path_factory.mktemp("routes")
    from flk.impl.dedup import migrate

    state = str(tmp / "m.json")
    old = migrate.RingSpec({f"s{i}": f"sqlite:///{tmp}/s{i}.db" for i in range(3)})
    new = migrate.RingSpec({**old.shards, "s3": f"sqlite:///{tmp}/s3.db"})
    migrate.save_state(state, migrate.new_state(old, new, 0.0))
    client, _ = make_client(tmp / "d", DEDUP_BACKEND="sharded", DEDUP_MIGRATION_STATE=state)
    with client:
        r = client.post("/api/operator/migration/actions", content=body,
                        headers={"content-type": "application/json"})
        assert r.status_code in (200, 400, 409, 503), r.text
        if r.status_code != 200:
            assert r.headers["content-type"].startswith("application/problem+json")
        assert json.loads(open(state).read())["phase"] in migrate.PHASES
