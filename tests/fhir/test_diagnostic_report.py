"""DiagnosticReport end to end over the demo data (folder archives): reports read from the SR (TID 2000) and
encapsulated PDF objects the archives hold, the report PDF route, the cap on report reads, and the wrong-patient
control (H16). Expected answers come from the files on disk and tools/demo/reports.py, never from the facade.
Every FHIR response is validated by the `client` fixture (R4B models and the official R4 JSON Schema).
"""

from __future__ import annotations

import base64
import copy
import dataclasses
import shutil
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

import pydicom
import pytest
from smart_tokens import patient_token, system_token

from app import create_app
from app.core import systems
from app.settings import settings_from_document
from tools.demo.reports import report_state, report_text

NHS = systems.NHS_NUMBER
SR_CLASS = "1.2.840.10008.5.1.4.1.1.88.33"
PDF_CLASS = "1.2.840.10008.5.1.4.1.1.104.1"


@dataclasses.dataclass(frozen=True)
class DiskReport:
    trust: str
    study: str
    series: str
    sop: str
    sop_class: str
    patient_id: str
    path: Path


@cache
def disk_reports(data: Path) -> tuple[DiskReport, ...]:
    found = []
    for file in sorted(data.glob("*/*/*/*.dcm")):
        ds = pydicom.dcmread(file, stop_before_pixels=True)
        if str(ds.SOPClassUID) in (SR_CLASS, PDF_CLASS) and ds.get("ConceptNameCodeSequence") is not None:
            if str(ds.SOPClassUID) == SR_CLASS and ds.ConceptNameCodeSequence[0].CodeValue != "18748-4":
                continue  # a KOS-like SR without a report (none in the demo), never expected
            found.append(
                DiskReport(
                    file.parts[-4],
                    str(ds.StudyInstanceUID),
                    str(ds.SeriesInstanceUID),
                    str(ds.SOPInstanceUID),
                    str(ds.SOPClassUID),
                    str(ds.PatientID),
                    file,
                )
            )
    return tuple(found)


def ods(manifest: dict[str, Any], trust_id: str) -> str:
    return next(t["ods_code"] for t in manifest["trusts"] if t["id"] == trust_id)


def owner(manifest: dict[str, Any], study_uid: str) -> dict[str, Any]:
    return next(p for p in manifest["patients"] if any(s["study_uid"] == study_uid for s in p["studies"]))


def search(client, resource_type: str, pairs: list[tuple[str, str]], **kwargs: Any) -> dict[str, Any]:
    response = client.get(f"/fhir/{resource_type}?{urlencode(pairs)}", **kwargs)
    assert response.status_code == 200, response.get_json()
    return response.get_json()


def matches(bundle: dict[str, Any], mode: str = "match") -> list[dict[str, Any]]:
    return [e["resource"] for e in bundle.get("entry", ()) if e["search"]["mode"] == mode]


def issues(bundle: dict[str, Any]) -> list[dict[str, Any]]:
    return [i for o in matches(bundle, "outcome") for i in o["issue"]]


@pytest.fixture(scope="module")
def reports(demo_data: Path) -> tuple[DiskReport, ...]:
    found = disk_reports(demo_data)
    assert {r.sop_class for r in found} == {SR_CLASS, PDF_CLASS}
    return found


# ------------------------------------------------------------------- the done-when search


def test_a_search_by_nhs_number_gives_each_study_its_document_and_its_report(client, manifest, reports):
    """For every patient with a report: a DocumentReference for each study, and for each report object a
    DiagnosticReport whose conclusion is the SR's impression; across trusts of both identity styles."""
    identities = {t["id"]: t["identity"] for t in manifest["trusts"]}
    seen_styles, seen_trusts = set(), set()
    patients = {owner(manifest, r.study)["nhs_number"] for r in reports}
    assert len(patients) >= 5
    for nhs in sorted(patients):
        patient = next(p for p in manifest["patients"] if p["nhs_number"] == nhs)
        for style, value in (("patient.identifier", f"{NHS}|{nhs}"), ("patient", nhs)):
            documents = matches(search(client, "DocumentReference", [(style, value), ("_count", "200")]))
            expected = {f"{ods(manifest, t)}-{s['study_uid']}" for s in patient["studies"] for t in s["holdings"]}
            mine = [r for r in reports if r.study in {s["study_uid"] for s in patient["studies"]}]
            objects = {f"{ods(manifest, r.trust)}-{r.sop}" for r in mine}  # an entry per report object too
            assert {d["id"] for d in documents} == expected | objects
            found = matches(search(client, "DiagnosticReport", [(style, value), ("_count", "200")]))
            assert {f["id"] for f in found} == {f"{ods(manifest, r.trust)}-{r.sop}" for r in mine}
            for report in found:
                disk = next(r for r in mine if report["id"].endswith(r.sop))
                assert report["subject"]["identifier"] == {"system": NHS, "value": nhs}
                assert report["imagingStudy"] == [{"reference": f"ImagingStudy/{disk.study}"}]
                assert report["performer"][0]["identifier"]["value"] == ods(manifest, disk.trust)
                if disk.sop_class == SR_CLASS:
                    assert report["conclusion"] == report_text(disk.study)[1]
                seen_styles.add(identities[disk.trust])
                seen_trusts.add(disk.trust)
    assert seen_styles == {"nhs", "xref"}
    assert len(seen_trusts) >= 4


