"""The image gateway over the embedded folder archives (the demo's): what it serves, whom it serves, and
what it refuses. The archives' own files are the reference: a retrieval must give them back byte for byte.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pydicom
import pytest
from PIL import Image
from smart_tokens import patient_token, system_token

from tests.gateway.multipart import parts

REQUIRES_TOKEN = "http://fhir.org/argonaut/smart-imaging/StructureDefinition/requires-access-token"


@pytest.fixture(scope="module")
def http(app: Any) -> Any:
    return app.test_client()


@pytest.fixture(scope="module")
def system(app: Any) -> dict[str, str]:
    return {"Authorization": f"Bearer {system_token(app)}"}


@pytest.fixture(scope="module")
def patient(manifest: dict[str, Any]) -> dict[str, Any]:
    """The patient with studies at four trusts."""
    nhs = manifest["facts"]["multi_trust_patient"]["nhs_number"]
    return next(p for p in manifest["patients"] if p["nhs_number"] == nhs)


@pytest.fixture(scope="module")
def other(manifest: dict[str, Any], patient: dict[str, Any]) -> dict[str, Any]:
    """Another patient, with a study at a trust the first patient also uses."""
    return next(
        p
        for p in manifest["patients"]
        if p["nhs_number"] != patient["nhs_number"] and any(set(s["trusts"]) & {"mft"} for s in p["studies"])
    )


def one_trust_study(record: dict[str, Any], trust: str | None = None) -> tuple[str, str]:
    study = next(s for s in record["studies"] if len(s["trusts"]) == 1 and (trust is None or s["trusts"] == [trust]))
    return study["trusts"][0], study["study_uid"]


def files_of(demo_data: Path, trust: str, study_uid: str) -> dict[str, tuple[Path, pydicom.Dataset]]:
    """SOP Instance UID -> (path, dataset) of the study's files in the trust's folder."""
    found: dict[str, tuple[Path, pydicom.Dataset]] = {}
    for path in sorted((demo_data / trust).rglob("*.dcm")):
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        if ds.StudyInstanceUID == study_uid:
            found[str(ds.SOPInstanceUID)] = (path, ds)
    assert found, f"no files of {study_uid} in {trust}"
    return found


def outcome(response: Any, status: int) -> dict[str, Any]:
    assert response.status_code == status, (response.status_code, response.get_data()[:300])
    assert response.mimetype == "application/fhir+json"
    body = response.get_json()
    assert body["resourceType"] == "OperationOutcome" and body["issue"], body
    return body


# ----------------------------------------------------------------------------- what it serves


def test_study_retrieval_gives_back_every_file_byte_for_byte(
    http: Any, system: dict[str, str], demo_data: Path, patient: dict[str, Any]
) -> None:
    trust, uid = one_trust_study(patient, "mft")
    response = http.get(f"/dicomweb/{trust}/studies/{uid}", headers=system)
    assert response.status_code == 200
    assert response.headers["Cache-Control"] == "no-store"
    assert int(response.headers["Content-Length"]) == len(response.data)
    received = parts(response.headers["Content-Type"], response.data)
    on_disk = files_of(demo_data, trust, uid)
    assert sorted(p for _, p in received) == sorted(path.read_bytes() for path, _ in on_disk.values())
    for headers, payload in received:
        assert headers["content-type"].startswith("application/dicom")
        assert int(headers["content-length"]) == len(payload)


def test_series_and_instance_levels(
    http: Any, system: dict[str, str], demo_data: Path, patient: dict[str, Any]
) -> None:
    trust, uid = one_trust_study(patient, "mft")
    on_disk = files_of(demo_data, trust, uid)
    sop, (path, ds) = next(iter(on_disk.items()))
    series = str(ds.SeriesInstanceUID)
    whole_series = http.get(f"/dicomweb/{trust}/studies/{uid}/series/{series}", headers=system)
    expected = sorted(p.read_bytes() for p, d in on_disk.values() if d.SeriesInstanceUID == series)
    assert sorted(b for _, b in parts(whole_series.headers["Content-Type"], whole_series.data)) == expected
    instance = http.get(f"/dicomweb/{trust}/studies/{uid}/series/{series}/instances/{sop}", headers=system)
    assert [b for _, b in parts(instance.headers["Content-Type"], instance.data)] == [path.read_bytes()]


def test_metadata_is_the_files_dicom_json(
    http: Any, system: dict[str, str], demo_data: Path, patient: dict[str, Any]
) -> None:
    trust, uid = one_trust_study(patient, "christie")
    response = http.get(f"/dicomweb/{trust}/studies/{uid}/metadata", headers=system)
    assert response.status_code == 200 and response.mimetype == "application/dicom+json"
    body = response.get_json()
    on_disk = files_of(demo_data, trust, uid)
    assert {d["00080018"]["Value"][0] for d in body} == set(on_disk)
    for dataset in body:
        _, ds = on_disk[dataset["00080018"]["Value"][0]]
        assert dataset == ds.to_json_dict(bulk_data_threshold=1 << 20)
        assert "7FE00010" not in dataset  # no pixel data in metadata


def test_frames_are_the_pixel_data(http: Any, system: dict[str, str], demo_data: Path, patient: dict[str, Any]) -> None:
    trust, uid = one_trust_study(patient, "mft")
    sop, (path, ds) = next(iter(files_of(demo_data, trust, uid).items()))
    full = pydicom.dcmread(path)
    base = f"/dicomweb/{trust}/studies/{uid}/series/{ds.SeriesInstanceUID}/instances/{sop}"
    response = http.get(f"{base}/frames/1", headers=system)
    assert response.status_code == 200
    ((headers, payload),) = parts(response.headers["Content-Type"], response.data)
    assert headers["content-type"].startswith("application/octet-stream")
    assert (
        payload == full.PixelData[: len(payload)] and len(payload) == full.Rows * full.Columns * full.BitsAllocated // 8
    )
    outcome(http.get(f"{base}/frames/999", headers=system), 404)


def test_rendered_and_thumbnail_are_images(
    http: Any, system: dict[str, str], patient: dict[str, Any], settings: Any, demo_data: Path
) -> None:
    trust, uid = one_trust_study(patient, "mft")
    base = f"/dicomweb/{trust}/studies/{uid}"
    rendered = http.get(f"{base}/rendered", headers=system)
    assert rendered.status_code == 200 and rendered.mimetype == "image/jpeg"
    assert Image.open(io.BytesIO(rendered.data)).format == "JPEG"
    png = http.get(f"{base}/rendered?viewport=64,32", headers={**system, "Accept": "image/png"})
    assert png.mimetype == "image/png"
    assert max(Image.open(io.BytesIO(png.data)).size) <= 64 and Image.open(io.BytesIO(png.data)).size[1] <= 32
    thumbnail = http.get(f"{base}/thumbnail", headers=system)
    assert thumbnail.status_code == 200
    # The thumbnail's edge, unless the source is smaller: never drawn larger than the source (S5).
    edge = max(
        max(int(ds.get("Rows", 0)), int(ds.get("Columns", 0))) for _, ds in files_of(demo_data, trust, uid).values()
    )
    assert max(Image.open(io.BytesIO(thumbnail.data)).size) == min(settings.gateway_thumbnail_px, edge)


def test_accept_is_negotiated_not_ignored(http: Any, system: dict[str, str], patient: dict[str, Any]) -> None:
    trust, uid = one_trust_study(patient, "mft")
    base = f"/dicomweb/{trust}/studies/{uid}"
    outcome(http.get(base, headers={**system, "Accept": "application/zip"}), 406)
    outcome(http.get(f"{base}/metadata", headers={**system, "Accept": "application/xml"}), 406)
    outcome(http.get(f"{base}/rendered", headers={**system, "Accept": "image/gif"}), 406)
    # These files are Explicit VR Little Endian: asking for it works, asking for JPEG 2000 is refused (no transcoding).
    explicit = 'multipart/related; type="application/dicom"; transfer-syntax=1.2.840.10008.1.2.1'
    assert http.get(base, headers={**system, "Accept": explicit}).status_code == 200
    j2k = 'multipart/related; type="application/dicom"; transfer-syntax=1.2.840.10008.1.2.4.90'
    outcome(http.get(base, headers={**system, "Accept": j2k}), 406)


def test_head_sends_headers_only(http: Any, system: dict[str, str], patient: dict[str, Any]) -> None:
    trust, uid = one_trust_study(patient, "mft")
    response = http.head(f"/dicomweb/{trust}/studies/{uid}/metadata", headers=system)
    assert response.status_code == 200 and response.data == b""
    assert response.mimetype == "application/dicom+json"


# ----------------------------------------------------------------------------- whom it serves


def test_no_token_is_401_with_a_bearer_challenge(http: Any, patient: dict[str, Any]) -> None:
    trust, uid = one_trust_study(patient)
    response = http.get(f"/dicomweb/{trust}/studies/{uid}")
    outcome(response, 401)
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    outcome(http.get(f"/dicomweb/{trust}/studies/{uid}", headers={"Authorization": "Bearer not.a.token"}), 401)


def test_a_token_without_imagingstudy_read_is_403(app: Any, http: Any, patient: dict[str, Any]) -> None:
    trust, uid = one_trust_study(patient)
    for scope in ("system/Patient.rs", "system/ImagingStudy.s"):
        token = system_token(app, scope)
        response = http.get(f"/dicomweb/{trust}/studies/{uid}", headers={"Authorization": f"Bearer {token}"})
        outcome(response, 403)
        assert "insufficient_scope" in response.headers["WWW-Authenticate"]


def test_a_filtered_scope_does_not_open_images(app: Any, http: Any, patient: dict[str, Any]) -> None:
    trust, uid = one_trust_study(patient)
    token = patient_token(app, patient["nhs_number"], "launch/patient patient/ImagingStudy.rs?modality=CT")
    outcome(http.get(f"/dicomweb/{trust}/studies/{uid}", headers={"Authorization": f"Bearer {token}"}), 403)


def test_patient_token_opens_own_studies_at_every_trust(app: Any, http: Any, patient: dict[str, Any]) -> None:
    token = {"Authorization": f"Bearer {patient_token(app, patient['nhs_number'])}"}
    opened = 0
    for study in patient["studies"]:
        for trust in study["trusts"]:
            response = http.get(f"/dicomweb/{trust}/studies/{study['study_uid']}/metadata", headers=token)
            assert response.status_code == 200, (trust, study["study_uid"], response.get_data()[:200])
            opened += 1
    assert opened >= 4


def test_patient_token_cannot_open_another_patients_study(
    app: Any, http: Any, patient: dict[str, Any], other: dict[str, Any]
) -> None:
    """Another patient's study answers exactly like a study that does not exist: 404, nothing revealed."""
    token = {"Authorization": f"Bearer {patient_token(app, patient['nhs_number'])}"}
    trust, uid = one_trust_study(other, "mft")
    for suffix in ("", "/metadata", "/rendered", "/thumbnail"):
        denied = outcome(http.get(f"/dicomweb/{trust}/studies/{uid}{suffix}", headers=token), 404)
        missing = outcome(http.get(f"/dicomweb/{trust}/studies/2.25.1{suffix}", headers=token), 404)
        assert denied["issue"][0]["code"] == missing["issue"][0]["code"] == "not-found"
        assert uid not in str(missing) and other["nhs_number"] not in str(denied)
    # The same study through another trust's path is not a way round.
    own_trust, _ = one_trust_study(patient, "christie")
    outcome(http.get(f"/dicomweb/{own_trust}/studies/{uid}", headers=token), 404)


