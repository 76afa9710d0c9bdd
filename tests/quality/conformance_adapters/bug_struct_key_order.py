"""Planted bug: keys in struct declaration order (Go/Rust struct field order), not sorted."""

import sys

from _planted import run

FLAG = "key-order"
CLASS = "key-order"  # the diagnosed root cause (flk.conformance.diagnosis)
STRUCT_ORDER = ("pcs_id", "shard_id", "epoch", "merkle_root", "D_hat", "coh_star", "r", "budget")

if __name__ == "__main__":
    sys.exit(run(order=STRUCT_ORDER))
