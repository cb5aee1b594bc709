"""Pytest configuration for the real-archive integration tests."""

from __future__ import annotations

import pytest


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "integration: talks to real archives (Orthanc, dcmqrscp) and proxies on loopback; "
        "needs scripts/install-system-deps.sh",
    )
