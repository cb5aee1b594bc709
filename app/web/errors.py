"""One error path: every failure leaves as an OperationOutcome with its status (an OAuth error under /auth)."""

from __future__ import annotations

import logging
from typing import Any

import orjson
from flask import Flask, Response, request
from werkzeug.exceptions import HTTPException

from app.core.errors import FhirError, MethodNotAllowed, NotFound, issue, operation_outcome
from app.web.fhir.api import audited_patients
from app.web.negotiation import FHIR_JSON

log = logging.getLogger("app")


def outcome_response(status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(body), status=status, content_type=FHIR_JSON, headers=headers)


def oauth_error_response(status: int, description: str, headers: dict[str, str] | None = None) -> Response:
    """The authorization server's errors are OAuth 2.0 JSON errors (RFC 6749 5.2), not FHIR resources."""
    body = {"error": "invalid_request" if status < 500 else "server_error", "error_description": description}
    return Response(
        orjson.dumps(body),
        status=status,
        content_type="application/json",
        headers={"Cache-Control": "no-store", **(headers or {})},
    )


def register_error_handlers(app: Flask, auth_server_mounted: bool) -> None:
    def under_auth_server() -> bool:
        return auth_server_mounted and request.path.startswith("/auth/")

    @app.errorhandler(FhirError)
    def fhir_error(error: FhirError) -> Response:
        if error.patients:  # a refusal's targeted patients go to the request's AuditEvent, never to the client
            audited_patients(list(error.patients))
        return outcome_response(error.status_code, error.to_dict(), error.headers)

    @app.errorhandler(HTTPException)
    def http_error(error: HTTPException) -> Response:
        code = error.code or 500
        # RFC 9110 15.5.6: a 405 says which methods the resource supports.
        allow = getattr(error, "valid_methods", None) if code == 405 else None
        headers = {"Allow": ", ".join(sorted(allow))} if allow else None
        if under_auth_server():
            return oauth_error_response(code, error.description or error.name, headers)
        if code == 404:
            found: FhirError = NotFound("no such resource type or endpoint on this server")
        elif code == 405:
            found = MethodNotAllowed("this server is read-only: the interaction is not supported here")
        else:
            body = operation_outcome(
                [issue("error", "invalid" if code < 500 else "exception", error.description or error.name)]
            )
            return outcome_response(code, body)
        return outcome_response(found.status_code, found.to_dict(), headers)

    @app.errorhandler(Exception)
    def unexpected(error: Exception) -> Response:
        log.exception("unhandled error")
        if under_auth_server():
            return oauth_error_response(500, "internal server error; it has been logged")
        body = operation_outcome([issue("fatal", "exception", "internal server error; it has been logged")])
        return outcome_response(500, body)
