"""The typed container the web layer reads: built once by create_app, one per Flask app."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, cast

from flask import Flask, current_app

from app.audit.store import AuditStore
from app.auth.protect import Protector
from app.auth.server import EmbeddedAuthServer
from app.services import Services
from app.settings import Settings

_KEY = "gm_imaging_facade"


@dataclass(frozen=True)
class Components:
    """Everything a request handler may use; nothing is looked up by a string key elsewhere."""

    settings: Settings
    services: Services
    protector: Protector
    smart_configuration: dict[str, Any] | None  # None: no SMART authorization server (auth.mode none)
    audit: AuditStore
    auth_server: EmbeddedAuthServer | None  # the embedded SMART server, when auth.mode is embedded
    openapi: bytes  # the served OpenAPI document, serialised once

    def install(self, app: Flask) -> None:
        app.extensions[_KEY] = self


def components(app: Flask | None = None) -> Components:
    """The components of `app` (default: the app handling the current request)."""
    return cast(Components, (app or current_app).extensions[_KEY])
