"""Endpoint and Organization: the trusts' directory data (search and read; no patient data)."""

from __future__ import annotations

from flask import Response

from app.core.bundle import searchset
from app.core.search.resources import DIRECTORIES, parse_directory_search
from app.web.components import components
from app.web.fhir.api import bp, compartment, fhir_response, search_pairs


def _search(resource_type: str) -> Response:
    app = components()
    compartment(resource_type, "s")
    pairs, offset = search_pairs(DIRECTORIES[resource_type])
    parsed = parse_directory_search(resource_type, pairs, app.settings.default_count, app.settings.max_count)
    matches = parsed.query.select(app.services.directory.resources(resource_type))
    paging = parsed.paging
    paging.offset = offset
    return fhir_response(
        searchset(
            base_url=app.settings.base_url,
            resource_type=resource_type,
            matches=matches,
            paging=paging,
            used=parsed.used,
            secret=app.settings.cursor_secret,
        )
    )


@bp.get("/Endpoint")
def search_endpoints() -> Response:
    return _search("Endpoint")


@bp.get("/Endpoint/<endpoint_id>")
def read_endpoint(endpoint_id: str) -> Response:
    compartment("Endpoint", "r")
    return fhir_response(components().services.directory.read("Endpoint", endpoint_id))


@bp.get("/Organization")
def search_organizations() -> Response:
    return _search("Organization")


@bp.get("/Organization/<organization_id>")
def read_organization(organization_id: str) -> Response:
    compartment("Organization", "r")
    return fhir_response(components().services.directory.read("Organization", organization_id))
