"""The embedded SMART authorization server's endpoints, under /auth.

authorize (GET and POST: login -> patient picker -> consent), token, revoke (RFC 7009),
introspect (RFC 7662), jwks, launch (the EHR launch API) and the style document. The pages post
every authorization parameter back to /auth/authorize as hidden fields, so the flow needs no
server-side state besides the login session.
"""

from __future__ import annotations

import hmac
import secrets
import time
from typing import TYPE_CHECKING, Any, cast
from urllib.parse import urlencode

import orjson
from authlib.oauth2 import OAuth2Error
from flask import Blueprint, Response, current_app, redirect, render_template, request, session

from app.auth.server.clients import check_secret
from app.auth.server.grants import Grantee
from app.core.identity import nhs_number_problem

if TYPE_CHECKING:
    from app.auth.server import EmbeddedAuthServer

SERVER_KEY = "gm_imaging_facade_auth_server"
bp = Blueprint("smart_auth", __name__, template_folder="templates")

AUTH_PARAMS = (
    "response_type",
    "client_id",
    "redirect_uri",
    "scope",
    "state",
    "aud",
    "resource",
    "launch",
    "code_challenge",
    "code_challenge_method",
    "nonce",
)
SCOPE_WORDS = {
    "launch": "use the patient and study your EPR has open",
    "launch/patient": "ask you which patient to work on",
    "openid": "know who you are",
    "fhirUser": "know your clinical role record",
    "offline_access": "keep access after you close it, until you revoke it",
    "online_access": "keep access while you stay signed in",
}
VERBS = {"r": "read", "s": "search", "c": "create", "u": "update", "d": "delete"}


def server() -> EmbeddedAuthServer:
    """The authorization server of the app handling this request (it installs itself in init_app)."""
    return cast("EmbeddedAuthServer", current_app.extensions[SERVER_KEY])


def describe_scope(scope: str) -> str:
    """A scope in plain words for the consent page."""
    if scope in SCOPE_WORDS:
        return SCOPE_WORDS[scope]
    context, _, rest = scope.partition("/")
    kind, _, permissions = rest.partition(".")
    permissions = permissions.split("?", 1)[0]
    verbs = ["read", "search"] if permissions in ("read", "*") else [VERBS[c] for c in permissions if c in VERBS]
    whose = {"patient": "for the selected patient only", "user": "that you can see", "system": "for any patient"}.get(
        context, ""
    )
    thing = "all record types" if kind == "*" else f"{kind} records"
    return f"{' and '.join(verbs)} {thing} {whose}".strip()


def _page(template: str, status: int = 200, **values: Any) -> Response:
    body = render_template(template, **values)
    return Response(
        body,
        status=status,
        content_type="text/html; charset=utf-8",
        headers={
            "Cache-Control": "no-store",
            "X-Frame-Options": "DENY",
            "Content-Security-Policy": "default-src 'self'; style-src 'self' 'unsafe-inline'",
        },
    )


def _error_page(message: str) -> Response:
    """Errors that must not redirect (unknown client, unregistered redirect URI): RFC 6749 4.1.2.1."""
    return _page("auth_error.html", 400, message=message)


def _redirect_error(redirect_uri: str, error: str, description: str, state: str | None) -> Response:
    params = {"error": error, "error_description": description}
    if state is not None:
        params["state"] = state
    separator = "&" if "?" in redirect_uri else "?"
    return redirect(f"{redirect_uri}{separator}{urlencode(params)}", 302)  # type: ignore[return-value]


def _csrf() -> str:
    if "csrf" not in session:
        session["csrf"] = secrets.token_urlsafe(16)
    return str(session["csrf"])


def _csrf_ok() -> bool:
    sent = request.form.get("csrf", "")
    return bool(sent) and hmac.compare_digest(sent.encode(), str(session.get("csrf", "")).encode())


