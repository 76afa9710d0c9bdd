"""Two planted bugs: non-ASCII escaped as \\uXXXX and HMAC over SHA-256(bytes) (the first hides the second)."""

import sys

from _planted import run
from bug_ascii_escape import escape
from bug_hmac_prehash import sign_hmac, verify_hmac

CLASSES = ("ascii-escape", "prehash")

if __name__ == "__main__":
    sys.exit(run(escape=escape, sign_hmac=sign_hmac, verify_hmac=verify_hmac))
