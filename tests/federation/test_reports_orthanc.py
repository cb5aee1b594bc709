"""DocumentReference and DiagnosticReport against eight real Orthanc archives (DICOMweb), each behind a FaultProxy
that records what the facade asks: the issue's done-when search, and the cost rules (no extra request for the
study entries; one metadata request per report series, cached, capped).

Expected answers come from the demo files and tools/demo/reports.py, never from the facade.
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import pydicom
import pytest
from smart_tokens import system_token

from app.core import systems
from tests.federation.conftest import FEDERATION, BuildFacade
from tests.federation.support import Federated
from tools.demo.reports import report_state, report_text

NHS = systems.NHS_NUMBER
SR_CLASS = "1.2.840.10008.5.1.4.1.1.88.33"
PDF_CLASS = "1.2.840.10008.5.1.4.1.1.104.1"


def _reports(demo_data: Path) -> list[dict[str, Any]]:
    found = []
    for file in sorted(demo_data.glob("*/*/*/*.dcm")):
        ds = pydicom.dcmread(file, stop_before_pixels=True)
        if str(ds.SOPClassUID) in (SR_CLASS, PDF_CLASS) and str(ds.Modality) in ("SR", "DOC"):
            found.append(
                {
                    "trust": file.parts[-4],
                    "study": str(ds.StudyInstanceUID),
                    "series": str(ds.SeriesInstanceUID),
                    "sop": str(ds.SOPInstanceUID),
                    "class": str(ds.SOPClassUID),
                    "path": file,
                }
            )
    return found


@pytest.fixture(scope="module")
def multi(manifest: dict[str, Any]) -> dict[str, Any]:
    found: dict[str, Any] = manifest["facts"]["multi_trust_patient"]
    return found


@pytest.fixture(scope="module")
def disk_reports(demo_data: Path) -> list[dict[str, Any]]:
    return _reports(demo_data)


def _ods(manifest: dict[str, Any], trust: str) -> str:
    return str(next(t["ods_code"] for t in manifest["trusts"] if t["id"] == trust))


def _owner(manifest: dict[str, Any], study: str) -> dict[str, Any]:
    return next(p for p in manifest["patients"] if any(s["study_uid"] == study for s in p["studies"]))


def _get(federated: Federated, path: str, pairs: list[tuple[str, str]]) -> dict[str, Any]:
    response = federated.client.get(path, [*pairs, ("_count", "200")])
    assert response.status_code == 200, response.get_json()
    body: dict[str, Any] = response.get_json()
    return body


def _matches(bundle: dict[str, Any], mode: str = "match") -> list[dict[str, Any]]:
    return [e["resource"] for e in bundle.get("entry", ()) if e["search"]["mode"] == mode]


def _metadata_requests(federated: Federated) -> list[str]:
    return [t for sent in federated.requests_by_trust().values() for _m, t in sent if t.endswith("/metadata")]


def test_done_when_every_study_has_its_document_and_every_report_its_conclusion(
    federated: Federated, manifest: dict[str, Any], disk_reports: list[dict[str, Any]]
) -> None:
    identities = {t["id"]: t["identity"] for t in manifest["trusts"]}
    styles: set[str] = set()
    trusts: set[str] = set()
    for nhs in sorted({_owner(manifest, r["study"])["nhs_number"] for r in disk_reports}):
        patient = next(p for p in manifest["patients"] if p["nhs_number"] == nhs)
        query = [("patient.identifier", f"{NHS}|{nhs}")]
        documents = _matches(_get(federated, "/DocumentReference", query))
        expected = {f"{_ods(manifest, t)}-{s['study_uid']}" for s in patient["studies"] for t in s["holdings"]}
        mine = [r for r in disk_reports if r["study"] in {s["study_uid"] for s in patient["studies"]}]
        objects = {f"{_ods(manifest, r['trust'])}-{r['sop']}" for r in mine}  # and one per report object
        assert {d["id"] for d in documents} == expected | objects
        for document in (d for d in documents if d["id"] in expected):
            trust_ods, _, uid = document["id"].partition("-")
            trust = next(t["id"] for t in manifest["trusts"] if t["ods_code"] == trust_ods)
            assert document["content"][0]["attachment"]["url"].endswith(f"/dicomweb/{trust}/studies/{uid}/metadata")
        bundle = _get(federated, "/DiagnosticReport", query)
        reports = _matches(bundle)
        assert {r["id"] for r in reports} == {f"{_ods(manifest, r['trust'])}-{r['sop']}" for r in mine}
        for report in reports:
            disk = next(r for r in mine if report["id"].endswith(r["sop"]))
            if disk["class"] == SR_CLASS:
                findings, impression = report_text(disk["study"])
                assert report["conclusion"] == impression
                assert report["status"] == report_state(disk["study"])
                assert findings in base64.b64decode(report["presentedForm"][0]["data"]).decode("utf-8")
            else:
                assert report["presentedForm"][0]["contentType"] == "application/pdf"
            styles.add(identities[disk["trust"]])
            trusts.add(disk["trust"])
    assert styles == {"nhs", "xref"} and len(trusts) >= 4


def test_document_references_ask_the_archives_nothing_more_than_the_study_search(
    federated: Federated, manifest: dict[str, Any], multi: dict[str, Any], disk_reports: list[dict[str, Any]]
) -> None:
    """The study entries cost no request beyond the study search; the only other requests are the metadata of
    the patient's report objects (the multi-trust patient's bone scan holds a PDF report)."""
    mine = [r for r in disk_reports if _owner(manifest, r["study"])["nhs_number"] == multi["nhs_number"]]
    assert mine
    federated.clear_requests()
    federated.patient_search(multi["nhs_number"])
    studies = {t: sorted(x.split("?")[0] for _m, x in r) for t, r in federated.requests_by_trust().items()}
    federated.clear_requests()
    _get(federated, "/DocumentReference", [("patient", multi["nhs_number"])])
    documents = {
        t: sorted(x.split("?")[0] for _m, x in r if not x.split("?")[0].endswith("/metadata"))
        for t, r in federated.requests_by_trust().items()
    }
    assert documents == studies
    report_series = {f"/dicom-web/studies/{r['study']}/series/{r['series']}/" for r in mine}
    asked = _metadata_requests(federated)
    assert all(any(x.startswith(prefix) for prefix in report_series) for x in asked), asked


def test_reports_read_each_report_series_metadata_once_and_cache_it(
    federated: Federated, manifest: dict[str, Any], disk_reports: list[dict[str, Any]]
) -> None:
    report = next(r for r in disk_reports if r["class"] == SR_CLASS)
    nhs = _owner(manifest, report["study"])["nhs_number"]
    mine = [r for r in disk_reports if _owner(manifest, r["study"])["nhs_number"] == nhs]
    series = {(r["study"], r["series"]) for r in mine}
    federated.clear_requests()
    first = _matches(_get(federated, "/DiagnosticReport", [("patient", nhs)]))
    assert first
    asked = sorted(_metadata_requests(federated))
    # The test Orthancs serve series metadata as main tags only (tests/infra/orthanc.py): each report series is
    # asked once, then each report object once for its full metadata; nothing else, nothing twice.
    expected = [f"/dicom-web/studies/{s}/series/{x}/metadata" for s, x in series]
    expected += [f"/dicom-web/studies/{r['study']}/series/{r['series']}/instances/{r['sop']}/metadata" for r in mine]
    assert asked == sorted(expected)
    federated.clear_requests()
    again = _matches(_get(federated, "/DiagnosticReport", [("patient", nhs)]))
    assert again == first
    assert not _metadata_requests(federated)  # within federation.report_cache_s


def test_the_cap_on_report_reads_leaves_an_incomplete_outcome(
    build_facade: BuildFacade, manifest: dict[str, Any], disk_reports: list[dict[str, Any]]
) -> None:
    by_patient: dict[str, set[str]] = {}
    for r in disk_reports:
        by_patient.setdefault(_owner(manifest, r["study"])["nhs_number"], set()).add(r["series"])
    nhs = next(n for n, series in by_patient.items() if len(series) >= 2)
    federated = build_facade(federation={**FEDERATION, "max_report_reads": 1})
    federated.clear_requests()
    bundle = _get(federated, "/DiagnosticReport", [("patient", nhs)])
    series_read = {x.split("/series/")[1].split("/")[0] for x in _metadata_requests(federated)}
    assert len(series_read) == 1  # one report series read (its objects' metadata included), the other not
    outcome = [i for o in _matches(bundle, "outcome") for i in o["issue"] if i["code"] == "incomplete"]
    assert outcome and "federation.max_report_reads" in outcome[0]["diagnostics"]


def test_the_report_pdf_comes_from_the_archive(
    federated: Federated, manifest: dict[str, Any], disk_reports: list[dict[str, Any]]
) -> None:
    disk = next(r for r in disk_reports if r["class"] == PDF_CLASS)
    report_id = f"{_ods(manifest, disk['trust'])}-{disk['sop']}"
    report = federated.client.get(f"/DiagnosticReport/{report_id}").get_json()
    url = report["presentedForm"][0]["url"]
    path = "/" + url.split("/", 3)[3]
    web = federated.app.test_client()
    answer = web.get(path, headers={"Authorization": f"Bearer {system_token(federated.app)}"})
    assert answer.status_code == 200 and answer.mimetype == "application/pdf"
    ds = pydicom.dcmread(disk["path"])
    assert answer.data == bytes(ds.EncapsulatedDocument)[: int(ds.EncapsulatedDocumentLength)]


def test_pdf_reports_of_several_specialties_are_served_from_the_archives(
    federated: Federated, manifest: dict[str, Any], disk_reports: list[dict[str, Any]]
) -> None:
    """Every encapsulated PDF the demo holds (five specialties) becomes a DiagnosticReport whose presentedForm is
    application/pdf, titled by its DocumentTitle, at a gateway URL that returns the archive's PDF bytes."""
    token = system_token(federated.app)
    web = federated.app.test_client()
    specialties: set[str] = set()
    pdfs = [r for r in disk_reports if r["class"] == PDF_CLASS]
    for disk in pdfs:
        ds = pydicom.dcmread(disk["path"])
        specialties.add(str(ds.InstitutionalDepartmentName))
        report_id = f"{_ods(manifest, disk['trust'])}-{disk['sop']}"
        response = federated.client.get(f"/DiagnosticReport/{report_id}")
        assert response.status_code == 200, response.get_json()
        form = response.get_json()["presentedForm"]
        assert [(f["contentType"], f["title"]) for f in form] == [("application/pdf", ds.DocumentTitle)]
        answer = web.get("/" + form[0]["url"].split("/", 3)[3], headers={"Authorization": f"Bearer {token}"})
        assert answer.status_code == 200 and answer.mimetype == "application/pdf"
        assert answer.data.startswith(b"%PDF-")
        assert answer.data == bytes(ds.EncapsulatedDocument)[: int(ds.EncapsulatedDocumentLength)]
    assert len(specialties) >= 3 and "Endoscopy Unit" in specialties, specialties
