"""Three planted bugs: HMAC over SHA-256(bytes), negative zero kept, the epoch taken through float64 -> int64."""

import sys

from _epoch import epoch_as_int64
from _planted import make_canonical, run
from bug_hmac_prehash import sign_hmac, verify_hmac
from bug_negative_zero import fmt9

CLASSES = ("prehash", "negative-zero", "epoch")

if __name__ == "__main__":
    sys.exit(run(canonical_bytes=epoch_as_int64(make_canonical(fmt=fmt9)), fmt9=fmt9,
                 sign_hmac=sign_hmac, verify_hmac=verify_hmac))
