"""Patient: search by NHS number, read, and IHE PIXm $ihe-pix."""

from __future__ import annotations

from flask import Response, request

from app.core.bundle import searchset
from app.core.errors import InvalidRequest, NotFound
from app.core.identity import nhs_number_problem
from app.core.query import is_plain_key
from app.core.search.resources import PATIENT, parse_patient_search
from app.web.components import components
from app.web.fhir.api import audited_patients, bp, compartment, fhir_response, search_pairs


@bp.route("/Patient", methods=["GET"])
@bp.route("/Patient/_search", methods=["POST"])
def search_patients() -> Response:
    app = components()
    patients = compartment("Patient", "s")
    pairs, offset = search_pairs(PATIENT)
    parsed = parse_patient_search(pairs, app.settings.default_count, app.settings.max_count)
    paging = parsed.paging
    paging.offset = offset
    matches, issues = app.services.patients.search(parsed.query.nhs_numbers, patients)
    if paging.summary_count:  # a count tells about every patient searched for, shown or not
        audited_patients(sorted(patients.patients(parsed.query.nhs_numbers) or ()))
    else:
        audited_patients([m["id"] for m in matches[offset : offset + paging.count]])
    return fhir_response(
        searchset(
            base_url=app.settings.base_url,
            resource_type="Patient",
            matches=matches,
            paging=paging,
            used=parsed.used,
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
    if nhs_number_problem(patient_id):
        raise NotFound("no such Patient: the id of a Patient is an NHS number (10 digits, Modulus 11 check digit)")
    patient = components().services.patients.read(patient_id, patients)
    audited_patients([patient_id])
    return fhir_response(patient)
