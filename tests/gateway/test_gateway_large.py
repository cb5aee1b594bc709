"""Streaming: a 300 MB study relayed through the gateway under gunicorn, with the worker's peak memory
read from /proc before and after. Relaying must not hold the study: the peak may grow by a few chunks,
never by the study's size. (Throughput is measured by bench/gateway.py, never asserted here.)
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

import pytest
import requests

from tests.gateway.multipart import parts
from tests.infra.gateway_rig import GatewayRig

pytestmark = pytest.mark.integration
STUDY_MB = 300
GROWTH_LIMIT_KIB = 64 * 1024  # 64 MiB: 64 chunks of the default 1 MiB, a fifth of the study


@pytest.fixture(scope="module")
def rig() -> Iterator[GatewayRig]:
    with GatewayRig(megabytes=STUDY_MB) as started:
        yield started


def stream(url: str, headers: dict[str, str]) -> tuple[int, list[str]]:
    """(bytes, sorted sha256 of every part) of a streamed retrieval; parts are compared, since each
    response has its own random boundary and an archive need not keep the instances' order."""
    with requests.get(url, headers=headers, stream=True, timeout=300) as response:
        assert response.status_code == 200, response.text[:300]
        body = b"".join(response.iter_content(1 << 20))  # the test's memory, not the facade's
        if "Content-Length" in response.headers:
            assert len(body) == int(response.headers["Content-Length"])
        digests = sorted(hashlib.sha256(p).hexdigest() for _, p in parts(response.headers["Content-Type"], body))
    return len(body), digests


def test_a_300_mb_study_streams_with_flat_memory(rig: GatewayRig) -> None:
    warm = requests.get(rig.gateway_url("/metadata"), headers=rig.headers, timeout=60)
    assert warm.status_code == 200 and len(warm.json()) == STUDY_MB // 2
    before = rig.worker_peak_rss_kib()
    size, via_parts = stream(rig.gateway_url(), rig.headers)
    after = rig.worker_peak_rss_kib()
    _, direct_parts = stream(rig.direct_url(), {"Accept-Encoding": "identity"})
    assert size >= STUDY_MB * 1000 * 1000
    assert len(via_parts) == STUDY_MB // 2 and via_parts == direct_parts
    print(f"\nrelayed {size / 1e6:.0f} MB; worker peak RSS {before / 1024:.1f} MiB -> {after / 1024:.1f} MiB")
    assert after - before < GROWTH_LIMIT_KIB, f"peak RSS grew by {(after - before) / 1024:.1f} MiB"