def test_sr_reports_follow_the_status_rules_and_carry_the_whole_text(client, manifest, reports):
    states = set()
    for disk in (r for r in reports if r.sop_class == SR_CLASS):
        report = client.get(f"/fhir/DiagnosticReport/{ods(manifest, disk.trust)}-{disk.sop}").get_json()
        state = report_state(disk.study)
        states.add(state)
        assert report["status"] == state
        findings, impression = report_text(disk.study)
        form = report["presentedForm"][0]
        assert form["contentType"].startswith("text/plain")
        text = base64.b64decode(form["data"]).decode("utf-8")
        assert findings in text and impression in text and "Findings" in text and "Impressions" in text
        interpreters = [x["display"] for x in report.get("resultsInterpreter", ())]
        assert interpreters, report  # the Person Observer Name, and the verifying observer when verified
        accession = next(s for s in owner(manifest, disk.study)["studies"] if s["study_uid"] == disk.study)["accession"]
        assert [b["identifier"]["value"] for b in report["basedOn"]] == [accession]
        # the study's coded procedure (SNOMED); a trust with local procedure codes: the SR's own title (LOINC)
        local = disk.trust in manifest["facts"]["local_procedure_coding_trusts"]
        expected = (systems.LOINC, "18748-4") if local else (systems.SNOMED, "40701008")
        assert (report["code"]["coding"][0]["system"], report["code"]["coding"][0]["code"]) == expected
        assert {"system": systems.DIAGNOSTIC_SERVICE_SECTION, "code": "RAD", "display": "Radiology"} in [
            c for cc in report["category"] for c in cc["coding"]
        ]
    assert states == {"final", "preliminary", "amended"}


def test_pdf_reports_link_to_the_token_protected_document_route(app, client, manifest, reports):
    pdfs = [r for r in reports if r.sop_class == PDF_CLASS]
    assert len(pdfs) >= 2
    raw = app.test_client()
    for disk in pdfs:
        report_id = f"{ods(manifest, disk.trust)}-{disk.sop}"
        report = client.get(f"/fhir/DiagnosticReport/{report_id}").get_json()
        assert report["status"] == "final"
        form = report["presentedForm"][0]
        ds = pydicom.dcmread(disk.path)
        assert form["contentType"] == "application/pdf" and form["title"] == ds.DocumentTitle
        assert "data" not in form  # never the PDF bytes inline
        path = urlsplit(form["url"]).path
        assert path == f"/dicomweb/reports/{report_id}/document.pdf"
        assert raw.get(path).status_code == 401
        answer = raw.get(path, headers={"Authorization": f"Bearer {client.token}"})
        assert answer.status_code == 200 and answer.mimetype == "application/pdf"
        assert answer.headers["Cache-Control"] == "no-store"
        assert answer.data == bytes(ds.EncapsulatedDocument)[: int(ds.EncapsulatedDocumentLength)]
        assert answer.data.startswith(b"%PDF")
        nhs = owner(manifest, disk.study)["nhs_number"]
        other = next(p["nhs_number"] for p in manifest["patients"] if p["nhs_number"] != nhs)
        foreign = raw.get(path, headers={"Authorization": f"Bearer {patient_token(app, other)}"})
        assert foreign.status_code == 404
        own = raw.get(path, headers={"Authorization": f"Bearer {patient_token(app, nhs)}"})
        assert own.status_code == 200 and own.data == answer.data
        no_scope = raw.get(path, headers={"Authorization": f"Bearer {system_token(app, 'system/ImagingStudy.rs')}"})
        assert no_scope.status_code == 403
        documents = {"Authorization": f"Bearer {system_token(app, 'system/DocumentReference.rs')}"}
        assert raw.get(path, headers=documents).data == answer.data  # the PDF DocumentReference's URL opens
        scope = "launch/patient patient/DocumentReference.rs"
        mine = raw.get(path, headers={"Authorization": f"Bearer {patient_token(app, nhs, scope)}"})
        assert mine.status_code == 200 and mine.data == answer.data
        theirs = raw.get(path, headers={"Authorization": f"Bearer {patient_token(app, other, scope)}"})
        assert theirs.status_code == 404


