"""The tenant-id rule: which strings name a tenant (SPEC.md section 9.2, "Tenant ids").

Why this module exists: a tenant id is half of every dedup key ``(tenant,
pcs_id)`` (INV-TENANT-ISOLATION) and appears in the ``TENANTS`` setting
(``tenant:alg:key,...``), in selective replication peers (``CRR_PEERS=eu:ta+tb``),
in the tenants TOML file, in metrics labels and in audit entries. The
configuration, the tenant registry and the dedup stores used to each carry
their own pattern (two of them disagreed); they all ask this module now, so an
id one layer accepts is accepted by every layer.

The rule: 1 to 128 characters of ``A-Z a-z 0-9 . _ : -`` -- the alphabet of the
other protocol identifier, ``shard_id`` (SPEC.md section 2). No ``,`` or ``+``
(list separators of ``TENANTS`` and ``CRR_PEERS``), no ``|`` (the separator of
the dedup sample hash ``seed|tenant|pcs_id``), no whitespace or control
characters (log lines and signed-read messages). A ``:`` is allowed: the
dedup stores keep ``("t1:x", "y")`` and ``("t1", "x:y")`` apart, and
``CRR_PEERS`` splits a region from its tenants at the first ``:`` only; but the
``TENANTS`` text form ``tenant:alg:key`` ends the id at its first ``:``, so a
tenant whose id holds one is configured in the TOML table form or the tenants
file. ``default`` is the tenant of single-tenant mode.

A request's ``X-Tenant-Id`` is *not* checked against this rule before the
WAL: it is recorded verbatim (SPEC.md section 8 step 1) and a header naming
no configured tenant is answered 401 ``unknown-tenant`` at step 4, so only
configured ids -- which passed this rule -- ever reach a dedup store.
"""

from __future__ import annotations

import re

from .errors import InvalidInput

TENANT_ID_PATTERN = r"[A-Za-z0-9._:-]{1,128}"
TENANT_ID_RE = re.compile(TENANT_ID_PATTERN)
TENANT_ID_RULE = f"a tenant id must match ^{TENANT_ID_PATTERN}$"
DEFAULT_TENANT = "default"


def is_tenant_id(value: object) -> bool:
    """True when ``value`` is a ``str`` that names a tenant under the one rule."""
    return isinstance(value, str) and TENANT_ID_RE.fullmatch(value) is not None


def check_tenant_id(value: object, field: str) -> str:
    """``value`` if it is a tenant id, else :class:`InvalidInput` naming ``field``."""
    if not is_tenant_id(value):
        raise InvalidInput(field, TENANT_ID_RULE)
    return value  # type: ignore[return-value]