def test_series_of_another_study_is_not_served_under_an_own_study(
    app: Any, http: Any, demo_data: Path, patient: dict[str, Any], other: dict[str, Any]
) -> None:
    """The owner check is on the study; a foreign series cannot ride on an own study UID."""
    token = {"Authorization": f"Bearer {patient_token(app, patient['nhs_number'])}"}
    _, own = one_trust_study(patient, "mft")
    _, foreign = one_trust_study(other, "mft")
    _, (_, ds) = next(iter(files_of(demo_data, "mft", foreign).items()))
    outcome(http.get(f"/dicomweb/mft/studies/{own}/series/{ds.SeriesInstanceUID}", headers=token), 404)


def test_every_retrieval_is_audited(app: Any, http: Any, patient: dict[str, Any], other: dict[str, Any]) -> None:
    token = {"Authorization": f"Bearer {patient_token(app, patient['nhs_number'])}"}
    trust, uid = one_trust_study(patient, "mft")
    _, foreign = one_trust_study(other, "mft")
    assert http.get(f"/dicomweb/{trust}/studies/{uid}/thumbnail", headers=token).status_code == 200
    assert http.get(f"/dicomweb/mft/studies/{foreign}", headers=token).status_code == 404
    audit = {"Authorization": f"Bearer {system_token(app, 'system/AuditEvent.rs')}"}
    events = http.get("/fhir/AuditEvent?_count=200&_sort=-date", headers=audit).get_json()["entry"]
    granted = [
        e["resource"]
        for e in events
        if any(en.get("what", {}).get("reference") == f"ImagingStudy/{uid}" for en in e["resource"].get("entity", ()))
    ]
    assert granted, "no AuditEvent for the retrieval"
    event = granted[0]
    assert event["outcome"] == "0" and event["action"] == "R"
    assert {"reference": f"Patient/{patient['nhs_number']}"} in [en.get("what") for en in event["entity"]]
    assert any(en.get("description", "").endswith(f"studies/{uid}/thumbnail") for en in event["entity"])
    refused = [
        e["resource"]
        for e in events
        if any(
            en.get("what", {}).get("reference") == f"ImagingStudy/{foreign}" for en in e["resource"].get("entity", ())
        )
    ]
    assert refused and refused[0]["outcome"] == "4"
    # S16: a refused attempt names the patient it targeted, for the audit trail only (AuditEvent?patient=
    # finds it); the 404 the client got names nobody (test_patient_token_cannot_open_another_patients_study).
    assert [en["what"] for en in refused[0]["entity"] if en["role"]["code"] == "1"] == [
        {"reference": f"Patient/{other['nhs_number']}"}
    ]


