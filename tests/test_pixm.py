"""IHE PIXm: the facade serves $ihe-pix over its cross-reference, and can use a PIXm service instead
of the CSV file (here: a second facade, served for real on loopback)."""

from __future__ import annotations

import copy
import csv
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from smart_tokens import patient_token, system_token

from app import create_app
from app.core.systems import local_patient_identifier as local_system
from app.settings import settings_from_document
from app.web.components import components
from tests.infra import serve_wsgi

NHS = "https://fhir.nhs.uk/Id/nhs-number"
ODS = {"christie": "RBV", "stockport": "RWJ", "tameside": "RMP"}


@pytest.fixture(scope="module")
def xref_rows(demo_data: Path) -> list[dict[str, str]]:
    with (demo_data / "xref.csv").open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def _pix(client: Any, source: str, **extra: Any) -> Any:
    return client.get("/fhir/Patient/$ihe-pix", query_string={"sourceIdentifier": source, **extra})


def test_pix_from_nhs_number_lists_every_local_number(client: Any, xref_rows: list[dict[str, str]]) -> None:
    nhs = xref_rows[0]["nhs_number"]
    response = _pix(client, f"{NHS}|{nhs}")
    assert response.status_code == 200
    body = response.get_json()
    found = {
        (p["valueIdentifier"]["system"], p["valueIdentifier"]["value"])
        for p in body["parameter"]
        if p["name"] == "targetIdentifier"
    }
    expected = {(local_system(ODS[r["trust"]]), r["local_patient_id"]) for r in xref_rows if r["nhs_number"] == nhs}
    assert found == expected
    assert {"name": "targetId", "valueReference": {"reference": f"Patient/{nhs}"}} in body["parameter"]


def test_pix_from_local_number_gives_the_nhs_number(client: Any, xref_rows: list[dict[str, str]]) -> None:
    row = xref_rows[0]
    response = _pix(client, f"{local_system(ODS[row['trust']])}|{row['local_patient_id']}", targetSystem=NHS)
    assert response.status_code == 200
    targets = [p["valueIdentifier"] for p in response.get_json()["parameter"] if p["name"] == "targetIdentifier"]
    assert targets == [{"system": NHS, "value": row["nhs_number"]}]


@pytest.mark.parametrize(
    ("source", "extra", "status"),
    [
        ("urn:unknown:system|123", {}, 400),
        (f"{NHS}|9999999999", {}, 404),
        ("no-bar", {}, 400),
        (f"{NHS}|943476591*", {}, 400),
        (None, {"targetSystem": "urn:unknown"}, 403),
    ],
    ids=["unknown-authority", "unknown-patient", "malformed", "wildcard", "unknown-target"],
)
def test_pix_errors(
    client: Any, xref_rows: list[dict[str, str]], source: str | None, extra: dict[str, str], status: int
) -> None:
    response = _pix(client, source or f"{NHS}|{xref_rows[0]['nhs_number']}", **extra)
    assert response.status_code == status
    assert response.get_json()["resourceType"] == "OperationOutcome"


def test_pix_needs_a_token_and_keeps_to_the_compartment(app: Any, xref_rows: list[dict[str, str]]) -> None:
    raw = app.test_client()
    nhs = xref_rows[0]["nhs_number"]
    assert raw.get(f"/fhir/Patient/$ihe-pix?sourceIdentifier={NHS}|{nhs}").status_code == 401
    other = next(r["nhs_number"] for r in xref_rows if r["nhs_number"] != nhs)
    token = patient_token(app, other, "patient/*.rs")
    response = raw.get(
        f"/fhir/Patient/$ihe-pix?sourceIdentifier={NHS}|{nhs}", headers={"Authorization": f"Bearer {token}"}
    )
    assert response.status_code == 404


@pytest.fixture(scope="module")
def served_index(app: Any) -> Iterator[str]:
    """The session app served for real on loopback: the PIXm service of a second facade."""
    with serve_wsgi(app) as origin:
        yield f"{origin}/fhir"


def test_facade_resolves_local_numbers_through_a_pixm_service(
    app: Any,
    config_document: dict[str, Any],
    demo_data: Path,
    served_index: str,
    manifest: dict[str, Any],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PIX_TOKEN", system_token(app, "system/Patient.r"))
    doc = copy.deepcopy(config_document)
    del doc["patient_xref"]
    doc["patient_index"] = {"url": served_index, "auth": {"type": "bearer", "token_env": "PIX_TOKEN"}}
    doc["audit"] = {"path": str(tmp_path / "audit.sqlite")}
    doc["auth"]["signing_keys"] = str(tmp_path / "keys.json")
    doc["auth"]["store"] = f"sqlite:{tmp_path / 'auth.sqlite'}"
    with_index = create_app(settings_from_document(doc, demo_data, "tests/pixm"))
    nhs = manifest["facts"]["multi_trust_patient"]["nhs_number"]
    query = f"/fhir/ImagingStudy?patient={nhs}&_count=200"
    via_pix = with_index.test_client().get(query, headers={"Authorization": f"Bearer {system_token(with_index)}"})
    via_csv = app.test_client().get(query, headers={"Authorization": f"Bearer {system_token(app)}"})
    ids = [
        {e["resource"]["id"] for e in r.get_json()["entry"] if e["search"]["mode"] == "match"}
        for r in (via_pix, via_csv)
    ]
    assert via_pix.status_code == 200
    assert ids[0] == ids[1]
    expected = {s["study_uid"] for p in manifest["patients"] if p["nhs_number"] == nhs for s in p["studies"]}
    assert ids[0] == expected
    components(with_index).services.close()
