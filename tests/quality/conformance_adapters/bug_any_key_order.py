"""Planted bug: keys in a fixed order no serializer default uses (a hand-written struct), not sorted."""

import sys

from _planted import run

FLAG = "key-order"
CLASS = "key-order"  # recognised from the adapter's own bytes, not from a list of known orders
ORDER = ("r", "epoch", "D_hat", "shard_id", "budget", "pcs_id", "coh_star", "merkle_root")

if __name__ == "__main__":
    sys.exit(run(order=ORDER))
