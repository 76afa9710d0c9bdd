"""Redis dedup store: ``SET NX PX`` inside a Lua script.

The value is ``<expires_at_ms>\\n<StoredOutcome.to_bytes()>``. The script does,
atomically on the server::

    v = GET key
    if v and expires_at(v) > now_ms: return {0, v}          -- live winner
    SET key new PX ttl_ms    (NX when there was no value at all)
    return {1, new}

so expiry follows the ``now`` the caller passes in (the contract's logical
clock), and ``PX`` is only Redis's garbage collection of dead keys. Keys are
``<prefix><len(tenant)>:<tenant>:<pcs_id>`` -- unambiguous for any tenant. Any
connection or server error raises :class:`StoreUnavailable`.
"""

from __future__ import annotations

from ..core.optional import require
from .base import (
    DEFAULT_CALL_TIMEOUT_S,
    DEFAULT_TTL_S,
    BatchMixin,
    CallDeadline,
    GenerationLost,
    GenerationMarked,
    StoredOutcome,
    StoreUnavailable,
    check_key,
    check_keys,
    check_ttl,
    generation_problem,
    sample_entries,
)

redis_lib = require("redis")

_PUT = """
local v = redis.call('GET', KEYS[1])
if v then
  local exp = tonumber(string.match(v, '^(%d+)\\n'))
  if exp and exp > tonumber(ARGV[2]) then return {0, v} end
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[3])
  return {1, ARGV[1]}
end
redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[3])
return {1, ARGV[1]}
"""

