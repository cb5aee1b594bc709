"""Fixtures the gateway's test modules share. A module that uses `proxy` provides its own `archive` (the
Orthanc holding the studies it needs); the fault proxy in front of it is the same everywhere."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.infra.faultproxy import FaultProxy
from tests.infra.orthanc import OrthancServer


@pytest.fixture(scope="module")
def proxy(archive: OrthancServer) -> Iterator[FaultProxy]:
    with FaultProxy(archive.dicomweb_url) as fault_proxy:
        yield fault_proxy


@pytest.fixture
def fresh_proxy(proxy: FaultProxy) -> Iterator[FaultProxy]:
    proxy.set_fault("none")
    proxy.clear()
    yield proxy
    proxy.set_fault("none")