@bp.route("/authorize", methods=["GET", "POST"])
def authorize() -> Response:
    smart = server()
    params = {k: v for k in AUTH_PARAMS if (v := request.values.get(k)) is not None}
    client = smart.query_client(params.get("client_id", ""))
    if client is None:
        return _error_page("Unknown application (client_id).")
    redirect_uri = params.get("redirect_uri", "")
    if not client.check_redirect_uri(redirect_uri):
        return _error_page("The redirect_uri is not registered for this application.")
    state = params.get("state")
    if (params.get("aud") or params.get("resource") or "").rstrip("/") != smart.fhir_base:
        return _redirect_error(redirect_uri, "invalid_request", "aud must be this FHIR server's base URL", state)
    if params.get("response_type") != "code":
        return _redirect_error(redirect_uri, "unsupported_response_type", "response_type must be code", state)
    if not params.get("code_challenge") or params.get("code_challenge_method") != "S256":
        return _redirect_error(
            redirect_uri, "invalid_request", "PKCE with code_challenge_method=S256 is required", state
        )
    scopes = params.get("scope", "").split()
    launch = None
    if "launch" in scopes:
        launch = smart.store.get("launch", params.get("launch", "")) if params.get("launch") else None
        if launch is None or launch["client_id"] != client.client_id:
            return _redirect_error(
                redirect_uri, "invalid_request", "launch is unknown, used, expired or for another application", state
            )
    user = smart.users.get(session.get("user", ""))
    if user is None:
        return _login(params, client)
    patient = launch["patient"] if launch else None
    chosen = None  # the picker's summary of the patient, looked up once per request
    if patient is None and "launch/patient" in scopes:
        patient = request.form.get("patient") if request.method == "POST" and _csrf_ok() else None
        chosen = smart.find_patient(patient) if patient and not nhs_number_problem(patient) else None
        if chosen is None:
            return _picker(params, client, patient)
    if request.form.get("step") != "consent" or not _csrf_ok():
        if chosen is None and patient:
            chosen = smart.find_patient(patient)
        return _page(
            "auth_consent.html",
            client=client,
            params=params,
            user=user,
            patient=patient,
            patient_name=chosen["name"] if chosen else None,
            csrf=_csrf(),
            scopes=[(s, describe_scope(s)) for s in client.get_allowed_scope(params.get("scope", "")).split()],
        )
    if request.form.get("decision") != "allow":
        return _redirect_error(redirect_uri, "access_denied", "the user declined", state)
    if launch is not None and smart.store.take("launch", params["launch"]) is None:
        return _redirect_error(redirect_uri, "invalid_request", "launch was already used", state)
    grantee = Grantee(
        username=user.username,
        fhir_user=user.fhir_user,
        patient=patient,
        fhir_context=launch.get("fhirContext", []) if launch else [],
        need_patient_banner=launch is None,
        nonce=params.get("nonce"),
        auth_time=int(session.get("auth_time", time.time())),
    )
    try:
        grant = smart.authorization.get_consent_grant(end_user=grantee)
    except OAuth2Error as error:
        return _redirect_error(redirect_uri, error.error, error.description or error.error, state)
    return smart.authorization.create_authorization_response(grant_user=grantee, grant=grant)  # type: ignore[no-any-return]


def _login(params: dict[str, str], client: Any) -> Response:
    smart = server()
    message = None
    if request.method == "POST" and request.form.get("step") == "login":
        user = smart.users.get(request.form.get("username", ""))
        if _csrf_ok() and user is not None and check_secret(request.form.get("password", ""), user.password_hash):
            session.clear()
            session["user"] = user.username
            session["auth_time"] = int(time.time())
            session["csrf"] = secrets.token_urlsafe(16)
            return _continue(params)
        message = "The user name or password is not right."
    return _page(
        "auth_login.html", 401 if message else 200, client=client, params=params, message=message, csrf=_csrf()
    )


def _continue(params: dict[str, str]) -> Response:
    """After login: back to the authorize endpoint with the same parameters (GET)."""
    return redirect(f"{request.path}?{urlencode(params)}", 303)  # type: ignore[return-value]


