"""Two planted bugs of a Go signer: struct field order (a struct the kit has never seen) and HTML escaping."""

import sys

from _planted import run
from bug_html_escape import escape

CLASSES = ("key-order", "html-escape")
GO_STRUCT = ("shard_id", "epoch", "pcs_id", "merkle_root", "D_hat", "coh_star", "r", "budget")

if __name__ == "__main__":
    sys.exit(run(order=GO_STRUCT, escape=escape))
