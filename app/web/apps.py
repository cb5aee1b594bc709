"""Sample SMART apps served by the facade itself: /apps/imaging-timeline/ and its vendored library.

The imaging timeline is a public SMART App Launch 2.2 client (client_id ``imaging-timeline``)
written against SMART's own JavaScript client (npm ``fhirclient``, vendored under
app/static/vendor/ by scripts/vendor-fhirclient.sh). It supports the EHR launch
(``?launch=...&iss=...``) and the standalone launch (plain URL, patient picker), and lists the
patient's imaging studies across the trusts. Only static files are served here: the app talks to
/auth and /fhir from the browser like any other SMART app.
"""

from __future__ import annotations

from pathlib import Path

from flask import Blueprint, Response, send_from_directory

from app.web import launcher

STATIC = Path(__file__).resolve().parent / "static"
TIMELINE_DIR = STATIC / "apps" / "imaging-timeline"
LAUNCHER_DIR = STATIC / "apps" / "launcher"
SHARED_DIR = STATIC / "apps" / "shared"
VENDOR_DIR = STATIC / "vendor"

bp = Blueprint("apps", __name__, template_folder="templates")

# The pages load only their own files and talk only to this origin (the FHIR server and the
# authorization server are here too). The launch URL carries `launch`, `code` and `state`: no
# Referer may leak them to another site. Who may frame the app (no one, unless apps.frame_ancestors
# names an EPR's origins) is added to the policy by app.web.headers, with X-Frame-Options when no one.
SECURITY_HEADERS = {
    # 'wasm-unsafe-eval': the image viewer's decoders of compressed transfer syntaxes are WebAssembly
    # (vendor/cornerstone/codecs/); it allows compiling WebAssembly, not eval of JavaScript.
    "Content-Security-Policy": "default-src 'self'; script-src 'self' 'wasm-unsafe-eval'; style-src 'self'; "
    "img-src 'self' data: blob:; connect-src 'self'; worker-src 'self'; object-src 'none'; base-uri 'none'; "
    "form-action 'self'",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-cache",
}


def _send(folder: Path, name: str) -> Response:
    response = send_from_directory(folder, name, max_age=0)
    response.headers.update(SECURITY_HEADERS)
    return response


@bp.get("/apps/imaging-timeline/")
def imaging_timeline() -> Response:
    """The launch URL and the redirect URI of the imaging timeline."""
    return _send(TIMELINE_DIR, "index.html")


@bp.get("/apps/imaging-timeline/<path:name>")
def imaging_timeline_file(name: str) -> Response:
    return _send(TIMELINE_DIR, name)


launcher.register(bp)  # /apps/launcher/: the demo's EHR launch simulator (404 unless demo: true)


@bp.get("/apps/launcher/<path:name>")
def launcher_file(name: str) -> Response:
    return _send(LAUNCHER_DIR, name)


@bp.get("/apps/shared/<path:name>")
def shared_file(name: str) -> Response:
    """What every sample app shares: format.js (the display formats, twin of app.core.display)."""
    return _send(SHARED_DIR, name)


@bp.get("/apps/vendor/<path:name>")
def vendor_file(name: str) -> Response:
    return _send(VENDOR_DIR, name)
