"""A complete flk conformance adapter in about 50 lines: fmt9, canonical_bytes, HMAC (profile v1)."""
import base64, binascii, hmac, json, math, struct, sys  # noqa: E401, I001

FIELDS = ("D_hat", "budget", "coh_star", "epoch", "merkle_root", "pcs_id", "r", "shard_id")


class Invalid(ValueError):
    """The input violates the spec: answered with kind invalid_input."""


def fmt9(v):  # v: a JSON number or {"f64": "<16 hex digits>"}
    if isinstance(v, dict) and list(v) == ["f64"]:
        v = struct.unpack(">d", bytes.fromhex(v["f64"]))[0]
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(float(v)):
        raise Invalid("not a finite number")
    text = f"{float(v):.9f}"  # half-even from the exact binary value; -0 is written 0
    return "0.000000000" if text == "-0.000000000" else text


def canonical(s):
    if not isinstance(s, dict) or any(k not in s for k in FIELDS):
        raise Invalid("the subset needs the eight signed fields")
    e = s["epoch"]
    if isinstance(e, bool) or not isinstance(e, int) or not 0 <= e < 2**53:
        raise Invalid("epoch")
    if not all(isinstance(s[k], str) for k in ("merkle_root", "pcs_id", "shard_id")):
        raise Invalid("string field")
    # json.dumps(ensure_ascii=False) escapes a string exactly as RFC 8785 does
    text = {k: fmt9(v) if k in ("D_hat", "budget", "coh_star", "r") else json.dumps(v, ensure_ascii=False)
            for k, v in s.items() if k in FIELDS}
    try:
        return ("{" + ",".join(f'"{k}":{text[k]}' for k in FIELDS) + "}").encode()
    except UnicodeEncodeError:
        raise Invalid("lone surrogate") from None


def b64(text, length=None):  # strict: alphabet, padding, canonical trailing bits, exact length
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, TypeError, ValueError):
        raise Invalid("not base64") from None
    if base64.b64encode(raw).decode() != text or (length is not None and len(raw) != length) or not raw:
        raise Invalid("not strict base64")
    return raw


def verify_hmac(i):
    msg, keys = canonical(i["subset"]), [b64(k) for k in i["keys_b64"]]
    try:
        sig = b64(i["sig"], 32)
    except Invalid:  # a malformed signature is a verdict, not an error
        return {"valid": False}
    return {"valid": any(hmac.compare_digest(hmac.digest(k, msg, "sha256"), sig) for k in keys)}


OPS = {"fmt9": lambda i: {"text": fmt9(i["x"])},
       "canonical_bytes": lambda i: {"bytes_b64": base64.b64encode(canonical(i["subset"])).decode()},
       "sign_hmac": lambda i: {"sig": base64.b64encode(hmac.digest(b64(i["key_b64"]), canonical(i["subset"]),
                                                                  "sha256")).decode()},
       "verify_hmac": verify_hmac}

for line in sys.stdin:  # one request per line in, one response per line out
    req = json.loads(line)
    try:
        if req["op"] == "hello":
            resp = {"ok": True, "output": {"name": "minimal", "version": "1", "ops": list(OPS), "profiles": ["v1"]}}
        elif req["op"] not in OPS or req["profile"] != "v1":
            resp = {"ok": False, "error": {"kind": "unsupported", "message": req["op"]}}
        else:
            resp = {"ok": True, "output": OPS[req["op"]](req["input"])}
    except (Invalid, KeyError, TypeError, OverflowError) as exc:
        resp = {"ok": False, "error": {"kind": "invalid_input", "message": repr(exc)}}
    print(json.dumps({"id": req["id"], **resp}), flush=True)
