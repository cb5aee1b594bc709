"""S1, bounded upstream cost (docs/security.md), end to end over real archives.

A search's cost to one archive is capped before anything is asked of anyone: values per parameter
(`search.max_values_per_parameter`) and queries per archive (`federation.max_queries_per_archive`);
over either it is refused with 400 too-costly, and the fault proxies in front of the eight Orthancs
count the requests that reached them (none). What stays within the caps is bounded again where an
answer can grow: QIDO-RS pages per query (`federation.max_pages`) and the studies whose series a
DIMSE archive is asked for one C-FIND each (`federation.max_study_reads`, counted in dcmqrscp's own
log). Reaching those is an `incomplete` outcome, never a failure: no circuit breaker opens.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

from app import create_app
from app.core.identity import nhs_check_digit
from app.settings import settings_from_document
from app.web.components import components
from tests.federation.conftest import FEDERATION, BuildFacade
from tests.federation.support import Federated, TrustServer, issues, issues_naming, match_ids
from tests.infra.dcmqrscp import DcmqrscpServer

try:  # pytest "prepend" import mode puts tests/ on sys.path (tests/conftest.py does the same)
    from fhir_validation import validate_resource
    from smart_tokens import system_token
except ImportError:  # pragma: no cover - tests/ turned into a package
    from tests.fhir_validation import validate_resource  # type: ignore[no-redef]
    from tests.smart_tokens import system_token  # type: ignore[no-redef]

pytestmark = pytest.mark.integration

THRESHOLD = FEDERATION["circuit_breaker"]["threshold"]
SLOW_S = 0.3  # a delay per upstream request: enough that an uncapped plan overruns the 2 s archive budget


def nhs_numbers(count: int, first: int = 999_100_000) -> list[str]:
    """`count` valid NHS numbers (Modulus 11) in the 999 test range that the demo data does not use."""
    found: list[str] = []
    stem = first
    while len(found) < count:
        digit = nhs_check_digit(f"{stem:09d}")
        if digit is not None:
            found.append(f"{stem:09d}{digit}")
        stem += 1
    return found


def uids(count: int, root: str) -> str:
    return ",".join(f"2.25.{root}{n}" for n in range(1, count + 1))


@pytest.fixture(scope="module")
def multi(manifest: dict[str, Any]) -> dict[str, Any]:
    return manifest["facts"]["multi_trust_patient"]


@pytest.fixture(scope="module")
def studies_by_patient(manifest: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    return {p["nhs_number"]: p["studies"] for p in manifest["patients"]}


def requests_made(federated: Federated) -> dict[str, list[tuple[str, str]]]:
    return {trust: found for trust, found in federated.requests_by_trust().items() if found}


def breakers(federated: Federated) -> dict[str, tuple[str, int]]:
    """Each trust's circuit: (state, consecutive failures counted)."""
    return {t.settings.id: (t.breaker.state, t.breaker._failures) for t in federated.services.federation.trusts}


def all_closed(federated: Federated) -> dict[str, tuple[str, int]]:
    return {t.settings.id: ("closed", 0) for t in federated.services.federation.trusts}


def too_costly(body: dict[str, Any]) -> dict[str, Any]:
    validate_resource(body)
    assert body["resourceType"] == "OperationOutcome", body
    [issue] = body["issue"]
    assert (issue["severity"], issue["code"]) == ("error", "too-costly"), issue
    return issue


def post_search(federated: Federated, form: dict[str, str]) -> Any:
    """POST ImagingStudy/_search with a form body, as a client would send it."""
    return federated.app.test_client().post(
        "/fhir/ImagingStudy/_search",
        data=form,
        headers={"Authorization": f"Bearer {system_token(federated.app)}"},
    )


# --------------------------------------------------------------------------- values per parameter

