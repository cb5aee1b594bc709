"""What needs no token: the CapabilityStatement, SMART and OpenID discovery, the OpenAPI document."""

from __future__ import annotations

import orjson
from flask import Response, current_app

from app.core.errors import NotFound
from app.web.components import components
from app.web.fhir.api import bp, fhir_response
from app.web.fhir.capability import capability_statement, search_parameter

_OPENID_KEYS = (
    "issuer",
    "jwks_uri",
    "authorization_endpoint",
    "token_endpoint",
    "response_types_supported",
    "id_token_signing_alg_values_supported",
    "scopes_supported",
    "token_endpoint_auth_methods_supported",
)


@bp.get("/metadata")
def metadata() -> Response:
    app = components()
    return fhir_response(
        capability_statement(app.settings.base_url, current_app.config["VERSION"], app.smart_configuration)
    )


@bp.get("/SearchParameter/<id>")
def search_parameter_read(id: str) -> Response:
    """The definitions of this server's own search parameters, at the URLs the CapabilityStatement names (no token:
    conformance, like /metadata)."""
    found = search_parameter(components().settings.base_url, id)
    if found is None:
        raise NotFound("no such SearchParameter: this server defines only those of its CapabilityStatement")
    return fhir_response(found)


@bp.get("/.well-known/smart-configuration")
def smart_configuration() -> Response:
    """SMART discovery: plain JSON, no token, whatever Accept says."""
    document = components().smart_configuration
    if document is None:
        raise NotFound("no SMART authorization server is configured (auth.mode is none)")
    return Response(orjson.dumps(document), content_type="application/json")


@bp.get("/.well-known/openid-configuration")
def openid_configuration() -> Response:
    """OpenID Connect discovery for the id_tokens the embedded server issues (sso-openid-connect)."""
    smart = components().smart_configuration
    if smart is None or "sso-openid-connect" not in smart.get("capabilities", ()):
        raise NotFound("this server does not issue OpenID Connect id_tokens")
    document = {key: smart[key] for key in _OPENID_KEYS if key in smart}
    document.update({"subject_types_supported": ["public"], "claims_supported": ["sub", "fhirUser", "iss", "aud"]})
    return Response(orjson.dumps(document), content_type="application/json")


@bp.get("/openapi.json")
def openapi() -> Response:
    """The OpenAPI 3.1 document of this server (app/web/openapi.yaml, with the configured URLs)."""
    return Response(components().openapi, content_type="application/json")