def _picker(params: dict[str, str], client: Any, chosen: str | None) -> Response:
    smart = server()
    query = (request.values.get("q") or "").strip()
    found: list[dict[str, str]] = []
    message: str | None = None
    if query:
        found, message = smart.find_patients(query)
    elif chosen:
        message = "That NHS number has no imaging records; search again."
    return _page(
        "auth_picker.html", client=client, params=params, query=query, found=found, message=message, csrf=_csrf()
    )


@bp.post("/token")
def token() -> Response:
    return server().authorization.create_token_response()  # type: ignore[no-any-return]


@bp.post("/revoke")
def revoke() -> Response:
    """RFC 7009: 200 whatever the token was; the client must own it. Without a token: 400 invalid_request."""
    if not request.form.get("token"):
        return _invalid_request("token is required")
    server().revoke(request.form.get("token", ""), request.form.get("token_type_hint"), _calling_client())
    return Response(b"", 200, headers={"Cache-Control": "no-store"})


@bp.post("/introspect")
def introspect() -> Response:
    """RFC 7662: 200 with active true/false; the caller must be a registered client or hold a token."""
    smart = server()
    caller = _calling_client(public_allowed=False)
    if caller is None and not smart.bearer_is_active(request.headers.get("Authorization")):
        return Response(
            orjson.dumps({"error": "invalid_client"}),
            401,
            content_type="application/json",
            headers={"WWW-Authenticate": 'Basic realm="introspection"'},
        )
    body = smart.introspect(request.form.get("token", ""))
    return Response(orjson.dumps(body), 200, content_type="application/json", headers={"Cache-Control": "no-store"})


def _invalid_request(description: str) -> Response:
    """RFC 6749 5.2: a required parameter is missing or malformed."""
    return Response(
        orjson.dumps({"error": "invalid_request", "error_description": description}),
        400,
        content_type="application/json",
        headers={"Cache-Control": "no-store"},
    )


def _calling_client(public_allowed: bool = True) -> Any:
    """The client authenticated by this request (basic, post, private_key_jwt; a public client's bare
    client_id only where `public_allowed`: revoking its own tokens, never introspecting)."""
    smart = server()
    methods = ["client_secret_basic", "client_secret_post", "private_key_jwt"] + (["none"] if public_allowed else [])
    try:
        oauth_request = smart.authorization.create_oauth2_request(request)
        return smart.authorization.authenticate_client(oauth_request, methods, "revocation")
    except OAuth2Error:
        return None


@bp.get("/jwks")
def jwks() -> Response:
    return Response(
        orjson.dumps(server().keys.public_jwks()),
        content_type="application/json",
        headers={"Cache-Control": "public, max-age=300"},
    )


@bp.get("/smart-style.json")
def smart_style() -> Response:
    style = {
        "color_background": "#f3f4f6",
        "color_error": "#d5281b",
        "color_highlight": "#005eb8",
        "color_modal_backdrop": "",
        "color_success": "#007f3b",
        "color_text": "#212b32",
        "dim_border_radius": "4px",
        "dim_font_size": "16px",
        "dim_spacing_size": "16px",
        "font_family_body": "Arial, sans-serif",
        "font_family_heading": "Arial, sans-serif",
    }
    return Response(orjson.dumps(style), content_type="application/json")


@bp.post("/launch")
def issue_launch() -> Response:
    """The EHR launch API: an EPR's backend client asks for a launch id for a patient (and study)."""
    smart = server()
    body = request.get_json(silent=True) if request.is_json else request.form.to_dict()
    if body is not None and not isinstance(body, dict):
        return _invalid_request("the body must be a JSON object or a form")
    result = smart.issue_launch(request.headers.get("Authorization"), body or {})
    status = 201 if "launch" in result else result.pop("status", 400)
    headers = {"Cache-Control": "no-store"}
    if status == 401:  # RFC 6750 3: a refused bearer token is answered with a challenge
        headers["WWW-Authenticate"] = f'Bearer realm="{smart.fhir_base}", error="invalid_token"'
    return Response(orjson.dumps(result), status, content_type="application/json", headers=headers)
