"""Optional backends: one message when the package an optional backend needs is missing.

``pip install flk-lab`` (no extras) runs the CLI's main commands; Redis, PostgreSQL, S3 and a
Dask cluster need extras. Where such a package is imported, :func:`require` turns the bare
``ModuleNotFoundError`` into one line naming the backend and the install command; the CLI
prints it and exits 2 (never a traceback).
"""

from __future__ import annotations

import importlib
from types import ModuleType

# top-level module -> (the extra that installs it, what needs it)
EXTRAS: dict[str, tuple[str, str]] = {
    "redis": ("redis", "the Redis dedup store"),
    "psycopg": ("postgres", "the PostgreSQL dedup store"),
    "psycopg_pool": ("postgres", "the PostgreSQL dedup store"),
    "boto3": ("s3", "the S3 object store"),
    "botocore": ("s3", "the S3 object store"),
    "dask": ("dask", "a Dask cluster (--scheduler)"),
    "distributed": ("dask", "a Dask cluster (--scheduler)"),
}


class MissingBackend(ModuleNotFoundError):
    """An optional package is not installed; the message says how to install it."""


def hint(module: str | None) -> str:
    """One line: what needs ``module`` and the pip command that installs it."""
    root = (module or "").split(".")[0]
    if root in EXTRAS:
        extra, what = EXTRAS[root]
        return f"{what} needs the Python package {root!r}: pip install 'flk-lab[{extra}]'"
    return f"the Python package {root!r} is missing: pip install flk-lab (reinstall; it is a dependency)"


def require(module: str) -> ModuleType:
    """``importlib.import_module(module)``, or :class:`MissingBackend` with the install hint."""
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        raise MissingBackend(hint(exc.name or module), name=exc.name) from None