# compare-and-delete: the key's live value holds exactly ARGV[1] (a migration's prune)
_DELETE_SAME = """
local v = redis.call('GET', KEYS[1])
if not v then return 0 end
local nl = string.find(v, '\\n', 1, true)
if not nl then return 0 end
local exp = tonumber(string.sub(v, 1, nl - 1))
if exp and exp > tonumber(ARGV[2]) and string.sub(v, nl + 1) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


def _ms(t: float) -> int:
    return int(round(t * 1000))


class RedisStore(GenerationMarked, BatchMixin):
    kind = "redis"

    def __init__(
        self,
        url: str,
        prefix: str = "flk:dedup:",
        ttl_s: float = DEFAULT_TTL_S,
        timeout_s: float = DEFAULT_CALL_TIMEOUT_S,
        client: redis_lib.Redis | None = None,
    ) -> None:
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        self.prefix = prefix
        self.ttl_s = check_ttl(ttl_s, DEFAULT_TTL_S)
        # one retry, on a connection error only: a pooled connection a Redis restart
        # closed is replaced at once (no 503 after the store is back); a timeout is not
        # retried (redis-py's default retries made a frozen Redis cost 2-4 s, not one timeout)
        self.generation_key = f"flk:generation:{prefix}"  # outside the prefix: scans never see it
        self.expected_generation: str | None = None
        self.lost: str | None = None
        self._r = client or redis_lib.Redis.from_url(
            url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s, max_connections=64,
            retry=Retry(NoBackoff(), 1, supported_errors=(redis_lib.ConnectionError,)),
            redis_connect_func=self._on_connect,
        )
        self.deadline = CallDeadline(timeout_s, name="redis")
        self._put = self._r.register_script(_PUT)
        self._delete_same = self._r.register_script(_DELETE_SAME)

    def _key(self, tenant: str, pcs_id: str) -> str:
        return f"{self.prefix}{len(tenant)}:{tenant}:{pcs_id}"

    def _split(self, key: bytes) -> tuple[str, str]:
        rest = key.decode()[len(self.prefix):]
        n, _, tail = rest.partition(":")
        n = int(n)
        return tail[:n], tail[n + 1:]

    @staticmethod
    def _decode(v: bytes, now: float) -> StoredOutcome | None:
        exp, _, raw = v.partition(b"\n")
        if int(exp) <= _ms(now):
            return None
        return StoredOutcome.from_bytes(raw)

    # -- generation marker (data loss detection) -------------------------------------
    def _on_connect(self, conn) -> None:
        """Every new connection -- so every reconnect after a restart -- checks the marker
        before any command uses it."""
        conn.on_connect()
        if self.expected_generation is None:
            return
        conn.send_command("GET", self.generation_key)
        found = conn.read_response()
        problem = generation_problem(self.expected_generation, None if found is None else found.decode())
        if problem is not None:
            self.lost = self.lost or problem
            raise redis_lib.ConnectionError("dedup store generation marker mismatch")

    def read_generation(self) -> str | None:
        v = self._call(lambda: self._r.get(self.generation_key), check=False)
        return None if v is None else v.decode()

    def create_generation(self, generation: str, force: bool = False) -> str:
        """Write ``generation`` if there is no marker (or always, ``force``); the marker now."""
        if force:
            self._call(lambda: self._r.set(self.generation_key, generation), check=False)
            self.lost = None
            return generation
        self._call(lambda: self._r.set(self.generation_key, generation, nx=True), check=False)
        return self.read_generation() or generation

    def _call(self, fn, check: bool = True):
        if check and self.lost is not None:
            raise GenerationLost(self.lost)

        def run():
            try:
                return fn()
            except redis_lib.RedisError as exc:
                raise StoreUnavailable(f"redis store failed: {type(exc).__name__}") from None

        try:
            return self.deadline.call(run, "redis store call")
        except StoreUnavailable:
            if check and self.lost is not None:
                raise GenerationLost(self.lost) from None
            raise

    def _scripts(self, script, calls: list) -> list:
        """``script`` run once per ``(keys, args)`` of ``calls``, in order, in one pipeline: one
        round trip (redis-py's pipelined script call asks SCRIPT EXISTS first: two). A Redis that
        lacks the script (restarted, flushed) answers NOSCRIPT to the calls it did not run: the
        script is loaded and those calls are sent again, in order; any other error raises."""
        def send(todo: list) -> list:
            pipe = self._r.pipeline(transaction=False)
            for keys, args in todo:
                pipe.evalsha(script.sha, len(keys), *keys, *args)
            return pipe.execute(raise_on_error=False)

        res = send(calls)
        missing = [k for k, r in enumerate(res) if isinstance(r, redis_lib.exceptions.NoScriptError)]
        if missing:
            script.sha = self._r.script_load(script.script)
            for k, r in zip(missing, send([calls[k] for k in missing]), strict=True):
                res[k] = r
        for r in res:
            if isinstance(r, Exception):
                raise r
        return res

    def get(self, tenant, pcs_id, now):
        check_key(tenant, pcs_id)
        v = self._call(lambda: self._r.get(self._key(tenant, pcs_id)))
        return None if v is None else self._decode(v, now)

    def get_many(self, keys, now):
        if not keys:
            return []
        check_keys(keys)
        vals = self._call(lambda: self._r.mget([self._key(t, p) for t, p in keys]))
        return [None if v is None else self._decode(v, now) for v in vals]

    def _put_args(self, outcome, now, ttl):
        exp = _ms(now + ttl)
        value = str(exp).encode() + b"\n" + outcome.to_bytes()
        return [value, _ms(now), max(1, _ms(ttl))]

    @staticmethod
    def _result(res, outcome):
        won, v = int(res[0]), res[1]
        if won:
            return True, outcome
        return False, StoredOutcome.from_bytes(v.partition(b"\n")[2])

    def put_if_absent(self, tenant, pcs_id, outcome, now, ttl_s=None):
        check_key(tenant, pcs_id)
        ttl = check_ttl(ttl_s, self.ttl_s)
        res = self._call(lambda: self._put(keys=[self._key(tenant, pcs_id)], args=self._put_args(outcome, now, ttl)))
        return self._result(res, outcome)

    def put_many_if_absent(self, items, now, ttl_s=None):
        """One round trip (:meth:`_scripts`); each script runs atomically and in order."""
        if not items:
            return []
        ttl = check_ttl(ttl_s, self.ttl_s)
        check_keys(items)

        res = self._call(lambda: self._scripts(self._put, [([self._key(t, p)], self._put_args(o, now, ttl))
                                                           for t, p, o in items]))
        return [self._result(r, o) for r, (_, _, o) in zip(res, items, strict=True)]

    def delete_copies(self, items, now):
        """Delete each ``(tenant, pcs_id, outcome)`` whose live value holds exactly ``outcome``
        (one round trip, each key compared and deleted atomically); the number deleted (a
        migration's prune only)."""
        if not items:
            return 0
        check_keys(items)

        calls = [([self._key(t, p)], [o.to_bytes(), _ms(now)]) for t, p, o in items]
        return sum(int(r) for r in self._call(lambda: self._scripts(self._delete_same, calls)))

    def _live(self, now):
        def fn():
            out = []
            keys = list(self._r.scan_iter(match=self._escape(self.prefix) + "*", count=1000))
            for i in range(0, len(keys), 500):
                chunk = keys[i : i + 500]
                for k, v in zip(chunk, self._r.mget(chunk), strict=True):
                    if v is None:
                        continue
                    o = self._decode(v, now)
                    if o is not None:
                        t, p = self._split(k)
                        out.append((t, p, o))
            return out

        return sorted(self._call(fn), key=lambda e: (e[0], e[1]))

    @staticmethod
    def _escape(s: str) -> str:
        return "".join("\\" + ch if ch in "*?[]\\" else ch for ch in s)

    def count(self, now):
        return len(self._live(now))

    def scan(self, cursor, limit, now):
        """Redis SCAN pages (cursor = Redis's cursor): every live entry at least
        once. ``limit`` is Redis's COUNT hint (x10, at least 1000 keys looked
        at per call): a page may hold more or fewer entries than ``limit``; empty
        pages are skipped so a shared keyspace does not cost one call per miss."""
        if limit < 1:
            raise ValueError("limit must be >= 1")
        cur = 0 if cursor is None else int(cursor)
        match = self._escape(self.prefix) + "*"

        def fn():
            c = cur
            while True:
                c, keys = self._r.scan(cursor=c, match=match, count=max(1000, limit * 10))
                if keys or int(c) == 0:
                    return c, keys, (self._r.mget(keys) if keys else [])

        nxt, keys, vals = self._call(fn)
        page = []
        for k, v in zip(keys, vals, strict=True):
            if v is not None and (o := self._decode(v, now)) is not None:
                t, p = self._split(k)
                page.append((t, p, o))
        page.sort(key=lambda e: (e[0], e[1]))
        return page, (None if int(nxt) == 0 else str(int(nxt)))

    def sample(self, n, seed, now):
        return sample_entries(self._live(now), n, seed)

    def make_durable(self) -> bool:
        """True when every acknowledged write is in an fsynced AOF (``appendonly yes`` with
        ``appendfsync always``); otherwise (no AOF, or ``everysec``: a crash may lose the
        last writes) False: the server then writes no WAL checkpoint for this store."""
        try:
            conf = self._call(lambda: self._r.config_get("append*"))
        except StoreUnavailable:
            return False
        return conf.get("appendonly") == "yes" and conf.get("appendfsync") == "always"

    def ping(self):
        try:
            ok = bool(self._call(self._r.ping))
            self.check_generation()  # every ping compares the marker too
            return ok
        except StoreUnavailable:
            return False

    def close(self):
        self.deadline.close()
        self._r.close()
        self._r.connection_pool.disconnect()
