"""Four planted bugs of a Go signer: struct field order, HTML escaping, epoch through float64 -> int64,
a base64 decoder that skips newlines."""

import sys

from _epoch import epoch_as_int64
from _planted import make_canonical, run
from bug_base64_whitespace import b64decode_skip_whitespace
from bug_html_escape import escape
from multi_go_order_html import GO_STRUCT

CLASSES = ("key-order", "html-escape", "epoch", "lenient-base64")

if __name__ == "__main__":
    sys.exit(run(canonical_bytes=epoch_as_int64(make_canonical(escape=escape, order=GO_STRUCT)),
                 escape=escape, b64decode=b64decode_skip_whitespace))
