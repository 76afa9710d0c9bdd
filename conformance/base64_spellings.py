"""The one list of mis-spelled base64 signatures (strict decoders reject every one).

Why this module exists: the frozen verify vectors (``flk vectors``) and the
server suite's ``srv-bad-base64`` case probe the same lenient-decoder bugs
(padding optional, whitespace skipped, URL-safe alphabet, non-canonical
trailing bits ...); both take their spellings from :func:`lenient_spellings`
so a new pitfall is added once. Most spellings decode back to the valid
signature under a lenient decoder, which is what makes them dangerous.
"""

from __future__ import annotations

import base64

ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"


def _url_safe(sig: str) -> str | None:
    """The signature in the URL-safe alphabet (or, without '+' and '/', one 'A'
    turned into '-'); None when the signature offers neither."""
    if "+" in sig or "/" in sig:
        return base64.urlsafe_b64encode(base64.b64decode(sig)).decode()
    if "A" in sig:
        return sig.replace("A", "-", 1)
    return None


def _non_canonical_trailing_bits(sig: str) -> str | None:
    """The same bytes with the unused low bits of the last data character set."""
    if not sig.endswith("="):
        return None
    data = sig.rstrip("=")
    last = ALPHABET.index(data[-1])
    pad = len(sig) - len(data)
    mask = 0b1111 if pad == 2 else 0b11
    alt = ALPHABET[last | mask] if (last | mask) != last else ALPHABET[last & ~mask]
    return data[:-1] + alt + "=" * pad


def lenient_spellings(sig: str) -> list[tuple[str, str]]:
    """``(text, comment)`` pairs: spellings of the valid standard-base64 ``sig``
    that strict decoding (SPEC.md section 4) must refuse."""
    out = [
        (sig.rstrip("="), "padding removed"),
        (sig + "\n", "trailing newline"),
        (" " + sig, "leading space"),
        (sig[:8] + "\n" + sig[8:], "newline inside"),
        (sig + "=", "extra padding"),
    ]
    url = _url_safe(sig)
    if url is not None:
        out.append((url, "URL-safe alphabet"))
    out += [(sig[:-1] + "*", "foreign character"), ("", "empty")]
    trailing = _non_canonical_trailing_bits(sig)
    if trailing is not None:
        out.append((trailing, "non-canonical trailing bits"))
    return out
