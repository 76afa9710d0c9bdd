"""Self-consistent base64 probes: mangle a signature the adapter produced and verified.

Why this module exists: a vector's base64 negative is built from the
*reference* signature; a verifier with an unrelated bug (prehashing, another
key order) rejects it for the wrong reason, its positive control fails and
the negative is "not applicable" -- so a lenient decoder behind another bug
was never seen. These probes take the adapter's **own** signature of a plain
record (``sign_*``), check that the adapter verifies it (the control), then
send each strict-base64 violation of that signature (newline or space inside,
trailing newline, missing padding, non-canonical trailing bits, ...): the
only reason left to accept one is a lenient decoder. Without a ``sign_*`` op
the reference signature is used, and the control still has to pass.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Sequence
from typing import Any

from flk.impl.core import signing

from .base64_spellings import lenient_spellings
from .vectors import Case

PROBE_SUBSET = {"D_hat": 1.412345678, "budget": 0.402155142, "coh_star": 0.734000002, "epoch": 7,
                "merkle_root": "f574bf7e80c25692454dc23f6fd03b664a52d568d7cb4fff06f30b7b2a2d4c1e",
                "pcs_id": "73406ddc1fa0ebc697648be84c666105b562106889fb5bf1c5ee8dbcb53711f2",
                "r": 0.318421053, "shard_id": "shard-007"}
PROBE_HMAC_KEY = hashlib.sha256(b"flk conformance self-consistent probe key").digest()
PROBE_ED25519_SEED = hashlib.sha256(b"flk conformance self-consistent probe seed").digest()
FLAGS = ("base64-strict", "self-consistent")


def probe_spellings(sig: str) -> list[tuple[str, str]]:
    """The vectors' lenient spellings plus a few more whitespace forms."""
    out = lenient_spellings(sig)
    out += [(sig[:20] + " " + sig[20:], "space inside"), (sig + "\r\n", "trailing CRLF"),
            (sig[:30] + "\t" + sig[30:], "tab inside")]
    return [(text, comment) for text, comment in out if text]  # "" is a plain malformed signature


def _requests(family: str) -> tuple[dict, dict]:
    """(sign request, verify input without sig) of one family."""
    if family == "hmac":
        key = base64.b64encode(PROBE_HMAC_KEY).decode()
        return ({"op": "sign_hmac", "profile": "v1", "input": {"subset": PROBE_SUBSET, "key_b64": key}},
                {"subset": PROBE_SUBSET, "keys_b64": [key]})
    seed = base64.b64encode(PROBE_ED25519_SEED).decode()
    pub = base64.b64encode(signing.public_key_bytes(PROBE_ED25519_SEED)).decode()
    return ({"op": "sign_ed25519", "profile": "v1", "input": {"subset": PROBE_SUBSET, "private_key_b64": seed}},
            {"subset": PROBE_SUBSET, "public_keys_b64": [pub]})


def wanted(cases: Sequence[Case], hello: dict) -> list[str]:
    """Families to probe: the run selected v1 verify cases of it and the adapter declares verify."""
    ops, profiles = set(hello.get("ops") or []), set(hello.get("profiles") or [])
    if "v1" not in profiles:
        return []
    selected = {c.operation for c in cases if c.profile == "v1"}
    return [fam for fam in ("hmac", "ed25519") if f"verify_{fam}" in selected and f"verify_{fam}" in ops]


def own_signature(driver: Any, family: str) -> tuple[str | None, str]:
    """The adapter's signature of the probe record (or the reference's), and where it came from."""
    sign, _ = _requests(family)
    if sign["op"] in (driver.hello.get("ops") or []):
        reply = driver.adapter.call(sign, driver.timeout)
        resp = reply.response or {}
        if reply.status == "ok" and resp.get("ok") and isinstance((resp.get("output") or {}).get("sig"), str):
            return resp["output"]["sig"], "its own"
        return None, f"its {sign['op']} gave no signature"
    if family == "hmac":
        return signing.sign_hmac(PROBE_SUBSET, PROBE_HMAC_KEY), "the reference"
    return signing.sign_ed25519(PROBE_SUBSET, PROBE_ED25519_SEED), "the reference"


def probe_cases(driver: Any, family: str) -> tuple[list[Case], str]:
    """The probe cases of ``family`` (verify negatives built from a signature the
    adapter verifies), or ``([], why not)``."""
    sig, origin = own_signature(driver, family)
    if sig is None:
        return [], origin
    _, verify_input = _requests(family)
    op = f"verify_{family}"
    control = driver.adapter.call({"op": op, "profile": "v1", "input": {**verify_input, "sig": sig}}, driver.timeout)
    resp = control.response or {}
    if control.status != "ok" or not resp.get("ok") or (resp.get("output") or {}).get("valid") is not True:
        return [], f"the adapter does not verify {origin} signature of the probe record"
    cases = []
    for i, (text, comment) in enumerate(probe_spellings(sig), start=1):
        cases.append(Case(op, "v1", i, f"self-consistent: {origin} signature, {comment}", FLAGS,
                          {**verify_input, "sig": text}, "invalid", {"valid": False},
                          group_comment="Self-consistent base64 probes", source="runner", label=f"self-{i}"))
    return cases, ""
