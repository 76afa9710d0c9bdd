"""VRF verification as a per-tenant option of ``flk serve`` (GOVERNANCE.md section 6).

A tenant with ``vrf = "required"`` must send a valid ECVRF proof of its
pcs_id preimage (and, if it sends ``seed``, the seed the proof derives);
``vrf = "optional"`` checks a proof only when one is sent; a tenant without
``vrf`` is never checked.
"""

from __future__ import annotations

import base64
import json

import pytest
from starlette.testclient import TestClient

from flk.impl.governance import vrf
from flk.impl.server.app import create_app
from flk.impl.server.config import ConfigError, load_config
from flk.impl.server.pipeline import build_tenants
from flk.impl.testing.workload import bodies

VRF_SK = bytes(range(1, 33))
KEYS = {"strict": "strict-tenant-key-0123456789abcdef", "loose": "loose-tenant-key-0123456789abcdef",
        "plain": "plain-tenant-key-0123456789abcdef"}


def _tenants_toml(extra: dict[str, str]) -> str:
    out = []
    for tid, key in KEYS.items():
        out.append(f'[tenants.{tid}]\nalg = "hmac"\n{extra.get(tid, "")}'
                   f'[[tenants.{tid}.keys]]\nid = "k1"\nsecret = "{key}"\n')
    return "\n".join(out)


@pytest.fixture()
def client(tmp_path):
    pub = base64.b64encode(vrf.public_key(VRF_SK)).decode()
    tf = tmp_path / "tenants.toml"
    tf.write_text(_tenants_toml({"strict": f'vrf = "required"\nvrf_public_key_b64 = "{pub}"\n',
                                 "loose": f'vrf = "optional"\nvrf_public_key_b64 = "{pub}"\n'}))
    cfg = load_config({"DATA_DIR": str(tmp_path / "d"), "MULTI_TENANT": "1", "TENANTS_FILE": str(tf),
                       "WAL_GROUP_DELAY_MS": "0"})
    with TestClient(create_app(cfg, 0)) as c:
        yield c


def _pcs(tenant: str, n: int = 0, proof: bool = True) -> dict:
    pcs = json.loads(bodies(KEYS[tenant].encode(), n + 1, shard_id=f"vrf-{tenant}")[n])
    pcs.pop("seed", None)
    if proof:
        pcs["vrf_proof"], pcs["seed"] = vrf.agent_prove(VRF_SK, pcs["merkle_root"], pcs["epoch"], pcs["shard_id"])
    return pcs


def _post(client, tenant: str, pcs: dict):
    return client.post("/v1/pcs/submit", content=json.dumps(pcs), headers={"X-Tenant-Id": tenant})


def test_required_tenant_accepts_a_valid_proof_and_refuses_missing_invalid_and_mismatched(client):
    assert _post(client, "strict", _pcs("strict", 0)).status_code == 200
    missing = _post(client, "strict", _pcs("strict", 1, proof=False))
    assert missing.status_code == 401 and "vrf_missing" in missing.text
    bad = _pcs("strict", 2)
    bad["vrf_proof"] = bad["vrf_proof"][:-2] + ("00" if bad["vrf_proof"][-2:] != "00" else "01")
    invalid = _post(client, "strict", bad)
    assert invalid.status_code == 401 and "vrf_invalid" in invalid.text
    chosen = _pcs("strict", 3)
    chosen["seed"] = chosen["seed"] + 1
    mismatch = _post(client, "strict", chosen)
    assert mismatch.status_code == 401 and "vrf_seed_mismatch" in mismatch.text


def test_optional_tenant_checks_only_sent_proofs_and_plain_tenant_is_never_checked(client):
    assert _post(client, "loose", _pcs("loose", 0, proof=False)).status_code == 200
    bad = _pcs("loose", 1)
    bad["vrf_proof"] = "00" * 80
    assert _post(client, "loose", bad).status_code == 401
    plain = _pcs("plain", 0, proof=False)
    plain["vrf_proof"] = "not even hex"
    assert _post(client, "plain", plain).status_code == 200


@pytest.mark.parametrize("fields, message", [
    ('vrf = "required"\n', "needs the tenant's VRF public key"),
    ('vrf = "always"\n', "vrf"),
    ('vrf = "optional"\nvrf_public_key_b64 = "AAAA"\n', "must decode to 32 bytes"),
])
def test_bad_vrf_tenant_configuration_is_a_clear_config_error(tmp_path, fields, message):
    tf = tmp_path / "tenants.toml"
    tf.write_text(_tenants_toml({"strict": fields}))
    cfg = load_config({"DATA_DIR": str(tmp_path / "d"), "MULTI_TENANT": "1", "TENANTS_FILE": str(tf)})
    with pytest.raises(ConfigError) as exc:
        build_tenants(cfg)
    assert message in str(exc.value) and "tenants.strict" in str(exc.value)
