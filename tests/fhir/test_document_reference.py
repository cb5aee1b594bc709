"""DocumentReference (IHE MHD DocumentEntry, NHS England's imaging specification) end to end over the demo data.

Expected answers come from the dataset's manifest: one entry per study and holding trust. Every response is
also validated by the `client` fixture (R4B models and the official R4 JSON Schema, never a 500).
"""

from __future__ import annotations

import base64
import copy
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pydicom
import pytest
from smart_tokens import patient_token, system_token

from app import create_app
from app.core import systems
from app.core.mapping.document_reference import document_id, parse_document_id
from app.settings import settings_from_document
from tools.demo.reports import report_state, report_text

NHS = systems.NHS_NUMBER
BASE = "http://127.0.0.1:8080"
KOS = "1.2.840.10008.5.1.4.1.1.88.59"
SR_CLASS = "1.2.840.10008.5.1.4.1.1.88.33"
PDF_CLASS = "1.2.840.10008.5.1.4.1.1.104.1"


# ----------------------------------------------------------------------------- helpers


def ods(manifest: dict[str, Any], trust_id: str) -> str:
    return next(t["ods_code"] for t in manifest["trusts"] if t["id"] == trust_id)


def expected_ids(manifest: dict[str, Any], nhs: str) -> set[str]:
    patient = next(p for p in manifest["patients"] if p["nhs_number"] == nhs)
    return {f"{ods(manifest, t)}-{s['study_uid']}" for s in patient["studies"] for t in s["holdings"]}


def report_ids(manifest: dict[str, Any], nhs: str, objects: dict[str, list[tuple[str, str, str]]]) -> set[str]:
    """The ids of the entries of the patient's report objects (SR or PDF) on disk."""
    patient = next(p for p in manifest["patients"] if p["nhs_number"] == nhs)
    return {f"{ods(manifest, t)}-{sop}" for s in patient["studies"] for t, sop, _ in objects.get(s["study_uid"], ())}


def search(client, pairs: list[tuple[str, str]], **kwargs: Any) -> dict[str, Any]:
    response = client.get(f"/fhir/DocumentReference?{urlencode(pairs)}", **kwargs)
    assert response.status_code == 200, response.get_json()
    return response.get_json()


def matches(bundle: dict[str, Any]) -> list[dict[str, Any]]:
    return [e["resource"] for e in bundle.get("entry", ()) if e["search"]["mode"] == "match"]


def ids(bundle: dict[str, Any]) -> set[str]:
    return {r["id"] for r in matches(bundle)}


def outcome(response, status: int, code: str | None = None) -> dict[str, Any]:
    body = response.get_json()
    assert response.status_code == status, body
    assert body["resourceType"] == "OperationOutcome"
    if code is not None:
        assert body["issue"][0]["code"] == code, body
    return body


@pytest.fixture(scope="module")
def multi(manifest: dict[str, Any]) -> str:
    return str(manifest["facts"]["multi_trust_patient"]["nhs_number"])


@pytest.fixture(scope="module")
def objects(demo_data: Path) -> dict[str, list[tuple[str, str, str]]]:
    return report_objects(demo_data)


@pytest.fixture(scope="module")
def multi_docs(client, multi: str) -> list[dict[str, Any]]:
    return matches(search(client, [("patient", multi), ("_count", "200")]))


# ------------------------------------------------------------------------------- searches

PATIENT_STYLES = [
    ("patient", lambda n: n),
    ("patient", lambda n: f"Patient/{n}"),
    ("patient.identifier", lambda n: f"{NHS}|{n}"),
    ("patient:identifier", lambda n: f"{NHS}|{n}"),
    ("subject", lambda n: f"Patient/{n}"),
    ("subject:identifier", lambda n: f"{NHS}|{n}"),
]


@pytest.mark.parametrize(("name", "value"), PATIENT_STYLES, ids=[f"{n}-{i}" for i, (n, _) in enumerate(PATIENT_STYLES)])
def test_search_by_nhs_number_gives_one_entry_per_study_and_holding_trust(
    client, manifest, multi, objects, name, value
):
    """... and one per report object: the multi-trust patient's bone scan holds a PDF report."""
    expected = expected_ids(manifest, multi) | report_ids(manifest, multi, objects)
    assert report_ids(manifest, multi, objects)
    bundle = search(client, [(name, value(multi)), ("_count", "200")])
    assert ids(bundle) == expected
    assert bundle["total"] == len(expected)


