"""The report document route of the gateway: /dicomweb/reports/{DiagnosticReport id}/document.pdf answers the
encapsulated PDF of a report object as application/pdf (a DiagnosticReport's presentedForm.url).

Token-protected like the image gateway: the token (401), a DiagnosticReport or DocumentReference read scope (403:
the PDF is the content of both), then the report is
read exactly as `GET DiagnosticReport/{id}` reads it (the compartment: another patient's report is 404, like one
that does not exist; the report's own identity checked), and only then is its object retrieved. Audited, refusals
included; `Cache-Control: no-store`.
"""

from __future__ import annotations

import logging

from flask import Blueprint, Response, g, request

from app.archives.images import RetrievalError
from app.audit.events import AuditRecord, build_events
from app.auth.protect import Access
from app.core.compartment import Compartment
from app.core.errors import FhirError, Forbidden, UpstreamFailure
from app.core.mapping.patient import subject_number
from app.ops import limit_authenticated
from app.web.components import components

log = logging.getLogger(__name__)
bp = Blueprint("report_documents", __name__)


def _audit(access: Access | None, report_id: str, status: int, patients: tuple[str, ...], problem: str | None) -> None:
    app = components()
    client = access.claims.client_id if access else None
    record = AuditRecord(
        interaction="read",
        resource_type="DiagnosticReport",
        status=status,
        client_id=client,
        user=access.user if access else None,
        address=request.remote_addr,
        query=None,
        resource_id=report_id,
        patients=patients,
        description=problem,
        detail=f"report document {request.path}",
    )
    app.audit.write(build_events(record, app.settings.base_url), client)


def _compartment(access: Access) -> Compartment:
    """The report's PDF is both a DiagnosticReport's presentedForm and a DocumentReference's content: a read scope
    on either type opens it (under that scope's compartment); with neither, the DiagnosticReport refusal."""
    try:
        return Compartment.of(access.require("DiagnosticReport", "r"), access.realm)
    except Forbidden as refused:
        try:
            return Compartment.of(access.require("DocumentReference", "r"), access.realm)
        except Forbidden:
            raise refused from None


@bp.get("/dicomweb/reports/<report_id>/document.pdf")
def report_document(report_id: str) -> Response:
    app = components()
    access: Access | None = None
    try:
        access = app.protector.authenticate(request.headers.get("Authorization"))
        g.access = access
        limit_authenticated()
        compartment = _compartment(access)
        try:
            document, report = app.services.reports.document(report_id, compartment)
        except RetrievalError as exc:
            log.warning("report document: trust %s answered no document (%s): %s", exc.archive, exc.status, exc.reason)
            raise UpstreamFailure(exc.status, f"trust {exc.archive}: {exc.reason}") from None
    except FhirError as exc:
        _audit(access, report_id, exc.status_code, exc.patients, str(exc))
        raise
    patient = subject_number(report)
    _audit(access, report_id, 200, (patient,) if patient else (), None)
    return Response(
        document,
        status=200,
        content_type="application/pdf",
        headers={"Cache-Control": "no-store", "Content-Disposition": f'inline; filename="{report_id}.pdf"'},
    )
