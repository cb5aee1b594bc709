"""Patient: search by NHS number, read, and IHE PIXm $ihe-pix."""

from __future__ import annotations

from flask import Response, request

from app.core import systems
from app.core.bundle import searchset
from app.core.errors import InvalidRequest, NotFound
from app.core.identity import nhs_number_problem
from app.core.query import is_plain_key
from app.core.search import params as p
from app.web.components import components
from app.web.fhir.api import audited_patients, bp, compartment, fhir_response, search_pairs

PATIENT_PARAMETERS = ("_id", "identifier")
PATIENT_ELEMENTS = frozenset({"identifier", "name", "gender", "birthDate"})


def _patient_number(name: str, raw: str) -> str:
    token = p._token(raw)
    if name == "identifier" and token.system not in (None, systems.NHS_NUMBER):
        raise InvalidRequest(f"patients are identified by NHS number ({systems.NHS_NUMBER})", name)
    return p.nhs_number(token.code, name)


@bp.route("/Patient", methods=["GET"])
@bp.route("/Patient/_search", methods=["POST"])
def search_patients() -> Response:
    app = components()
    patients = compartment("Patient", "s")
    pairs, offset = search_pairs("Patient", set(PATIENT_PARAMETERS))
    numbers: frozenset[str] | None = None
    used: list[tuple[str, str]] = []
    for name, value in pairs:
        if name in PATIENT_PARAMETERS:
            found = frozenset(_patient_number(name, v) for v in p._split(value))
            numbers = found if numbers is None else numbers & found
            used.append((name, value))
    paging, paging_used = p.parse_paging(
        pairs, app.settings.default_count, app.settings.max_count, frozenset(), PATIENT_ELEMENTS, False
    )
    paging.offset = offset
    matches, issues = app.services.patients.search(numbers, patients)
    audited_patients([m["id"] for m in matches[offset : offset + paging.count]])
    return fhir_response(
        searchset(
            base_url=app.settings.base_url,
            resource_type="Patient",
            matches=matches,
            paging=paging,
            used=sorted(used + paging_used),
            secret=app.settings.cursor_secret,
            issues=issues,
        )
    )


@bp.get("/Patient/$ihe-pix")
def ihe_pix() -> Response:
    """IHE PIXm (ITI-83): the identifiers the cross-reference holds for a patient (Patient read scope)."""
    patients = compartment("Patient", "r")
    source = request.args.get("sourceIdentifier", "")
    system, bar, value = source.partition("|")
    if not bar or not system or not value or not is_plain_key(value):
        raise InvalidRequest("sourceIdentifier must be <system>|<value>", "sourceIdentifier")
    targets = {t for t in request.args.getlist("targetSystem") if t}
    result = components().services.patients.pix(system, value, targets, patients)
    audited_patients([result["parameter"][-1]["valueReference"]["reference"].removeprefix("Patient/")])
    return fhir_response(result)


@bp.get("/Patient/<patient_id>")
def read_patient(patient_id: str) -> Response:
    patients = compartment("Patient", "r")
    problem = nhs_number_problem(patient_id)
    if problem:
        raise NotFound(f"Patient/{patient_id} does not exist: {problem}")
    patient = components().services.patients.read(patient_id, patients)
    audited_patients([patient_id])
    return fhir_response(patient)
