"""DocumentReference (IHE MHD ITI-67): search (GET and POST _search, with paging) and read."""

from __future__ import annotations

from flask import Response

from app.core.bundle import searchset
from app.core.mapping.patient import subject_number
from app.core.search.document_reference import DOCUMENT_REFERENCE
from app.web.components import components
from app.web.fhir.api import audited_patients, bp, compartment, fhir_response, search_pairs


@bp.route("/DocumentReference", methods=["GET"])
@bp.route("/DocumentReference/_search", methods=["POST"])
def search_document_references() -> Response:
    app = components()
    documents = app.services.documents
    scope = compartment("DocumentReference", "s")
    pairs, offset = search_pairs(DOCUMENT_REFERENCE)
    parsed = documents.parse(pairs)
    paging = parsed.search.study.paging
    paging.offset = offset
    result = documents.search(parsed.search, scope)
    page = [] if paging.summary_count else result.documents[offset : offset + paging.count]
    if paging.summary_count:  # a count tells about every patient searched for and every patient matched
        searched = scope.patients(parsed.search.study.nhs_numbers) or frozenset()
        audited_patients(sorted(searched | {n for n in map(subject_number, result.documents) if n}))
    else:
        audited_patients([n for n in map(subject_number, page) if n])
    return fhir_response(
        searchset(
            base_url=app.settings.base_url,
            resource_type="DocumentReference",
            matches=result.documents,
            paging=paging,
            used=parsed.used,
            secret=app.settings.cursor_secret,
            issues=result.issues,
        )
    )


@bp.get("/DocumentReference/<document_id>")
def read_document_reference(document_id: str) -> Response:
    document = components().services.documents.read(document_id, compartment("DocumentReference", "r"))
    audited_patients([n for n in [subject_number(document)] if n])
    return fhir_response(document)
