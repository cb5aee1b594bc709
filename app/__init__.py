"""GM imaging FHIR facade: DICOM study metadata from the trust archives as FHIR R4 resources.

This module is the composition root: settings -> services -> authorization -> web and operations.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from typing import TYPE_CHECKING

from app.settings import Settings, load_settings

if TYPE_CHECKING:
    from flask import Flask

__version__ = "0.2.0"  # the one place: pyproject.toml, --version, CapabilityStatement.software
CONFIG_ENV = "FACADE_CONFIG"


def serving_app(settings: Settings | str | os.PathLike[str] | None = None) -> Flask:
    """create_app for a server process (wsgi.py, python -m app serve): the app, then the process's garbage
    collector settled for serving (app.ops.collector, `ops.gc_thresholds`)."""
    # Imported here, not with this package: app.ops brings prometheus_client, which `python -m app serve`
    # must not import before it has chosen the metrics' multiprocess mode (app/__main__.py).
    from app.ops.collector import settle_collector

    app = create_app(settings)
    settle_collector(app.config["SETTINGS"].ops.gc_thresholds)
    return app


def create_app(settings: Settings | str | os.PathLike[str] | None = None) -> Flask:
    """App factory: settings object, or a config file path, or $FACADE_CONFIG."""
    if settings is None:
        path = os.environ.get(CONFIG_ENV)
        if not path:
            raise RuntimeError(f"no configuration: pass one to create_app() or set {CONFIG_ENV}")
        settings = path
    if not isinstance(settings, Settings):
        settings = load_settings(settings)
    # Imported here, not at the top: `python -m app serve` imports this package before it chooses
    # prometheus_client's multiprocess folder, which must be set before app.telemetry.metrics loads.
    import orjson
    from flask import Flask

    from app.audit.store import open_audit_store
    from app.auth import build_protector, smart_configuration
    from app.ops import init_ops
    from app.services import build_services
    from app.web import init_web
    from app.web.components import Components
    from app.web.fhir.openapi import openapi_document

    app = Flask(__name__, static_folder=None)
    app.config["VERSION"] = __version__
    app.config["SETTINGS"] = settings
    app.secret_key = hmac.new(settings.cursor_secret, b"session", hashlib.sha256).digest()
    app.config.update(
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=settings.base_url.startswith("https://"),
    )
    services = build_services(settings)
    audit = open_audit_store(settings.audit_store)
    embedded = None
    if settings.auth.mode == "embedded":
        from app.auth.server import EmbeddedAuthServer

        embedded = EmbeddedAuthServer(settings, services.patients, audit)
        embedded.init_app(app)
        # Login sessions are signed with a key derived from the server's private signing keys: secret,
        # and the same in every worker (the cursor key may be derived from the public configuration).
        app.secret_key = embedded.session_secret()
    smart = smart_configuration(settings, embedded)
    init_web(
        app,
        Components(
            settings=settings,
            services=services,
            protector=build_protector(settings, embedded),
            smart_configuration=smart,
            audit=audit,
            auth_server=embedded,
            openapi=orjson.dumps(openapi_document(settings, smart)),
        ),
    )
    init_ops(app, settings, services.federation.trusts, audit)  # /healthz, /readyz, /metrics, logs, rate limit
    if settings.ops.trusted_proxies:
        from werkzeug.middleware.proxy_fix import ProxyFix

        # Behind load balancers: the client's address is the one they put in X-Forwarded-For, that
        # many hops back (anything further left was written by the client and is not believed).
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=settings.ops.trusted_proxies)  # type: ignore[method-assign]
    return app
