"""The federated facade end to end over eight real Orthanc archives, each behind a fault proxy.

Each trust's Orthanc holds that trust's demo folder; the facade is configured as config/demo.yaml
(same NHS-number rules, same xref) with every archive a DICOMweb one. Expected studies come from
the demo manifest and from the embedded (folder) facade of tests/conftest.py (`client`); faults are
injected by real HTTP proxies; nothing is mocked. docs/clinical-safety.md cites these test names.
"""

from __future__ import annotations

import copy
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pydicom
import pytest

from app.archives.dicomweb.qido import DicomWebArchive
from app.core.query import PatientKey, StudyQuery
from tests.federation.conftest import ARCHIVE_TIMEOUT_S, FEDERATION, BuildFacade
from tests.federation.support import (
    Federated,
    TrustServer,
    delete_study,
    disk_series,
    endpoint_trusts,
    issues,
    issues_naming,
    match_ids,
    matches,
    series_uids,
)
from tests.infra import free_port
from tools.demo.generate import TRUSTS_BY_ID

pytestmark = pytest.mark.integration

NHS_SYSTEM = "https://fhir.nhs.uk/Id/nhs-number"
DICOM_JSON = "application/dicom+json"


# --------------------------------------------------------------------------- the dataset


@pytest.fixture(scope="module")
def multi(manifest: dict[str, Any]) -> dict[str, Any]:
    return manifest["facts"]["multi_trust_patient"]


