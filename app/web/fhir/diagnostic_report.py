"""DiagnosticReport: search (GET and POST _search, with _include of the study and paging) and read."""

from __future__ import annotations

from flask import Response

from app.core.bundle import searchset
from app.core.mapping.patient import subject_number
from app.core.search.diagnostic_report import DIAGNOSTIC_REPORT
from app.web.components import components
from app.web.fhir.api import audited_patients, bp, compartment, fhir_response, readable, search_pairs


@bp.route("/DiagnosticReport", methods=["GET"])
@bp.route("/DiagnosticReport/_search", methods=["POST"])
def search_diagnostic_reports() -> Response:
    app = components()
    reports = app.services.reports
    scope = compartment("DiagnosticReport", "s")
    pairs, offset = search_pairs(DIAGNOSTIC_REPORT)
    parsed = reports.parse(pairs)
    paging = parsed.search.study.paging
    paging.offset = offset
    result = reports.search(parsed.search, scope)
    page = [] if paging.summary_count else result.reports[offset : offset + paging.count]
    if paging.summary_count:
        searched = scope.patients(parsed.search.study.nhs_numbers) or frozenset()
        audited_patients(sorted(searched | {n for n in map(subject_number, result.reports) if n}))
    else:
        audited_patients([n for n in map(subject_number, page) if n])
    targets = sorted({DIAGNOSTIC_REPORT.include_targets[i] for i in paging.includes})
    includes = reports.includes(paging.includes, page, readable(*targets)) if targets else []
    return fhir_response(
        searchset(
            base_url=app.settings.base_url,
            resource_type="DiagnosticReport",
            matches=result.reports,
            paging=paging,
            used=parsed.used,
            secret=app.settings.cursor_secret,
            includes=includes,
            issues=result.issues,
        )
    )


@bp.get("/DiagnosticReport/<report_id>")
def read_diagnostic_report(report_id: str) -> Response:
    report = components().services.reports.read(report_id, compartment("DiagnosticReport", "r"))
    audited_patients([n for n in [subject_number(report)] if n])
    return fhir_response(report)