# ----------------------------------------------------------------------------- what it refuses


BAD_PATHS = [
    ("/dicomweb/bolton/studies/1.2.x", 400),
    ("/dicomweb/bolton/studies/1.02.3", 400),  # a UID component may not start with 0
    ("/dicomweb/bolton/studies/" + "1." * 32 + "1", 400),  # longer than 64 characters
    ("/dicomweb/bolton/studies/1.2.3*", 400),
    ("/dicomweb/bolton/studies/1.2.3/series/*", 400),
    ("/dicomweb/bolton/studies/1.2.3/series/1.2/instances/1?3", 400),
    ("/dicomweb/bolton/studies/1.2.3/../1.2.4", 400),
    ("/dicomweb/bolton/studies/1.2.3/%2e%2e/1.2.4", 400),
    ("/dicomweb/bolton/studies/1.2.3%2Fseries%2F1.2", 400),
    ("/dicomweb/bolton/studies/1.2.3%5Cseries", 400),
    ("/dicomweb/bolton/studies//1.2.3", 400),
    ("/dicomweb/bolton/studies/1.2.3/", 400),
    ("/dicomweb/bolton/studies/1.2.3/bulkdata", 400),
    ("/dicomweb/bolton/studies/1.2.3/series/1.2/instances/1.3/frames/0", 400),
    ("/dicomweb/bolton/studies/1.2.3/series/1.2/instances/1.3/frames/1,a", 400),
    ("/dicomweb/bolton/studies/1.2.3/series/1.2/instances/1.3/frames/1/metadata", 400),
    ("/dicomweb/bolton/series/1.2.3", 400),
    ("/dicomweb/bolton/studies", 400),
    ("/dicomweb/bolton/studies/1.2.3?PatientID=*", 400),
    ("/dicomweb/bolton/studies/1.2.3/rendered?viewport=0,10", 400),
    ("/dicomweb/bolton/studies/1.2.3/rendered?quality=101", 400),
    ("/dicomweb/bolton/studies/1.2.3/rendered?window=40,400,cubic", 400),
    ("/dicomweb/bolton/studies/1.2.3/rendered?quality=50&quality=60", 400),
    ("/dicomweb/bolton/studies/1.2.3/rendered?viewport=9999,9999", 400),  # S5: at most 4096 a side
    ("/dicomweb/bolton/studies/1.2.3/thumbnail?viewport=4097,64", 400),
    ("/dicomweb/nowhere/studies/1.2.3", 404),
    ("/dicomweb/../fhir/metadata", 400),
    ("/dicomweb/BOLTON/studies/1.2.3", 404),
]


