"""The token-protected DICOMweb gateway: /dicomweb/{trust}/studies/{uid}[/series/..[/instances/..[/frames/..]]]
[/metadata|/rendered|/thumbnail], relayed to the trust's archive (WADO-RS).

Each trust's Endpoint names this gateway, so EPR apps never reach an archive directly: the SMART
token that found a study also opens its images, within the same patient compartment. Every request
is checked in this order, and nothing reaches an archive before the first four pass:

  1. the token (401), 2. an ImagingStudy read scope (403), 3. the path: a known trust (404) and
  DICOM UIDs only, no path tricks, known parameters only (400), 4. the study's owner: asked of the
  trust's archive, it must be the token's patient under patient/ scopes (else 404), 5. the relay.

Every retrieval, refusal included, is written to the audit log before the first byte leaves. The
body is relayed chunk by chunk; when the archive breaks off mid-stream the response ends short (the
client sees an incomplete body), the failure is logged and audited, and the worker goes on serving.

Behind nginx with `gateway.relay: nginx`, step 5 is nginx's: the facade answers X-Accel-Redirect to the
trust's internal location (app.web.accel) and nginx streams the archive's answer itself; a transfer
that breaks off then is in nginx's log, not the audit trail.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass

from flask import Blueprint, Response, g, request

from app.archives.images import (
    RENDER_PARAMETERS,
    BadTarget,
    Handoff,
    ImageSource,
    Retrieval,
    RetrievalError,
    StreamAborted,
    WadoTarget,
    parse_target,
)
from app.audit.events import AuditRecord, build_events
from app.audit.store import AuditStore
from app.auth.protect import Access
from app.core.compartment import Compartment
from app.core.errors import FhirError, InvalidRequest, NotFound, UpstreamFailure
from app.ops import limit_authenticated
from app.telemetry.logs import request_id
from app.web import accel
from app.web.components import components

log = logging.getLogger(__name__)
bp = Blueprint("dicomweb", __name__)

_HEADER_VALUE = re.compile(r"\A[\x20-\x7e]{1,1024}\Z")
_TRICKS = ("%2f", "%5c", "%2e", "%00", "\\", "/./", "/../", "//")


def _header(name: str) -> str | None:
    value = request.headers.get(name)
    if value is None:
        return None
    if not _HEADER_VALUE.match(value):
        raise InvalidRequest(f"the {name} header is not a printable value of at most 1024 characters")
    return value


def _check_raw_path() -> None:
    """Refuse encoded slashes, dot segments and the like before the path is even parsed."""
    raw = request.environ.get("RAW_URI") or request.environ.get("REQUEST_URI") or request.path
    path = raw.split("?", 1)[0].lower()
    if path.startswith(("http://", "https://")):  # an absolute-form request target: keep its path
        path = "/" + path.split("//", 1)[1].partition("/")[2]
    path += "/"
    if any(trick in path for trick in _TRICKS):  # the path ends in "/": a final dot segment is caught too
        raise InvalidRequest("the path may not contain encoded slashes, backslashes, dot segments or empty segments")


def _params(resource: str) -> list[tuple[str, str]]:
    params = list(request.args.items(multi=True))
    allowed = RENDER_PARAMETERS if resource in ("rendered", "thumbnail") else {}
    for name, value in params:
        pattern = allowed.get(name)
        if pattern is None:
            known = ", ".join(sorted(allowed)) or "none"
            raise InvalidRequest(f"unknown parameter {name[:40]!r} for this resource (known: {known})")
        if not pattern.match(value):
            raise InvalidRequest(f"parameter {name} has an invalid value")
    if len({name for name, _ in params}) != len(params):
        raise InvalidRequest("a parameter is repeated")
    return params


@dataclass
class RetrievalAudit:
    """The AuditEvents of one retrieval: who asks (once the token is known), for which study and
    patients (once checked). Captured from the request, so the streamed body can write one too."""

    store: AuditStore
    observer: str
    address: str | None
    detail: str
    access: Access | None = None
    study: str | None = None
    patients: tuple[str, ...] = ()

    def write(self, status: int, description: str | None = None) -> None:
        client = self.access.claims.client_id if self.access else None
        record = AuditRecord(
            interaction="read",
            resource_type="ImagingStudy",
            status=status,
            client_id=client,
            user=self.access.user if self.access else None,
            address=self.address,
            query=None,
            resource_id=self.study,
            patients=self.patients,
            description=description,
            detail=self.detail,
        )
        self.store.write(build_events(record, self.observer), client)


@bp.route("/dicomweb/<path:rest>", methods=["GET"], merge_slashes=False)
def retrieve(rest: str) -> Response:
    app = components()
    audit = RetrievalAudit(app.audit, app.settings.base_url, request.remote_addr, f"WADO-RS {request.path}")
    try:
        access = audit.access = app.protector.authenticate(request.headers.get("Authorization"))
        g.access = access
        limit_authenticated()  # the client's rate limit (app.ops), as for the FHIR API
        compartment = Compartment.of(access.require("ImagingStudy", "r"), access.realm).for_images()
        _check_raw_path()
        trust_id, _, path = rest.partition("/")
        if app.settings.trust(trust_id) is None:
            raise NotFound(f"there is no trust {trust_id[:40]!r} on this gateway")
        try:
            target = parse_target(path.split("/"))
        except BadTarget as exc:
            raise InvalidRequest(str(exc)) from None
        params = _params(target.resource)
        accept, accept_encoding = _header("Accept"), _header("Accept-Encoding")
        source = app.services.image_sources.get(trust_id)
        if source is None:
            raise UpstreamFailure(501, f"trust {trust_id} offers no image retrieval through this gateway")
        audit.study = target.study
        audit.patients = app.services.owners.check(trust_id, target.study, compartment)
        handoff = handoff_of(source, target, accept_encoding, params)
        if handoff is None:
            retrieval = source.retrieve(target, accept, accept_encoding, params, request_id())
        else:
            handed = accel.handoff_response(trust_id, handoff)
    except RetrievalError as exc:
        if exc.status >= 500:
            log.warning("gateway: trust %s answered no image (%s): %s", exc.archive, exc.status, exc.reason)
        error = accel.outcome_of(exc)
        audit.write(error.status_code, exc.reason)
        raise error from None
    except FhirError as exc:
        if exc.patients:  # a refused study's owners: for the audit trail (AuditEvent?patient=), not the client
            audit.patients = exc.patients
        audit.write(exc.status_code, str(exc))
        raise
    if handoff is not None:
        # nginx relays the bytes (gateway.relay: nginx): the retrieval is audited as handed over; an
        # archive error or a broken transfer after this point is nginx's to answer and to log.
        audit.detail += " (relayed by nginx)"
        audit.write(200)
        return handed
    audit.write(retrieval.status)
    return _relay(retrieval, audit)


def handoff_of(
    source: ImageSource, target: WadoTarget, accept_encoding: str | None, params: list[tuple[str, str]]
) -> Handoff | None:
    """The resource for nginx to fetch, when this request is nginx's to relay (accel.wanted) and the
    source can hand it over (an HTTP archive; not a thumbnail); else None: the Python relay."""
    if request.method != "GET" or not accel.wanted(components().settings):
        return None
    handoff = getattr(source, "handoff", None)
    if handoff is None:  # a folder archive's own files
        return None
    found: Handoff | None = handoff(target, accept_encoding, params)
    return found


def _relay(retrieval: Retrieval, audit: RetrievalAudit) -> Response:
    headers = dict(retrieval.headers)
    # Images of patients never stay in a shared workstation's cache.
    headers.update(accel.IMAGE_HEADERS)
    if request.method == "HEAD":
        retrieval.close()
        return Response(status=retrieval.status, headers=headers)

    def body() -> Iterator[bytes]:
        try:
            yield from retrieval.chunks
        except StreamAborted as exc:
            log.warning("gateway: %s; the response to the client was cut short", exc)
            audit.write(502, f"transfer aborted: {exc}")
            raise
        finally:
            retrieval.close()

    return Response(body(), status=retrieval.status, headers=headers, direct_passthrough=True)
