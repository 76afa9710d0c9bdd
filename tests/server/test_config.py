"""Configuration: env + TOML precedence, defaults, and clear errors before binding."""

from __future__ import annotations

import base64
import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flk.impl.server.config import ConfigError, ensure_key_file, load_config, parse_tenants


def test_defaults_use_sqlite_in_local_data_dir_and_create_a_key_file(tmp_path) -> None:
    cfg = load_config({"DATA_DIR": str(tmp_path / "d")})
    assert cfg.dedup_backend == "sqlite"
    assert cfg.store_url().endswith("d/dedup.sqlite3")
    key_path = tmp_path / "d" / "hmac.key"
    assert cfg.key_file == str(key_path)
    assert oct(os.stat(key_path).st_mode & 0o777) == "0o600"
    key = key_path.read_text().strip()
    assert cfg.tenants["default"].hmac_keys == (key.encode(),)
    # the key never appears in repr or describe(), only its path
    assert key not in repr(cfg) and key not in str(cfg.describe())
    # second start: same key
    cfg2 = load_config({"DATA_DIR": str(tmp_path / "d")})
    assert cfg2.tenants["default"].hmac_keys == cfg.tenants["default"].hmac_keys
    assert any("hmac.key" in n for n in cfg2.notes)


def test_no_data_dir_says_so(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    cfg = load_config({})
    assert cfg.data_dir == "data" and any("local data dir" in n for n in cfg.notes)


def test_workers_default_to_the_core_count(tmp_path, monkeypatch) -> None:
    from flk.impl.server import config

    base = {"DATA_DIR": str(tmp_path), "PCS_HMAC_KEY": "0123456789abcdef"}
    cfg = load_config(base)
    assert cfg.workers == config.core_count() == max(1, min(64, len(os.sched_getaffinity(0))))
    assert any(f"no WORKERS given: {cfg.workers} worker(s)" in n for n in cfg.notes)
    monkeypatch.setattr(config, "core_count", lambda: 6)
    assert load_config(base).workers == 6
    assert load_config({**base, "WORKERS": "3"}).workers == 3  # given: taken as is
    assert not any("WORKERS" in n for n in load_config({**base, "WORKERS": "3"}).notes)


def test_a_memory_store_defaults_to_one_worker_and_refuses_more(tmp_path, monkeypatch) -> None:
    from flk.impl.server import config

    monkeypatch.setattr(config, "core_count", lambda: 8)
    base = {"DATA_DIR": str(tmp_path), "PCS_HMAC_KEY": "0123456789abcdef", "DEDUP_BACKEND": "memory"}
    cfg = load_config(base)
    assert cfg.workers == 1 and any("DEDUP_BACKEND=memory: one process" in n for n in cfg.notes)
    with pytest.raises(ConfigError, match=r"memory cannot be shared by WORKERS=2 processes .*set WORKERS=1"):
        load_config({**base, "WORKERS": "2"})


def test_env_overrides_toml_and_flags_override_env(tmp_path) -> None:
    f = tmp_path / "c.toml"
    f.write_text('port = 9000\ndedup_backend = "memory"\nregion_id = "eu-west"\npcs_hmac_key = "0123456789abcdef0123"\n')
    cfg = load_config({"PORT": "9100"}, str(f))
    assert (cfg.port, cfg.dedup_backend, cfg.region_id) == (9100, "memory", "eu-west")
    assert cfg.key_file == ""
    cfg = load_config({"PORT": "9100"}, str(f), {"PORT": 9200})
    assert cfg.port == 9200


@pytest.mark.parametrize(
    "env, fragment",
    [
        ({"PORT": "http"}, "PORT must be an integer"),
        ({"PORT": "70000"}, "PORT must be in"),
        ({"DEDUP_BACKEND": "mongo"}, "DEDUP_BACKEND must be one of"),
        ({"DEDUP_BACKEND": "redis"}, "needs REDIS_ADDR"),
        ({"DEDUP_BACKEND": "postgres"}, "needs POSTGRES_CONN"),
        ({"DEDUP_BACKEND": "memory", "WORKERS": "2"}, "cannot be shared"),
        ({"PCS_SIGN_ALG": "none"}, "requires signed PCS"),
        ({"PCS_SIGN_ALG": "ed25519"}, "needs PCS_ED25519_PUB_B64"),
        ({"PCS_ED25519_PUB_B64": "abc"}, "not valid base64"),
        ({"PCS_HMAC_KEY": "short"}, "at least 16 bytes"),
        ({"MULTI_TENANT": "true"}, "needs TENANTS"),
        ({"MULTI_TENANT": "maybe"}, "true or false"),
        ({"TENANTS": "a:hmac:0123456789abcdef"}, "MULTI_TENANT is not true"),
        ({"MULTI_TENANT": "1", "TENANTS": "a|b:hmac:0123456789abcdef"}, "tenant id"),
        ({"MULTI_TENANT": "1", "TENANTS": "a:rsa:0123456789abcdef"}, "must be one of"),
        ({"METRICS_USER": "u"}, "set together"),
        ({"POLICY": "/nonexistent/policy.flk"}, "does not exist"),
        ({"MAX_BODY_BYTES": "10"}, "MAX_BODY_BYTES must be in"),
        ({"REDIS_ADDR": "not an address", "DEDUP_BACKEND": "redis"}, "REDIS_ADDR"),
        ({"TOKEN_RATE": "nan"}, "TOKEN_RATE"),
        ({"MIN_INFLIGHT": "50", "MAX_INFLIGHT": "10"}, "MIN_INFLIGHT"),
        ({"TENANTS_FILE": "/nonexistent.toml"}, "MULTI_TENANT is not true"),
        ({"MULTI_TENANT": "1", "TENANTS_FILE": "/nonexistent.toml"}, "does not exist"),
        ({"DEDUP_NAMESPACE": "Bad-Name"}, "DEDUP_NAMESPACE"),
        ({"DEDUP_BACKEND": "sharded"}, "needs DEDUP_SHARDS"),
        ({"DEDUP_BACKEND": "sharded", "DEDUP_SHARDS": "s0=sqlite:///a,s0=sqlite:///b"}, "distinct"),
        ({"DEDUP_BACKEND": "sharded", "DEDUP_SHARDS": "s0"}, "name=<store url>"),
        ({"DEDUP_BACKEND": "sharded", "DEDUP_MIGRATION_STATE": "/nonexistent.json"}, "does not exist"),
        ({"DEDUP_SHARDS": "s0=sqlite:///a"}, "need DEDUP_BACKEND=sharded"),
    ],
)
def test_bad_configuration_is_a_clear_error(tmp_path, env, fragment) -> None:
    env = {"DATA_DIR": str(tmp_path), **env}
    with pytest.raises(ConfigError, match=fragment):
        load_config(env)


def test_bad_toml_file(tmp_path) -> None:
    f = tmp_path / "c.toml"
    f.write_text("port = \n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config({}, str(f))
    f.write_text("prot = 1\n")
    with pytest.raises(ConfigError, match="unknown key"):
        load_config({}, str(f))
    with pytest.raises(ConfigError, match="does not exist"):
        load_config({}, str(tmp_path / "missing.toml"))


def test_tenants_seed_format_and_toml_table() -> None:
    pub = base64.b64encode(bytes(range(32))).decode()
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    pub = base64.b64encode(
        Ed25519PrivateKey.generate().public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    ).decode()
    t = parse_tenants(f"a:hmac:0123456789abcdef,a:hmac:fedcba9876543210,b:ed25519:{pub}")
    assert len(t["a"].hmac_keys) == 2 and len(t["b"].ed25519_pubs) == 1
    assert "0123456789abcdef" not in repr(t)
    t2 = parse_tenants({"a": [{"alg": "hmac", "key": "0123456789abcdef"}]})
    assert t2["a"].hmac_keys == (b"0123456789abcdef",)


@given(st.dictionaries(st.sampled_from(["PORT", "WORKERS", "MAX_BODY_BYTES", "TOKEN_RATE",
                                        "DEDUP_BACKEND", "MULTI_TENANT", "WAL_GROUP_DELAY_MS"]),
                       st.text(max_size=8)))
@settings(max_examples=60, deadline=None)
def test_arbitrary_values_give_a_config_or_a_config_error(env) -> None:
    try:
        cfg = load_config({"DATA_DIR": "/nonexistent-never-created", **env}, create_key=False)
    except ConfigError as exc:
        assert str(exc)
    else:
        assert 0 <= cfg.port <= 65535 and cfg.workers >= 1


def test_key_file_rejects_garbage(tmp_path) -> None:
    (tmp_path / "hmac.key").write_text("not a key")
    with pytest.raises(ConfigError, match="64 lowercase hex"):
        ensure_key_file(str(tmp_path))


def test_spec_settings_section_is_generated_from_the_settings_table() -> None:
    import pathlib

    from flk.impl.server.config import SETTINGS, settings_markdown

    spec = (pathlib.Path(__file__).resolve().parents[2] / "spec" / "SPEC.md").read_text(encoding="utf-8")
    section = spec.split("<!-- settings:begin -->\n", 1)[1].split("<!-- settings:end -->", 1)[0]
    assert section == settings_markdown(), "regenerate SPEC.md 9.2 with flk.impl.server.config.settings_markdown()"
    documented = {line.split("`")[1] for line in section.splitlines()[2:]}
    assert documented == {s.env for s in SETTINGS}


def test_every_setting_is_read_from_env_and_toml(tmp_path) -> None:
    """The table drives loading: a value given for any row's name reaches the config object."""
    from flk.impl.server.config import load_config

    cfg = load_config({"DATA_DIR": str(tmp_path), "PCS_HMAC_KEY": "0123456789abcdef", "MAX_HEADERS": "42",
                       "HEADER_TIMEOUT_S": "2.5", "METRICS_USER": "ops", "METRICS_PASS": "pw-0123"})
    assert (cfg.max_headers, cfg.header_timeout_s, cfg.operator_user) == (42, 2.5, "ops")
    assert "pw-0123" not in repr(cfg)
    f = tmp_path / "c.toml"
    f.write_text('crr_store_dir = "/x"\ncrr_mode = "manual"\nmax_connections = 7\n')
    cfg = load_config({"DATA_DIR": str(tmp_path), "PCS_HMAC_KEY": "0123456789abcdef"}, str(f))
    assert (cfg.crr.store_url, cfg.crr.mode, cfg.max_connections) == ("/x", "manual", 7)


_SECRET_VALUE = st.text(alphabet=st.characters(blacklist_categories=("Cs", "Zs", "Cc"), blacklist_characters=",:@="),
                        min_size=4, max_size=12).map(lambda t: "Zq9" + t)


@st.composite
def _any_settings(draw):
    from flk.impl.server.config import SETTINGS

    rows = draw(st.lists(st.sampled_from(SETTINGS), max_size=8, unique_by=lambda r: r.env))
    env, secrets_given = {}, []
    for row in rows:
        if row.secret:
            secret = draw(_SECRET_VALUE)
            secrets_given.append(secret)
            in_credentials = [f"redis://u:{secret}@h:1", f"host=h password={secret}", f"s0=postgresql://u:{secret}@h/db",
                              f"u:{secret}@h:1"]  # a credentials row: only the password is secret
            forms = in_credentials if row.secret == "credentials" else [secret, f"a:hmac:{secret}", *in_credentials]
            env[row.env] = draw(st.sampled_from(forms))
        else:
            env[row.env] = draw(st.one_of(st.text(max_size=8), st.sampled_from(["0", "1", "true", "redis",
                                                                                 "sharded", "-1", "1e9"])))
    return env, secrets_given


@given(_any_settings())
@settings(max_examples=150, deadline=None, derandomize=True)
def test_any_setting_values_give_a_config_or_an_error_that_never_quotes_a_secret(drawn) -> None:
    env, secrets_given = drawn
    try:
        cfg = load_config({"DATA_DIR": "/nonexistent-never-created", **env}, create_key=False)
    except ConfigError as exc:
        shown = str(exc)
    else:
        shown = repr(cfg) + str(cfg.describe()) + cfg.redact(" ".join(env.values()))
    assert not [s for s in secrets_given if s in shown], shown


@pytest.mark.parametrize(("env", "reason"), [
    ({"CRR_STORE_URL": "ftp://user:pw-Zq9@host/dir"}, "CRR_STORE_URL: unknown scheme 'ftp://'"),
    ({"CRR_STORE_URL": "s3://?endpoint=http://127.0.0.1:9"}, "CRR_STORE_URL: s3:// needs a bucket"),
    ({"CRR_STORE_DIR": "s4://bucket-Zq9"}, "CRR_STORE_DIR: unknown scheme 's4://'"),
])
def test_a_replication_store_no_region_could_open_is_refused_at_start(tmp_path, env, reason):
    """A typo'd object-store URL is a configuration error when the server starts (it was
    taken for a local directory, or failed at the first upload); the value is not quoted."""
    with pytest.raises(ConfigError) as info:
        load_config({"DATA_DIR": str(tmp_path / "d"), "REGION": "eu", "CRR_PEERS": "us", **env})
    assert str(info.value).startswith(reason) and "Zq9" not in str(info.value)
    assert load_config({"DATA_DIR": str(tmp_path / "d"), "CRR_STORE_URL": f"file://{tmp_path}/objects"}).crr is not None
