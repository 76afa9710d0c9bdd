"""Server configuration: the seed's environment variables plus an optional TOML file.

Precedence (lowest to highest): built-in defaults < TOML file (``flk serve
--config FILE``) < environment variables < command-line flags. Every value is
checked here, before anything binds a socket or opens a store: a bad
configuration raises :class:`ConfigError` with a message naming the variable,
and ``flk serve`` prints it and exits 2.

The TOML file uses the same names in lower case (``port = 8080``,
``dedup_backend = "redis"``, ``tenants = "a:hmac:k1,b:hmac:k2"`` or a table
``[tenants] a = [{alg = "hmac", key = "k1"}]``).

Signing keys. With ``PCS_SIGN_ALG=hmac`` (the default) and no
``PCS_HMAC_KEY``/``PCS_HMAC_KEYS``, the server uses a per-data-dir key file
``DATA_DIR/hmac.key`` that it creates on first start (32 random bytes written
as 64 hex characters, mode 0600). The HMAC key is the file's text (its ASCII
bytes) -- so ``PCS_HMAC_KEY=$(cat data/hmac.key) flk agent build ...`` signs
PCS that this server accepts. The key itself is never printed or logged; only
the path is.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import os
import pathlib
import re
import secrets
import tomllib
from collections.abc import Mapping
from typing import Any

BACKENDS = ("memory", "sqlite", "redis", "postgres", "sharded")
SIGN_ALGS = ("hmac", "ed25519")
TENANT_RE = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
REGION_RE = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
DEFAULT_TENANT = "default"
KEY_FILE = "hmac.key"


class ConfigError(ValueError):
    """A configuration value is missing, malformed or inconsistent."""


@dataclasses.dataclass(frozen=True)
class TenantKeys:
    """The keys one tenant's PCS may be signed with (several during rotation)."""

    hmac_keys: tuple[bytes, ...] = ()
    ed25519_pubs: tuple[bytes, ...] = ()

    def __repr__(self) -> str:  # never show key material
        return f"TenantKeys(hmac={len(self.hmac_keys)}, ed25519={len(self.ed25519_pubs)})"


