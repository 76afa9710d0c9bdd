"""The kit loads its vectors with the schema check on, and without the IRI format backend
that ``import jsonschema`` would otherwise build at import (Lark parsers: 1.5 s of every run
where Jupyter installed it). The check still refuses a file that breaks the schema, and the
backend stays importable for anybody else in the process."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys

import pytest

from flk.conformance.vectors import load_cases
from flk.impl.core.errors import InvalidInput

PROBE = """
import importlib.util, json, sys
from flk.conformance.vectors import load_cases
cases = load_cases()
out = {"cases": len(cases), "jsonschema": "jsonschema" in sys.modules,
       "backend_loaded": "rfc3987_syntax" in sys.modules,
       "installed": importlib.util.find_spec("rfc3987_syntax") is not None}
if out["installed"]:
    import rfc3987_syntax  # the block lasted for jsonschema's import only
    out["importable_after"] = rfc3987_syntax.__name__
print(json.dumps(out))
"""


def test_loading_the_vectors_checks_them_without_the_unused_format_backend():
    if importlib.util.find_spec("rfc3987_syntax") is None and os.environ.get("CI") != "true":
        pytest.skip("rfc3987-syntax is not installed here (Jupyter's nbformat brings it): nothing to leave out")
    p = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout)
    assert out["installed"], "CI installs the dev extra (Jupyter), which brings the backend"
    assert out["cases"] > 400 and out["jsonschema"] and not out["backend_loaded"], out
    assert out["importable_after"] == "rfc3987_syntax"


def test_a_vector_file_that_breaks_the_schema_is_refused(tmp_path):
    (tmp_path / "fmt9.v1.json").write_text(json.dumps(
        {"operation": "fmt9", "profile": "v1", "testGroups": [{"tests": [{"input": {}}]}]}), encoding="utf-8")
    with pytest.raises(InvalidInput, match="does not follow vectors.schema.json"):
        load_cases(tmp_path)
