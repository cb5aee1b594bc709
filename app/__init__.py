"""GM imaging FHIR facade: DICOM study metadata from the trust archives as FHIR R4 resources."""

from __future__ import annotations

import logging
import os
from typing import Any

import orjson
from flask import Flask, Response
from werkzeug.exceptions import HTTPException

from .config import Settings, load_settings
from .errors import FhirError, MethodNotAllowed, NotFound, issue, operation_outcome

__version__ = "0.1.0"
CONFIG_ENV = "FACADE_CONFIG"
log = logging.getLogger(__name__)


def _outcome_response(status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(body), status=status, content_type="application/fhir+json; charset=utf-8",
                    headers=headers)


def _register_error_handlers(app: Flask) -> None:
    """One error path: every failure leaves as an OperationOutcome with its status."""

    @app.errorhandler(FhirError)
    def fhir_error(error: FhirError) -> Response:
        return _outcome_response(error.status_code, error.to_dict(), error.headers)

    @app.errorhandler(HTTPException)
    def http_error(error: HTTPException) -> Response:
        code = error.code or 500
        if code == 404:
            found: FhirError = NotFound("no such resource type or endpoint on this server")
        elif code == 405:
            found = MethodNotAllowed("this server is read-only: the interaction is not supported here")
        else:
            body = operation_outcome([issue("error", "invalid" if code < 500 else "exception",
                                            error.description or error.name)])
            return _outcome_response(code, body)
        return _outcome_response(found.status_code, found.to_dict())

    @app.errorhandler(Exception)
    def unexpected(error: Exception) -> Response:
        log.exception("unhandled error")
        body = operation_outcome([issue("fatal", "exception", "internal server error; it has been logged")])
        return _outcome_response(500, body)


def create_app(settings: Settings | str | os.PathLike[str] | None = None) -> Flask:
    """App factory: settings object, or a config file path, or $FACADE_CONFIG."""
    if settings is None:
        path = os.environ.get(CONFIG_ENV)
        if not path:
            raise RuntimeError(f"no configuration: pass one to create_app() or set {CONFIG_ENV}")
        settings = path
    if not isinstance(settings, Settings):
        settings = load_settings(settings)

    from .fhir.views import bp as fhir_bp
    from .service import build_facade

    app = Flask(__name__)
    app.config["VERSION"] = __version__
    app.json.sort_keys = False  # type: ignore[attr-defined]
    app.extensions["facade"] = build_facade(settings)
    app.register_blueprint(fhir_bp, url_prefix=settings.base_path or None)
    _register_error_handlers(app)
    return app