@dataclasses.dataclass(frozen=True)
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 8080
    workers: int = 1
    data_dir: str = "data"
    wal_dir: str = ""  # default: DATA_DIR/wal
    dedup_backend: str = "sqlite"
    sqlite_path: str = ""  # default: DATA_DIR/dedup.sqlite3
    redis_addr: str = "127.0.0.1:6379"
    postgres_conn: str = ""
    dedup_shards: tuple[tuple[str, str], ...] = ()  # sharded: (name, store url) pairs (DEDUP_SHARDS)
    dedup_migration_state: str = ""  # sharded: a `flk dedup-migrate` state file -> DualWriteStore
    dedup_namespace: str = ""  # several deployments on one Redis/Postgres: key prefix / table suffix
    dedup_ttl_s: float = 14 * 24 * 3600.0
    token_rate: float = 0.0  # per-tenant requests/second; 0 = unlimited
    sign_alg: str = "hmac"
    multi_tenant: bool = False
    tenants: Mapping[str, TenantKeys] = dataclasses.field(default_factory=dict)
    tenants_file: str = ""  # a flk.impl.verifier.tenants TOML file (multi-tenant, richer than TENANTS)
    key_file: str = ""  # set when the default per-data-dir HMAC key is in use
    region_id: str = "default"
    policy_file: str = ""
    metrics_user: str = ""
    metrics_pass: str = ""
    max_body_bytes: int = 256 * 1024
    wal_group_delay_ms: float = 2.0
    max_inflight: int = 256  # AIMD upper bound on concurrent verifications
    min_inflight: int = 16
    target_latency_ms: float = 500.0
    retry_after_s: int = 1
    breaker_failures: int = 5
    breaker_open_s: float = 2.0
    store_threads: int = 8
    log_level: str = "info"
    drain_timeout_s: float = 10.0
    notes: tuple[str, ...] = ()  # human-readable facts to print at start (never secrets)

    def __repr__(self) -> str:
        shown = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        shown["metrics_pass"] = "***" if self.metrics_pass else ""
        shown["postgres_conn"] = _redact_dsn(self.postgres_conn)
        return "ServerConfig(" + ", ".join(f"{k}={v!r}" for k, v in shown.items()) + ")"

    def worker_wal_dir(self, index: int) -> str:
        return os.path.join(self.wal_dir, f"worker-{index}")

    def open_store(self, now: float):
        """The configured dedup store (``sharded``: a ShardedStore over DEDUP_SHARDS,
        or a DualWriteStore following DEDUP_MIGRATION_STATE)."""
        if self.dedup_backend == "sharded":
            if self.dedup_migration_state:
                from ..dedup.migrate import DualWriteStore

                return DualWriteStore.from_state(self.dedup_migration_state, now)
            from ..dedup.sharded import open_sharded

            return open_sharded(dict(self.dedup_shards), ttl_s=self.dedup_ttl_s)
        from ..dedup import open_store

        return open_store(self.store_url(), **self.store_options())

    def store_url(self) -> str:
        """What :func:`flk.impl.dedup.open_store` is given."""
        if self.dedup_backend == "sharded":
            return "sharded:" + ",".join(name for name, _ in self.dedup_shards)
        if self.dedup_backend == "memory":
            return "memory"
        if self.dedup_backend == "sqlite":
            return "sqlite:///" + os.path.abspath(self.sqlite_path)
        if self.dedup_backend == "redis":
            addr = self.redis_addr
            return addr if "://" in addr else f"redis://{addr}/0"
        return self.postgres_conn

    def store_options(self) -> dict[str, Any]:
        """Keyword arguments for :func:`flk.impl.dedup.open_store`."""
        opts: dict[str, Any] = {"ttl_s": self.dedup_ttl_s}
        if self.dedup_namespace and self.dedup_backend == "redis":
            opts["prefix"] = f"flk:dedup:{self.dedup_namespace}:"
        if self.dedup_namespace and self.dedup_backend == "postgres":
            opts["table"] = f"flk_dedup_{self.dedup_namespace}"
        return opts

    def describe(self) -> dict[str, Any]:
        """A log-safe summary (no keys, no passwords)."""
        return {
            "host": self.host,
            "port": self.port,
            "workers": self.workers,
            "data_dir": os.path.abspath(self.data_dir),
            "wal_dir": os.path.abspath(self.wal_dir),
            "dedup_backend": self.dedup_backend,
            "store": _redact_dsn(self.store_url()),
            "sign_alg": self.sign_alg,
            "multi_tenant": self.multi_tenant,
            "tenants": sorted(self.tenants),
            "region_id": self.region_id,
            "policy_file": self.policy_file or None,
            "metrics_auth": bool(self.metrics_user),
            "max_body_bytes": self.max_body_bytes,
            "key_file": os.path.abspath(self.key_file) if self.key_file else None,
        }


def _redact_dsn(dsn: str) -> str:
    return re.sub(r"(://[^:/@]*:)[^@]*@", r"\1***@", dsn)


# ---------------------------------------------------------------- parsing helpers
def _int(name: str, raw: Any, lo: int, hi: int) -> int:
    if isinstance(raw, bool):
        raise ConfigError(f"{name} must be an integer, got {raw!r}")
    try:
        value = int(str(raw).strip(), 10) if not isinstance(raw, int) else raw
    except ValueError:
        raise ConfigError(f"{name} must be an integer, got {raw!r}") from None
    if not lo <= value <= hi:
        raise ConfigError(f"{name} must be in [{lo}, {hi}], got {value}")
    return value


def _float(name: str, raw: Any, lo: float, hi: float) -> float:
    if isinstance(raw, bool):
        raise ConfigError(f"{name} must be a number, got {raw!r}")
    try:
        value = float(str(raw).strip()) if not isinstance(raw, (int, float)) else float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number, got {raw!r}") from None
    if not (lo <= value <= hi):  # also rejects NaN
        raise ConfigError(f"{name} must be in [{lo}, {hi}], got {raw!r}")
    return value


def _bool(name: str, raw: Any) -> bool:
    if isinstance(raw, bool):
        return raw
    text = str(raw).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off", ""):
        return False
    raise ConfigError(f"{name} must be true or false, got {raw!r}")


def _choice(name: str, raw: Any, choices: tuple[str, ...]) -> str:
    text = str(raw).strip().lower()
    if text not in choices:
        raise ConfigError(f"{name} must be one of {', '.join(choices)}; got {raw!r}")
    return text


def _str(name: str, raw: Any) -> str:
    if not isinstance(raw, (str, int, float)) or isinstance(raw, bool):
        raise ConfigError(f"{name} must be a string, got {type(raw).__name__}")
    return str(raw).strip()


