"""The FHIR REST endpoints: parse -> federate -> serialise. Read-only; JSON only."""

from __future__ import annotations

from typing import Any

import orjson
from flask import Blueprint, Response, current_app, request

from ..errors import InvalidRequest, NotAcceptable, NotFound
from ..mapping.patient import NHS_NUMBER_SYSTEM, nhs_number_problem
from ..service import Facade
from . import params as p
from .bundle import searchset
from .capability import capability_statement
from .cursor import decode_cursor

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


@bp.before_request
def negotiate_format() -> None:
    """406 unless the client accepts FHIR JSON (by `_format` or `Accept`)."""
    wanted = request.args.get("_format")
    if wanted is not None and wanted.split(";")[0].strip() not in _FORMATS:
        raise NotAcceptable(f"_format {wanted!r} is not supported: this server speaks FHIR JSON only", "_format")
    accept = request.headers.get("Accept")
    if wanted is None and accept and not any(t in accept for t in _JSON_TYPES):
        raise NotAcceptable(f"Accept {accept!r} is not supported: ask for application/fhir+json")


def _strict() -> bool:
    return "handling=strict" in request.headers.get("Prefer", "").replace(" ", "")


def _pairs() -> list[tuple[str, str]]:
    """Query (or form, for POST _search) parameters in order, with a cursor expanded."""
    source = request.form if request.method == "POST" else request.args
    pairs = [(k, v) for k, v in source.items(multi=True) if k not in ("_format", "_pretty")]
    return pairs


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
    return fhir_response(capability_statement(facade().settings.base_url, current_app.config["VERSION"]))


@bp.route("/ImagingStudy", methods=["GET"])
@bp.route("/ImagingStudy/_search", methods=["POST"])
def search_imaging_studies() -> Response:
    service = facade()
    pairs, offset = _with_cursor("ImagingStudy", _pairs())
    _check_unknown(pairs, set(p.STUDY_PARAMETERS))
    parsed = service.parse_study_search(pairs)
    parsed.search.paging.offset = offset
    result = service.search_studies(parsed.search)
    page = [] if parsed.search.paging.summary_count else result.studies[offset:offset + parsed.search.paging.count]
    includes = service.includes(result, parsed.search.paging.includes, page)
    return fhir_response(searchset(base_url=service.settings.base_url, resource_type="ImagingStudy",
                                   matches=result.studies, paging=parsed.search.paging, used=parsed.used,
                                   secret=service.settings.cursor_secret, includes=includes, issues=result.issues))


@bp.get("/ImagingStudy/<study_id>")
def read_imaging_study(study_id: str) -> Response:
    return fhir_response(facade().read_study(study_id))


@bp.route("/Patient", methods=["GET"])
@bp.route("/Patient/_search", methods=["POST"])
def search_patients() -> Response:
    service = facade()
    pairs, offset = _with_cursor("Patient", _pairs())
    _check_unknown(pairs, {"_id", "identifier"})
    numbers: set[str] | None = None
    used: list[tuple[str, str]] = []
    for name, value in pairs:
        if name in ("_id", "identifier"):
            found = {_patient_number(name, v) for v in p._split(value)}
            numbers = found if numbers is None else numbers & found
            used.append((name, value))
    if numbers is None:
        raise InvalidRequest("a Patient search needs _id or identifier (NHS number)")
    paging, paging_used = p.parse_paging(pairs, service.settings.default_count, service.settings.max_count,
                                         frozenset(), frozenset({"identifier", "name", "gender", "birthDate"}), False)
    paging.offset = offset
    matches, issues = service.patients(sorted(numbers))
    return fhir_response(searchset(base_url=service.settings.base_url, resource_type="Patient", matches=matches,
                                   paging=paging, used=sorted(used + paging_used),
                                   secret=service.settings.cursor_secret, issues=issues))


def _patient_number(name: str, raw: str) -> str:
    token = p._token(raw)
    if name == "identifier" and token.system not in (None, NHS_NUMBER_SYSTEM):
        raise InvalidRequest(f"patients are identified by NHS number ({NHS_NUMBER_SYSTEM})", name)
    return p.nhs_number(token.code, name)


@bp.get("/Patient/<patient_id>")
def read_patient(patient_id: str) -> Response:
    problem = nhs_number_problem(patient_id)
    if problem:
        raise NotFound(f"Patient/{patient_id} does not exist: {problem}")
    return fhir_response(facade().read_patient(patient_id))


def _directory_search(resource_type: str, resources: list[dict[str, Any]],
                      filters: dict[str, Any]) -> Response:
    service = facade()
    pairs, offset = _with_cursor(resource_type, _pairs())
    _check_unknown(pairs, set(filters))
    used = []
    matches = resources
    for name, value in pairs:
        if name in filters:
            wanted = p._split(value)
            matches = [r for r in matches if any(filters[name](r, w) for w in wanted)]
            used.append((name, value))
    paging, paging_used = p.parse_paging(pairs, service.settings.default_count, service.settings.max_count,
                                         frozenset(), frozenset(), False)
    paging.offset = offset
    return fhir_response(searchset(base_url=service.settings.base_url, resource_type=resource_type, matches=matches,
                                   paging=paging, used=sorted(used + paging_used),
                                   secret=service.settings.cursor_secret))


def _token_match(value: str, system: str, code: str) -> bool:
    token = p._token(value)
    return token.code == code and token.system in (None, system)


def _name_match(resource: dict[str, Any], value: str) -> bool:
    return str(resource.get("name", "")).casefold().startswith(value.casefold())


@bp.get("/Endpoint")
def search_endpoints() -> Response:
    return _directory_search("Endpoint", facade().endpoints, {
        "_id": lambda r, v: r["id"] == v,
        "organization": lambda r, v: r["managingOrganization"]["reference"] in (v, f"Organization/{v}"),
        "connection-type": lambda r, v: _token_match(v, r["connectionType"]["system"], r["connectionType"]["code"]),
        "status": lambda r, v: r["status"] == v,
        "name": _name_match,
    })


@bp.get("/Endpoint/<endpoint_id>")
def read_endpoint(endpoint_id: str) -> Response:
    return fhir_response(facade().directory_read("Endpoint", endpoint_id))


@bp.get("/Organization")
def search_organizations() -> Response:
    return _directory_search("Organization", facade().organizations, {
        "_id": lambda r, v: r["id"] == v,
        "identifier": lambda r, v: _token_match(v, r["identifier"][0]["system"], r["identifier"][0]["value"]),
        "name": _name_match,
    })


@bp.get("/Organization/<organization_id>")
def read_organization(organization_id: str) -> Response:
    return fhir_response(facade().directory_read("Organization", organization_id))