@pytest.fixture(scope="module")
def studies_by_patient(manifest: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    return {p["nhs_number"]: p["studies"] for p in manifest["patients"]}


@pytest.fixture(scope="module")
def busiest(multi: dict[str, Any], studies_by_patient: dict[str, Any]) -> list[str]:
    """The multi-trust patient's trusts, those holding most of the patient's studies first."""
    studies = studies_by_patient[multi["nhs_number"]]
    return sorted(multi["trusts"], key=lambda t: (-len(held_by(studies, t)), t))


@pytest.fixture(scope="module")
def faulty(busiest: list[str], multi: dict[str, Any], studies_by_patient: dict[str, Any]) -> str:
    """The trust the fault matrix breaks: the one holding most of the patient's studies (>= 2, for paging)."""
    assert len(held_by(studies_by_patient[multi["nhs_number"]], busiest[0])) >= 2
    return busiest[0]


def trust_of_style(multi: dict[str, Any], style: str) -> str:
    return sorted(t for t, facts in multi["trusts"].items() if facts["identity"] == style)[0]


def held_by(studies: list[dict[str, Any]], trust: str) -> set[str]:
    return {s["study_uid"] for s in studies if trust in s["trusts"]}


def held_elsewhere(studies: list[dict[str, Any]], trust: str) -> set[str]:
    return {s["study_uid"] for s in studies if set(s["trusts"]) - {trust}}


def only_at(studies: list[dict[str, Any]], trust: str) -> set[str]:
    return {s["study_uid"] for s in studies if s["trusts"] == [trust]}


def direct_studies(server: TrustServer, key: PatientKey) -> list[dict[str, Any]]:
    """What the trust's Orthanc itself answers (no proxy), as the adapter asks for it."""
    archive = DicomWebArchive(server.trust_id, server.orthanc.dicomweb_url, timeout_s=10)
    try:
        return archive.find_studies(StudyQuery(patient=key)).datasets
    finally:
        archive.close()


def comparable(study: dict[str, Any]) -> dict[str, Any]:
    """The parts of an ImagingStudy that a DICOMweb archive must give exactly as the folder does."""
    return {
        "subject": study["subject"].get("reference"),
        "started": study.get("started"),
        "numberOfSeries": study.get("numberOfSeries"),
        "numberOfInstances": study.get("numberOfInstances"),
        "modality": sorted(c["code"] for c in study.get("modality", ())),
        "description": study.get("description"),
        "endpoints": sorted(endpoint_trusts(study)),
        "series": sorted(
            (
                s["uid"],
                s.get("number"),
                s["modality"]["code"],
                s.get("numberOfInstances"),
                s.get("description"),
                str(s.get("bodySite")),
                str(s.get("endpoint")),
            )
            for s in study.get("series", ())
        ),
    }


# --------------------------------------------------------------------------- identity and merging


def test_patient_search_across_three_archives_two_identity_styles(
    federated: Federated, client: Any, multi: dict[str, Any], studies_by_patient: dict[str, Any]
) -> None:
    nhs = multi["nhs_number"]
    embedded = client.get("/fhir/ImagingStudy", query_string={"patient": nhs, "_count": "200"}).get_json()
    bundle = federated.patient_search(nhs)
    expected_ids = match_ids(embedded)
    assert sorted(expected_ids) == sorted(s["study_uid"] for s in studies_by_patient[nhs])
    assert match_ids(bundle) == expected_ids  # same studies, same order
    assert bundle["total"] == len(expected_ids)
    for study in matches(bundle):
        assert study["subject"]["reference"] == f"Patient/{nhs}"
        assert study["subject"]["identifier"] == {"system": NHS_SYSTEM, "value": nhs}
    by_id = {s["id"]: s for s in matches(embedded)}
    for study in matches(bundle):
        assert comparable(study) == comparable(by_id[study["id"]]), study["id"]
    trusts = set().union(*(endpoint_trusts(s) for s in matches(bundle)))
    assert len(trusts) >= 3 and trusts == set(multi["trusts"])
    styles = {TRUSTS_BY_ID[t].identity for t in trusts}
    assert styles == {"nhs", "xref"}
    assert not [i for i in issues(bundle) if i["code"] in ("incomplete", "conflict")]


def test_shared_study_merged_once(federated: Federated, manifest: dict[str, Any], demo_data: Path) -> None:
    shared = manifest["facts"]["shared_study"]
    uid, first, second = shared["study_uid"], shared["trusts"][0], shared["extra_series_trust"]
    union = disk_series(demo_data, first, uid) | disk_series(demo_data, second, uid)
    assert disk_series(demo_data, first, uid) < union  # the second trust holds a series the first has not
    for query in (("patient", shared["nhs_number"]), ("_id", uid), ("identifier", f"urn:dicom:uid|urn:oid:{uid}")):
        bundle = federated.search(query)
        found = [s for s in matches(bundle) if s["id"] == uid]
        assert len(found) == 1, query
        assert len(match_ids(bundle)) == len(set(match_ids(bundle)))
        study = found[0]
        assert series_uids(study) == union
        assert study["numberOfSeries"] == len(union) == len(study["series"])
        assert study["endpoint"] == [{"reference": f"Endpoint/{first}-wado-rs"}]
        for series in study["series"]:
            if series["uid"] == shared["extra_series_uid"]:
                assert series["endpoint"] == [{"reference": f"Endpoint/{second}-wado-rs"}]
            else:
                assert "endpoint" not in series, series["uid"]
        assert not issues_naming(bundle, uid)
    read = federated.client.get(f"/ImagingStudy/{uid}")
    assert read.status_code == 200
    assert series_uids(read.get_json()) == union


def _copy_study(source: Path, out: Path, patient_id: str, **changes: Any) -> list[Path]:
    """The study's files with the patient identity changed (UIDs kept: the same study)."""
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for file in sorted(source.rglob("*.dcm")):
        ds = pydicom.dcmread(file)
        ds.PatientID = patient_id
        for keyword, value in changes.items():
            setattr(ds, keyword, value)
        for keyword in ("OtherPatientIDsSequence", "IssuerOfPatientIDQualifiersSequence"):
            if keyword in ds and keyword not in changes:
                del ds[keyword]
        target = out / f"{file.stem}.dcm"
        ds.save_as(target)
        written.append(target)
    return written


@pytest.fixture()
def two_patient_study(
    trust_servers: dict[str, TrustServer], manifest: dict[str, Any], demo_data: Path, tmp_path: Path
) -> Iterator[dict[str, Any]]:
    """One salford study of patient A copied into pennine's archive under patient B (removed afterwards)."""
    facts = manifest["facts"]
    special = {
        facts["multi_trust_patient"]["nhs_number"],
        facts["demographic_conflict"]["nhs_number"],
        facts["shared_study"]["nhs_number"],
    }
    patients = [p for p in manifest["patients"] if p["nhs_number"] not in special]
    a = next(p for p in patients if any(s["trusts"] == ["salford"] for s in p["studies"]))
    b = next(p for p in patients if p is not a and "pennine" in p["trusts"] and "salford" not in p["trusts"])
    study = next(s for s in a["studies"] if s["trusts"] == ["salford"])
    files = _copy_study(
        demo_data / "salford" / study["study_uid"], tmp_path / "copy", b["nhs_number"], IssuerOfPatientID="NHS"
    )
    target = trust_servers["pennine"].orthanc
    answers = target.upload(files)
    try:
        yield {
            "uid": study["study_uid"],
            "a": a["nhs_number"],
            "b": b["nhs_number"],
            "series": disk_series(demo_data, "salford", study["study_uid"]),
        }
    finally:
        for orthanc_study in sorted({answer["ParentStudy"] for answer in answers}):
            delete_study(target, orthanc_study)


def test_study_under_two_patients_is_withheld(federated: Federated, two_patient_study: dict[str, Any]) -> None:
    uid, a, b = two_patient_study["uid"], two_patient_study["a"], two_patient_study["b"]
    salford, pennine = federated.names["salford"], federated.names["pennine"]
    for query in (("identifier", f"urn:dicom:uid|urn:oid:{uid}"), ("_id", uid)):
        bundle = federated.search(query)
        assert matches(bundle) == [] and bundle["total"] == 0
        conflict = [i for i in issues_naming(bundle, uid, "conflict") if salford in i["diagnostics"]]
        assert conflict and pennine in conflict[0]["diagnostics"], issues(bundle)
    read = federated.client.get(f"/ImagingStudy/{uid}")
    assert read.status_code == 409
    outcome = read.get_json()
    assert outcome["resourceType"] == "OperationOutcome" and outcome["issue"][0]["code"] == "conflict"
    # Each patient's own search: never the two copies merged, never under the other patient.
    for nhs, holder in ((a, "salford"), (b, "pennine")):
        shown = [s for s in matches(federated.patient_search(nhs)) if s["id"] == uid]
        for study in shown:
            assert study["subject"]["reference"] == f"Patient/{nhs}"
            assert endpoint_trusts(study) == {holder}
            assert series_uids(study) == two_patient_study["series"]


WRONG_PATIENT_CASES = {
    # identity style of the trust, then what the archive's extra record says:
    # PatientID ("other": another patient's NHS number), IssuerOfPatientID, OtherPatientIDsSequence NHS number
    "nhs-trust-other-nhs-number": ("nhs", "other", "NHS", None),
    "nhs-trust-other-issuer": ("nhs", "same", "{ods}", None),
    "xref-trust-other-issuer": ("xref", "same", "{ods}-LEGACY", None),
    "xref-trust-other-ids-name-another-nhs-number": ("xref", "same", "{ods}", "other"),
}


@pytest.mark.parametrize("case", list(WRONG_PATIENT_CASES))
def test_wrong_patient_record_withheld(
    federated: Federated,
    trust_servers: dict[str, TrustServer],
    multi: dict[str, Any],
    manifest: dict[str, Any],
    case: str,
) -> None:
    """An archive that over-matches (ignores IssuerOfPatientID, matches loosely) answers a study
    whose own identity is not the searched patient's: it must not be shown under that patient.

    The archive's answer is its real answer for the patient plus one extra record, served by the
    trust's proxy (a real HTTP answer, as a non-conformant archive would give it).
    """
    style, pid, issuer, other_ids = WRONG_PATIENT_CASES[case]
    trust = trust_of_style(multi, style)
    nhs = multi["nhs_number"]
    other = next(p["nhs_number"] for p in manifest["patients"] if p["nhs_number"] != nhs)
    facts = multi["trusts"][trust]
    server = trust_servers[trust]
    real = direct_studies(server, PatientKey(facts["patient_id"], facts["issuer"]))
    assert real
    extra = copy.deepcopy(real[0])
    extra_uid = f"2.25.{uuid.uuid4().int}"
    extra["0020000D"] = {"vr": "UI", "Value": [extra_uid]}
    extra["00100020"] = {"vr": "LO", "Value": [other if pid == "other" else facts["patient_id"]]}
    extra["00100021"] = {"vr": "LO", "Value": [issuer.format(ods=TRUSTS_BY_ID[trust].ods_code)]}
    if other_ids:
        extra["00101002"] = {
            "vr": "SQ",
            "Value": [{"00100020": {"vr": "LO", "Value": [other]}, "00100021": {"vr": "LO", "Value": ["NHS"]}}],
        }
    # Only the /studies answer is doctored: /studies and /series go out together, in either order.
    server.proxy.set_fault(
        "status",
        times=1,
        only="/studies?",
        code=200,
        body=orjson.dumps([*real, extra]),
        headers={"Content-Type": DICOM_JSON},
    )
    bundle = federated.patient_search(nhs)
    assert len(server.proxy.requests) == 2  # the doctored studies answer, then the real series
    ids = match_ids(bundle)
    assert extra_uid not in ids, (
        f"{case}: {trust} answered a record of PatientID {extra['00100020']['Value'][0]} "
        f"issuer {extra['00100021']['Value'][0]}; it was shown under Patient/{nhs}"
    )
    assert {str(d["0020000D"]["Value"][0]) for d in real} <= set(ids)
    assert issues_naming(bundle, federated.names[trust], "conflict"), issues(bundle)
    assert all(s["subject"]["reference"] == f"Patient/{nhs}" for s in matches(bundle))


def test_wrong_issuer_record_in_a_real_archive_is_not_matched(
    federated: Federated, trust_servers: dict[str, TrustServer], multi: dict[str, Any], demo_data: Path, tmp_path: Path
) -> None:
    """A study filed under the patient's NHS number but in another issuer's namespace (a local MRN
    that happens to coincide) stays out: the facade sends IssuerOfPatientID and Orthanc matches it."""
    nhs = multi["nhs_number"]
    trust = trust_of_style(multi, "nhs")
    server = trust_servers[trust]
    source = next(p for p in sorted((demo_data / trust).iterdir()) if p.is_dir())
    study_uid = f"2.25.{uuid.uuid4().int}"
    files = _copy_study(
        source, tmp_path / "copy", nhs, IssuerOfPatientID=TRUSTS_BY_ID[trust].ods_code, StudyInstanceUID=study_uid
    )
    answers = server.orthanc.upload(files)
    try:
        assert study_uid in {d["0020000D"]["Value"][0] for d in direct_studies(server, PatientKey(nhs))}
        bundle = federated.patient_search(nhs)
        assert matches(bundle)
        assert study_uid not in match_ids(bundle)
    finally:
        for orthanc_study in sorted({answer["ParentStudy"] for answer in answers}):
            delete_study(server.orthanc, orthanc_study)


def test_demographic_conflict_warns(federated: Federated, manifest: dict[str, Any]) -> None:
    conflict = manifest["facts"]["demographic_conflict"]
    nhs = conflict["nhs_number"]
    bundle = federated.patient_search(nhs)
    assert matches(bundle)
    warnings = [i for i in issues(bundle) if i["code"] == "conflict" and "birth date" in i["diagnostics"]]
    assert len(warnings) == 1, issues(bundle)
    assert warnings[0]["severity"] == "warning"
    for trust in conflict["birth_dates"]:
        assert federated.names[trust] in warnings[0]["diagnostics"]
    for value in conflict["birth_dates"].values():  # the values themselves are not disclosed
        assert value not in warnings[0]["diagnostics"]


# --------------------------------------------------------------------------- upstream faults


def _closed_port_url() -> str:
    return f"http://127.0.0.1:{free_port()}/dicom-web"


# (case id, fault kind, fault params, archive overrides (callable of the server), expected reason words)
# Expected words None: the trust simply has no studies (no issue).
FAULT_MATRIX: list[tuple[str, str, dict[str, Any], Any, str | None]] = [
    ("empty-200", "empty-200", {}, None, None),
    ("204", "no-content", {}, None, None),
    ("206", "partial-206", {}, None, "partial content (206)"),
    ("400", "status", {"code": 400}, None, "HTTP 400"),
    ("401", "status", {"code": 401}, None, "HTTP 401"),
    ("413", "status", {"code": 413}, None, "HTTP 413"),
    ("429-retry-after", "status", {"code": 429, "headers": {"Retry-After": "5"}}, None, "HTTP 429, retry after 5 s"),
    ("503", "status", {"code": 503}, None, "HTTP 503"),
    ("503-retry-after", "status", {"code": 503, "headers": {"Retry-After": "5"}}, None, "HTTP 503, retry after 5 s"),
    ("500", "status", {"code": 500, "body": '{"error": "boom"}'}, None, "HTTP 500"),
    ("bad-json", "bad-json", {}, None, "malformed JSON"),
    ("wrong-content-type", "wrong-content-type", {}, None, "wrong content type"),
    ("warning-299", "warning-299", {}, None, "Warning 299"),
    # An archive that cuts every answer to one result without saying so (no 206, no Warning 299):
    # R3 wants it reported; the studies' own NumberOfStudyRelatedSeries shows that series are missing.
    ("truncated-below-limit", "truncate", {"count": 1}, lambda s: {"page_size": 2}, ""),
    ("refused", "none", {}, lambda s: {"url": _closed_port_url()}, "connection refused"),
    ("tls-error", "none", {}, lambda s: {"url": f"https://127.0.0.1:{s.proxy.port}/dicom-web"}, "TLS failure"),
    ("hang", "hang", {}, None, "no answer within 2 s"),
    ("reset", "reset", {}, None, "connection refused or reset"),
    ("reset-midstream", "reset-midstream", {}, None, "request failed"),
]


@pytest.mark.parametrize(
    ("kind", "params", "override", "reason"), [c[1:] for c in FAULT_MATRIX], ids=[c[0] for c in FAULT_MATRIX]
)
def test_upstream_fault_matrix(
    build_facade: BuildFacade,
    trust_servers: dict[str, TrustServer],
    faulty: str,
    multi: dict[str, Any],
    studies_by_patient: dict[str, Any],
    kind: str,
    params: dict[str, Any],
    override: Any,
    reason: str | None,
) -> None:
    server = trust_servers[faulty]
    federated = build_facade(archives={faulty: override(server)} if override else None)
    nhs = multi["nhs_number"]
    studies = studies_by_patient[nhs]
    server.proxy.set_fault(kind, **params)
    began = time.monotonic()
    bundle = federated.patient_search(nhs)
    elapsed = time.monotonic() - began
    ids = set(match_ids(bundle))
    assert held_elsewhere(studies, faulty) <= ids, "the other archives' studies are missing"
    assert elapsed < 2 * ARCHIVE_TIMEOUT_S, f"{elapsed:.2f} s"
    named = issues_naming(bundle, federated.names[faulty])
    if reason is None:
        assert not named, named
        assert not ids & only_at(studies, faulty)
        return
    incomplete = [i for i in named if i["code"] == "incomplete"]
    assert incomplete, (
        f"{faulty} answered {len(ids & held_by(studies, faulty))} of its "
        f"{len(held_by(studies, faulty))} studies and no incomplete issue names it: {issues(bundle)}"
    )
    assert any(reason in i["diagnostics"] for i in incomplete), incomplete
    assert all(i["severity"] == "warning" for i in incomplete)
    assert nhs not in " ".join(i["diagnostics"] for i in incomplete)  # outcomes carry no patient data


def test_truncated_at_limit_is_paged_to_completion(
    build_facade: BuildFacade,
    trust_servers: dict[str, TrustServer],
    faulty: str,
    multi: dict[str, Any],
    studies_by_patient: dict[str, Any],
) -> None:
    """An archive that never answers more than `limit` results: the facade pages with offset, loses nothing."""
    server = trust_servers[faulty]
    # Paging costs a request per page: give this trust time for them on a busy machine.
    federated = build_facade(archives={faulty: {"page_size": 2, "timeout_s": 5}})
    nhs = multi["nhs_number"]
    server.proxy.set_fault("truncate", count=2)
    bundle = federated.patient_search(nhs)
    assert set(match_ids(bundle)) == {s["study_uid"] for s in studies_by_patient[nhs]}, issues(bundle)
    assert not issues_naming(bundle, federated.names[faulty])
    offsets = [t.split("offset=")[1] for _m, t in server.proxy.requests if "/studies?" in t]
    held = len(held_by(studies_by_patient[nhs], faulty))
    assert offsets == [str(2 * i) for i in range(held // 2 + 1)]  # full pages, then a short one
    assert all("limit=2&" in t for _m, t in server.proxy.requests)


def test_one_down_one_hanging_one_413_at_once(
    build_facade: BuildFacade,
    trust_servers: dict[str, TrustServer],
    busiest: list[str],
    multi: dict[str, Any],
    studies_by_patient: dict[str, Any],
) -> None:
    down, hanging, too_broad = busiest[:3]
    federated = build_facade(archives={down: {"url": _closed_port_url()}})
    trust_servers[hanging].proxy.set_fault("hang")
    trust_servers[too_broad].proxy.set_fault("status", code=413)
    nhs = multi["nhs_number"]
    began = time.monotonic()
    bundle = federated.patient_search(nhs)
    elapsed = time.monotonic() - began
    # R1 asks for 1.1 x the per-archive timeout; measured here, asserted loosely (shared CI machines).
    print(f"one down, one hanging, one 413: answered in {elapsed:.2f} s ({elapsed / ARCHIVE_TIMEOUT_S:.2f} x timeout)")
    assert elapsed < 2 * ARCHIVE_TIMEOUT_S, f"answered in {elapsed:.2f} s"
    studies = studies_by_patient[nhs]
    healthy = {s["study_uid"] for s in studies if set(s["trusts"]) - {down, hanging, too_broad}}
    assert healthy and healthy <= set(match_ids(bundle))
    assert not set(match_ids(bundle)) - healthy
    for trust, words in ((down, "connection refused"), (hanging, "no answer within 2 s"), (too_broad, "HTTP 413")):
        named = issues_naming(bundle, federated.names[trust], "incomplete")
        assert any(words in i["diagnostics"] for i in named), (trust, issues(bundle))


def test_circuit_opens_after_repeated_failures(
    federated: Federated,
    trust_servers: dict[str, TrustServer],
    faulty: str,
    multi: dict[str, Any],
    studies_by_patient: dict[str, Any],
) -> None:
    threshold = FEDERATION["circuit_breaker"]["threshold"]
    cooldown = FEDERATION["circuit_breaker"]["cooldown_s"]
    proxy = trust_servers[faulty].proxy
    name = federated.names[faulty]
    nhs = multi["nhs_number"]
    everything = {s["study_uid"] for s in studies_by_patient[nhs]}
    proxy.set_fault("status", code=503)
    for _ in range(threshold):
        bundle = federated.patient_search(nhs)
        assert any("HTTP 503" in i["diagnostics"] for i in issues_naming(bundle, name, "incomplete"))
    proxy.clear()
    bundle = federated.patient_search(nhs)
    assert proxy.requests == [], "an open circuit still sent requests"
    assert any("circuit open" in i["diagnostics"] for i in issues_naming(bundle, name, "incomplete"))
    assert held_elsewhere(studies_by_patient[nhs], faulty) <= set(match_ids(bundle))

    # After the cool-down one probe exchange goes through (a patient search sends /studies and
    # /series together); the archive still fails, so the circuit opens again.
    time.sleep(cooldown + 0.2)
    bundle = federated.patient_search(nhs)
    assert 1 <= len(proxy.requests) <= 2
    assert {target.split("?")[0] for _m, target in proxy.requests} <= {"/dicom-web/studies", "/dicom-web/series"}
    assert any("HTTP 503" in i["diagnostics"] for i in issues_naming(bundle, name, "incomplete"))
    proxy.clear()
    bundle = federated.patient_search(nhs)
    assert proxy.requests == []
    assert any("circuit open" in i["diagnostics"] for i in issues_naming(bundle, name))

    # The archive recovers: after the next cool-down the probe succeeds and its studies come back.
    proxy.set_fault("none")
    time.sleep(cooldown + 0.2)
    bundle = federated.patient_search(nhs)
    assert proxy.requests, "no probe after the cool-down"
    assert set(match_ids(bundle)) == everything
    assert not issues_naming(bundle, name)
    proxy.clear()
    assert set(match_ids(federated.patient_search(nhs))) == everything
    assert len(proxy.requests) == 2  # closed again: studies + series


# --------------------------------------------------------------------------- R5, P7, cache, R6

HOSTILE: list[tuple[tuple[str, str], ...]] = [
    (("identifier", "*"),),
    (("identifier", "?"),),
    (("patient", "943476591*"),),
    (("patient", "Patient/*"),),
    (("patient", "9998785642,*"),),
    (("patient", "9998785642\\9997816307"),),
    (("patient.identifier", f"{NHS_SYSTEM}|999878564?"),),
    (("subject:identifier", f"{NHS_SYSTEM}|*"),),
    (("identifier", "RMC?"),),
    (("identifier", "RMC*"),),
    (("identifier", "RMC%"),),
    (("identifier", "RMC%2A"),),
    (("identifier", "RMC\\RRF07134058"),),
    (("identifier", "RMC\x00"),),
    (("identifier", "RMC\x1b[0m"),),
    (("identifier", "RMC\n1"),),
    (("identifier", "RMC\x7f"),),
    (("identifier", "https://fhir.nhs.uk/RMC/Id/accession-number|RMC*"),),
    (("identifier:of-type", "http://terminology.hl7.org/CodeSystem/v2-0203|ACSN|RMC*"),),
    (("identifier:of-type", "http://terminology.hl7.org/CodeSystem/v2-0203|ACSN|%"),),
    (("identifier", "urn:dicom:uid|urn:oid:1.2.*"),),
    (("_id", "1.2.*"),),
    (("_id", "1.2.?"),),
    (("_id", "2.25.1,*"),),
    (("series", "1.2.*"),),
    (("instance", "*"),),
    (("patient", "9998785642"), ("identifier", "RMC*")),
    (("patient", "9998785642"), ("modality", "C*")),
    (("patient", "9998785642"), ("started", "2020*")),
    (("patient", "9998785642"), ("endpoint", "*")),
    (("modality", "CT"),),  # no patient or study named: too costly, nobody is asked
    (("status", "available"),),
]


def test_no_wildcards_reach_archives(federated: Federated) -> None:
    for query in HOSTILE:
        response = federated.client.get("/ImagingStudy", list(query))
        assert response.status_code == 400, f"{query!r} -> {response.status_code}"
        assert response.get_json()["resourceType"] == "OperationOutcome"
    for trust, server in federated.servers.items():
        assert server.proxy.wildcard_requests() == [], trust
        assert server.proxy.requests == [], f"{trust} was asked: {server.proxy.requests}"


def test_patient_search_costs_two_requests_per_archive(federated: Federated, multi: dict[str, Any]) -> None:
    bundle = federated.patient_search(multi["nhs_number"])
    assert len(matches(bundle)) >= 3
    asked = {t: r for t, r in federated.requests_by_trust().items() if r}
    assert set(multi["trusts"]) <= set(asked)
    for trust, sent in asked.items():
        assert len(sent) <= 2, f"{trust}: {sent}"
    for trust in multi["trusts"]:  # studies and series go out together, in either order
        assert sorted(target.split("?")[0] for _m, target in asked[trust]) == [
            "/dicom-web/series",
            "/dicom-web/studies",
        ]


def test_cache_ttl_reuses_answers(build_facade: BuildFacade, multi: dict[str, Any], manifest: dict[str, Any]) -> None:
    federated = build_facade(federation={**FEDERATION, "cache_ttl_s": 60})
    nhs = multi["nhs_number"]
    first = federated.patient_search(nhs)
    assert sum(map(len, federated.requests_by_trust().values())) > 0
    federated.clear_requests()
    second = federated.patient_search(nhs)
    assert match_ids(second) == match_ids(first)
    assert federated.requests_by_trust() == {t: [] for t in federated.servers}
    other = manifest["facts"]["demographic_conflict"]["nhs_number"]
    federated.patient_search(other)  # another query is not answered from the cache
    assert sum(map(len, federated.requests_by_trust().values())) > 0


def test_cache_off_by_default(build_facade: BuildFacade, multi: dict[str, Any]) -> None:
    federation = {k: v for k, v in FEDERATION.items() if k != "cache_ttl_s"}
    federated = build_facade(federation=federation)
    assert federated.services.settings.cache_ttl_s == 0
    nhs = multi["nhs_number"]
    first = federated.patient_search(nhs)
    federated.clear_requests()
    second = federated.patient_search(nhs)
    assert match_ids(second) == match_ids(first)
    for trust in multi["trusts"]:
        assert len(federated.servers[trust].proxy.requests) == 2, trust


# Per-request delays (a trust answers in two requests) that make the archives finish in other orders.
DELAYS = [(), (0.25, 0.15, 0.05, 0.0), (0.0, 0.05, 0.15, 0.25), (0.15, 0.0, 0.25, 0.05)]


@pytest.mark.parametrize("delays", DELAYS, ids=["no-delay", "busiest-last", "busiest-first", "mixed"])
def test_merge_order_is_deterministic(
    federated: Federated,
    trust_servers: dict[str, TrustServer],
    busiest: list[str],
    multi: dict[str, Any],
    manifest: dict[str, Any],
    delays: tuple[float, ...],
) -> None:
    nhs = multi["nhs_number"]
    shared = manifest["facts"]["shared_study"]["study_uid"]
    baseline = federated.patient_search(nhs)
    for trust, seconds in zip(busiest, delays, strict=False):
        trust_servers[trust].proxy.set_fault("delay", seconds=seconds)
    for query in ((("patient", nhs),), (("patient", nhs), ("_sort", "started")), (("_id", shared),)):
        runs = [federated.search(*query) for _ in range(2)]
        assert match_ids(runs[0]) == match_ids(runs[1]), query
        assert [s["series"] for s in matches(runs[0])] == [s["series"] for s in matches(runs[1])]
        for run in runs:
            ids = match_ids(run)
            assert len(ids) == len(set(ids)), f"duplicate ids in {query}"
            assert not [i for i in issues(run) if i["code"] == "incomplete"]
    assert match_ids(federated.patient_search(nhs)) == match_ids(baseline)
    assert sorted(match_ids(baseline)) == sorted(
        {s["study_uid"] for p in manifest["patients"] if p["nhs_number"] == nhs for s in p["studies"]}
    )


def _breaker_of(federated: Federated, trust_id: str) -> Any:
    return next(t.breaker for t in federated.services.federation.trusts if t.settings.id == trust_id)


def test_timed_out_search_counts_one_failure(
    federated: Federated, trust_servers: dict[str, TrustServer], multi: dict[str, Any]
) -> None:
    """A hang cut by the deadline is one failure, even when the abandoned request fails later too."""
    trust = sorted(multi["trusts"])[0]
    trust_servers[trust].proxy.set_fault("delay", seconds=ARCHIVE_TIMEOUT_S + 0.5)
    bundle = federated.patient_search(multi["nhs_number"])
    assert any("no answer within" in i["diagnostics"] for i in issues_naming(bundle, federated.names[trust]))
    time.sleep(1.0)  # the abandoned requests finish (or time out) meanwhile: they must not be counted again
    breaker = _breaker_of(federated, trust)
    assert breaker._failures == 1
    assert breaker.state == "closed"


def test_slow_archive_opens_its_circuit(
    build_facade: BuildFacade, trust_servers: dict[str, TrustServer], multi: dict[str, Any]
) -> None:
    """An archive that always answers after the deadline opens its circuit: late answers do not reset it."""
    federated = build_facade(
        federation={
            "archive_timeout_s": 1,
            "deadline_s": 5,
            "circuit_breaker": {"threshold": 2, "cooldown_s": 60},
            "cache_ttl_s": 0,
        },
        archives={t: {"timeout_s": 1} for t in trust_servers},
    )
    trust = sorted(multi["trusts"])[0]
    trust_servers[trust].proxy.set_fault("delay", seconds=1.3)
    for _ in range(2):
        federated.patient_search(multi["nhs_number"])
        time.sleep(0.6)  # long enough for the late answers to arrive
    assert _breaker_of(federated, trust).state == "open"
    bundle = federated.patient_search(multi["nhs_number"])
    assert any("circuit open" in i["diagnostics"] for i in issues_naming(bundle, federated.names[trust]))
