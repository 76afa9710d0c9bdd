"""Secrets never leave the server: canary values in every secret setting, every
config and connection error provoked, all output grepped.

Every row of the settings table declared ``secret`` gets a unique canary. Then
``flk serve --check`` runs once per error this can provoke (bad values, the
wrong DSN forms, unreachable Redis/PostgreSQL with a password in the URL) and
a real ``flk serve`` runs with every canary set; stdout, stderr, the JSON logs,
``/ready``, ``/metrics`` and error answers must not contain any canary.
"""

from __future__ import annotations

import subprocess

import httpx
import pytest

from flk.impl.server.config import SETTINGS, ConfigError, load_config

from .proc import FLK, ServerProc, clean_env

pytestmark = pytest.mark.server

CANARY = {
    "PCS_HMAC_KEY": "CANARYhmac0key0a1b2c3",
    "PCS_HMAC_KEYS": "CANARYhmac0keys0d4e5f6",
    "TENANTS": "CANARYtenant0key0g7h8",
    "OPERATOR_PASS": "CANARYoperator0pass9",
    "REDIS_ADDR": "CANARYredis0pass0i1j2",
    "POSTGRES_CONN": "CANARYpg0pass0k3l4m5",
    "DEDUP_SHARDS": "CANARYshard0pass0n6o7",
    "CRR_STORE_URL": "CANARYcrr0pass0p8q9r0",
}
ALL = tuple(CANARY.values())


def test_every_secret_setting_has_a_canary() -> None:
    assert {s.env for s in SETTINGS if s.secret} == set(CANARY)


def leaked(text: str) -> list[str]:
    return [c for c in ALL if c in text]


# (env, what the message must still say) -- each provokes one config or connection error
ERRORS = [
    ({"PCS_HMAC_KEY": "short" + CANARY["PCS_HMAC_KEY"][:8]}, "at least 16 bytes"),
    ({"PCS_HMAC_KEY": CANARY["PCS_HMAC_KEY"], "MULTI_TENANT": "1", "TENANTS": f"a:hmac:{CANARY['TENANTS']}"},
     "single-tenant"),
    ({"MULTI_TENANT": "1", "TENANTS": f"a|b:hmac:{CANARY['TENANTS']}"}, "tenant id"),
    ({"MULTI_TENANT": "1", "TENANTS": f"a:rsa:{CANARY['TENANTS']}"}, "must be one of"),
    ({"MULTI_TENANT": "1", "TENANTS": f"a:{CANARY['TENANTS']}"}, "tenant:alg:key"),
    ({"PCS_HMAC_KEYS": f"{CANARY['PCS_HMAC_KEYS']},tiny"}, "at least 16 bytes"),
    ({"OPERATOR_PASS": CANARY["OPERATOR_PASS"]}, "set together"),
    ({"METRICS_PASS": CANARY["OPERATOR_PASS"]}, "set together"),
    ({"DEDUP_BACKEND": "redis", "REDIS_ADDR": f"http://u:{CANARY['REDIS_ADDR']}@h:1"}, "REDIS_ADDR"),
    ({"DEDUP_BACKEND": "redis", "REDIS_ADDR": f"redis://u:{CANARY['REDIS_ADDR']}@127.0.0.1:1/0"}, "redis"),
    ({"DEDUP_BACKEND": "postgres", "POSTGRES_CONN": f"mysql://u:{CANARY['POSTGRES_CONN']}@h/db"}, "POSTGRES_CONN"),
    ({"DEDUP_BACKEND": "postgres", "POSTGRES_CONN": f"host=h password={CANARY['POSTGRES_CONN']} 'x"},
     "POSTGRES_CONN"),
    ({"DEDUP_BACKEND": "postgres", "POSTGRES_CONN": f"host=h password={CANARY['POSTGRES_CONN']} junk"},
     "POSTGRES_CONN"),
    ({"DEDUP_BACKEND": "postgres",
      "POSTGRES_CONN": f"host=127.0.0.1 port=1 user=flk dbname=flk password={CANARY['POSTGRES_CONN']}"},
     "postgres"),
    ({"DEDUP_BACKEND": "postgres", "POSTGRES_CONN": f"postgresql://flk:{CANARY['POSTGRES_CONN']}@127.0.0.1:1/flk"},
     "postgres"),
    ({"DEDUP_BACKEND": "postgres",
      "POSTGRES_CONN": f"host=127.0.0.1 port=1 bogus_option=1 password={CANARY['POSTGRES_CONN']}"}, "postgres"),
    ({"DEDUP_BACKEND": "sharded", "DEDUP_SHARDS": f"s0=redis//u:{CANARY['DEDUP_SHARDS']}@h:1"}, "name=<store url>"),
    ({"DEDUP_BACKEND": "sharded", "DEDUP_SHARDS": f"s0=redis://u:{CANARY['DEDUP_SHARDS']}@127.0.0.1:1/0"},
     "sharded"),
    ({"DEDUP_SHARDS": f"s0=redis://u:{CANARY['DEDUP_SHARDS']}@h:1/0"}, "DEDUP_BACKEND=sharded"),
    ({"CRR_STORE_URL": f"s3://u:{CANARY['CRR_STORE_URL']}@bucket/p", "CRR_SHIP_INTERVAL_S": "never"},
     "CRR_SHIP_INTERVAL_S"),
]