def report_objects(data: Path) -> dict[str, list[tuple[str, str, str]]]:
    """Study UID -> (trust, SOPInstanceUID, SOP Class UID) of each SR or PDF report object on disk."""
    found: dict[str, list[tuple[str, str, str]]] = {}
    for file in sorted(data.glob("*/*/*/*.dcm")):
        ds = pydicom.dcmread(file, stop_before_pixels=True)
        if str(ds.SOPClassUID) in (SR_CLASS, PDF_CLASS):
            found.setdefault(str(ds.StudyInstanceUID), []).append(
                (file.parts[-4], str(ds.SOPInstanceUID), str(ds.SOPClassUID))
            )
    return found


def test_search_matches_the_manifest_for_every_patient(client, manifest, demo_data):
    """One entry per study and holding trust, and one per report object (SR or PDF) the archives hold."""
    objects = report_objects(demo_data)
    assert objects
    wrong = {}
    for patient in manifest["patients"]:
        nhs = patient["nhs_number"]
        expected = expected_ids(manifest, nhs) | {
            f"{ods(manifest, trust)}-{sop}"
            for s in patient["studies"]
            for trust, sop, _ in objects.get(s["study_uid"], ())
        }
        found = ids(search(client, [("patient", nhs), ("_count", "200")]))
        if found != expected:
            wrong[nhs] = (sorted(found), sorted(expected))
    assert not wrong


def test_report_objects_have_entries_with_their_ihe_format(client, manifest, demo_data):
    objects = report_objects(demo_data)
    classes = set()
    for study_uid, held in objects.items():
        patient = next(p for p in manifest["patients"] if any(s["study_uid"] == study_uid for s in p["studies"]))
        for trust, sop, sop_class in held:
            entry_id = f"{ods(manifest, trust)}-{sop}"
            entry = client.get(f"/fhir/DocumentReference/{entry_id}").get_json()
            assert entry["id"] == entry_id and entry["subject"]["identifier"]["value"] == patient["nhs_number"]
            assert {"reference": f"ImagingStudy/{study_uid}"} in entry["context"]["related"]
            content = entry["content"][0]
            if sop_class == PDF_CLASS:
                assert content["format"]["code"] == "urn:ihe:rad:PDF"
                assert content["attachment"]["contentType"] == "application/pdf"
                assert content["attachment"]["url"].endswith(f"/dicomweb/reports/{entry_id}/document.pdf")
                assert entry["docStatus"] == "final"
            else:
                assert content["format"]["code"] == "urn:ihe:rad:TEXT"
                text = base64.b64decode(content["attachment"]["data"]).decode("utf-8")
                assert report_text(study_uid)[1] in text
                assert entry["docStatus"] == report_state(study_uid)
            classes.add(sop_class)
            assert ids(search(client, [("_id", entry_id)])) == {entry_id}
            formats = search(client, [("patient", patient["nhs_number"]), ("format", content["format"]["code"])])
            assert entry_id in ids(formats)
            assert all(d["content"][0]["format"] == content["format"] for d in matches(formats))
    assert classes == {SR_CLASS, PDF_CLASS}


def test_an_amended_report_entry_replaces_its_predecessor(client, manifest, demo_data):
    """relatesTo `replaces` on the entry of each SR naming a PredecessorDocumentsSequence, targeting the
    DocumentReference the predecessor has at the same trust (id and UID from the file on disk); no other entry
    has relatesTo."""
    amended = 0
    for study_uid, held in report_objects(demo_data).items():
        for trust, sop, _ in held:
            file = next(demo_data.glob(f"{trust}/{study_uid}/*/{sop}.dcm"))
            ds = pydicom.dcmread(file, stop_before_pixels=True)
            entry = client.get(f"/fhir/DocumentReference/{ods(manifest, trust)}-{sop}").get_json()
            if "PredecessorDocumentsSequence" not in ds:
                assert "relatesTo" not in entry, entry["id"]
                continue
            amended += 1
            predecessor = str(
                ds.PredecessorDocumentsSequence[0]
                .ReferencedSeriesSequence[0]
                .ReferencedSOPSequence[0]
                .ReferencedSOPInstanceUID
            )
            assert entry["docStatus"] == "amended"
            assert entry["relatesTo"] == [
                {
                    "code": "replaces",
                    "target": {
                        "reference": f"DocumentReference/{document_id(ods(manifest, trust), predecessor)}",
                        "identifier": {"system": systems.DICOM_UID, "value": f"urn:oid:{predecessor}"},
                    },
                }
            ]
            searched = matches(search(client, [("_id", entry["id"])]))
            assert [d.get("relatesTo") for d in searched] == [entry["relatesTo"]]  # search builds it as read does
    assert amended >= 2


