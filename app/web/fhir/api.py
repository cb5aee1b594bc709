"""The FHIR API's blueprint and what every resource module shares: authentication before anything,
format negotiation, one AuditEvent per request, parameters, cursors and responses."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import orjson
from flask import Blueprint, Response, g, request

from app.audit.events import AuditRecord, build_events
from app.audit.postgres import StoreUnavailable
from app.auth.protect import Access
from app.core.compartment import Compartment
from app.core.errors import Forbidden, InvalidRequest, quote_all
from app.core.search.cursor import decode_cursor
from app.core.search.registry import ResourceSearch
from app.web.components import components
from app.web.negotiation import FHIR_JSON, OUTPUT_PARAMETERS, require_fhir_json

bp = Blueprint("fhir", __name__)

PUBLIC_ENDPOINTS = frozenset(
    {
        "fhir.metadata",
        "fhir.search_parameter_read",
        "fhir.smart_configuration",
        "fhir.openid_configuration",
        "fhir.openapi",
    }
)
_PLAIN_JSON_ENDPOINTS = PUBLIC_ENDPOINTS - {"fhir.metadata", "fhir.search_parameter_read"}  # not FHIR resources
AUDITED_TYPES = frozenset(
    {
        "ImagingStudy",
        "Patient",
        "Endpoint",
        "Organization",
        "AuditEvent",
        "Practitioner",
        "DocumentReference",
        "DiagnosticReport",
        "?",
    }
)
Pairs = list[tuple[str, str]]


@dataclass
class AuditedRequest:
    """What the AuditEvent of this request will say; the views fill in the patients they returned."""

    resource_type: str
    interaction: str
    resource_id: str | None
    patients: tuple[str, ...] = field(default=())


def fhir_response(resource: dict[str, Any], status: int = 200, headers: dict[str, str] | None = None) -> Response:
    pretty = request.args.get("_pretty") == "true"
    body = orjson.dumps(resource, option=orjson.OPT_INDENT_2 if pretty else 0)
    return Response(body, status=status, content_type=FHIR_JSON, headers=headers)


@bp.before_request
def authenticate() -> None:
    """Every call but discovery and /metadata needs a valid token (checked before anything else)."""
    g.audit = None
    if request.endpoint in PUBLIC_ENDPOINTS or request.method == "OPTIONS":
        return
    found = components()
    kind, _, rest = (request.path[len(found.settings.base_path) :].strip("/") + "/").partition("/")
    rest = rest.strip("/")
    searching = not rest or rest == "_search"
    g.audit = AuditedRequest(kind or "?", "search-type" if searching else "read", None if searching else rest)
    g.access = found.protector.authenticate(request.headers.get("Authorization"))


@bp.before_request
def negotiate_format() -> None:
    if request.endpoint not in _PLAIN_JSON_ENDPOINTS:
        require_fhir_json()


@bp.after_request
def audit(response: Response) -> Response:
    """One AuditEvent per patient returned (or one without), committed before the response leaves."""
    found: AuditedRequest | None = g.get("audit")
    if found is None or found.resource_type not in AUDITED_TYPES:
        return response
    caller: Access | None = g.get("access")
    record = AuditRecord(
        interaction=found.interaction,
        resource_type=found.resource_type,
        status=response.status_code,
        client_id=caller.claims.client_id if caller else None,
        user=caller.user if caller else None,
        address=request.remote_addr,
        query=_audited_query(),
        resource_id=found.resource_id,
        patients=found.patients,
        description=None if response.status_code < 400 else f"HTTP {response.status_code}",
    )
    app = components()
    try:
        app.audit.write(build_events(record, app.settings.base_url), record.client_id)
    except StoreUnavailable as error:  # the trail cannot take the event: the answer does not leave unaudited
        return fhir_response(error.to_dict(), error.status_code, error.headers)
    return response


def _audited_query() -> str:
    """The search as the client sent it: the URL query, or the form of a POST _search."""
    if request.method == "POST":
        return urlencode(list(request.form.items(multi=True)))
    return request.query_string.decode("latin-1")


def access() -> Access:
    found: Access = g.access
    return found


def compartment(resource_type: str, interaction: str) -> Compartment:
    """The request's compartment for one interaction on one type; 403 when no scope allows it."""
    return Compartment.of(access().require(resource_type, interaction), access().realm)


def readable(*resource_types: str) -> dict[str, Compartment]:
    """The compartments of the types the token may read (for `_include`); others are left out, never leaked."""
    out: dict[str, Compartment] = {}
    for resource_type in resource_types:
        try:
            out[resource_type] = compartment(resource_type, "r")
        except Forbidden:
            continue
    return out


def audited_patients(numbers: list[str]) -> None:
    found: AuditedRequest | None = g.get("audit")
    if found is not None:
        found.patients = tuple(dict.fromkeys(numbers))


def _strict() -> bool:
    return "handling=strict" in request.headers.get("Prefer", "").replace(" ", "")


def search_pairs(search: ResourceSearch[Any]) -> tuple[Pairs, int]:
    """The search's parameters in order (the form of a POST _search, or the query), without the output-only
    ones, and the offset: a paging cursor stands for the query it was signed for. Unknown parameters are
    ignored, or refused under `Prefer: handling=strict`."""
    source = request.form if request.method == "POST" else request.args
    pairs = [(k, v) for k, v in source.items(multi=True) if k not in OUTPUT_PARAMETERS]
    offset = 0
    token = next((v for k, v in pairs if k == "_cursor"), None)
    if token is not None:
        pairs, offset = decode_cursor(components().settings.cursor_secret, search.type, token)
    unknown = search.unknown(pairs)
    if unknown and _strict():
        names = quote_all(unknown, quoted=False)
        raise InvalidRequest(f"unknown search parameter(s): {names} (Prefer: handling=strict)")
    return pairs, offset
