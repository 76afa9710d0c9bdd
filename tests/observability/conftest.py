"""Shared fixtures of the observability tests."""

from __future__ import annotations

import os
import shutil

import pytest

IN_CI = os.environ.get("CI", "").lower() == "true"


@pytest.fixture(scope="module")
def promtool() -> str:
    """Debian's promtool (scripts/install_observability.sh); without it a test skips, never under CI=true."""
    tool = shutil.which("promtool")
    if tool is None:
        msg = "promtool not installed: bash scripts/install_observability.sh"
        if IN_CI:
            pytest.fail(msg)
        pytest.skip(msg)
    return tool