def test_the_multi_trust_patient_spans_trusts_of_both_identity_styles(manifest, multi_docs):
    custodians = {d["custodian"]["identifier"]["value"] for d in multi_docs}
    trusts = manifest["facts"]["multi_trust_patient"]["trusts"]
    assert custodians == {ods(manifest, t) for t in trusts}
    assert {trusts[t]["identity"] for t in trusts} == {"nhs", "xref"}


def test_a_study_held_by_two_trusts_has_one_entry_per_trust(client, manifest):
    shared = manifest["facts"]["shared_study"]
    bundle = search(client, [("identifier", shared["study_uid"])])
    assert ids(bundle) == {f"{ods(manifest, t)}-{shared['study_uid']}" for t in shared["trusts"]}
    assert len({d["masterIdentifier"]["value"] for d in matches(bundle)}) == len(shared["trusts"])


# ------------------------------------------------------------------ the element rules (NHS England, IHE MHD)


def test_entries_follow_the_element_rules(manifest, multi, multi_docs):
    patient = next(p for p in manifest["patients"] if p["nhs_number"] == multi)
    by_uid = {s["study_uid"]: s for s in patient["studies"]}
    trusts = manifest["facts"]["multi_trust_patient"]["trusts"]
    codes = {ods(manifest, t): t for t in trusts}
    studies = [d for d in multi_docs if d["id"] in expected_ids(manifest, multi)]  # the report entries: below
    assert len(studies) == len(expected_ids(manifest, multi))
    for doc in studies:
        trust_ods, uid = parse_document_id(doc["id"]) or ("", "")
        trust = codes[trust_ods]
        study = by_uid[uid]
        assert doc["status"] == "current"
        assert doc["subject"]["identifier"] == {"system": NHS, "value": multi}
        assert doc["custodian"]["identifier"] == {"system": systems.ODS_ORGANIZATION_CODE, "value": trust_ods}
        assert {"system": "urn:dicom:uid", "value": f"urn:oid:{uid}"} in doc["identifier"]
        first = doc["content"][0]
        assert first["attachment"]["contentType"] == "application/dicom+json"
        assert first["attachment"]["url"] == f"{BASE}/dicomweb/{trust}/studies/{uid}/metadata"
        assert first["format"] == {"system": systems.DCM_UID, "code": KOS, "display": "Key Object Selection Document"}
        related = [r["identifier"] for r in doc["context"]["related"]]
        assert [(r["type"]["coding"][0]["code"], r["value"]) for r in related] == [("ACSN", study["accession"])]
        assert doc["category"][0]["coding"][0] == {"system": systems.SNOMED, "code": "363679005", "display": "Imaging"}
        assert doc["securityLabel"][0]["coding"][0]["code"] == "N"
        assert doc["context"]["period"]["start"][:10].replace("-", "") == study["study_date"]
        source = doc["context"]["sourcePatientInfo"]["identifier"]
        if trusts[trust]["identity"] == "xref":
            local = systems.local_patient_identifier(trust_ods)
            assert source == {"system": local, "value": trusts[trust]["patient_id"]}
        else:
            assert source == {"system": NHS, "value": multi}


