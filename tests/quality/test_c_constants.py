"""The constants the C fast paths share with Python come from one table.

``scripts/gen_c_constants.py`` renders the Python tables (``canonical``,
``wire``, ``pcs``, ``pipeline.REASON_CODES``) as the committed headers
``impl/core/_fastcore_constants.h`` and ``impl/verifier/_fastverify_constants.h``.
A header that differs from a fresh rendering (a Python constant changed, the C
copy did not) fails here, and so does a C source that spells one of those
values itself -- a field name, regime, schema, algorithm, version or reason
string, or the epoch and seed bounds -- instead of using the header.
"""

from __future__ import annotations

import importlib.util
import pathlib
import re

from flk.impl.core import canonical
from flk.impl.verifier import pipeline, wire

ROOT = pathlib.Path(__file__).resolve().parents[2]
SOURCES = [ROOT / "impl/core/_fastcore.c", ROOT / "impl/core/_fastcore.h", ROOT / "impl/verifier/_fastverify.c"]
STRING_RE = re.compile(r'"((?:[^"\\\n]|\\.)*)"')


def _generator():
    spec = importlib.util.spec_from_file_location("gen_c_constants", ROOT / "scripts" / "gen_c_constants.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def shared_strings() -> set[str]:
    return {*canonical.SIGNED_FIELDS, *wire.REQUIRED, *wire.OPTIONAL, *wire.REGIMES, wire.SCHEMA_NAME,
            *wire.SIGNATURE_ALGORITHMS, *wire.VERSION_PROFILE, *wire.VERSION_PROFILE.values(), *pipeline.REASON_CODES}


def shared_numbers() -> set[str]:
    return {str(canonical.EPOCH_MAX), str(wire.EPOCH_MAX), str(wire.U64_MAX), hex(wire.U64_MAX)}


def copied_constants(text: str) -> list[str]:
    """Values of the Python tables a C text spells out itself (comments stripped)."""
    code = re.sub(r"/\*.*?\*/|//[^\n]*", "", text, flags=re.S)
    found = [f'"{s}"' for s in STRING_RE.findall(code) if s in shared_strings()]
    found += [n for n in shared_numbers() if re.search(rf"\b{re.escape(n)}", code, re.I)]
    return found


def test_the_generated_headers_match_the_python_tables():
    rendered = _generator().render()
    assert set(rendered) == {"impl/core/_fastcore_constants.h", "impl/verifier/_fastverify_constants.h"}
    for rel, text in rendered.items():
        assert (ROOT / rel).read_text(encoding="utf-8") == text, f"{rel} is stale: run python scripts/gen_c_constants.py"
    assert '"merkle_root"' in rendered["impl/core/_fastcore_constants.h"]
    assert f"WIRE_MAX_SCALES {wire.MAX_SCALES} " in rendered["impl/verifier/_fastverify_constants.h"]


def test_c_sources_take_shared_constants_from_the_generated_headers():
    for path in SOURCES:
        assert copied_constants(path.read_text(encoding="utf-8")) == [], path
    assert '#include "_fastcore_constants.h"' in SOURCES[0].read_text(encoding="utf-8")
    assert '#include "_fastverify_constants.h"' in SOURCES[2].read_text(encoding="utf-8")


def test_a_changed_python_constant_makes_the_header_stale(monkeypatch):
    gen = _generator()
    committed = (ROOT / "impl/verifier/_fastverify_constants.h").read_text(encoding="utf-8")
    monkeypatch.setattr(wire, "MAX_DIM", wire.MAX_DIM + 1)
    assert gen.render()["impl/verifier/_fastverify_constants.h"] != committed


def test_the_copy_checker_catches_planted_copies():
    planted = ('static const char *X = "pcs_id"; /* "schema" in a comment is fine */\n'
               'if (e > 9007199254740991LL && !str_is(v, "sticky") && str_is(v, "other")) {}\n')
    assert sorted(copied_constants(planted)) == ['"pcs_id"', '"sticky"', "9007199254740991"]
