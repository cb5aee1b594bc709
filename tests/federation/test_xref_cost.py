"""S1 residual (docs/security.md, S1.7): at a trust matched through the cross-reference the archive receives
the patient's local ids, one query each. The cap on the queries of a plan counts them (not the NHS numbers
the request named), and a plan over it is refused with 400 too-costly naming the cap, before any archive
is asked. Before, the local ids multiplied that trust's queries after the check.

A cross-reference CSV of the demo's plus a fresh patient with five local ids and one with two, at one xref
trust; the eight real Orthancs behind their fault proxies count the requests (none for a refusal).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from app.core.identity import nhs_check_digit
from tests.federation.conftest import BuildFacade
from tests.federation.support import Federated, issues

try:  # pytest "prepend" import mode puts tests/ on sys.path (tests/conftest.py does the same)
    from fhir_validation import validate_resource
except ImportError:  # pragma: no cover - tests/ turned into a package
    from tests.fhir_validation import validate_resource  # type: ignore[no-redef]

pytestmark = pytest.mark.integration

XREF_TRUST = "christie"  # nhs_number: {match: xref} in config/demo.yaml


def fresh_nhs_numbers(count: int, stem: int = 999_120_000) -> list[str]:
    found: list[str] = []
    while len(found) < count:
        digit = nhs_check_digit(f"{stem:09d}")
        if digit is not None:
            found.append(f"{stem:09d}{digit}")
        stem += 1
    return found


FIVE_IDS, TWO_IDS = fresh_nhs_numbers(2)


@pytest.fixture()
def xref_facade(build_facade: BuildFacade, demo_data: Path, tmp_path: Path) -> Federated:
    rows = [f"{FIVE_IDS},{XREF_TRUST},H12-FIVE-{n},\n" for n in range(1, 6)]
    rows += [f"{TWO_IDS},{XREF_TRUST},H12-TWO-{n},\n" for n in range(1, 3)]
    csv = tmp_path / "xref.csv"
    csv.write_text((demo_data / "xref.csv").read_text(encoding="utf-8") + "".join(rows), encoding="utf-8")
    return build_facade(patient_xref=csv)


def requests_made(federated: Federated) -> dict[str, list[tuple[str, str]]]:
    return {trust: found for trust, found in federated.requests_by_trust().items() if found}


def refused(federated: Federated, query: list[tuple[str, str]]) -> str:
    response = federated.client.get("/ImagingStudy", query)
    assert response.status_code == 400, response.get_json()
    body = response.get_json()
    validate_resource(body)
    [issue] = body["issue"]
    assert (issue["severity"], issue["code"]) == ("error", "too-costly"), issue
    assert requests_made(federated) == {}, "a refused search reached an archive"
    assert all(t.breaker.state == "closed" for t in federated.services.federation.trusts)
    return str(issue["diagnostics"])


def test_local_ids_of_one_patient_over_the_cap_refused_before_any_request(xref_facade: Federated) -> None:
    """One NHS number (within every cap as the request counts it) that one xref trust files under five
    local ids: five queries to that archive, over its cap of 4."""
    diagnostics = refused(xref_facade, [("patient", FIVE_IDS)])
    assert "5 queries (local patient ids: 5)" in diagnostics
    assert "cap of 4" in diagnostics and "federation.max_queries_per_archive.dicomweb" in diagnostics
    assert FIVE_IDS not in diagnostics and "H12-FIVE" not in diagnostics  # names no patient


def test_local_ids_times_series_over_the_cap_refused(xref_facade: Federated) -> None:
    """Two local ids x three series: 6 queries, though the request alone counts 1 x 3."""
    series = ",".join(f"2.25.812{n}" for n in range(1, 4))
    diagnostics = refused(xref_facade, [("patient", TWO_IDS), ("series", series)])
    assert "6 queries (local patient ids x series: 2 x 3)" in diagnostics and "cap of 4" in diagnostics


def test_local_ids_within_the_cap_are_asked(xref_facade: Federated) -> None:
    """Two local ids x two series: 4 queries, at the cap; the xref trust is asked for both local ids."""
    series = ",".join(f"2.25.813{n}" for n in range(1, 3))
    bundle = xref_facade.search(("patient", TWO_IDS), ("series", series))
    assert bundle["resourceType"] == "Bundle", issues(bundle)
    asked = " ".join(target for _m, target in xref_facade.servers[XREF_TRUST].proxy.requests)
    assert "H12-TWO-1" in asked and "H12-TWO-2" in asked