@pytest.mark.parametrize(("path", "status"), BAD_PATHS, ids=[p for p, _ in BAD_PATHS])
def test_bad_input_is_refused_with_an_outcome(http: Any, system: dict[str, str], path: str, status: int) -> None:
    response = http.get(path, headers=system)
    if response.status_code in (404, 400) and response.mimetype == "application/fhir+json":
        outcome(response, status)
    else:
        pytest.fail(f"{path} -> {response.status_code} {response.mimetype}")


def test_bad_headers_are_refused(http: Any, system: dict[str, str], patient: dict[str, Any]) -> None:
    trust, uid = one_trust_study(patient)
    outcome(http.get(f"/dicomweb/{trust}/studies/{uid}", headers={**system, "Accept": "x" * 2000}), 400)


def test_only_get_and_head(http: Any, system: dict[str, str], patient: dict[str, Any]) -> None:
    trust, uid = one_trust_study(patient)
    for method in ("POST", "PUT", "DELETE"):
        response = http.open(f"/dicomweb/{trust}/studies/{uid}", method=method, headers=system)
        outcome(response, 405)


# ----------------------------------------------------------------------------- Endpoints


def test_endpoints_name_the_gateway_and_want_the_token(client: Any, settings: Any) -> None:
    bundle = client.get("/fhir/Endpoint?connection-type=dicom-wado-rs").get_json()
    endpoints = [e["resource"] for e in bundle["entry"]]
    assert len(endpoints) == len(settings.trusts)
    for endpoint in endpoints:
        trust = endpoint["id"].removesuffix("-wado-rs")
        assert endpoint["address"] == f"{settings.public_root}/dicomweb/{trust}"
        assert endpoint["status"] == "active"
        assert {"url": REQUIRES_TOKEN, "valueBoolean": True} in endpoint["extension"]


