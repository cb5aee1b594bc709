"""GM imaging FHIR facade: DICOM study metadata from the trust archives as FHIR R4 resources."""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
from typing import Any

import orjson
from flask import Flask, Response
from werkzeug.exceptions import HTTPException

from app.core.errors import FhirError, MethodNotAllowed, NotFound, issue, operation_outcome
from app.settings import Settings, load_settings

__version__ = "0.1.0"
CONFIG_ENV = "FACADE_CONFIG"
log = logging.getLogger(__name__)


def _outcome_response(status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> Response:
    return Response(
        orjson.dumps(body), status=status, content_type="application/fhir+json; charset=utf-8", headers=headers
    )


def _oauth_error_response(status: int, description: str, headers: dict[str, str] | None = None) -> Response:
    """The authorization server's errors are OAuth 2.0 JSON errors (RFC 6749 5.2), not FHIR resources."""
    body = {"error": "invalid_request" if status < 500 else "server_error", "error_description": description}
    return Response(
        orjson.dumps(body),
        status=status,
        content_type="application/json",
        headers={"Cache-Control": "no-store", **(headers or {})},
    )


def _register_error_handlers(app: Flask) -> None:
    """One error path: every failure leaves as an OperationOutcome with its status (an OAuth error under /auth)."""

    def under_auth_server() -> bool:
        from flask import request

        return "smart_server" in app.extensions and request.path.startswith("/auth/")

    @app.errorhandler(FhirError)
    def fhir_error(error: FhirError) -> Response:
        return _outcome_response(error.status_code, error.to_dict(), error.headers)

    @app.errorhandler(HTTPException)
    def http_error(error: HTTPException) -> Response:
        code = error.code or 500
        # RFC 9110 15.5.6: a 405 says which methods the resource supports.
        allow = getattr(error, "valid_methods", None) if code == 405 else None
        headers = {"Allow": ", ".join(sorted(allow))} if allow else None
        if under_auth_server():
            return _oauth_error_response(code, error.description or error.name, headers)
        if code == 404:
            found: FhirError = NotFound("no such resource type or endpoint on this server")
        elif code == 405:
            found = MethodNotAllowed("this server is read-only: the interaction is not supported here")
        else:
            body = operation_outcome(
                [issue("error", "invalid" if code < 500 else "exception", error.description or error.name)]
            )
            return _outcome_response(code, body)
        return _outcome_response(found.status_code, found.to_dict(), headers)

    @app.errorhandler(Exception)
    def unexpected(error: Exception) -> Response:
        log.exception("unhandled error")
        if under_auth_server():
            return _oauth_error_response(500, "internal server error; it has been logged")
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

    from app.audit.events import AuditStore
    from app.auth import build_protector, smart_configuration
    from app.services import build_facade
    from app.web.apps import bp as apps_bp
    from app.web.fhir.views import bp as fhir_bp
    from app.web.gateway import init_gateway

    app = Flask(__name__, static_folder=None)
    app.config["VERSION"] = __version__
    app.secret_key = hmac.new(settings.cursor_secret, b"session", hashlib.sha256).digest()
    app.config.update(
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=settings.base_url.startswith("https://"),
    )
    facade = build_facade(settings)
    app.extensions["facade"] = facade
    embedded = None
    if settings.auth["mode"] == "embedded":
        from app.auth.server import EmbeddedAuthServer

        embedded = EmbeddedAuthServer(settings, facade.federation)
        embedded.init_app(app)
        # Login sessions are signed with a key derived from the server's private signing keys: secret,
        # and the same in every worker (the cursor key may be derived from the public configuration).
        app.secret_key = embedded.session_secret()
    app.extensions["protector"] = build_protector(settings, embedded)
    app.extensions["smart_configuration"] = smart_configuration(settings, embedded)
    app.extensions["audit"] = AuditStore(settings.audit_path)
    app.register_blueprint(fhir_bp, url_prefix=settings.base_path or None)
    app.register_blueprint(apps_bp)  # the sample SMART apps, under /apps/
    init_gateway(app, settings.gateway_owner_cache_s)  # the image gateway, under /dicomweb/
    _register_error_handlers(app)
    _register_cors(app, settings)
    from app.ops import init_ops

    init_ops(app, settings)  # /healthz, /readyz, /metrics, request ids, JSON logs, rate limit
    if settings.ops.trusted_proxies:
        from werkzeug.middleware.proxy_fix import ProxyFix

        # Behind load balancers: the client's address is the one they put in X-Forwarded-For, that
        # many hops back (anything further left was written by the client and is not believed).
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=settings.ops.trusted_proxies)  # type: ignore[method-assign]
    return app


def _register_cors(app: Flask, settings: Settings) -> None:
    """Discovery and metadata answer any origin; the API only the configured ones."""
    public = {
        f"{settings.base_path}/metadata",
        f"{settings.base_path}/.well-known/smart-configuration",
        f"{settings.base_path}/openapi.json",
    }
    allowed = set(settings.auth.get("cors_origins", ()))

    @app.after_request
    def cors(response: Response) -> Response:
        from flask import request

        origin = request.headers.get("Origin")
        if not origin:
            return response
        if request.path in public:
            response.headers["Access-Control-Allow-Origin"] = "*"
        elif origin in allowed:
            response.headers["Access-Control-Allow-Origin"] = origin
            response.headers["Access-Control-Allow-Credentials"] = "true"
            response.headers["Vary"] = "Origin"
        else:
            return response
        response.headers["Access-Control-Allow-Headers"] = "Authorization, Content-Type, Prefer, Accept"
        response.headers["Access-Control-Allow-Methods"] = "GET, POST, OPTIONS"
        response.headers["Access-Control-Expose-Headers"] = "WWW-Authenticate, Location"
        return response