def _hmac_key(name: str, text: str) -> bytes:
    if not text:
        raise ConfigError(f"{name}: an HMAC key must not be empty")
    if len(text.encode("utf-8")) < 16:
        raise ConfigError(f"{name}: an HMAC key must be at least 16 bytes")
    return text.encode("utf-8")


def _ed25519_pub(name: str, text: str) -> bytes:
    try:
        raw = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise ConfigError(f"{name}: not valid base64") from None
    if len(raw) != 32:
        raise ConfigError(f"{name}: an Ed25519 public key is 32 bytes, this decodes to {len(raw)}")
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    try:
        Ed25519PublicKey.from_public_bytes(raw)
    except ValueError:
        raise ConfigError(f"{name}: not a valid Ed25519 public key") from None
    return raw


def parse_tenants(raw: Any) -> dict[str, TenantKeys]:
    """``tenant:alg:key,...`` (the seed's format; a tenant may repeat for rotation),
    or a TOML table ``{tenant: [{alg, key}, ...]}``."""
    entries: list[tuple[str, str, str]] = []
    if isinstance(raw, Mapping):
        for tenant, keys in raw.items():
            if not isinstance(keys, list):
                raise ConfigError(f"TENANTS.{tenant} must be a list of {{alg, key}} tables")
            for item in keys:
                if not isinstance(item, Mapping) or set(item) != {"alg", "key"}:
                    raise ConfigError(f"TENANTS.{tenant}: each entry is a table with alg and key")
                entries.append((str(tenant), str(item["alg"]), str(item["key"])))
    else:
        text = _str("TENANTS", raw)
        for i, part in enumerate(p for p in text.split(",") if p.strip()):
            fields = part.strip().split(":", 2)
            if len(fields) != 3:
                raise ConfigError(f"TENANTS entry {i + 1} must be tenant:alg:key (alg hmac or ed25519)")
            entries.append((fields[0], fields[1], fields[2]))
    out: dict[str, dict[str, list[bytes]]] = {}
    for tenant, alg, key in entries:
        if not TENANT_RE.fullmatch(tenant):
            raise ConfigError(f"TENANTS: tenant id {tenant!r} must match {TENANT_RE.pattern}")
        alg = _choice(f"TENANTS ({tenant})", alg, SIGN_ALGS)
        slot = out.setdefault(tenant, {"hmac": [], "ed25519": []})
        if alg == "hmac":
            slot["hmac"].append(_hmac_key(f"TENANTS ({tenant})", key))
        else:
            slot["ed25519"].append(_ed25519_pub(f"TENANTS ({tenant})", key))
    return {
        t: TenantKeys(tuple(v["hmac"]), tuple(v["ed25519"])) for t, v in sorted(out.items())
    }


def ensure_key_file(data_dir: str) -> tuple[str, bytes, bool]:
    """The per-data-dir default HMAC key: ``(path, key bytes, created)``.

    Created atomically (temp file + rename) with mode 0600 on first use, so
    several workers starting at once all end up with the same key.
    """
    path = pathlib.Path(data_dir) / KEY_FILE
    created = False
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{KEY_FILE}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, (secrets.token_hex(32) + "\n").encode("ascii"))
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.link(tmp, path)  # fails if another process won the race: keep theirs
            created = True
        except FileExistsError:
            pass
        finally:
            os.unlink(tmp)
    text = path.read_text(encoding="ascii", errors="replace").strip()
    if not re.fullmatch(r"[0-9a-f]{64}", text):
        raise ConfigError(f"key file {path} is not 64 lowercase hex characters; fix or delete it")
    return str(path), text.encode("ascii"), created


# ---------------------------------------------------------------- loading
ENV_NAMES = (
    "HOST", "PORT", "WORKERS", "DATA_DIR", "WAL_DIR", "DEDUP_BACKEND", "SQLITE_PATH", "REDIS_ADDR",
    "POSTGRES_CONN", "DEDUP_SHARDS", "DEDUP_MIGRATION_STATE", "DEDUP_NAMESPACE", "DEDUP_TTL_S", "TOKEN_RATE", "PCS_SIGN_ALG", "PCS_HMAC_KEY", "PCS_HMAC_KEYS",
    "PCS_ED25519_PUB_B64", "MULTI_TENANT", "TENANTS", "TENANTS_FILE", "REGION_ID", "POLICY", "METRICS_USER",
    "METRICS_PASS", "MAX_BODY_BYTES", "WAL_GROUP_DELAY_MS", "MAX_INFLIGHT",
    "MIN_INFLIGHT", "TARGET_LATENCY_MS", "BREAKER_FAILURES", "BREAKER_OPEN_S", "STORE_THREADS",
    "LOG_LEVEL", "DRAIN_TIMEOUT_S",
)


