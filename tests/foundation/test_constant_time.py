"""MACs and digests are compared whole and in constant time, on both core paths.

* Every byte position and every bit of an HMAC-SHA256 tag, flipped one at a
  time, is refused by the compiled core (``hmac_sha256_any`` and
  ``verify_hmac``) and by the pure reference (``FLK_PURE=1``'s path): a
  comparison of a prefix (``CRYPTO_memcmp(.., 16)``) or of one byte less is
  caught at the byte it skips, not by luck of which byte a test flips.
* A static check: no ``==``/``!=`` in ``impl/`` has a MAC, signature or digest on
  one side (``hmac.compare_digest`` instead), except the listed public-digest
  comparisons with their reason; no ``memcmp``/``strcmp`` of a MAC or digest in the
  C core (``CRYPTO_memcmp`` instead).
"""

from __future__ import annotations

import ast
import base64
import contextlib
import hmac
import pathlib
import re

import pytest

from flk.impl.core import signing

from .test_fastcore import BASE, COMPILED, needs_compiled, pure_core

ROOT = pathlib.Path(__file__).resolve().parents[2]
KEYS = [b"rotated-old-key", b"current-key-0123456789"]
MSG = b"flk canonical bytes under test"


def flips(tag: bytes):
    for pos in range(len(tag)):
        for bit in range(8):
            out = bytearray(tag)
            out[pos] ^= 1 << bit
            yield pos, bit, bytes(out)


def paths():
    yield "pure", pure_core
    if COMPILED is not None:
        yield "compiled", contextlib.nullcontext


@pytest.mark.parametrize("key", KEYS, ids=["first-key", "second-key"])
def test_every_mac_byte_and_bit_is_checked_by_hmac_any_on_both_paths(key) -> None:
    tag = hmac.digest(key, MSG, "sha256")
    funcs = [("pure", signing.pure_hmac_any)]
    if COMPILED is not None:
        funcs.append(("compiled", COMPILED.hmac_sha256_any))
    for name, fn in funcs:
        assert fn(KEYS, MSG, tag), name
        accepted = [(pos, bit) for pos, bit, bad in flips(tag) if fn(KEYS, MSG, bad)]
        assert accepted == [], f"{name} core accepts a MAC with these (byte, bit) flipped: {accepted[:8]}"
        for bad in (tag[:-1], tag + b"\x00", tag[:16], b""):  # a prefix or an extension is no MAC
            assert not fn(KEYS, MSG, bad), (name, len(bad))


def test_every_mac_byte_is_checked_by_verify_hmac_on_both_paths() -> None:
    for name, ctx in paths():
        with ctx():
            sig = signing.sign_hmac(BASE, KEYS[1])
            tag = base64.b64decode(sig)
            assert signing.verify_hmac(BASE, sig, KEYS), name
            accepted = [pos for pos, bit, bad in flips(tag)
                        if bit in (0, 7) and signing.verify_hmac(BASE, base64.b64encode(bad).decode(), KEYS)]
            assert accepted == [], f"{name} verify_hmac accepts a MAC with byte(s) {sorted(set(accepted))} changed"


@needs_compiled
def test_both_paths_are_really_exercised() -> None:
    """The pure context switches the path (else the two loops above test one core twice)."""
    assert signing._hmac_any is COMPILED.hmac_sha256_any
    with pure_core():
        assert signing._hmac_any is signing.pure_hmac_any


# ------------------------------------------------------------------ static checks