def test_viewer_endpoints_fill_from_the_study(client: Any, manifest: dict[str, Any]) -> None:
    """The ihe-iid Endpoint of a trust with a viewer, referenced by that trust's studies."""
    viewer = client.get("/fhir/Endpoint/mft-ihe-iid").get_json()
    assert viewer["connectionType"]["code"] == "ihe-iid"
    assert "{studyUID}" in viewer["address"]
    record = next(p for p in manifest["patients"] if any(s["trusts"] == ["mft"] for s in p["studies"]))
    uid = next(s["study_uid"] for s in record["studies"] if s["trusts"] == ["mft"])
    study = client.get(f"/fhir/ImagingStudy/{uid}").get_json()
    assert {"reference": "Endpoint/mft-ihe-iid"} in study["endpoint"]
    found = client.get(f"/fhir/ImagingStudy?patient={record['nhs_number']}&endpoint=mft-ihe-iid").get_json()
    assert found["total"] >= 1
    url = viewer["address"].format(studyUID=uid, accessionNumber="A1", patientID=record["nhs_number"])
    assert uid in url and record["nhs_number"] in url
    assert client.get("/fhir/Endpoint/bolton-ihe-iid").status_code == 404  # bolton has no viewer configured


def test_a_dimse_trust_without_wado_offers_no_images(
    config_document: dict[str, Any], demo_data: Path, patient: dict[str, Any]
) -> None:
    """C-FIND only (no wado_url): its Endpoint says `off`, and the gateway says 501 without asking anything."""
    import copy

    from app import create_app
    from app.settings import settings_from_document

    doc = copy.deepcopy(config_document)
    for trust in doc["trusts"]:
        if trust["id"] == "christie":
            trust["archive"] = {"type": "dimse", "host": "127.0.0.1", "port": 9, "called_aet": "NOWHERE"}
    dimse_app = create_app(settings_from_document(doc, demo_data, "tests/gateway-dimse"))
    http = dimse_app.test_client()
    headers = {"Authorization": f"Bearer {system_token(dimse_app)}"}
    endpoint = http.get("/fhir/Endpoint/christie-wado-rs", headers=headers).get_json()
    assert endpoint["status"] == "off"
    assert http.get("/fhir/Endpoint/bolton-wado-rs", headers=headers).get_json()["status"] == "active"
    _, uid = one_trust_study(patient, "christie")
    outcome(http.get(f"/dicomweb/christie/studies/{uid}", headers=headers), 501)


