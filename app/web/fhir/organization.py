"""Organization: the trusts, by ODS code; search and read."""

from __future__ import annotations

from flask import Response

from app.web.fhir.api import bp
from app.web.fhir.directory import read_directory, search_directory


@bp.get("/Organization")
def search_organizations() -> Response:
    return search_directory("Organization")


@bp.get("/Organization/<organization_id>")
def read_organization(organization_id: str) -> Response:
    return read_directory("Organization", organization_id)