# ------------------------------------------------------------------------------ parameters


def test_parameters_narrow_the_reports(client, manifest, reports):
    local = manifest["facts"]["local_procedure_coding_trusts"]
    disk = next(r for r in reports if r.sop_class == SR_CLASS and r.trust not in local)
    nhs = owner(manifest, disk.study)["nhs_number"]
    report_id = f"{ods(manifest, disk.trust)}-{disk.sop}"
    every = {r["id"] for r in matches(search(client, "DiagnosticReport", [("patient", nhs)]))}
    assert report_id in every

    def ids(pairs: list[tuple[str, str]]) -> set[str]:
        return {r["id"] for r in matches(search(client, "DiagnosticReport", pairs))}

    state = report_state(disk.study)
    assert report_id in ids([("patient", nhs), ("status", state)])
    other = next(s for s in ("final", "preliminary", "amended") if s != state)
    assert report_id not in ids([("patient", nhs), ("status", other)])
    assert ids([("_id", report_id)]) == {report_id}
    assert ids([("identifier", f"urn:dicom:uid|urn:oid:{disk.sop}")]) == {report_id}
    assert report_id in ids([("imaging-study", f"ImagingStudy/{disk.study}")])
    accession = next(s for s in owner(manifest, disk.study)["studies"] if s["study_uid"] == disk.study)["accession"]
    assert report_id in ids([("based-on", accession)])
    assert ids([("patient", nhs), ("category", f"{systems.DIAGNOSTIC_SERVICE_SECTION}|RAD")]) == every
    assert ids([("patient", nhs), ("category", "LAB")]) == set()
    assert report_id in ids([("patient", nhs), ("code", f"{systems.SNOMED}|40701008")])
    assert ids([("patient", nhs), ("code", f"{systems.SNOMED}|1")]) == set()


def test_include_brings_the_reported_study_only_where_readable(app, client, manifest, reports):
    disk = reports[0]
    nhs = owner(manifest, disk.study)["nhs_number"]
    bundle = search(client, "DiagnosticReport", [("patient", nhs), ("_include", "DiagnosticReport:imaging-study")])
    wanted = {r["imagingStudy"][0]["reference"].split("/")[1] for r in matches(bundle)}
    assert {s["id"] for s in matches(bundle, "include")} == wanted and wanted
    token = {"Authorization": f"Bearer {system_token(app, 'system/DiagnosticReport.rs')}"}
    narrow = search(
        client, "DiagnosticReport", [("patient", nhs), ("_include", "DiagnosticReport:imaging-study")], headers=token
    )
    assert matches(narrow) and not matches(narrow, "include")  # no ImagingStudy scope: nothing included


def test_the_capability_statement_defines_the_imaging_study_parameter(app, client):
    statement = client.get("/fhir/metadata").get_json()
    report = next(r for r in statement["rest"][0]["resource"] if r["type"] == "DiagnosticReport")
    parameter = next(p for p in report["searchParam"] if p["name"] == "imaging-study")
    definition = next(c for c in statement["contained"] if c["url"] == parameter["definition"])
    assert definition["expression"] == "DiagnosticReport.imagingStudy" and definition["type"] == "reference"
    served = app.test_client().get(urlsplit(parameter["definition"]).path)  # it resolves, as /metadata: no token
    assert served.status_code == 200 and served.get_json() == definition
    assert client.get("/fhir/SearchParameter/Patient-nothing").status_code == 404
    assert report["searchInclude"] == ["DiagnosticReport:imaging-study"]
    for kind in ("DiagnosticReport", "DocumentReference"):  # both sort by date (`_sort=date|-date`)
        listed = next(r for r in statement["rest"][0]["resource"] if r["type"] == kind)["searchParam"]
        assert any(p["name"] == "_sort" for p in listed)


