"""One tenant-id rule (flk.impl.core.tenantid): every layer accepts and refuses the same ids.

The layers that take a tenant id: the server configuration (``TENANTS`` text and
TOML-table forms, ``CRR_PEERS``), the tenant registry (the tenants TOML file, the
``TENANTS`` text form, and a registry built from ``Tenant`` objects as the simulator
builds one) and every dedup store (``check_key``, shared by all backends;
the memory and SQLite stores are exercised here). Each must accept exactly the ids
:func:`flk.impl.core.tenantid.is_tenant_id` accepts, and keep the id verbatim.
"""

from __future__ import annotations

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from flk.impl.core.errors import InvalidInput
from flk.impl.core.tenantid import DEFAULT_TENANT, TENANT_ID_RE, check_tenant_id, is_tenant_id
from flk.impl.dedup import StoredOutcome
from flk.impl.dedup.memory import MemoryStore
from flk.impl.dedup.sqlite import SqliteStore
from flk.impl.server.config import ConfigError, crr_peers, load_config, parse_tenants
from flk.impl.verifier.tenants import (
    Tenant,
    TenantKey,
    TenantRegistry,
    from_mapping,
    load_toml,
    parse_tenants_env,
)

KEY = "0123456789abcdef"  # a 16-byte HMAC key: the server's minimum
OUT = StoredOutcome("0" * 64, 200, b"{}", 1.0, "r", "1")

# ids near the rule's edges: the right alphabet at lengths 1..70, single odd characters, any text
ids = st.one_of(
    st.from_regex(r"[A-Za-z0-9._:-]{1,135}", fullmatch=True),
    st.from_regex(r"[A-Za-z0-9._:-]{0,70}[|,+ /\x00é\n][A-Za-z0-9._:-]{0,70}", fullmatch=True),
    st.text(max_size=140),
)


def registry_accepts(tid: str) -> bool:
    try:
        reg = from_mapping({"tenants": {tid: {"alg": "hmac", "keys": [{"secret": KEY}]}}})
    except InvalidInput:
        return False
    assert reg.ids() == [tid]
    return True


def registry_built_accepts(tid: str) -> bool:
    """A registry built from Tenant objects (as the simulator builds its own)."""
    try:
        reg = TenantRegistry([Tenant(tid, "hmac", (TenantKey("k0", KEY.encode()),))])
    except InvalidInput:
        return False
    assert reg.resolve(tid) is not None
    return True


def registry_text_accepts(tid: str) -> bool:
    try:
        reg = parse_tenants_env(f"{tid}:hmac:{KEY}")
    except InvalidInput:
        return False
    assert reg.ids() == [tid]
    return True


def config_accepts(raw) -> bool:
    try:
        keys = parse_tenants(raw)
    except ConfigError:
        return False
    assert len(keys) == 1
    return True


def peers_accept(tid: str) -> bool:
    try:
        crr_peers("CRR_PEERS", f"eu:{tid}+other,us")
    except ConfigError:
        return False
    return True


def store_accepts(store, tid: str) -> bool:
    try:
        stored, _ = store.put_if_absent(tid, "p" * 64, OUT, 10.0)
    except ValueError:
        return False
    assert stored and store.get(tid, "p" * 64, 10.0) == OUT
    return True


@settings(max_examples=300, deadline=None)
@given(tid=ids)
@example("a" * 128)
@example("a" * 129)
@example("a:b")
@example("a|b")
@example(DEFAULT_TENANT)
@example("")
def test_every_layer_accepts_exactly_the_ids_of_the_one_rule(tid: str) -> None:
    want = is_tenant_id(tid)
    assert want == (TENANT_ID_RE.fullmatch(tid) is not None)
    assert registry_accepts(tid) == want
    assert registry_built_accepts(tid) == want
    assert config_accepts({tid: [{"alg": "hmac", "key": KEY}]}) == want
    assert store_accepts(MemoryStore(), tid) == want
    if tid and "+" not in tid and "," not in tid:  # CRR_PEERS: '+' and ',' separate ids, an empty one is skipped
        assert peers_accept(tid) == want
    # the TENANTS text form: ',' and ':' separate items and fields (an id holding one is read as
    # another id), whitespace around an item is layout (stripped), not part of the id
    if tid == tid.strip() and "," not in tid and ":" not in tid:
        assert registry_text_accepts(tid) == want
        assert config_accepts(f"{tid}:hmac:{KEY}") == want
    if want:
        assert check_tenant_id(tid, "x") == tid
    else:
        with pytest.raises(InvalidInput, match="tenant id"):
            check_tenant_id(tid, "x")


@settings(max_examples=40, deadline=None)
@given(tid=ids)
@example("a" * 129)
@example("t1:x")
def test_sqlite_store_keeps_the_same_rule(tmp_path_factory, tid: str) -> None:
    store = SqliteStore(str(tmp_path_factory.mktemp("s") / "d.sqlite3"))
    try:
        assert store_accepts(store, tid) == is_tenant_id(tid)
    finally:
        store.close()


def test_serve_configuration_refuses_a_bad_id_in_every_setting_and_keeps_a_colon_id(tmp_path) -> None:
    base = {"DATA_DIR": str(tmp_path), "MULTI_TENANT": "1"}
    for bad in ("a" * 129, "a|b", "a b"):
        with pytest.raises(ConfigError, match="tenant id"):
            load_config({**base, "TENANTS": f"{bad}:hmac:{KEY}"})
        with pytest.raises(ConfigError, match="tenant id"):
            load_config({**base, "TENANTS": f"ok:hmac:{KEY}", "CRR_PEERS": f"eu:{bad}"})
    (tmp_path / "t.toml").write_text(f'[tenants."{"a" * 129}"]\nalg = "hmac"\nkeys = [{{ secret = "{KEY}" }}]\n')
    with pytest.raises(InvalidInput, match="tenant id"):
        load_toml(str(tmp_path / "t.toml"))
    assert load_config({**base, "TENANTS": f"{'a' * 128}:hmac:{KEY}"}).tenants.keys() == {"a" * 128}
    # an id with ':' is written in the TOML table form (the text form ends the id at its first ':')
    (tmp_path / "c.toml").write_text(f'[tenants]\n"t1:x" = [{{ alg = "hmac", key = "{KEY}" }}]\n')
    assert load_config(base, str(tmp_path / "c.toml")).tenants.keys() == {"t1:x"}
    assert peers_accept("t1:x") and crr_peers("CRR_PEERS", "eu:t1:x+t2") == "eu:t1:x+t2"


def test_one_algorithm_per_tenant_in_either_tenants_form() -> None:
    pub = "A" * 43 + "="
    for parse, error in ((parse_tenants_env, InvalidInput), (parse_tenants, ConfigError)):
        with pytest.raises(error, match="two algorithms"):
            parse(f"t:hmac:{KEY},t:ed25519:{pub}")