# (parameter, its 21 values, other criteria): each parameter alone over the cap of 20.
TWENTY_ONE: list[tuple[str, str, list[tuple[str, str]]]] = [
    ("patient", ",".join(nhs_numbers(21)), []),
    ("_id", uids(21, "8001"), []),
    ("series", uids(21, "8002"), [("patient", "9992975962")]),
    ("instance", uids(21, "8003"), [("patient", "9992975962")]),
    ("identifier", ",".join(f"ACC{n:05d}" for n in range(1, 22)), [("patient", "9992975962")]),
]


@pytest.mark.parametrize(("parameter", "values", "others"), TWENTY_ONE, ids=[c[0] for c in TWENTY_ONE])
def test_twenty_one_values_of_one_parameter_refused_before_any_request(
    federated: Federated, parameter: str, values: str, others: list[tuple[str, str]]
) -> None:
    response = federated.client.get("/ImagingStudy", [(parameter, values), *others])
    assert response.status_code == 400, response.get_json()
    issue = too_costly(response.get_json())
    assert issue["expression"] == [parameter]
    assert "21" in issue["diagnostics"] and "at most 20 values" in issue["diagnostics"]
    assert "search.max_values_per_parameter" in issue["diagnostics"]
    assert requests_made(federated) == {}, "a refused search reached an archive"
    assert breakers(federated) == all_closed(federated)


def test_twenty_values_and_result_parameters_are_not_refused(federated: Federated) -> None:
    """The cap is 20, not 19; `_elements` (result parameters) is not counted, however many it names."""
    elements = ",".join(["identifier", "subject", "started", *["series"] * 20])
    bundle = federated.search(("_id", uids(20, "8004")), ("_elements", elements), ("_include", "ImagingStudy:patient"))
    assert bundle["resourceType"] == "Bundle" and match_ids(bundle) == []
    made = requests_made(federated)
    assert set(made) == set(federated.servers), "every archive is asked about the 20 study UIDs"
    for trust, found in made.items():
        [(_method, target)] = found  # one query, the 20 UIDs in one list (none found: no series asked)
        assert target.startswith("/dicom-web/studies?StudyInstanceUID=") and target.count(",") == 19, (trust, target)


# --------------------------------------------------------------------------- queries per archive


def test_post_search_whose_plan_is_over_the_cap_refused_before_any_request(
    federated: Federated, multi: dict[str, Any]
) -> None:
    """The S1 probe: a small POST _search whose patient x series lists multiply into archive queries."""
    form = {"patient": f"{multi['nhs_number']},{nhs_numbers(1)[0]}", "series": uids(3, "8005")}
    response = post_search(federated, form)
    assert response.status_code == 400, response.get_json()
    issue = too_costly(response.get_json())
    assert "6 queries (patient x series: 2 x 3)" in issue["diagnostics"]
    assert "cap of 4" in issue["diagnostics"]
    assert "federation.max_queries_per_archive.dicomweb" in issue["diagnostics"]
    assert requests_made(federated) == {}, "a refused search reached an archive"
    assert breakers(federated) == all_closed(federated)


def test_plan_of_four_queries_per_archive_is_answered(federated: Federated, multi: dict[str, Any]) -> None:
    response = post_search(
        federated, {"patient": f"{multi['nhs_number']},{nhs_numbers(1)[0]}", "series": uids(2, "8006")}
    )
    assert response.status_code == 200, response.get_json()
    assert requests_made(federated), "a search within the cap asks the archives"


