"""S23 (web parts): a 400 quotes at most ~100 characters of a bad value (it echoed a whole 2 MB value);
C2: `_elements` accepts every root element of the type, `id` and `meta` included (they answered 400).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import pytest

from app.core import systems

LONG = "Z" * 5000
QUOTED_MAX = 100  # S23: "at most ~100 characters of a bad value" (app.core.errors.QUOTED_MAX)
PATIENT = "9992975962"  # the demo's multi-trust patient (deterministic demo data)


def diagnostics(response: Any, status: int = 400) -> str:
    assert response.status_code == status, response.get_data(as_text=True)[:300]
    return str(response.get_json()["issue"][0]["diagnostics"])


def bounded(text: str) -> None:
    assert len(text) <= 3 * QUOTED_MAX, len(text)
    assert "Z" * (QUOTED_MAX + 1) not in text


@pytest.mark.parametrize(
    "query",
    [
        f"ImagingStudy?patient={LONG}",
        f"ImagingStudy?patient.identifier={quote(systems.NHS_NUMBER)}%7C{LONG}",
        f"ImagingStudy?subject=Group/{LONG}",
        f"ImagingStudy?_id=2.25.{LONG}",
        f"ImagingStudy?identifier={LONG}",
        f"ImagingStudy?identifier:of-type={LONG}",
        f"ImagingStudy?patient={PATIENT}&modality={LONG}",
        f"ImagingStudy?patient={PATIENT}&started={LONG}",
        f"ImagingStudy?patient={PATIENT}&started=ge{LONG}",
        f"ImagingStudy?patient={PATIENT}&bodysite={LONG}",
        f"ImagingStudy?patient={PATIENT}&endpoint=Organization/{LONG}",
        f"ImagingStudy?patient={PATIENT}&series={LONG}",
        f"ImagingStudy?patient={PATIENT}&_count={LONG}",
        f"ImagingStudy?patient={PATIENT}&_elements={LONG}",
        f"ImagingStudy?patient={PATIENT}&_elements={','.join([LONG] * 20)}",
        f"ImagingStudy?patient={PATIENT},{LONG}",
        f"Patient?identifier={LONG}",
        f"Patient?_id={PATIENT}&_elements={LONG}",
        f"Endpoint?_id=,{LONG}",
    ],
)
def test_bad_values_are_quoted_short(client: Any, query: str) -> None:
    bounded(diagnostics(client.get(f"/fhir/{query}")))


def test_a_huge_form_value_is_not_echoed(client: Any) -> None:
    """The finding: a POST _search with a 2 MB value answered it back whole."""
    huge = "Z" * 400_000
    text = diagnostics(client.post("/fhir/ImagingStudy/_search", data={"patient": PATIENT, "modality": huge}))
    bounded(text)
    assert "400000 characters" in text  # says how long it was


def test_unknown_parameter_names_and_formats_are_quoted_short(client: Any) -> None:
    strict = {"Prefer": "handling=strict"}
    bounded(diagnostics(client.get(f"/fhir/ImagingStudy?patient={PATIENT}&{LONG}=1", headers=strict)))
    many = "&".join(f"{LONG}{i}=1" for i in range(30))
    bounded(diagnostics(client.get(f"/fhir/ImagingStudy?patient={PATIENT}&{many}", headers=strict)))
    response = client.get(f"/fhir/Patient?_id={PATIENT}&_format={LONG}")
    bounded(diagnostics(response, 406))
    response = client.get(f"/fhir/Patient?_id={PATIENT}", headers={"Accept": f"text/{LONG}"})
    bounded(diagnostics(response, 406))


def test_pix_assigning_authority_is_quoted_short(client: Any) -> None:
    bounded(diagnostics(client.get(f"/fhir/Patient/$ihe-pix?sourceIdentifier=urn:{LONG}%7C123")))


def test_ids_in_404s_are_quoted_short(client: Any) -> None:
    for path in (f"Practitioner/{LONG}", f"Endpoint/{LONG}", f"Organization/{LONG}", f"Patient/{LONG}"):
        bounded(diagnostics(client.get(f"/fhir/{path}"), 404))


def test_quote_helper() -> None:
    from app.core import errors
    from app.core.errors import quote as quote_value
    from app.core.errors import quote_all

    assert errors.QUOTED_MAX == QUOTED_MAX
    assert quote_value("CT") == "'CT'"
    assert quote_value("Z" * QUOTED_MAX) == repr("Z" * QUOTED_MAX)
    assert quote_value("Z" * 1000) == f"{'Z' * QUOTED_MAX!r}... (1000 characters)"
    assert quote_all(["a", "b"]) == "'a', 'b'"
    assert quote_all([str(i) for i in range(8)]) == "'0', '1', '2', '3', '4' and 3 more"
    assert quote_all(["nope", "Z" * 30], quoted=False) == f"nope, {'Z' * 30}"
    assert quote_all(["Z" * 1000] * 5, quoted=False).count("... (1000 characters)") == 5


# ----------------------------------------------------------------------------- C2 _elements


@pytest.mark.parametrize("elements", ["id", "meta", "id,meta", "text,extension", "modality,id", "language"])
def test_elements_accepts_every_root_element_of_imaging_study(client: Any, elements: str) -> None:
    response = client.get(f"/fhir/ImagingStudy?patient={PATIENT}&_elements={elements}")
    assert response.status_code == 200, response.get_json()
    bundle = response.get_json()
    assert bundle["total"] >= 1
    for entry in [e for e in bundle["entry"] if e["search"]["mode"] == "match"]:
        study = entry["resource"]
        allowed = {"resourceType", "id", "meta", "status", "subject", *elements.split(",")}
        assert set(study) <= allowed, set(study) - allowed
        assert any(t["code"] == "SUBSETTED" for t in study["meta"]["tag"])


@pytest.mark.parametrize("elements", ["id", "meta", "id,meta,name", "active,telecom,link", "deceased"])
def test_elements_accepts_every_root_element_of_patient(client: Any, elements: str) -> None:
    response = client.get(f"/fhir/Patient?_id={PATIENT}&_elements={elements}")
    assert response.status_code == 200, response.get_json()
    [entry] = [e for e in response.get_json()["entry"] if e["search"]["mode"] == "match"]
    assert set(entry["resource"]) <= {"resourceType", "id", "meta", *elements.split(",")}


def test_elements_still_refuses_what_is_no_root_element(client: Any) -> None:
    for query in (
        "ImagingStudy?patient=" + PATIENT + "&_elements=series.uid",
        "Patient?_id=" + PATIENT + "&_elements=x",
    ):
        assert client.get(f"/fhir/{query}").status_code == 400


def test_capability_statement_documents_the_root_elements(client: Any) -> None:
    statement = client.get("/fhir/metadata").get_json()
    study = next(r for r in statement["rest"][0]["resource"] if r["type"] == "ImagingStudy")
    documented = next(p for p in study["searchParam"] if p["name"] == "_elements")["documentation"]
    assert "id, meta" in documented