# ----------------------------------------------------------------------------- bounded rendering (S5)


def test_rendering_never_upscales_past_the_source(
    http: Any, system: dict[str, str], patient: dict[str, Any], demo_data: Path
) -> None:
    """S5: `viewport` is a box to fit in, not a size to blow the image up to (9999,9999 took a worker to 855 MiB)."""
    trust, uid = one_trust_study(patient, "mft")
    _, ds = next(iter(files_of(demo_data, trust, uid).values()))
    source = (int(ds.Columns), int(ds.Rows))
    base = f"/dicomweb/{trust}/studies/{uid}"
    for resource in ("rendered", "thumbnail"):
        response = http.get(f"{base}/{resource}?viewport=4096,4096", headers={**system, "Accept": "image/png"})
        assert response.status_code == 200, response.get_data()[:300]
        assert Image.open(io.BytesIO(response.data)).size == source
    wide = http.get(f"{base}/rendered?viewport=4000,{source[1] // 2}", headers={**system, "Accept": "image/png"})
    assert Image.open(io.BytesIO(wide.data)).size == (source[0] // 2, source[1] // 2)  # smaller only


def test_rendering_output_is_capped_whatever_the_source() -> None:
    """S5: an image larger than MAX_VIEWPORT is drawn at most MAX_VIEWPORT a side, aspect ratio kept."""
    import numpy as np
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian

    from app.archives.folder.render import output_size, render
    from app.archives.images import MAX_VIEWPORT

    assert output_size(8, 8, None) == (8, 8)
    assert output_size(8, 8, (9999, 9999)) == (8, 8)
    assert output_size(20000, 10000, None) == (MAX_VIEWPORT, MAX_VIEWPORT // 2)
    assert output_size(20000, 10000, (9999, 9999)) == (MAX_VIEWPORT, MAX_VIEWPORT // 2)
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.Rows, ds.Columns = 2, 5000
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit, ds.PixelRepresentation = 7, 0
    ds.PixelData = np.arange(2 * 5000, dtype="uint8").tobytes()
    image = Image.open(io.BytesIO(render(ds, 0, None, None, "png")))
    assert image.size == (MAX_VIEWPORT, 2)


def test_rendering_is_refused_with_retry_after_when_every_slot_is_taken(
    http: Any, system: dict[str, str], patient: dict[str, Any]
) -> None:
    """S5: at most MAX_CONCURRENT_RENDERS renderings per process; one more is a 503 with Retry-After."""
    from app.archives.folder import render

    trust, uid = one_trust_study(patient, "mft")
    base = f"/dicomweb/{trust}/studies/{uid}"
    held = 0
    try:
        while render.RENDER_SLOTS.acquire(blocking=False):  # what concurrent renderings would hold
            held += 1
        assert held == render.MAX_CONCURRENT_RENDERS
        for resource in ("rendered", "thumbnail"):
            busy = http.get(f"{base}/{resource}", headers=system)
            body = outcome(busy, 503)
            assert body["issue"][0]["code"] == "transient"
            assert int(busy.headers["Retry-After"]) >= 1
        assert http.get(f"{base}/metadata", headers=system).status_code == 200  # only rendering is bounded
    finally:
        for _ in range(held):
            render.RENDER_SLOTS.release()
    assert http.get(f"{base}/rendered", headers=system).status_code == 200


# ----------------------------------------------------------------------------- unresolved identity (S20)


@pytest.fixture(scope="module")
def unresolved(
    config_document: dict[str, Any], demo_data: Path, manifest: dict[str, Any], tmp_path_factory: pytest.TempPathFactory
) -> Any:
    """A facade whose Bolton archive holds one of a patient's studies as is, and a copy of another whose
    PatientID is no NHS number (its identity does not resolve): (app, resolved uid, unresolved uid)."""
    import copy
    import shutil

    from app import create_app
    from app.settings import settings_from_document

    uids = next(
        found
        for record in manifest["patients"]
        if len(found := [s["study_uid"] for s in record["studies"] if s["trusts"] == ["bolton"]]) >= 2
    )
    folder = tmp_path_factory.mktemp("unresolved") / "bolton"
    for uid in uids[:2]:
        shutil.copytree(demo_data / "bolton" / uid, folder / uid)
    for path in (folder / uids[1]).rglob("*.dcm"):
        ds = pydicom.dcmread(path)
        ds.PatientID = "LOCAL-0001"
        if "OtherPatientIDsSequence" in ds:
            del ds.OtherPatientIDsSequence
        ds.save_as(path)
    doc = copy.deepcopy(config_document)
    doc["trusts"] = [t for t in doc["trusts"] if t["id"] == "bolton"]
    doc["trusts"][0]["archive"]["path"] = str(folder)
    doc.pop("patient_xref", None)
    built = create_app(settings_from_document(doc, demo_data, "tests/gateway-unresolved"))
    return built, uids[0], uids[1]


@pytest.mark.parametrize("scope", ["system/ImagingStudy.rs", "user/ImagingStudy.rs"])
def test_a_study_whose_identity_does_not_resolve_is_refused_whatever_the_token(unresolved: Any, scope: str) -> None:
    """S20: owners (None,) were relayed to user and system tokens; now a 404 worded like a missing study."""
    from app.auth.server.grants import Grantee
    from app.web.components import components

    app, resolved, unknown_identity = unresolved
    assert components(app).services.owners.owners("bolton", unknown_identity) == (None,)  # held, by nobody
    server = components(app).auth_server
    assert server is not None
    if scope.startswith("system/"):
        token = system_token(app, scope)
    else:
        user = Grantee("dr.khan", "Practitioner/dr-khan", None)
        token = server.issuer("authorization_code", server.clients["imaging-timeline"], user, scope)["access_token"]
    http = app.test_client()
    headers = {"Authorization": f"Bearer {token}"}
    assert http.get(f"/dicomweb/bolton/studies/{resolved}/metadata", headers=headers).status_code == 200
    for suffix in ("", "/metadata", "/rendered"):
        refused = http.get(f"/dicomweb/bolton/studies/{unknown_identity}{suffix}", headers=headers)
        missing = http.get(f"/dicomweb/bolton/studies/2.25.1{suffix}", headers=headers)
        outcome(refused, 404)
        assert refused.data == missing.data  # byte for byte a study the trust does not hold