@pytest.mark.parametrize(
    "pairs",
    [
        [],
        [("date", "ge2015")],
        [("patient", "9434765918")],
        [("based-on", "RMC*")],
        [("identifier", "urn:dicom:uid|*")],
        [("patient", "9992975962"), ("status", "done")],
        [("imaging-study", "Patient/9992975962")],
        [("_id", "nonsense")],
        [("patient", "9992975962"), ("code", "|")],
        [("patient", "9992975962"), ("category", "a b")],
        [("patient", "9992975962"), ("category", "|||")],
        [("patient", "9992975962"), ("code", "x" * 3000)],
    ],
)
def test_bad_input_is_400(client, pairs):
    response = client.get(f"/fhir/DiagnosticReport?{urlencode(pairs)}")
    assert response.status_code == 400, response.get_json()
    assert all(len(i.get("diagnostics", "")) < 400 for i in response.get_json()["issue"])  # quotes ~100 characters


def test_a_patient_token_sees_only_its_own_reports(app, client, manifest, reports):
    disk = reports[0]
    nhs = owner(manifest, disk.study)["nhs_number"]
    other = next(p["nhs_number"] for p in manifest["patients"] if p["nhs_number"] != nhs)
    token = {"Authorization": f"Bearer {patient_token(app, other)}"}
    assert client.get(f"/fhir/DiagnosticReport?patient={nhs}", headers=token).status_code == 403
    report_id = f"{ods(manifest, disk.trust)}-{disk.sop}"
    denied = client.get(f"/fhir/DiagnosticReport/{report_id}", headers=token)
    assert denied.status_code == 404
    mine = {"Authorization": f"Bearer {patient_token(app, nhs)}"}
    assert client.get(f"/fhir/DiagnosticReport/{report_id}", headers=mine).status_code == 200


# ----------------------------------------------------------------------- cost and safety


def _app_over(config_document: dict[str, Any], demo_data: Path, data: Path, **federation: Any):
    doc = copy.deepcopy(config_document)
    for trust in doc["trusts"]:
        trust["archive"]["path"] = str(data / trust["id"])
    doc.setdefault("federation", {}).update(federation)
    settings = settings_from_document(doc, demo_data, "tests/reports")
    return create_app(settings)


def test_include_is_not_refused_by_the_value_cap(config_document, demo_data, manifest, reports):
    """`_include` is a result parameter: the page's studies are fetched within search.max_values_per_parameter
    (issue 12 S1), never refused with 400 naming `_id`, a parameter the client did not send."""
    by_patient: dict[str, set[str]] = {}
    for r in reports:
        by_patient.setdefault(owner(manifest, r.study)["nhs_number"], set()).add(r.study)
    nhs, studies = next((n, s) for n, s in sorted(by_patient.items()) if len(s) >= 2)
    doc = copy.deepcopy(config_document)
    doc.setdefault("search", {})["max_values_per_parameter"] = 1
    app = _app_over(doc, demo_data, demo_data)
    token = {"Authorization": f"Bearer {system_token(app, 'system/*.rs')}"}
    answer = app.test_client().get(
        f"/fhir/DiagnosticReport?patient={nhs}&_count=200&_include=DiagnosticReport:imaging-study", headers=token
    )
    assert answer.status_code == 200, answer.get_json()
    assert {s["id"] for s in matches(answer.get_json(), "include")} == studies


def test_report_reads_are_capped_per_search_with_an_incomplete_outcome(config_document, demo_data, manifest, reports):
    by_patient: dict[str, set[str]] = {}
    for r in reports:
        by_patient.setdefault(owner(manifest, r.study)["nhs_number"], set()).add(r.study)
    nhs = next(n for n, studies in by_patient.items() if len(studies) >= 2)
    app = _app_over(config_document, demo_data, demo_data, max_report_reads=1)
    token = {"Authorization": f"Bearer {system_token(app, 'system/*.rs')}"}
    bundle = app.test_client().get(f"/fhir/DiagnosticReport?patient={nhs}", headers=token).get_json()
    assert len(matches(bundle)) == 1
    capped = [i for i in issues(bundle) if i["code"] == "incomplete"]
    assert capped and "federation.max_report_reads" in capped[0]["diagnostics"]


