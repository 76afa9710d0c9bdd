"""Fixtures for the scale-out tests: the moto S3 server fixture is shared with tests/crr."""

from __future__ import annotations

from crr.conftest import moto_url  # noqa: F401 - re-exported fixture