def test_over_cap_searches_never_count_against_a_breaker(
    federated: Federated, trust_servers: dict[str, TrustServer], multi: dict[str, Any], studies_by_patient: Any
) -> None:
    """S1: three over-cap searches opened a trust's circuit (their own size overran its budget), so
    every user's searches came back incomplete. Refused before any I/O, they touch no breaker."""
    nhs = multi["nhs_number"]
    slow = sorted(t for t, facts in multi["trusts"].items() if facts["identity"] == "nhs")[0]
    trust_servers[slow].proxy.set_fault("delay", seconds=SLOW_S)
    form = {"patient": f"{nhs},{nhs_numbers(1)[0]}", "series": uids(10, "8007")}  # 20 queries per archive
    answers = [post_search(federated, form) for _ in range(THRESHOLD + 1)]
    assert breakers(federated) == all_closed(federated)
    assert [a.status_code for a in answers] == [400] * (THRESHOLD + 1)
    assert requests_made(federated) == {}

    bundle = federated.patient_search(nhs)  # the slow archive still answers a search within the caps
    assert set(match_ids(bundle)) == {s["study_uid"] for s in studies_by_patient[nhs]}, issues(bundle)
    assert not [i for i in issues(bundle) if i["code"] == "incomplete"]


@pytest.mark.parametrize("status", [413, 400, 401])
def test_an_archive_refusing_a_query_is_not_a_failing_archive(
    federated: Federated, trust_servers: dict[str, TrustServer], multi: dict[str, Any], status: int
) -> None:
    """An archive that answers 4xx (413: the query too broad) is up: its refusal is reported, and its
    circuit is never opened by it, so one client's queries cannot take a trust out for everyone."""
    nhs = multi["nhs_number"]
    trust = sorted(multi["trusts"])[0]
    proxy = trust_servers[trust].proxy
    proxy.set_fault("status", code=status)
    try:
        for _ in range(THRESHOLD + 1):
            bundle = federated.patient_search(nhs)
            named = issues_naming(bundle, federated.names[trust], "incomplete")
            assert any(f"HTTP {status}" in i["diagnostics"] for i in named), issues(bundle)
        assert breakers(federated) == all_closed(federated)
        proxy.set_fault("none")
        proxy.clear()
        federated.patient_search(nhs)
        assert proxy.requests, "the trust is still asked: its circuit stayed closed"
    finally:
        proxy.set_fault("none")


# --------------------------------------------------------------------------- pages per query


def test_page_cap_is_an_incomplete_answer_not_a_failure(
    build_facade: BuildFacade, trust_servers: dict[str, TrustServer], multi: dict[str, Any], studies_by_patient: Any
) -> None:
    """An answer that goes on past federation.max_pages is cut there: an `incomplete` outcome naming the
    cap, within the archive's budget (no deadline overrun), and the archive's circuit stays closed."""
    nhs = multi["nhs_number"]
    studies = studies_by_patient[nhs]
    paged = max(sorted(multi["trusts"]), key=lambda t: sum(t in s["trusts"] for s in studies))
    assert sum(paged in s["trusts"] for s in studies) >= 2  # page 2 is full too: the answer goes on
    federated = build_facade(archives={paged: {"page_size": 1}}, federation={**FEDERATION, "max_pages": 2})
    proxy = trust_servers[paged].proxy
    proxy.set_fault("delay", seconds=SLOW_S)  # every page costs time: uncapped, the series pages overrun 2 s
    for _ in range(THRESHOLD + 1):
        proxy.clear()
        bundle = federated.patient_search(nhs)
        offsets = [t.split("offset=")[1] for _m, t in proxy.requests if "/studies?" in t]
        assert offsets == ["0", "1"], proxy.requests
        assert len([t for _m, t in proxy.requests if "/series?" in t]) == 2
        cut = issues_naming(bundle, federated.names[paged], "incomplete")
        assert any("more than 2 results (2 pages, federation.max_pages)" in i["diagnostics"] for i in cut), cut
        assert not any("did not answer" in i["diagnostics"] for i in cut), cut
    assert breakers(federated) == all_closed(federated)


# --------------------------------------------------------------------------- DIMSE: studies read one by one

DIMSE_TRUST = "wwl"  # PatientID = NHS number, issuer NHS


