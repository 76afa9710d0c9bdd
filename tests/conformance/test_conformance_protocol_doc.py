"""PROTOCOL.md and protocol.schema.json cannot drift from the code.

Every example exchange in PROTOCOL.md (``→ request`` / ``← response`` lines)
is replayed through the reference ops and must give the documented response;
requests, responses and per-op outputs validate against the JSON Schema, and
every op the reference offers is documented.
"""

from __future__ import annotations

import json
import pathlib

import jsonschema
import pytest

from flk.conformance.ops import ALL_OPS, handle
from flk.conformance.vectors import load_cases

ROOT = pathlib.Path(__file__).resolve().parents[2]
DOC = (ROOT / "conformance" / "PROTOCOL.md").read_text(encoding="utf-8")
SCHEMA = json.loads((ROOT / "conformance" / "protocol.schema.json").read_text(encoding="utf-8"))


def _exchanges() -> list[tuple[dict, dict]]:
    lines = [line for line in DOC.splitlines() if line.startswith(("→ ", "← "))]
    assert len(lines) % 2 == 0
    pairs = []
    for req, resp in zip(lines[::2], lines[1::2], strict=True):
        assert req.startswith("→ ") and resp.startswith("← ")
        pairs.append((json.loads(req[2:]), json.loads(resp[2:])))
    return pairs


def _validator(ref: str) -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator({"$ref": ref, "$defs": SCHEMA["$defs"]})


def test_schema_is_valid():
    jsonschema.Draft202012Validator.check_schema(SCHEMA)


def test_every_op_is_documented_with_an_example():
    documented = {req["op"] for req, _ in _exchanges()}
    assert set(ALL_OPS) | {"hello"} <= documented
    for op in ALL_OPS:
        assert f"### {op} " in DOC


@pytest.mark.parametrize("req, resp", _exchanges(), ids=lambda v: v.get("op", "") if "op" in v else "")
def test_documented_exchange_is_what_the_reference_answers(req, resp):
    got = json.loads(json.dumps(handle(req)))
    if req["op"] == "hello":
        got["output"]["version"] = resp["output"]["version"]  # the package version moves
    assert got == resp
    _validator("#/$defs/request").validate(req)
    _validator("#/$defs/response").validate(resp)
    if req["op"] in SCHEMA["$defs"]["inputs"]:
        _validator(f"#/$defs/inputs/{req['op']}").validate(req["input"])
    if resp["ok"]:
        _validator(f"#/$defs/outputs/{req['op']}").validate(resp["output"])


def test_every_vector_input_and_reference_output_fits_the_schema():
    for case in load_cases(ROOT / "spec" / "vectors"):
        if not case.expects_error:  # negative vectors break the input on purpose
            _validator(f"#/$defs/inputs/{case.operation}").validate(dict(case.input))
        resp = json.loads(json.dumps(handle({"id": 1, "op": case.operation, "profile": case.profile,
                                             "input": case.input})))
        _validator("#/$defs/response").validate(resp)
        if resp["ok"]:
            _validator(f"#/$defs/outputs/{case.operation}").validate(resp["output"])


def test_every_flag_and_bug_class_is_documented():
    from flk.conformance.diagnosis import BUG_CLASSES, EXTRA_CLASSES

    flags = {flag for case in load_cases(ROOT / "spec" / "vectors") for flag in case.flags}
    table = DOC.split("## Flags", 1)[1].split("\n## ", 1)[0]
    rows = {line.split("|")[1].strip().strip("`") for line in table.splitlines() if line.startswith("| `")}
    assert flags <= rows, f"flags without a row in PROTOCOL.md: {sorted(flags - rows)}"
    for name in [c.name for c in BUG_CLASSES] + list(EXTRA_CLASSES):
        assert f"`{name}`" in DOC, name
