"""The circuit breaker counts only failures of an archive (docs/security.md, S1.10): transport failures,
upstream 5xx and timeouts. Back-pressure (429, or 503 with Retry-After) is an archive that is up and
busy: it is honoured (the archive is skipped until then, at most `circuit_breaker.cooldown_s`, with an
`incomplete` outcome) and never counted as a failure, so a busy archive cannot open its circuit.

The archive is a real Orthanc behind the real HTTP fault proxy (tests/infra/faultproxy.py).
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.federation.conftest import FEDERATION, BuildFacade
from tests.federation.support import Federated, TrustServer, issues, issues_naming

pytestmark = pytest.mark.integration

THRESHOLD = FEDERATION["circuit_breaker"]["threshold"]
BACK_PRESSURE = [(429, "30"), (503, "30")]


@pytest.fixture(scope="module")
def multi(manifest: dict[str, Any]) -> dict[str, Any]:
    return manifest["facts"]["multi_trust_patient"]


def breaker(federated: Federated, trust_id: str) -> tuple[str, int]:
    found = next(t for t in federated.services.federation.trusts if t.settings.id == trust_id)
    return found.breaker.state, found.breaker._failures


@pytest.mark.parametrize(("status", "retry_after"), BACK_PRESSURE, ids=["429", "503"])
def test_back_pressure_never_counts_as_a_failure(
    build_facade: BuildFacade,
    trust_servers: dict[str, TrustServer],
    multi: dict[str, Any],
    status: int,
    retry_after: str,
) -> None:
    """More back-pressure answers than the threshold: the archive is asked every time (cooldown 0 caps the
    honoured Retry-After at 0 s), each search says it is incomplete, and no failure is counted."""
    federated = build_facade(federation={**FEDERATION, "circuit_breaker": {"threshold": THRESHOLD, "cooldown_s": 0}})
    trust = sorted(multi["trusts"])[0]
    proxy = trust_servers[trust].proxy
    proxy.set_fault("status", code=status, headers={"Retry-After": retry_after})
    for _ in range(THRESHOLD + 1):
        proxy.clear()
        bundle = federated.patient_search(multi["nhs_number"])
        assert proxy.requests, "a busy archive was skipped as if its circuit had opened"
        named = issues_naming(bundle, federated.names[trust], "incomplete")
        assert any(f"HTTP {status}, retry after {retry_after} s" in i["diagnostics"] for i in named), issues(bundle)
        assert breaker(federated, trust) == ("closed", 0)

    # A real failure afterwards is the first one counted: back-pressure left nothing behind.
    proxy.set_fault("status", code=503)
    federated.patient_search(multi["nhs_number"])
    assert breaker(federated, trust) == ("closed", 1)
    proxy.set_fault("none")
    bundle = federated.patient_search(multi["nhs_number"])
    assert not issues_naming(bundle, federated.names[trust]), issues(bundle)
    assert breaker(federated, trust) == ("closed", 0)


def test_retry_after_is_honoured_without_a_failure(
    build_facade: BuildFacade, trust_servers: dict[str, TrustServer], multi: dict[str, Any]
) -> None:
    """503 with Retry-After: 600 once: the next search does not ask the archive (the back-off, at most the
    cooldown of 60 s here) and says why; the failure count stays 0, so a busy archive never opens its circuit."""
    federated = build_facade(federation={**FEDERATION, "circuit_breaker": {"threshold": THRESHOLD, "cooldown_s": 60}})
    trust = sorted(multi["trusts"])[0]
    proxy = trust_servers[trust].proxy
    proxy.set_fault("status", code=503, headers={"Retry-After": "600"}, times=1)
    bundle = federated.patient_search(multi["nhs_number"])
    named = issues_naming(bundle, federated.names[trust], "incomplete")
    assert any("HTTP 503, retry after 600 s" in i["diagnostics"] for i in named), issues(bundle)
    proxy.clear()
    bundle = federated.patient_search(multi["nhs_number"])
    assert proxy.requests == [], "the archive was asked before its Retry-After"
    named = issues_naming(bundle, federated.names[trust], "incomplete")
    assert any("asked to be retried later" in i["diagnostics"] for i in named), issues(bundle)
    assert breaker(federated, trust) == ("open", 0)  # skipped for now, no failure counted
