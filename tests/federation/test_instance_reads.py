"""S1 residual (docs/security.md, S1.9): reads of instance-level metadata (one instance query per study, for a
read or a dicom-class or instance search, at any archive) have their own per-search cap,
`federation.max_instance_reads`, apart from `federation.max_study_reads` (a DIMSE archive's series, one
C-FIND per study). Before, both shared max_study_reads.

Counted at the fault proxy in front of the real Orthanc of the trust holding most of a patient's studies.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.federation.conftest import FEDERATION, BuildFacade
from tests.federation.support import Federated, TrustServer, issues, issues_naming

pytestmark = pytest.mark.integration

CT, MR = "1.2.840.10008.5.1.4.1.1.2", "1.2.840.10008.5.1.4.1.1.4"  # any class: every study's instances are read


@pytest.fixture(scope="module")
def patient(manifest: dict[str, Any]) -> dict[str, Any]:
    found: dict[str, Any] = manifest["facts"]["multi_trust_patient"]
    return found


@pytest.fixture(scope="module")
def busiest(manifest: dict[str, Any], patient: dict[str, Any]) -> tuple[str, int]:
    """The trust holding most of the patient's studies, and how many it holds (at least 2)."""
    studies = next(p["studies"] for p in manifest["patients"] if p["nhs_number"] == patient["nhs_number"])
    counts = {t: sum(t in s["trusts"] for s in studies) for t in patient["trusts"]}
    trust = max(sorted(counts), key=lambda t: counts[t])
    assert counts[trust] >= 2
    return trust, counts[trust]


def instance_reads(server: TrustServer) -> int:
    return sum("/instances?" in target for _m, target in server.proxy.requests)


def dicom_class_search(federated: Federated, nhs: str) -> dict[str, Any]:
    return federated.search(("patient", nhs), ("dicom-class", f"{CT},{MR}"))


def test_instance_reads_have_their_own_cap(
    build_facade: BuildFacade, trust_servers: dict[str, TrustServer], patient: dict[str, Any], busiest: Any
) -> None:
    trust, _held = busiest
    federated = build_facade(federation={**FEDERATION, "max_instance_reads": 1})
    bundle = dicom_class_search(federated, patient["nhs_number"])
    assert instance_reads(trust_servers[trust]) == 1
    cut = issues_naming(bundle, federated.names[trust], "incomplete")
    assert any("federation.max_instance_reads" in i["diagnostics"] for i in cut), issues(bundle)
    assert not any("did not answer" in i["diagnostics"] for i in cut), cut
    found = next(t for t in federated.services.federation.trusts if t.settings.id == trust)
    assert (found.breaker.state, found.breaker._failures) == ("closed", 0)


def test_max_study_reads_does_not_cap_instance_reads(
    build_facade: BuildFacade, trust_servers: dict[str, TrustServer], patient: dict[str, Any], busiest: Any
) -> None:
    """max_study_reads at 1 bounds a DIMSE archive's series reads only: a DICOMweb archive's instance reads
    go on to the default max_instance_reads, and no outcome names max_study_reads."""
    trust, held = busiest
    federated = build_facade(federation={**FEDERATION, "max_study_reads": 1})
    bundle = dicom_class_search(federated, patient["nhs_number"])
    assert instance_reads(trust_servers[trust]) == held
    assert not [i for i in issues(bundle) if "max_study_reads" in i.get("diagnostics", "")], issues(bundle)
