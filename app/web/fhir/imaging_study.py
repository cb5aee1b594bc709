"""ImagingStudy: search (GET and POST _search, with _include and paging) and read."""

from __future__ import annotations

from flask import Response

from app.core.bundle import searchset
from app.core.mapping.patient import subject_number
from app.core.search.study import IMAGING_STUDY
from app.web.components import components
from app.web.fhir.api import audited_patients, bp, compartment, fhir_response, readable, search_pairs


@bp.route("/ImagingStudy", methods=["GET"])
@bp.route("/ImagingStudy/_search", methods=["POST"])
def search_imaging_studies() -> Response:
    app = components()
    imaging = app.services.imaging
    studies = compartment("ImagingStudy", "s")
    pairs, offset = search_pairs(IMAGING_STUDY)
    parsed = imaging.parse(pairs)
    paging = parsed.search.paging
    paging.offset = offset
    result = imaging.search(parsed.search, studies)
    page = [] if paging.summary_count else result.studies[offset : offset + paging.count]
    if paging.summary_count:  # a count tells about every patient searched for and every patient matched
        searched = studies.patients(parsed.search.nhs_numbers) or frozenset()
        audited_patients(sorted(searched | {n for n in map(subject_number, result.studies) if n}))
    else:
        audited_patients([n for n in map(subject_number, page) if n])
    # The compartments of the included types, asked of the token only when something is to be included.
    targets = sorted({IMAGING_STUDY.include_targets[i] for i in paging.includes})
    includes = imaging.includes(result, paging.includes, page, readable(*targets)) if targets else []
    return fhir_response(
        searchset(
            base_url=app.settings.base_url,
            resource_type="ImagingStudy",
            matches=result.studies,
            paging=paging,
            used=parsed.used,
            secret=app.settings.cursor_secret,
            includes=includes,
            issues=result.issues,
        )
    )


@bp.get("/ImagingStudy/<study_id>")
def read_imaging_study(study_id: str) -> Response:
    study = components().services.imaging.read(study_id, compartment("ImagingStudy", "r"))
    audited_patients([n for n in [subject_number(study)] if n])
    return fhir_response(study)