@pytest.fixture(scope="module")
def verbose_dcmqrscp(demo_data: Path) -> Iterator[DcmqrscpServer]:
    """The trust's demo files in a real dcmqrscp that logs every C-FIND it receives (-v)."""
    with DcmqrscpServer(aet="WWLPACS", extra_args=["-v"]) as server:
        server.store(sorted((demo_data / DIMSE_TRUST).rglob("*.dcm")))
        yield server


@pytest.fixture()
def dimse_app(
    config_document: dict[str, Any], demo_data: Path, verbose_dcmqrscp: DcmqrscpServer, tmp_path: Path
) -> Iterator[Flask]:
    """The demo facade with wwl answering by C-FIND, and at most two studies' series read per search."""
    doc = copy.deepcopy(config_document)
    doc["audit"] = {"path": str(tmp_path / "audit.sqlite")}
    doc["auth"]["signing_keys"] = str(tmp_path / "keys.json")
    doc["auth"]["store"] = f"sqlite:{tmp_path / 'auth.sqlite'}"
    doc["federation"] = {**doc.get("federation", {}), "max_study_reads": 2}
    for trust in doc["trusts"]:
        if trust["id"] == DIMSE_TRUST:
            trust["archive"] = {
                "type": "dimse",
                "host": verbose_dcmqrscp.host,
                "port": verbose_dcmqrscp.port,
                "called_aet": verbose_dcmqrscp.aet,
                "timeout_s": 5,
            }
    app = create_app(settings_from_document(doc, demo_data, "tests/federation/bounded-cost"))
    yield app
    components(app).services.close()


def series_finds(server: DcmqrscpServer) -> int:
    """SERIES-level C-FIND requests in the archive's own log."""
    lines = server.log_path.read_text(encoding="utf-8", errors="replace").splitlines()
    return sum("[SERIES]" in line and "QueryRetrieveLevel" in line for line in lines)


def test_dimse_series_read_for_at_most_max_study_reads_studies(
    dimse_app: Flask, verbose_dcmqrscp: DcmqrscpServer, manifest: dict[str, Any]
) -> None:
    """A DIMSE archive costs one SERIES C-FIND per study: only the newest `max_study_reads` studies are
    read, the others left out with an `incomplete` outcome naming the cap; the circuit stays closed."""
    patient = max(manifest["patients"], key=lambda p: sum(s["trusts"] == [DIMSE_TRUST] for s in p["studies"]))
    only_there = [s for s in patient["studies"] if s["trusts"] == [DIMSE_TRUST]]
    assert len(only_there) >= 3
    newest = sorted(only_there, key=lambda s: (s["study_date"] or "", s["study_time"] or "", s["study_uid"]))[-2:]
    before = series_finds(verbose_dcmqrscp)
    response = dimse_app.test_client().get(
        f"/fhir/ImagingStudy?patient={patient['nhs_number']}&_count=200",
        headers={"Authorization": f"Bearer {system_token(dimse_app)}"},
    )
    assert response.status_code == 200
    bundle = response.get_json()
    validate_resource(bundle)
    found = set(match_ids(bundle))
    assert found & {s["study_uid"] for s in only_there} == {s["study_uid"] for s in newest}
    assert found >= {s["study_uid"] for s in patient["studies"] if s["trusts"] != [DIMSE_TRUST]}
    name = next(
        t.settings.name for t in components(dimse_app).services.federation.trusts if t.settings.id == DIMSE_TRUST
    )
    cut = issues_naming(bundle, name, "incomplete")
    assert any("federation.max_study_reads" in i["diagnostics"] for i in cut), issues(bundle)
    deadline = time.monotonic() + 2  # the log is written by another process
    while series_finds(verbose_dcmqrscp) - before < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.2)
    assert series_finds(verbose_dcmqrscp) - before == 2
    wwl = next(t for t in components(dimse_app).services.federation.trusts if t.settings.id == DIMSE_TRUST)
    assert (wwl.breaker.state, wwl.breaker._failures) == ("closed", 0)
