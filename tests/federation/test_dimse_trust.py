"""A legacy trust answering by DIMSE C-FIND (a real dcmqrscp) inside a federated search.

The trust's studies found through the facade must be the ones the embedded folder archive holds
for the patient, with subject, series and modality mapped from what dcmqrscp returns.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from app import create_app
from app.settings import settings_from_document
from app.web.components import components
from tests.infra.dcmqrscp import DcmqrscpServer

try:
    from fhir_validation import validate_resource
    from smart_tokens import system_token
except ImportError:  # pragma: no cover
    from tests.fhir_validation import validate_resource  # type: ignore[no-redef]
    from tests.smart_tokens import system_token  # type: ignore[no-redef]

pytestmark = pytest.mark.integration
TRUST = "wwl"  # PatientID = NHS number, issuer NHS


@pytest.fixture(scope="module")
def dimse_archive(demo_data: Path) -> Any:
    with DcmqrscpServer(aet="WWLPACS") as server:
        server.store(sorted((demo_data / TRUST).rglob("*.dcm")))
        yield server


@pytest.fixture(scope="module")
def mixed_app(
    config_document: dict[str, Any], demo_data: Path, dimse_archive: Any, tmp_path_factory: pytest.TempPathFactory
) -> Any:
    """The demo facade with one trust (wwl) answering by C-FIND instead of from its folder."""
    doc = copy.deepcopy(config_document)
    state = tmp_path_factory.mktemp("dimse-state")
    doc["audit"] = {"path": str(state / "audit.sqlite")}
    doc["auth"]["signing_keys"] = str(state / "keys.json")
    doc["auth"]["store"] = f"sqlite:{state / 'auth.sqlite'}"
    for trust in doc["trusts"]:
        if trust["id"] == TRUST:
            trust["archive"] = {
                "type": "dimse",
                "host": dimse_archive.host,
                "port": dimse_archive.port,
                "called_aet": dimse_archive.aet,
                "calling_aet": "GMFACADE",
                "timeout_s": 5,
            }
    app = create_app(settings_from_document(doc, demo_data, "tests/dimse"))
    yield app
    components(app).services.close()


def _patient_with_most_studies_at(manifest: dict[str, Any], trust: str) -> dict[str, Any]:
    return max(manifest["patients"], key=lambda p: sum(trust in s["trusts"] for s in p["studies"]))


def test_dimse_trust_studies_found_through_the_facade(mixed_app: Any, app: Any, manifest: dict[str, Any]) -> None:
    patient = _patient_with_most_studies_at(manifest, TRUST)
    nhs = patient["nhs_number"]
    auth = {"Authorization": f"Bearer {system_token(mixed_app)}"}
    response = mixed_app.test_client().get(f"/fhir/ImagingStudy?patient={nhs}&_count=200", headers=auth)
    assert response.status_code == 200
    bundle = response.get_json()
    validate_resource(bundle)
    found = {e["resource"]["id"]: e["resource"] for e in bundle.get("entry", ()) if e["search"]["mode"] == "match"}
    expected = {s["study_uid"] for s in patient["studies"]}
    assert set(found) == expected
    at_dimse = [uid for uid, study in found.items() if study["endpoint"][0]["reference"] == f"Endpoint/{TRUST}-wado-rs"]
    assert at_dimse, "no study came from the DIMSE trust"
    folder = (
        app.test_client()
        .get(f"/fhir/ImagingStudy?patient={nhs}&_count=200", headers={"Authorization": f"Bearer {system_token(app)}"})
        .get_json()
    )
    by_folder = {e["resource"]["id"]: e["resource"] for e in folder["entry"] if e["search"]["mode"] == "match"}
    for uid in at_dimse:
        study, reference = found[uid], by_folder[uid]
        assert study["subject"]["reference"] == f"Patient/{nhs}"
        assert {s["uid"] for s in study["series"]} == {s["uid"] for s in reference["series"]}
        assert {c["code"] for c in study["modality"]} == {c["code"] for c in reference["modality"]}
        assert study["started"][:10] == reference["started"][:10]
    assert not [
        i
        for i in bundle["entry"]
        if i["search"]["mode"] == "outcome" and any(x["code"] == "incomplete" for x in i["resource"]["issue"])
    ]


def test_dimse_trust_refuses_wildcards_before_any_query(mixed_app: Any) -> None:
    auth = {"Authorization": f"Bearer {system_token(mixed_app)}"}
    response = mixed_app.test_client().get("/fhir/ImagingStudy?patient=943476591*", headers=auth)
    assert response.status_code == 400