@pytest.mark.parametrize("env, fragment", ERRORS)
def test_config_and_connection_errors_never_print_a_secret(tmp_path, env, fragment) -> None:
    base = {"DATA_DIR": str(tmp_path / "d")}
    if "MULTI_TENANT" not in env:
        base["PCS_HMAC_KEY"] = CANARY["PCS_HMAC_KEY"]
    env = {**base, **env}
    try:
        cfg = load_config(env)
    except ConfigError as exc:  # in-process: the message itself
        assert not leaked(str(exc)), str(exc)
    else:
        assert not leaked(repr(cfg)) and not leaked(str(cfg.describe()))
    proc = subprocess.run([FLK, "serve", "--check", "--port", "0"], env=clean_env(**env), cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 2, output
    assert fragment.lower() in output.lower(), output
    assert not leaked(output), output


def test_key_value_postgres_dsn_is_supported(tmp_path, postgres_dsn) -> None:
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    kv = make_conninfo(**conninfo_to_dict(postgres_dsn))
    assert "://" not in kv
    env = {"DATA_DIR": str(tmp_path / "d"), "PCS_HMAC_KEY": CANARY["PCS_HMAC_KEY"], "DEDUP_BACKEND": "postgres",
           "POSTGRES_CONN": kv, "DEDUP_NAMESPACE": "kvdsn"}
    proc = subprocess.run([FLK, "serve", "--check", "--port", "0"], env=clean_env(**env), cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr


def test_live_server_with_every_secret_set_never_shows_one(tmp_path) -> None:
    env = {
        "PCS_HMAC_KEY": CANARY["PCS_HMAC_KEY"], "PCS_HMAC_KEYS": CANARY["PCS_HMAC_KEYS"],
        "OPERATOR_USER": "ops", "OPERATOR_PASS": CANARY["OPERATOR_PASS"],
        "REDIS_ADDR": f"redis://u:{CANARY['REDIS_ADDR']}@127.0.0.1:1/0",
        "POSTGRES_CONN": f"host=127.0.0.1 password={CANARY['POSTGRES_CONN']}",
        "CRR_STORE_DIR": str(tmp_path / "objects"), "LOG_LEVEL": "debug",
    }
    srv = ServerProc(tmp_path / "srv", env)
    bodies = []
    with srv:
        with httpx.Client(base_url=srv.url, timeout=10) as client:
            for method, path, kwargs in [
                ("GET", "/ready", {}), ("GET", "/health", {}), ("GET", "/metrics", {}),
                ("GET", "/metrics", {"auth": ("ops", "wrong")}),
                ("GET", "/metrics", {"auth": ("ops", CANARY["OPERATOR_PASS"])}),
                ("GET", "/v1/crr/status", {"auth": ("ops", CANARY["OPERATOR_PASS"])}),
                ("POST", "/v1/pcs/submit", {"content": b"{not json"}),
                ("POST", "/v1/pcs/submit", {"content": b"{}", "headers": {"X-Tenant-Id": "nobody"}}),
            ]:
                resp = client.request(method, path, **kwargs)
                bodies.append(f"{resp.status_code} {resp.headers} {resp.text}")
    everything = srv.log_text() + "\n".join(bodies)
    assert "200" in bodies[0] and "401" in bodies[3] and bodies[4].startswith("200")
    assert not leaked(everything), leaked(everything)


def test_log_lines_drop_unknown_fields_and_redact_configured_secrets() -> None:
    import io
    import json as json_module

    from flk.impl.server.logs import JsonLogger

    cfg = load_config({"DATA_DIR": "/nonexistent", "PCS_HMAC_KEY": CANARY["PCS_HMAC_KEY"],
                       "POSTGRES_CONN": f"host=h password={CANARY['POSTGRES_CONN']}"}, create_key=False)
    out = io.StringIO()
    log = JsonLogger(out, redact=cfg.redact)
    log.error("crr_error", error=f"OperationalError: cannot connect host=h password={CANARY['POSTGRES_CONN']}",
              body=CANARY["PCS_HMAC_KEY"], reason=f"key {CANARY['PCS_HMAC_KEY']} rejected")
    line = json_module.loads(out.getvalue())
    assert "body" not in line and line["error"].startswith("OperationalError") and "***" in line["reason"]
    assert not leaked(out.getvalue())
