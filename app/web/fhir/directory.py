"""Endpoint and Organization: the trusts' directory data (search and read; no patient data)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from flask import Response

from app.core.bundle import searchset
from app.core.search import params as p
from app.web.components import components
from app.web.fhir.api import bp, compartment, fhir_response, search_pairs

Resource = dict[str, Any]
Test = Callable[[Resource, str], bool]


def _token_match(value: str, system: str, code: str) -> bool:
    token = p._token(value)
    return token.code == code and token.system in (None, system)


def _name_match(resource: Resource, value: str) -> bool:
    return str(resource.get("name", "")).casefold().startswith(value.casefold())


ENDPOINT_PARAMETERS: dict[str, Test] = {
    "_id": lambda r, v: r["id"] == v,
    "organization": lambda r, v: r["managingOrganization"]["reference"] in (v, f"Organization/{v}"),
    "connection-type": lambda r, v: _token_match(v, r["connectionType"]["system"], r["connectionType"]["code"]),
    "status": lambda r, v: r["status"] == v,
    "name": _name_match,
}
ORGANIZATION_PARAMETERS: dict[str, Test] = {
    "_id": lambda r, v: r["id"] == v,
    "identifier": lambda r, v: _token_match(v, r["identifier"][0]["system"], r["identifier"][0]["value"]),
    "name": _name_match,
}


def _search(resource_type: str, parameters: dict[str, Test]) -> Response:
    app = components()
    compartment(resource_type, "s")
    pairs, offset = search_pairs(resource_type, set(parameters))
    criteria = [(parameters[name], p._split(value)) for name, value in pairs if name in parameters]
    used = [(name, value) for name, value in pairs if name in parameters]
    matches = app.services.directory.search(resource_type, criteria)
    paging, paging_used = p.parse_paging(
        pairs, app.settings.default_count, app.settings.max_count, frozenset(), frozenset(), False
    )
    paging.offset = offset
    return fhir_response(
        searchset(
            base_url=app.settings.base_url,
            resource_type=resource_type,
            matches=matches,
            paging=paging,
            used=sorted(used + paging_used),
            secret=app.settings.cursor_secret,
        )
    )


@bp.get("/Endpoint")
def search_endpoints() -> Response:
    return _search("Endpoint", ENDPOINT_PARAMETERS)


@bp.get("/Endpoint/<endpoint_id>")
def read_endpoint(endpoint_id: str) -> Response:
    compartment("Endpoint", "r")
    return fhir_response(components().services.directory.read("Endpoint", endpoint_id))


@bp.get("/Organization")
def search_organizations() -> Response:
    return _search("Organization", ORGANIZATION_PARAMETERS)


@bp.get("/Organization/<organization_id>")
def read_organization(organization_id: str) -> Response:
    compartment("Organization", "r")
    return fhir_response(components().services.directory.read("Organization", organization_id))
