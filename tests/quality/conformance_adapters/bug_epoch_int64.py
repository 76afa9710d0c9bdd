"""Planted bug: the epoch goes through float64 -> int64 (2^64 written -9223372036854775808, 1.5 written 1)."""

import sys

from _epoch import epoch_as_int64
from _planted import make_canonical, run

FLAG = "epoch-range"
CLASS = "epoch"

if __name__ == "__main__":
    sys.exit(run(canonical_bytes=epoch_as_int64(make_canonical())))
