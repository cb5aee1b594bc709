"""CORS: discovery and metadata answer any origin; the API only the configured ones."""

from __future__ import annotations

from flask import Flask, Response, request

from app.settings import Settings


def register_cors(app: Flask, settings: Settings) -> None:
    public = {
        f"{settings.base_path}/metadata",
        f"{settings.base_path}/.well-known/smart-configuration",
        f"{settings.base_path}/openapi.json",
    }
    allowed = set(settings.auth.get("cors_origins", ()))

    @app.after_request
    def cors(response: Response) -> Response:
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
