"""Security headers on every response the Flask app gives: the FHIR API, the image gateway, the sample
apps, the authorization server's pages and JSON, the operations endpoints, and every error (Flask's and
werkzeug's included, which pass the same after-request hooks).

    X-Content-Type-Options: nosniff     always
    Referrer-Policy: no-referrer        always (a launch URL carries `launch`, `code` and `state`)
    Cache-Control: no-store             and Pragma: no-cache (HTTP/1.0 caches), on everything but the
                                        public documents below: patient data and credentials never stay
                                        in a browser's or a proxy's cache
    frame-ancestors 'none'              in the Content-Security-Policy (added to a page's own policy, or the
                                        whole policy of a response without one), and X-Frame-Options: DENY:
                                        no page is framed, but the sample apps by the origins configured
                                        in apps.frame_ancestors (an EPR embedding them); in the demo
                                        (demo: true) the sample apps and the authorization server's
                                        pages also by the facade's own origin ('self'): the EHR launch
                                        simulator /apps/launcher/ frames them, never a third party

The public documents (discovery, the CapabilityStatement, the OpenAPI document, the authorization
server's JWKS and style, the sample app's static files) keep the caching their view chose.

Outside Flask, gunicorn answers some malformed requests itself (400, 414 for an over-long request line,
431 over the header limits) before the app is called: those pages carry none of these headers, and no
gunicorn setting or hook can add them (app/ops/gunicorn_conf.py; a reverse proxy in front can). They
show no data of the facade's, though their text may quote the refused request line.
"""

from __future__ import annotations

from flask import Flask, Response, request

from app.settings import Settings

FRAME_ANCESTORS = "frame-ancestors 'none'"
OWN_ORIGIN = "'self'"
APPS = "/apps/"  # the sample apps: the only pages an EPR may be allowed to frame (apps.frame_ancestors)
AUTH_PAGES = ("/auth/authorize", "/auth/logout")  # the sign-in, picker and consent pages (demo: framed by 'self')
ALWAYS = {"X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer"}
PRIVATE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


def public_paths(settings: Settings) -> tuple[frozenset[str], tuple[str, ...]]:
    """(exact paths, path prefixes) of the documents that carry neither patient data nor credentials."""
    base = settings.base_path
    exact = frozenset(
        {
            f"{base}/metadata",
            f"{base}/.well-known/smart-configuration",
            f"{base}/.well-known/openid-configuration",
            f"{base}/openapi.json",
            "/auth/jwks",
            "/auth/smart-style.json",
        }
    )
    return exact, (APPS,)


def secure(response: Response, public: bool, frame_ancestors: str = FRAME_ANCESTORS) -> Response:
    """The headers above on one response (`public`: one of the public documents; `frame_ancestors`: who may
    frame it, 'none' but for the sample apps' configured allow-list)."""
    for name, value in ALWAYS.items():
        response.headers[name] = value
    if not public:
        for name, value in PRIVATE.items():
            response.headers[name] = value
    policy = response.headers.get("Content-Security-Policy")
    if not policy:
        response.headers["Content-Security-Policy"] = frame_ancestors
    elif "frame-ancestors" not in policy:
        response.headers["Content-Security-Policy"] = f"{policy.rstrip('; ')}; {frame_ancestors}"
    elif frame_ancestors != FRAME_ANCESTORS:
        response.headers["Content-Security-Policy"] = policy.replace(FRAME_ANCESTORS, frame_ancestors)
    if frame_ancestors == FRAME_ANCESTORS:
        response.headers.setdefault("X-Frame-Options", "DENY")  # X-Frame-Options cannot name an allow-list
    return response


def register_security_headers(app: Flask, settings: Settings) -> None:
    exact, prefixes = public_paths(settings)
    own = (OWN_ORIGIN,) if settings.demo else ()  # the EHR launch simulator frames the app and sign-in
    allowed = own + settings.apps_frame_ancestors
    apps_framing = f"frame-ancestors {' '.join(allowed)}" if allowed else FRAME_ANCESTORS
    auth_framing = f"frame-ancestors {OWN_ORIGIN}" if own else FRAME_ANCESTORS

    @app.after_request
    def security_headers(response: Response) -> Response:
        if "X-Accel-Redirect" in response.headers:
            # The image gateway's answer to nginx (app.web.accel), never a client's: nginx copies a few of
            # its headers (Cache-Control, Content-Type's charset) into its own answer, which has all of these.
            return response
        if request.path.startswith(APPS):
            framing = apps_framing
        else:
            framing = auth_framing if request.path in AUTH_PAGES else FRAME_ANCESTORS
        return secure(response, request.path in exact or request.path.startswith(prefixes), framing)