SECRETISH = re.compile(r"(mac|digest|signature|^sig$|^sig_|_sig$|hmac)", re.I)
# (file, comparison) -> why a plain comparison is right there: both sides are public
PUBLIC_DIGESTS = {
    ("impl/replication/shipping.py", "hashlib.sha256(theirs).digest() != hashlib.sha256(data).digest()"):
        "write-once upload: the object store's copy against ours, both public",
    ("impl/verifier/core.py", "stored.payload_digest == item.who.digest"):
        "first-write-wins replay check: the digest of the request's own public body",
    ("impl/verifier/pipeline.py", "stored.payload_digest == digest"):
        "first-write-wins replay check: the digest of the request's own public body",
    ("impl/governance/tsa.py", "_expect(imprint[1], 4, 'hashedMessage') != bytes(digest)"):
        "RFC 3161 token imprint against the public digest it timestamps",
    ("impl/lab/modelreplay.py", "first != (o.payload_digest, o.status, o.first_seen, o.region)"):
        "a replayed outcome against the first one seen (public payload digests, lab tool)",
    ("impl/lab/modelreplay.py", "o.payload_digest != s['digest']"):
        "a stored outcome's public payload digest against the submission's (lab tool)",
    ("impl/lab/cli/cmd_conformance.py", "bool(args.second_tenant) != bool(args.second_hmac_key)"):
        "whether two CLI options are both given (no MAC compared)",
    ("impl/lab/report.py", "digest != results['digest']"):
        "a run's saved history against the history digest its results.json records (public, lab tool)",
}


def operand_names(node: ast.AST) -> list[str]:
    """Names and attributes on one side of a comparison, not counting ``len(...)``."""
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "len":
        return []
    out = []
    if isinstance(node, ast.Name):
        out.append(node.id)
    elif isinstance(node, ast.Attribute):
        out.append(node.attr)
    for child in ast.iter_child_nodes(node):
        out += operand_names(child)
    return out


def plain_secret_comparisons(root: pathlib.Path) -> list[tuple[str, str, int]]:
    found = []
    for path in sorted((root / "impl").rglob("*.py")):
        rel = path.relative_to(root).as_posix()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.Compare) or not any(isinstance(op, (ast.Eq, ast.NotEq)) for op in node.ops):
                continue
            if any(SECRETISH.search(n) for side in (node.left, *node.comparators) for n in operand_names(side)):
                found.append((rel, ast.unparse(node), node.lineno))
    return found


def test_macs_and_digests_are_compared_in_constant_time_in_python() -> None:
    found = plain_secret_comparisons(ROOT)
    unexplained = [f"{f}:{line}: {expr}" for f, expr, line in found if (f, expr) not in PUBLIC_DIGESTS]
    assert unexplained == [], "compare MACs/digests with hmac.compare_digest:\n" + "\n".join(unexplained)


def test_the_python_static_check_finds_a_planted_equality(tmp_path) -> None:
    (tmp_path / "impl").mkdir()
    (tmp_path / "impl" / "x.py").write_text(
        "import hmac\n"
        "def ok(key, msg, expected):\n"
        "    return hmac.digest(key, msg, 'sha256') == expected\n"
        "def ok2(mac, given):\n"
        "    return given != mac\n"
        "def fine(sig):\n"
        "    return len(sig) == 44\n")
    assert [line for _, _, line in plain_secret_comparisons(tmp_path)] == [3, 5]


C_SOURCE = ROOT / "impl" / "core" / "_fastcore.c"
C_PLAIN = re.compile(r"\b(memcmp|strcmp|strncmp|bcmp)\s*\(([^;]*)")


def plain_c_comparisons(text: str) -> list[str]:
    return [m.group(0)[:120] for m in C_PLAIN.finditer(text) if re.search(r"mac|digest|sig", m.group(2), re.I)]


def test_the_c_core_compares_macs_with_crypto_memcmp_over_the_whole_digest() -> None:
    text = C_SOURCE.read_text(encoding="utf-8")
    assert plain_c_comparisons(text) == []
    uses = re.findall(r"CRYPTO_memcmp\(([^;]*)\)", text)
    assert uses, "the C core no longer calls CRYPTO_memcmp: how does it compare MACs?"
    assert all("SHA256_DIGEST_LENGTH" in u for u in uses), uses
    assert plain_c_comparisons("if (memcmp(mac, expected, 32) == 0)") != []