def read_toml(path: str) -> dict[str, Any]:
    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
    except OSError as exc:
        raise ConfigError(f"config file {path} cannot be read: {exc.strerror}") from None
    known = {n.lower() for n in ENV_NAMES}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(f"config file {path}: unknown key(s) {', '.join(unknown)}")
    return {k.upper(): v for k, v in data.items()}


def load_config(
    env: Mapping[str, str] | None = None,
    config_file: str | None = None,
    overrides: Mapping[str, Any] | None = None,
    *,
    create_key: bool = True,
) -> ServerConfig:
    """Build and validate the configuration. ``overrides`` are CLI flags (ENV names)."""
    env = os.environ if env is None else env
    raw: dict[str, Any] = {}
    if config_file:
        raw.update(read_toml(config_file))
    raw.update({k: env[k] for k in ENV_NAMES if k in env})
    raw.update({k: v for k, v in (overrides or {}).items() if v is not None})
    notes: list[str] = []
    kw: dict[str, Any] = {}

    def has(name: str) -> bool:
        return name in raw and str(raw[name]).strip() != ""

    kw["host"] = _str("HOST", raw["HOST"]) if has("HOST") else "127.0.0.1"
    kw["port"] = _int("PORT", raw["PORT"], 0, 65535) if has("PORT") else 8080
    kw["workers"] = _int("WORKERS", raw["WORKERS"], 1, 64) if has("WORKERS") else 1
    data_dir = _str("DATA_DIR", raw["DATA_DIR"]) if has("DATA_DIR") else "data"
    if not has("DATA_DIR"):
        notes.append(f"no DATA_DIR given: using the local data dir {os.path.abspath(data_dir)}")
    kw["data_dir"] = data_dir
    kw["wal_dir"] = _str("WAL_DIR", raw["WAL_DIR"]) if has("WAL_DIR") else os.path.join(data_dir, "wal")
    backend = _choice("DEDUP_BACKEND", raw["DEDUP_BACKEND"], BACKENDS) if has("DEDUP_BACKEND") else "sqlite"
    kw["dedup_backend"] = backend
    kw["sqlite_path"] = (
        _str("SQLITE_PATH", raw["SQLITE_PATH"]) if has("SQLITE_PATH") else os.path.join(data_dir, "dedup.sqlite3")
    )
    if has("REDIS_ADDR"):
        addr = _str("REDIS_ADDR", raw["REDIS_ADDR"])
        if "://" in addr:
            if not addr.startswith(("redis://", "rediss://", "unix://")):
                raise ConfigError(f"REDIS_ADDR must be host:port or a redis:// URL, got {addr!r}")
        elif not re.fullmatch(r"[A-Za-z0-9.\-\[\]:]+:\d{1,5}", addr):
            raise ConfigError(f"REDIS_ADDR must be host:port or a redis:// URL, got {addr!r}")
        kw["redis_addr"] = addr
    if has("POSTGRES_CONN"):
        kw["postgres_conn"] = _str("POSTGRES_CONN", raw["POSTGRES_CONN"])
    if backend == "redis" and not has("REDIS_ADDR"):
        raise ConfigError("DEDUP_BACKEND=redis needs REDIS_ADDR (host:port or redis:// URL)")
    if backend == "postgres":
        conn = kw.get("postgres_conn", "")
        if not conn:
            raise ConfigError("DEDUP_BACKEND=postgres needs POSTGRES_CONN (a postgresql:// DSN)")
        if not conn.startswith(("postgresql://", "postgres://")) and "=" not in conn:
            raise ConfigError("POSTGRES_CONN must be a postgresql:// URL or a key=value DSN")
    if backend == "sharded":
        if has("DEDUP_MIGRATION_STATE"):
            state = _str("DEDUP_MIGRATION_STATE", raw["DEDUP_MIGRATION_STATE"])
            if not os.path.isfile(state):
                raise ConfigError(f"DEDUP_MIGRATION_STATE {state} does not exist (run `flk dedup-migrate plan`)")
            kw["dedup_migration_state"] = state
        elif not has("DEDUP_SHARDS"):
            raise ConfigError("DEDUP_BACKEND=sharded needs DEDUP_SHARDS (name=url,...) or DEDUP_MIGRATION_STATE")
        else:
            pairs = []
            for part in (p.strip() for p in str(raw["DEDUP_SHARDS"]).split(",")):
                name, sep, url = part.partition("=")
                if not sep or not re.fullmatch(r"[A-Za-z0-9._-]{1,64}", name) or "://" not in url:
                    raise ConfigError(f"DEDUP_SHARDS entry {part[:80]!r} must be name=<store url>")
                if url.startswith("memory"):
                    raise ConfigError("DEDUP_SHARDS: memory shards are not durable; use sqlite, redis or postgres")
                pairs.append((name, url))
            if len({n for n, _ in pairs}) != len(pairs):
                raise ConfigError("DEDUP_SHARDS names must be distinct")
            kw["dedup_shards"] = tuple(pairs)
    elif has("DEDUP_SHARDS") or has("DEDUP_MIGRATION_STATE"):
        raise ConfigError("DEDUP_SHARDS / DEDUP_MIGRATION_STATE need DEDUP_BACKEND=sharded")
    if backend == "memory" and kw["workers"] > 1:
        raise ConfigError("DEDUP_BACKEND=memory cannot be shared by WORKERS>1 processes; use sqlite, redis or postgres")
    if has("DEDUP_NAMESPACE"):
        ns = _str("DEDUP_NAMESPACE", raw["DEDUP_NAMESPACE"])
        if not re.fullmatch(r"[a-z0-9_]{1,40}", ns):
            raise ConfigError(f"DEDUP_NAMESPACE must match ^[a-z0-9_]{{1,40}}$, got {ns!r}")
        kw["dedup_namespace"] = ns
    if has("DEDUP_TTL_S"):
        kw["dedup_ttl_s"] = _float("DEDUP_TTL_S", raw["DEDUP_TTL_S"], 1.0, 10 * 365 * 86400.0)
    if has("TOKEN_RATE"):
        kw["token_rate"] = _float("TOKEN_RATE", raw["TOKEN_RATE"], 0.0, 1e9)

    alg = _choice("PCS_SIGN_ALG", raw["PCS_SIGN_ALG"], SIGN_ALGS + ("none",)) if has("PCS_SIGN_ALG") else "hmac"
    if alg == "none":
        raise ConfigError("PCS_SIGN_ALG=none is not supported: protocol v1 requires signed PCS (hmac or ed25519)")
    kw["sign_alg"] = alg
    multi = _bool("MULTI_TENANT", raw["MULTI_TENANT"]) if has("MULTI_TENANT") else False
    kw["multi_tenant"] = multi
    if has("TENANTS_FILE"):
        tf = _str("TENANTS_FILE", raw["TENANTS_FILE"])
        if not multi:
            raise ConfigError("TENANTS_FILE is set but MULTI_TENANT is not true")
        if not os.path.isfile(tf):
            raise ConfigError(f"TENANTS_FILE {tf} does not exist")
        if has("TENANTS"):
            raise ConfigError("give TENANTS or TENANTS_FILE, not both")
        kw["tenants_file"] = tf
    if multi:
        if kw.get("tenants_file"):
            tenants = {}
        elif not has("TENANTS") and not isinstance(raw.get("TENANTS"), Mapping):
            raise ConfigError("MULTI_TENANT=true needs TENANTS (tenant:alg:key,...) or TENANTS_FILE")
        else:
            tenants = parse_tenants(raw["TENANTS"])
            if not tenants:
                raise ConfigError("TENANTS lists no tenant")
        for name in ("PCS_HMAC_KEY", "PCS_HMAC_KEYS", "PCS_ED25519_PUB_B64"):
            if has(name):
                raise ConfigError(f"{name} is single-tenant; with MULTI_TENANT=true put keys in TENANTS")
        kw["tenants"] = tenants
    else:
        if has("TENANTS"):
            raise ConfigError("TENANTS is set but MULTI_TENANT is not true")
        hmac_keys: list[bytes] = []
        pubs: list[bytes] = []
        if has("PCS_HMAC_KEY"):
            hmac_keys.append(_hmac_key("PCS_HMAC_KEY", str(raw["PCS_HMAC_KEY"])))
        if has("PCS_HMAC_KEYS"):
            for k in str(raw["PCS_HMAC_KEYS"]).split(","):
                if k.strip():
                    hmac_keys.append(_hmac_key("PCS_HMAC_KEYS", k.strip()))
        if has("PCS_ED25519_PUB_B64"):
            for k in str(raw["PCS_ED25519_PUB_B64"]).split(","):
                if k.strip():
                    pubs.append(_ed25519_pub("PCS_ED25519_PUB_B64", k))
        if alg == "ed25519" and not pubs:
            raise ConfigError("PCS_SIGN_ALG=ed25519 needs PCS_ED25519_PUB_B64 (base64 32-byte key)")
        if alg == "hmac" and not hmac_keys:
            if create_key:
                path, key, created = ensure_key_file(data_dir)
            else:
                path, key, created = os.path.join(data_dir, KEY_FILE), b"", False
            kw["key_file"] = path
            hmac_keys.append(key)
            notes.append(
                f"no PCS_HMAC_KEY given: {'created' if created else 'using'} the data dir's HMAC key file "
                f"{os.path.abspath(path)} (agents sign with PCS_HMAC_KEY=$(cat {path}))"
            )
        kw["tenants"] = {DEFAULT_TENANT: TenantKeys(tuple(hmac_keys), tuple(pubs))}
    if has("REGION_ID"):
        region = _str("REGION_ID", raw["REGION_ID"])
        if not REGION_RE.fullmatch(region):
            raise ConfigError(f"REGION_ID must match {REGION_RE.pattern}, got {region!r}")
        kw["region_id"] = region
    if has("POLICY"):
        policy = _str("POLICY", raw["POLICY"])
        if not os.path.isfile(policy):
            raise ConfigError(f"POLICY file {policy} does not exist")
        kw["policy_file"] = policy
    user = _str("METRICS_USER", raw["METRICS_USER"]) if has("METRICS_USER") else ""
    pw = str(raw["METRICS_PASS"]) if has("METRICS_PASS") else ""
    if bool(user) != bool(pw):
        raise ConfigError("METRICS_USER and METRICS_PASS must be set together")
    if ":" in user:
        raise ConfigError("METRICS_USER must not contain ':'")
    kw["metrics_user"], kw["metrics_pass"] = user, pw
    if has("MAX_BODY_BYTES"):
        kw["max_body_bytes"] = _int("MAX_BODY_BYTES", raw["MAX_BODY_BYTES"], 1024, 64 * 1024 * 1024)
    if has("WAL_GROUP_DELAY_MS"):
        kw["wal_group_delay_ms"] = _float("WAL_GROUP_DELAY_MS", raw["WAL_GROUP_DELAY_MS"], 0.0, 1000.0)
    if has("MAX_INFLIGHT"):
        kw["max_inflight"] = _int("MAX_INFLIGHT", raw["MAX_INFLIGHT"], 1, 100_000)
    if has("MIN_INFLIGHT"):
        kw["min_inflight"] = _int("MIN_INFLIGHT", raw["MIN_INFLIGHT"], 1, 100_000)
    if kw.get("min_inflight", 16) > kw.get("max_inflight", 256):
        raise ConfigError("MIN_INFLIGHT must not exceed MAX_INFLIGHT")
    if has("TARGET_LATENCY_MS"):
        kw["target_latency_ms"] = _float("TARGET_LATENCY_MS", raw["TARGET_LATENCY_MS"], 0.1, 60_000.0)
    if has("BREAKER_FAILURES"):
        kw["breaker_failures"] = _int("BREAKER_FAILURES", raw["BREAKER_FAILURES"], 1, 10_000)
    if has("BREAKER_OPEN_S"):
        kw["breaker_open_s"] = _float("BREAKER_OPEN_S", raw["BREAKER_OPEN_S"], 0.01, 3600.0)
    if has("STORE_THREADS"):
        kw["store_threads"] = _int("STORE_THREADS", raw["STORE_THREADS"], 1, 256)
    if has("LOG_LEVEL"):
        kw["log_level"] = _choice("LOG_LEVEL", raw["LOG_LEVEL"], ("debug", "info", "warning", "error"))
    if has("DRAIN_TIMEOUT_S"):
        kw["drain_timeout_s"] = _float("DRAIN_TIMEOUT_S", raw["DRAIN_TIMEOUT_S"], 0.0, 600.0)
    kw["notes"] = tuple(notes)
    return ServerConfig(**kw)