def test_a_report_naming_another_patient_is_withheld(config_document, demo_data, manifest, reports, tmp_path):
    """H16: the SR object of a study carries another patient's NHS number (a mis-filed report): the study is
    shown, its report is not, and a conflict outcome says so."""
    disk = next(
        r
        for r in reports
        if r.sop_class == SR_CLASS
        and manifest_identity(manifest, r.trust) == "nhs"
        and min(p.name for p in (r.path.parent.parent).iterdir()) != r.series  # the study's first file is not it
    )
    nhs = owner(manifest, disk.study)["nhs_number"]
    other = next(p["nhs_number"] for p in manifest["patients"] if p["nhs_number"] != nhs)
    data = tmp_path / "data"
    shutil.copytree(demo_data, data)
    moved = data / disk.path.relative_to(demo_data)
    ds = pydicom.dcmread(moved)
    ds.PatientID = other
    ds.save_as(moved)
    app = _app_over(config_document, demo_data, data)
    token = {"Authorization": f"Bearer {system_token(app, 'system/*.rs')}"}
    web = app.test_client()
    studies = web.get(f"/fhir/ImagingStudy?patient={nhs}&_count=200", headers=token).get_json()
    assert disk.study in {s["id"] for s in matches(studies)}
    bundle = web.get(f"/fhir/DiagnosticReport?patient={nhs}&_count=200", headers=token).get_json()
    assert f"{ods(manifest, disk.trust)}-{disk.sop}" not in {r["id"] for r in matches(bundle)}
    assert any(i["code"] == "conflict" and "report" in i["diagnostics"] for i in issues(bundle))
    read = web.get(f"/fhir/DiagnosticReport/{ods(manifest, disk.trust)}-{disk.sop}", headers=token)
    assert read.status_code == 404


def test_an_unreadable_report_is_named_never_guessed(config_document, demo_data, manifest, reports, tmp_path):
    """H17: an SR without findings or impressions is reported in an outcome, and no DiagnosticReport is made."""
    disk = next(r for r in reports if r.sop_class == SR_CLASS)
    nhs = owner(manifest, disk.study)["nhs_number"]
    data = tmp_path / "data"
    shutil.copytree(demo_data, data)
    moved = data / disk.path.relative_to(demo_data)
    ds = pydicom.dcmread(moved)
    ds.ContentSequence = []
    ds.save_as(moved)
    app = _app_over(config_document, demo_data, data)
    token = {"Authorization": f"Bearer {system_token(app, 'system/*.rs')}"}
    bundle = app.test_client().get(f"/fhir/DiagnosticReport?patient={nhs}&_count=200", headers=token).get_json()
    assert f"{ods(manifest, disk.trust)}-{disk.sop}" not in {r["id"] for r in matches(bundle)}
    assert any(i["code"] == "processing" and disk.sop in i["diagnostics"] for i in issues(bundle))


def manifest_identity(manifest: dict[str, Any], trust_id: str) -> str:
    return str(next(t["identity"] for t in manifest["trusts"] if t["id"] == trust_id))


def test_reads_searches_and_documents_are_audited_with_the_patient(app, client, manifest, reports):
    disk = next(r for r in reports if r.sop_class == PDF_CLASS)
    nhs = owner(manifest, disk.study)["nhs_number"]
    report_id = f"{ods(manifest, disk.trust)}-{disk.sop}"
    audit = {"Authorization": f"Bearer {system_token(app, 'system/AuditEvent.rs')}"}

    def audited() -> int:
        return int(client.get(f"/fhir/AuditEvent?patient={nhs}&_summary=count", headers=audit).get_json()["total"])

    before = audited()
    search(client, "DiagnosticReport", [("patient", nhs)])
    assert client.get(f"/fhir/DiagnosticReport/{report_id}").status_code == 200
    web = app.test_client()
    pdf = web.get(f"/dicomweb/reports/{report_id}/document.pdf", headers={"Authorization": f"Bearer {client.token}"})
    assert pdf.status_code == 200
    assert audited() == before + 3


@pytest.mark.parametrize("resource_type", ["DiagnosticReport", "DocumentReference"])
def test_a_filtered_scope_on_these_types_grants_nothing(app, client, manifest, reports, resource_type):
    """No search parameter of these types is filterable by a v2 scope (app/core/compartment.py FILTERABLE): such a
    scope cannot be honoured exactly, so it grants nothing (403), never an unfiltered read."""
    nhs = owner(manifest, reports[0].study)["nhs_number"]
    scope = f"launch/patient patient/{resource_type}.rs?category=RAD"
    token = {"Authorization": f"Bearer {patient_token(app, nhs, scope)}"}
    assert client.get(f"/fhir/{resource_type}?patient={nhs}", headers=token).status_code == 403
