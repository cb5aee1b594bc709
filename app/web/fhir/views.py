"""The FHIR REST endpoints: parse -> federate -> serialise. Read-only; JSON only."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

import orjson
from flask import Blueprint, Response, current_app, g, request

from app.audit.events import AuditRecord, build_events
from app.audit.search import audit_criteria
from app.auth.protect import Access, Forbidden
from app.core.bundle import searchset
from app.core.errors import InvalidRequest, NotAcceptable, NotFound
from app.core.mapping.patient import NHS_NUMBER_SYSTEM, nhs_number_problem
from app.core.query import is_plain_key
from app.core.scopes import Decision
from app.core.search import params as p
from app.core.search.cursor import decode_cursor
from app.services import Facade
from app.web.fhir.capability import capability_statement
from app.web.fhir.openapi import openapi_document

FHIR_JSON = "application/fhir+json; charset=utf-8"
_JSON_TYPES = ("application/fhir+json", "application/json", "application/json+fhir", "application/*", "*/*")
_FORMATS = ("json", "application/json", "application/fhir+json", "application/json+fhir")

bp = Blueprint("fhir", __name__)


def facade() -> Facade:
    return current_app.extensions["facade"]  # type: ignore[no-any-return]


def fhir_response(resource: dict[str, Any], status: int = 200, headers: dict[str, str] | None = None) -> Response:
    pretty = request.args.get("_pretty") == "true"
    body = orjson.dumps(resource, option=orjson.OPT_INDENT_2 if pretty else 0)
    return Response(body, status=status, content_type=FHIR_JSON, headers=headers)


PUBLIC_ENDPOINTS = frozenset({"fhir.metadata", "fhir.smart_configuration", "fhir.openid_configuration", "fhir.openapi"})
_PLAIN_JSON_ENDPOINTS = PUBLIC_ENDPOINTS - {"fhir.metadata"}  # not FHIR resources: no format negotiation


@bp.before_request
def authenticate() -> None:
    """Every call but discovery and /metadata needs a valid token (checked before anything else)."""
    g.audit = None
    if request.endpoint in PUBLIC_ENDPOINTS or request.method == "OPTIONS":
        return
    kind, _, rest = (request.path[len(facade().settings.base_path) :].strip("/") + "/").partition("/")
    rest = rest.strip("/")
    searching = not rest or rest == "_search"
    g.audit = {
        "resource_type": kind or "?",
        "interaction": "search-type" if searching else "read",
        "resource_id": None if searching else rest,
        "patients": (),
    }
    g.access = current_app.extensions["protector"].authenticate(request.headers.get("Authorization"))


@bp.after_request
def audit(response: Response) -> Response:
    """One AuditEvent per patient returned (or one without), committed before the response leaves."""
    found = getattr(g, "audit", None)
    if found is None or found["resource_type"] not in AUDITED_TYPES:
        return response
    access: Access | None = getattr(g, "access", None)
    record = AuditRecord(
        interaction=found["interaction"],
        resource_type=found["resource_type"],
        status=response.status_code,
        client_id=access.claims.client_id if access else None,
        user=access.user if access else None,
        address=request.remote_addr,
        query=_audited_query(),
        resource_id=found["resource_id"],
        patients=tuple(found["patients"]),
        description=None if response.status_code < 400 else f"HTTP {response.status_code}",
    )
    store = current_app.extensions["audit"]
    store.write(build_events(record, facade().settings.base_url), record.client_id)
    return response


def _audited_query() -> str:
    """The search as the client sent it: the URL query, or the form of a POST _search."""
    if request.method == "POST":
        return urlencode(list(request.form.items(multi=True)))
    return request.query_string.decode("latin-1")


AUDITED_TYPES = frozenset({"ImagingStudy", "Patient", "Endpoint", "Organization", "AuditEvent", "Practitioner", "?"})


def access() -> Access:
    return g.access  # type: ignore[no-any-return]


def audited_patients(numbers: list[str]) -> None:
    if g.audit is not None:
        g.audit["patients"] = tuple(dict.fromkeys(numbers))


@bp.before_request
def negotiate_format() -> None:
    """406 unless the client accepts FHIR JSON (by `_format` or `Accept`)."""
    if request.endpoint in _PLAIN_JSON_ENDPOINTS:
        return
    wanted = request.args.get("_format")
    if wanted is not None and wanted.split(";")[0].strip() not in _FORMATS:
        raise NotAcceptable(f"_format {wanted!r} is not supported: this server speaks FHIR JSON only", "_format")
    accept = request.headers.get("Accept")
    if wanted is None and accept and not any(t in accept for t in _JSON_TYPES):
        raise NotAcceptable(f"Accept {accept!r} is not supported: ask for application/fhir+json")


def _strict() -> bool:
    return "handling=strict" in request.headers.get("Prefer", "").replace(" ", "")


def _pairs() -> list[tuple[str, str]]:
    """Query (or form, for POST _search) parameters in order, without the output-only ones."""
    source = request.form if request.method == "POST" else request.args
    return [(k, v) for k, v in source.items(multi=True) if k not in ("_format", "_pretty")]


def _check_unknown(pairs: list[tuple[str, str]], known: set[str]) -> None:
    unknown = p.unknown_parameters(pairs, known)
    if unknown and _strict():
        raise InvalidRequest(f"unknown search parameter(s): {', '.join(unknown)} (Prefer: handling=strict)")


def _with_cursor(resource_type: str, pairs: list[tuple[str, str]]) -> tuple[list[tuple[str, str]], int]:
    token = next((v for k, v in pairs if k == "_cursor"), None)
    if token is None:
        return pairs, 0
    return decode_cursor(facade().settings.cursor_secret, resource_type, token)


@bp.get("/metadata")
def metadata() -> Response:
    return fhir_response(
        capability_statement(
            facade().settings.base_url, current_app.config["VERSION"], current_app.extensions["smart_configuration"]
        )
    )


@bp.get("/.well-known/smart-configuration")
def smart_configuration() -> Response:
    """SMART discovery: plain JSON, no token, whatever Accept says."""
    document = current_app.extensions["smart_configuration"]
    if document is None:
        raise NotFound("no SMART authorization server is configured (auth.mode is none)")
    return Response(orjson.dumps(document), content_type="application/json")


@bp.get("/.well-known/openid-configuration")
def openid_configuration() -> Response:
    """OpenID Connect discovery for the id_tokens the embedded server issues (sso-openid-connect)."""
    smart = current_app.extensions["smart_configuration"]
    if smart is None or "sso-openid-connect" not in smart.get("capabilities", ()):
        raise NotFound("this server does not issue OpenID Connect id_tokens")
    document = {
        key: smart[key]
        for key in (
            "issuer",
            "jwks_uri",
            "authorization_endpoint",
            "token_endpoint",
            "response_types_supported",
            "id_token_signing_alg_values_supported",
            "scopes_supported",
            "token_endpoint_auth_methods_supported",
        )
        if key in smart
    }
    document.update({"subject_types_supported": ["public"], "claims_supported": ["sub", "fhirUser", "iss", "aud"]})
    return Response(orjson.dumps(document), content_type="application/json")


@bp.get("/openapi.json")
def openapi() -> Response:
    """The OpenAPI 3.1 document of this server (app/openapi.yaml, with the configured URLs)."""
    document = current_app.extensions.get("openapi")
    if document is None:
        document = orjson.dumps(openapi_document(facade().settings, current_app.extensions["smart_configuration"]))
        current_app.extensions["openapi"] = document
    return Response(document, content_type="application/json")


def _allowed_includes(wanted: tuple[str, ...]) -> tuple[str, ...]:
    """`_include` only brings in types the token may read; others are left out, never leaked."""
    kinds = {"ImagingStudy:endpoint": "Endpoint", "ImagingStudy:patient": "Patient", "ImagingStudy:subject": "Patient"}
    allowed = []
    for include in wanted:
        try:
            access().require(kinds[include], "r")
        except Forbidden:
            continue
        allowed.append(include)
    return tuple(allowed)


@bp.route("/ImagingStudy", methods=["GET"])
@bp.route("/ImagingStudy/_search", methods=["POST"])
def search_imaging_studies() -> Response:
    service = facade()
    decision = access().require("ImagingStudy", "s")
    pairs, offset = _with_cursor("ImagingStudy", _pairs())
    _check_unknown(pairs, set(p.STUDY_PARAMETERS))
    parsed = service.parse_study_search(pairs)
    parsed.search.paging.offset = offset
    result = service.search_studies(parsed.search, decision)
    page = [] if parsed.search.paging.summary_count else result.studies[offset : offset + parsed.search.paging.count]
    audited_patients(service.subjects(page))
    includes = service.includes(result, _allowed_includes(parsed.search.paging.includes), page)
    return fhir_response(
        searchset(
            base_url=service.settings.base_url,
            resource_type="ImagingStudy",
            matches=result.studies,
            paging=parsed.search.paging,
            used=parsed.used,
            secret=service.settings.cursor_secret,
            includes=includes,
            issues=result.issues,
        )
    )


@bp.get("/ImagingStudy/<study_id>")
def read_imaging_study(study_id: str) -> Response:
    study = facade().read_study(study_id, access().require("ImagingStudy", "r"))
    audited_patients(facade().subjects([study]))
    return fhir_response(study)


@bp.route("/Patient", methods=["GET"])
@bp.route("/Patient/_search", methods=["POST"])
def search_patients() -> Response:
    service = facade()
    decision = access().require("Patient", "s")
    pairs, offset = _with_cursor("Patient", _pairs())
    _check_unknown(pairs, {"_id", "identifier"})
    numbers: set[str] | None = None
    used: list[tuple[str, str]] = []
    for name, value in pairs:
        if name in ("_id", "identifier"):
            found = {_patient_number(name, v) for v in p._split(value)}
            numbers = found if numbers is None else numbers & found
            used.append((name, value))
    numbers = _narrow_patients(numbers, decision)
    if numbers is None:
        raise InvalidRequest("a Patient search needs _id or identifier (NHS number)")
    paging, paging_used = p.parse_paging(
        pairs,
        service.settings.default_count,
        service.settings.max_count,
        frozenset(),
        frozenset({"identifier", "name", "gender", "birthDate"}),
        False,
    )
    paging.offset = offset
    matches, issues = service.patients(sorted(numbers))
    audited_patients([m["id"] for m in matches[offset : offset + paging.count]])
    return fhir_response(
        searchset(
            base_url=service.settings.base_url,
            resource_type="Patient",
            matches=matches,
            paging=paging,
            used=sorted(used + paging_used),
            secret=service.settings.cursor_secret,
            issues=issues,
        )
    )


def _narrow_patients(numbers: set[str] | None, decision: Decision) -> set[str] | None:
    """Under a patient scope: no patient named means the context patient; another one is 403."""
    patient = decision.compartment_patient
    if patient is None:
        return numbers
    if numbers is None:
        return {patient}
    if numbers - {patient}:
        raise Forbidden(access().realm, "the search names a patient outside the token's patient context")
    return numbers


def _patient_number(name: str, raw: str) -> str:
    token = p._token(raw)
    if name == "identifier" and token.system not in (None, NHS_NUMBER_SYSTEM):
        raise InvalidRequest(f"patients are identified by NHS number ({NHS_NUMBER_SYSTEM})", name)
    return p.nhs_number(token.code, name)


@bp.get("/Patient/$ihe-pix")
def ihe_pix() -> Response:
    """IHE PIXm (ITI-83): the identifiers the cross-reference holds for a patient (Patient read scope)."""
    decision = access().require("Patient", "r")
    source = request.args.get("sourceIdentifier", "")
    system, bar, value = source.partition("|")
    if not bar or not system or not value or not is_plain_key(value):
        raise InvalidRequest("sourceIdentifier must be <system>|<value>", "sourceIdentifier")
    targets = {t for t in request.args.getlist("targetSystem") if t}
    result = facade().pix(system, value, targets)
    nhs = result["parameter"][-1]["valueReference"]["reference"].split("/", 1)[1]
    if decision.compartment_patient not in (None, nhs):
        raise NotFound("no such patient")  # under a patient scope only one's own identifiers
    audited_patients([nhs])
    return fhir_response(result)


@bp.get("/Patient/<patient_id>")
def read_patient(patient_id: str) -> Response:
    decision = access().require("Patient", "r")
    problem = nhs_number_problem(patient_id)
    if problem:
        raise NotFound(f"Patient/{patient_id} does not exist: {problem}")
    if decision.compartment_patient not in (None, patient_id):
        raise NotFound(f"Patient/{patient_id} is not known")  # not 403: do not confirm that it exists
    patient = facade().read_patient(patient_id)
    audited_patients([patient_id])
    return fhir_response(patient)


def _directory_search(resource_type: str, resources: list[dict[str, Any]], filters: dict[str, Any]) -> Response:
    service = facade()
    access().require(resource_type, "s")
    pairs, offset = _with_cursor(resource_type, _pairs())
    _check_unknown(pairs, set(filters))
    used = []
    matches = resources
    for name, value in pairs:
        if name in filters:
            wanted = p._split(value)
            matches = [r for r in matches if any(filters[name](r, w) for w in wanted)]
            used.append((name, value))
    paging, paging_used = p.parse_paging(
        pairs, service.settings.default_count, service.settings.max_count, frozenset(), frozenset(), False
    )
    paging.offset = offset
    return fhir_response(
        searchset(
            base_url=service.settings.base_url,
            resource_type=resource_type,
            matches=matches,
            paging=paging,
            used=sorted(used + paging_used),
            secret=service.settings.cursor_secret,
        )
    )


def _token_match(value: str, system: str, code: str) -> bool:
    token = p._token(value)
    return token.code == code and token.system in (None, system)


def _name_match(resource: dict[str, Any], value: str) -> bool:
    return str(resource.get("name", "")).casefold().startswith(value.casefold())


@bp.get("/Endpoint")
def search_endpoints() -> Response:
    return _directory_search(
        "Endpoint",
        facade().endpoints,
        {
            "_id": lambda r, v: r["id"] == v,
            "organization": lambda r, v: r["managingOrganization"]["reference"] in (v, f"Organization/{v}"),
            "connection-type": lambda r, v: _token_match(v, r["connectionType"]["system"], r["connectionType"]["code"]),
            "status": lambda r, v: r["status"] == v,
            "name": _name_match,
        },
    )


@bp.get("/Endpoint/<endpoint_id>")
def read_endpoint(endpoint_id: str) -> Response:
    access().require("Endpoint", "r")
    return fhir_response(facade().directory_read("Endpoint", endpoint_id))


@bp.get("/Organization")
def search_organizations() -> Response:
    return _directory_search(
        "Organization",
        facade().organizations,
        {
            "_id": lambda r, v: r["id"] == v,
            "identifier": lambda r, v: _token_match(v, r["identifier"][0]["system"], r["identifier"][0]["value"]),
            "name": _name_match,
        },
    )


@bp.get("/Organization/<organization_id>")
def read_organization(organization_id: str) -> Response:
    access().require("Organization", "r")
    return fhir_response(facade().directory_read("Organization", organization_id))


@bp.get("/Practitioner/<practitioner_id>")
def read_practitioner(practitioner_id: str) -> Response:
    """The embedded server's users, as the `fhirUser` of their tokens names them (Practitioner/<id>)."""
    access().require("Practitioner", "r")
    server = current_app.extensions.get("smart_server")
    users = server.users.values() if server is not None else ()
    found = next((u for u in users if u.fhir_user == f"Practitioner/{practitioner_id}"), None)
    if found is None:
        raise NotFound(f"Practitioner/{practitioner_id} does not exist")
    return fhir_response(practitioner_resource(practitioner_id, found.name))


def practitioner_resource(practitioner_id: str, name: str) -> dict[str, Any]:
    return {"resourceType": "Practitioner", "id": practitioner_id, "active": True, "name": [{"text": name}]}


@bp.get("/AuditEvent")
def search_audit_events() -> Response:
    """The audit trail, for system clients with system/AuditEvent.rs: by patient, date, client."""
    service = facade()
    access().require("AuditEvent", "s", context="system")
    pairs, offset = _with_cursor("AuditEvent", _pairs())
    _check_unknown(pairs, {"patient", "date", "agent"})
    criteria, used = audit_criteria(pairs, service.zone)
    paging, paging_used = p.parse_paging(
        pairs, service.settings.default_count, service.settings.max_count, frozenset(), frozenset(), False
    )
    paging.offset = offset
    store = current_app.extensions["audit"]
    total = store.count(**criteria)
    events = [] if paging.summary_count else store.search(**criteria, limit=paging.count, offset=offset)
    return fhir_response(
        searchset(
            base_url=service.settings.base_url,
            resource_type="AuditEvent",
            matches=events,
            paging=paging,
            used=sorted(used + paging_used),
            secret=service.settings.cursor_secret,
            total=total,
        )
    )
