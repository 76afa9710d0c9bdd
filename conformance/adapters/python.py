"""The Python reference adapter: ``python -m flk.conformance.adapters.python``.

Reads one JSON request per line on stdin, writes one JSON response per line on
stdout (flushed), logs only on stderr; see conformance/PROTOCOL.md. The ops
are :mod:`flk.conformance.ops`. :func:`serve` takes another op table, which is
how the planted-bug adapters in tests/quality/ reuse this loop with one bug each.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping
from typing import IO

from flk.impl.core import textdata

from ..ops import NAME, OPS, OpFn, handle


def serve(
    ops: Mapping[str, OpFn] = OPS,
    name: str = NAME,
    stdin: IO[str] | None = None,
    stdout: IO[str] | None = None,
) -> int:
    """Answer requests until end of input; returns the exit status (0)."""
    inp = stdin if stdin is not None else sys.stdin
    out = stdout if stdout is not None else sys.stdout
    for line in inp:
        if not line.strip():
            continue
        try:
            request = textdata.json_loads(line)
        except json.JSONDecodeError as exc:
            response = {
                "id": None,
                "ok": False,
                "error": {"kind": "invalid_input", "message": f"request is not JSON: {exc.msg}"},
            }
        else:
            response = handle(request, ops, name)
        # ensure_ascii keeps lone surrogates (possible in error messages) encodable
        out.write(json.dumps(response, ensure_ascii=True, allow_nan=False) + "\n")
        out.flush()
    return 0


def main() -> int:
    sys.stdin.reconfigure(encoding="utf-8", errors="surrogateescape")
    sys.stdout.reconfigure(encoding="utf-8")
    return serve()


if __name__ == "__main__":
    sys.exit(main())
