"""pytest plugin: run the flk test vectors against your adapter from your own suite.

Why this module exists: an SDK's CI already runs pytest (or can); with this
plugin every vector becomes one pytest test with its case id
(``canonical_bytes.v1#12``), skipped when the adapter says ``unsupported``, and
failing with the flags and the byte-level diff. Installed with flk-lab through
the ``pytest11`` entry point ``flk_conformance``; it does nothing unless a test
asks for the ``flk_vector`` fixture.

Use::

    # test_flk_vectors.py in your SDK repository
    def test_flk_vector(flk_vector, flk_adapter):
        flk_adapter.check(flk_vector)

    pytest --flk-adapter "node my-adapter.js" [--flk-profile v1|legacy-0.1|all]
           [--flk-ops fmt9,canonical_bytes] [--flk-flags round-tie] [--flk-timeout 10]
           [--flk-vectors DIR]

``FLK_ADAPTER`` may stand in for ``--flk-adapter``. One adapter process serves
the whole session (restarted after a crash or a timeout, like the runner).
"""

from __future__ import annotations

import os

import pytest


def pytest_addoption(parser) -> None:
    group = parser.getgroup("flk-conformance", "flk conformance vectors")
    group.addoption("--flk-adapter", default=None,
                    help='adapter command line for the flk_vector tests, or "builtin" (env FLK_ADAPTER)')
    group.addoption("--flk-profile", default="v1", help="v1 (default), legacy-0.1 or all")
    group.addoption("--flk-ops", default=None, help="only these operations (comma-separated)")
    group.addoption("--flk-flags", default=None, help="only cases carrying one of these flags (comma-separated)")
    group.addoption("--flk-timeout", type=float, default=10.0, help="seconds per case (default 10)")
    group.addoption("--flk-vectors", default=None, help="vector directory (default: the packaged vectors)")


def _csv(text: str | None) -> list[str] | None:
    items = [t.strip() for t in (text or "").split(",") if t.strip()]
    return items or None


def pytest_generate_tests(metafunc) -> None:
    if "flk_vector" not in metafunc.fixturenames:
        return
    from .vectors import load_cases

    cfg = metafunc.config
    profile = cfg.getoption("flk_profile")
    cases = load_cases(
        cfg.getoption("flk_vectors"),
        profile=None if profile == "all" else profile,
        operations=_csv(cfg.getoption("flk_ops")),
        flags=_csv(cfg.getoption("flk_flags")),
    )
    metafunc.parametrize("flk_vector", cases, ids=[c.case_id for c in cases])


class AdapterFixture:
    """What the ``flk_adapter`` fixture yields: ``check(case)`` passes, skips or fails."""

    def __init__(self, driver) -> None:
        self.driver = driver

    @property
    def hello(self) -> dict:
        return self.driver.start()

    def check(self, case) -> None:
        result = self.driver.run(case)
        if result.status in ("skip", "n/a"):  # n/a: a verify-negative whose positive control failed
            pytest.skip(result.message)
        if result.status == "fail":
            flags = f" [{', '.join(case.flags)}]" if case.flags else ""
            notes = "".join(f"\n  {f}: {case.notes[f]}" for f in case.flags if f in case.notes)
            diff = f"\n{result.diff}" if result.diff else ""
            pytest.fail(f"{case.case_id}{flags} {case.comment}\n{result.message}{diff}{notes}", pytrace=False)


@pytest.fixture(scope="session")
def flk_adapter(request):
    from .adapter_io import AdapterSpecError, make_adapter
    from .runner import CaseDriver

    spec = request.config.getoption("flk_adapter") or os.environ.get("FLK_ADAPTER")
    if not spec:
        pytest.fail("flk_vector tests need an adapter: pass --flk-adapter COMMAND (or set FLK_ADAPTER)",
                    pytrace=False)
    try:
        adapter = make_adapter(spec)
    except AdapterSpecError as exc:
        pytest.fail(str(exc), pytrace=False)
    driver = CaseDriver(adapter, timeout=request.config.getoption("flk_timeout"))
    yield AdapterFixture(driver)
    driver.close()