def test_a_trust_with_a_viewer_adds_its_url_as_a_second_content(multi_docs):
    by_trust: dict[str, list[dict[str, Any]]] = {}
    for doc in (d for d in multi_docs if d["content"][0]["attachment"]["contentType"] == "application/dicom+json"):
        by_trust.setdefault(doc["custodian"]["identifier"]["value"], []).append(doc)  # study entries
    assert by_trust["R0A"] and by_trust["RMC"]
    for doc in by_trust["R0A"]:  # mft configures a viewer in config/demo.yaml
        uid = parse_document_id(doc["id"])[1]  # type: ignore[index]
        viewer = doc["content"][1]["attachment"]
        assert viewer["contentType"] == "text/html"
        assert viewer["url"].startswith("https://mft-viewer.example.org/IHEInvokeImageDisplay?requestType=STUDY")
        assert f"studyUID={uid}&" in viewer["url"] and "patientID=" in viewer["url"]
        assert len(doc["content"]) == 2
    assert all(len(doc["content"]) == 1 for doc in by_trust["RMC"])  # bolton has no viewer


# ------------------------------------------------------------------------------ parameters


def test_each_parameter_narrows(client, manifest, multi, multi_docs, objects):
    every = {d["id"] for d in multi_docs}
    pdfs = {f"{ods(manifest, t)}-{sop}" for held in objects.values() for t, sop, c in held if c == PDF_CLASS}
    reports = report_ids(manifest, multi, objects)
    assert reports and reports <= pdfs  # the multi-trust patient's reports are PDFs
    one = next(d for d in multi_docs if d["custodian"]["identifier"]["value"] == "RMC")
    accession = one["context"]["related"][0]["identifier"]
    assert ids(search(client, [("_id", one["id"])])) == {one["id"]}
    # a study copied to another trust keeps its source accession: every copy is related to it
    related = {d["id"] for d in multi_docs if accession in [r.get("identifier") for r in d["context"]["related"]]}
    assert one["id"] in related
    assert ids(search(client, [("patient", multi), ("related", accession["value"])])) == related
    assert ids(search(client, [("related:identifier", f"{accession['system']}|{accession['value']}")])) == related
    assert ids(search(client, [("patient", multi), ("custodian", "Organization/RMC")])) == {
        d["id"] for d in multi_docs if d["custodian"]["identifier"]["value"] == "RMC"
    }
    custodian = f"{systems.ODS_ORGANIZATION_CODE}|RBV"
    assert ids(search(client, [("patient", multi), ("custodian:identifier", custodian)])) == {
        d["id"] for d in multi_docs if d["custodian"]["identifier"]["value"] == "RBV"
    }
    assert ids(search(client, [("patient", multi), ("status", "current")])) == every
    assert ids(search(client, [("patient", multi), ("status", "superseded")])) == set()
    assert ids(search(client, [("patient", multi), ("format", f"{systems.DCM_UID}|{KOS}")])) == every - reports
    assert ids(search(client, [("patient", multi), ("format", "urn:ihe:rad:PDF")])) == reports
    assert ids(search(client, [("patient", multi), ("format", "urn:ihe:rad:TEXT")])) == set()
    assert ids(search(client, [("patient", multi), ("category", f"{systems.SNOMED}|363679005")])) == every
    assert ids(search(client, [("patient", multi), ("category", "11528-7")])) == set()
    day = one["context"]["period"]["start"][:10]
    dated = {d["id"] for d in multi_docs if d["context"]["period"]["start"][:10] == day}
    assert ids(search(client, [("patient", multi), ("date", day)])) == dated
    assert ids(search(client, [("patient", multi), ("period", day)])) == dated
    later = {d["id"] for d in multi_docs if d["context"]["period"]["start"][:10] > day}
    assert ids(search(client, [("patient", multi), ("date", f"gt{day}")])) == later


def test_type_matches_the_coded_procedure(client, multi, multi_docs):
    coded = [d for d in multi_docs if d["type"].get("coding")]
    for doc in coded:
        coding = doc["type"]["coding"][0]
        found = ids(search(client, [("patient", multi), ("type", f"{coding['system']}|{coding['code']}")]))
        assert doc["id"] in found
        assert all(coding in d["type"].get("coding", ()) for d in multi_docs if d["id"] in found)
    assert ids(search(client, [("patient", multi), ("type", "http://example.org/none|NOPE")])) == set()


