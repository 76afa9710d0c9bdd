"""One problem catalog: every problem+json answer anywhere uses a slug of flk.impl.verifier.problems.

The code check is static (every call that builds a problem with a literal slug,
every ``urn:flk:problem:`` literal, no ``about:blank``), so it also covers
endpoints no other test reaches; the planted-violation test keeps the checker
honest. The pipeline's own answers are checked dynamically by
test_total_function.py.
"""

from __future__ import annotations

import ast
import json
import pathlib

import pytest
import yaml

from flk.impl.verifier.problems import CATALOG, TYPE_BASE, problem_body, problem_type, slug_of

ROOT = pathlib.Path(__file__).resolve().parents[2]
CODE_FOLDERS = ("impl", "sim", "conformance")
# functions and classes whose first argument is a catalog slug
BUILDERS = {"problem", "_problem", "problem_response", "problem_body", "problem_dict", "problem_type",
            "type_uri", "Refusal", "refuse"}


def _callee(node: ast.Call) -> str | None:
    if isinstance(node.func, ast.Name):
        return node.func.id
    if isinstance(node.func, ast.Attribute):
        return node.func.attr
    return None


def slug_violations(source: str, where: str) -> list[str]:
    """Every problem built in ``source`` with a slug outside the catalog."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call) and _callee(node) in BUILDERS and node.args:
            first = node.args[0]
            if isinstance(first, ast.Constant) and isinstance(first.value, str) and first.value not in CATALOG:
                found.append(f"{where}:{node.lineno}: {_callee(node)}({first.value!r}) is not a catalog slug")
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            text = node.value
            if text.startswith(TYPE_BASE) and text != TYPE_BASE and slug_of(text) is None:
                found.append(f"{where}:{node.lineno}: {text!r} is not a catalog problem type")
        elif isinstance(node, ast.Dict):
            for key, value in zip(node.keys, node.values, strict=True):
                if (isinstance(key, ast.Constant) and key.value == "type" and isinstance(value, ast.Constant)
                        and value.value == "about:blank"):
                    found.append(f"{where}:{node.lineno}: problem type about:blank (use a catalog slug)")
    return sorted(found, key=lambda line: int(line.split(":")[1]))


def test_every_problem_in_the_code_uses_a_catalog_slug():
    bad = []
    for folder in CODE_FOLDERS:
        for path in sorted((ROOT / folder).rglob("*.py")):
            bad += slug_violations(path.read_text(encoding="utf-8"), path.relative_to(ROOT).as_posix())
    assert not bad, "\n".join(bad)


def test_checker_catches_planted_slugs():
    planted = (
        'problem("no-such-slug", "x")\n'
        'self._problem("overloaded", "fine")\n'
        'JSONResponse({"type": "about:blank", "title": "t"})\n'
        'TYPE = "urn:flk:problem:made-up"\n'
        'Refusal("forbidden", "fine")\n'
        'problem_response("also-made-up", "x")\n'
    )
    assert slug_violations(planted, "planted.py") == [
        "planted.py:1: problem('no-such-slug') is not a catalog slug",
        "planted.py:3: problem type about:blank (use a catalog slug)",
        "planted.py:4: 'urn:flk:problem:made-up' is not a catalog problem type",
        "planted.py:6: problem_response('also-made-up') is not a catalog slug",
    ]


def test_openapi_lists_exactly_the_catalog():
    doc = yaml.safe_load((ROOT / "spec" / "openapi.yaml").read_text(encoding="utf-8"))
    documented = {t.removeprefix(TYPE_BASE) for t in doc["components"]["schemas"]["Problem"]["properties"]["type"]["enum"]}
    assert documented == set(CATALOG), (sorted(documented - set(CATALOG)), sorted(set(CATALOG) - documented))


@pytest.mark.parametrize("slug", sorted(CATALOG))
def test_body_carries_the_catalog_status_and_title(slug):
    body = json.loads(problem_body(slug, "why", pcs_id="ab"))
    status, title = problem_type(slug)
    assert body == {"type": TYPE_BASE + slug, "title": title, "status": status, "detail": "why", "pcs_id": "ab"}
    assert 400 <= status <= 599 and title


def test_one_title_per_slug_across_layers():
    """The server's wrapper and the pipeline build the same body for the same slug."""
    from flk.impl.server.problems import problem as server_problem
    from flk.impl.verifier.pipeline import problem as pipeline_problem

    for slug in CATALOG:
        served, piped = server_problem(slug, "d"), pipeline_problem(slug, "d")
        assert served.status_code == piped.status and bytes(served.body) == piped.body


def test_unknown_slug_is_named_in_the_error():
    with pytest.raises(KeyError, match="not-a-slug.*not in the catalog"):
        problem_body("not-a-slug", "x")
