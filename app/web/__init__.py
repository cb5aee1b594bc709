"""The HTTP face of the facade: the FHIR API, the image gateway, the sample apps, errors and CORS."""

from __future__ import annotations

from flask import Flask

from app.web.apps import bp as apps_bp
from app.web.components import Components
from app.web.cors import register_cors
from app.web.errors import register_error_handlers
from app.web.fhir import bp as fhir_bp
from app.web.gateway import bp as gateway_bp
from app.web.headers import register_security_headers
from app.web.report_documents import bp as report_documents_bp


def init_web(app: Flask, components: Components) -> None:
    """Blueprints, error handlers, security headers and CORS over the built components."""
    components.install(app)
    app.register_blueprint(fhir_bp, url_prefix=components.settings.base_path or None)
    app.register_blueprint(apps_bp)  # the sample SMART apps, under /apps/
    app.register_blueprint(report_documents_bp)  # report PDFs, under /dicomweb/reports/ (before the gateway's rule)
    app.register_blueprint(gateway_bp)  # the image gateway, under /dicomweb/
    register_error_handlers(app, auth_server_mounted=components.auth_server is not None)
    register_security_headers(app, components.settings)  # every response, /auth and errors included
    register_cors(app, components.settings)