def test_sort_and_paging(client, multi, multi_docs):
    newest = matches(search(client, [("patient", multi), ("_count", "200")]))
    oldest = matches(search(client, [("patient", multi), ("_sort", "date"), ("_count", "200")]))
    starts = [d["context"]["period"]["start"] for d in newest]
    assert [d["context"]["period"]["start"] for d in oldest] == starts[::-1] or len(set(starts)) < len(starts)
    assert oldest[0]["context"]["period"]["start"] <= oldest[-1]["context"]["period"]["start"]
    first = search(client, [("patient", multi), ("_count", "2")])
    assert len(matches(first)) == 2 and any(x["relation"] == "next" for x in first["link"])
    count = search(client, [("patient", multi), ("_summary", "count")])
    assert count["total"] == len(multi_docs) and not matches(count)


def test_post_search_equals_get(client, multi):
    got = search(client, [("patient.identifier", f"{NHS}|{multi}"), ("_count", "200")])
    posted = client.post(
        "/fhir/DocumentReference/_search",
        data={"patient.identifier": f"{NHS}|{multi}", "_count": "200"},
        content_type="application/x-www-form-urlencoded",
    )
    assert posted.status_code == 200
    assert ids(posted.get_json()) == ids(got)


@pytest.mark.parametrize(
    ("pairs", "code"),
    [
        ([], "too-costly"),
        ([("date", "ge2015")], "too-costly"),
        ([("patient", "9434765918")], "invalid"),  # check digit wrong
        ([("patient", "*")], "invalid"),
        ([("related", "RMC*")], "invalid"),
        ([("related", "A\\B")], "invalid"),
        ([("patient", "9992975962"), ("custodian", "Organization/r m c")], "invalid"),
        ([("patient", "9992975962"), ("status", "final")], "invalid"),
        ([("patient", "9992975962"), ("date", "yesterday")], "invalid"),
        ([("_id", "not-an-id")], "invalid"),
        ([("patient", "9992975962"), ("_sort", "started")], "invalid"),
    ],
)
def test_bad_input_is_400_before_any_archive_is_asked(client, pairs, code):
    response = client.get(f"/fhir/DocumentReference?{urlencode(pairs)}")
    outcome(response, 400, code)


def test_an_unknown_parameter_is_refused_under_strict_handling(client, multi):
    response = client.get(f"/fhir/DocumentReference?patient={multi}&setting=x", headers={"Prefer": "handling=strict"})
    outcome(response, 400)


# ----------------------------------------------------------------------------------- reads


def test_read_gives_back_each_entry_of_the_search(client, multi_docs):
    for doc in multi_docs:
        response = client.get(f"/fhir/DocumentReference/{doc['id']}")
        assert response.status_code == 200
        assert response.get_json() == doc


@pytest.mark.parametrize(
    "bad",
    ["RMC-2.25.1", "XXX-2.25.7492698656716832304557205269405902835", "nonsense", "RMC-2.25..1", "_search"],
)
def test_read_of_an_unknown_id_is_404(client, bad):
    outcome(client.get(f"/fhir/DocumentReference/{bad}"), 404)


def test_ids_are_deterministic_and_a_long_uid_is_packed_reversibly():
    uid = "1.2.826.0.1.3680043.8.498.12345678901234567890123456789012345678901"[:64]
    packed = document_id("RMC", uid)
    assert len(packed) <= 64 and packed != f"RMC-{uid}"
    assert parse_document_id(packed) == ("RMC", uid)
    short = "2.25.7492698656716832304557205269405902835"
    assert document_id("RMC", short) == f"RMC-{short}" and parse_document_id(f"RMC-{short}") == ("RMC", short)
    assert parse_document_id(f"rmc-{short}") is None
    assert parse_document_id(f"RMC-0{short}") is None


# ------------------------------------------------------------------------------- compartment


def test_a_patient_token_sees_only_its_patient(app, client, manifest, multi, objects):
    other = next(p["nhs_number"] for p in manifest["patients"] if p["nhs_number"] != multi)
    token = {"Authorization": f"Bearer {patient_token(app, multi)}"}
    mine = expected_ids(manifest, multi) | report_ids(manifest, multi, objects)
    assert ids(search(client, [("_count", "200")], headers=token)) == mine
    outcome(client.get(f"/fhir/DocumentReference?patient={other}", headers=token), 403)
    foreign = next(iter(expected_ids(manifest, other)))
    denied = client.get(f"/fhir/DocumentReference/{foreign}", headers=token)
    missing = client.get("/fhir/DocumentReference/RMC-2.25.1", headers=token)
    outcome(denied, 404)
    assert denied.get_json()["issue"] == missing.get_json()["issue"]  # "not yours" reads like "not there"


def test_a_token_without_a_document_reference_scope_is_refused(app, client, multi):
    token = {"Authorization": f"Bearer {system_token(app, 'system/ImagingStudy.rs')}"}
    outcome(client.get(f"/fhir/DocumentReference?patient={multi}", headers=token), 403)
    v1 = {"Authorization": f"Bearer {system_token(app, 'system/DocumentReference.read')}"}
    assert client.get(f"/fhir/DocumentReference?patient={multi}", headers=v1).status_code == 200


def test_searches_and_reads_are_audited_with_the_patient(app, client, multi, multi_docs):
    def audited() -> int:
        token = {"Authorization": f"Bearer {system_token(app, 'system/AuditEvent.rs')}"}
        response = client.get(f"/fhir/AuditEvent?patient={multi}&_summary=count", headers=token)
        return int(response.get_json()["total"])

    before = audited()
    search(client, [("patient", multi)])
    assert client.get(f"/fhir/DocumentReference/{multi_docs[0]['id']}").status_code == 200
    assert audited() == before + 2


def test_the_capability_statement_lists_document_reference(client):
    statement = client.get("/fhir/metadata").get_json()
    resource = next(r for r in statement["rest"][0]["resource"] if r["type"] == "DocumentReference")
    assert [i["code"] for i in resource["interaction"]] == ["read", "search-type"]
    names = {p["name"] for p in resource["searchParam"]}
    assert {"_id", "patient", "subject", "date", "period", "type", "category", "status", "identifier"} <= names
    assert {"related", "custodian", "format", "_count"} <= names


def test_report_reads_are_capped_per_search_not_per_study(config_document, manifest, demo_data):
    """federation.max_report_reads bounds a whole DocumentReference search: with a cap of 1, a patient with
    reports in two studies gets one report entry and an incomplete outcome naming the cap."""
    nhs = "9999693717"
    objects = report_objects(demo_data)
    patient = next(p for p in manifest["patients"] if p["nhs_number"] == nhs)
    reported = [s["study_uid"] for s in patient["studies"] if s["study_uid"] in objects]
    assert len(reported) == 2
    doc = copy.deepcopy(config_document)
    doc.setdefault("federation", {})["max_report_reads"] = 1
    app = create_app(settings_from_document(doc, demo_data, "tests/reports"))
    token = {"Authorization": f"Bearer {system_token(app, 'system/*.rs')}"}
    bundle = app.test_client().get(f"/fhir/DocumentReference?patient={nhs}&_count=200", headers=token).get_json()
    sops = {f"{ods(manifest, t)}-{sop}" for s in reported for t, sop, _ in objects[s]}
    assert len(ids(bundle) & sops) == 1
    notes = [i for e in bundle["entry"] if e["search"]["mode"] == "outcome" for i in e["resource"]["issue"]]
    assert any(i["code"] == "incomplete" and "federation.max_report_reads" in i["diagnostics"] for i in notes)


def test_a_report_entry_is_found_by_its_identifier(client, manifest, demo_data):
    """The entry of a report object carries `urn:dicom:uid|urn:oid:<SOPInstanceUID>`: that identifier finds it."""
    objects = report_objects(demo_data)
    study_uid, held = next(iter(sorted(objects.items())))
    trust, sop, _ = held[0]
    entry_id = f"{ods(manifest, trust)}-{sop}"
    entry = client.get(f"/fhir/DocumentReference/{entry_id}").get_json()
    assert {"system": "urn:dicom:uid", "value": f"urn:oid:{sop}"} in entry["identifier"]
    assert ids(search(client, [("identifier", f"urn:dicom:uid|urn:oid:{sop}")])) == {entry_id}
    patient = next(p for p in manifest["patients"] if any(s["study_uid"] == study_uid for s in p["studies"]))
    assert ids(search(client, [("identifier", f"urn:oid:{sop}"), ("patient", patient["nhs_number"])])) == {entry_id}
    other = next(p["nhs_number"] for p in manifest["patients"] if p["nhs_number"] != patient["nhs_number"])
    assert ids(search(client, [("identifier", f"urn:dicom:uid|urn:oid:{sop}"), ("patient", other)])) == set()
