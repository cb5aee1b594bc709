"""The embedded SMART authorization server's endpoints, under /auth.

authorize (GET and POST: login -> patient picker -> consent), logout, token, revoke (RFC 7009),
introspect (RFC 7662), jwks, launch (the EHR launch API) and the style document. The pages post
every authorization parameter back to /auth/authorize as hidden fields, so the flow needs no
server-side state besides the login session (app.auth.server.signin: kept server-side, the cookie
holds its id). Every authorization response that goes back to the client carries `iss` (RFC 9207).
Sign-ins, tokens, introspections, launches and the patient picker are audited (app.audit.auth_events).
"""

from __future__ import annotations

import hmac
import secrets
import time
from typing import TYPE_CHECKING, Any, cast
from urllib.parse import parse_qsl, urlencode

import orjson
from authlib.oauth2 import OAuth2Error
from flask import Blueprint, Response, current_app, redirect, render_template, request, session

from app.audit.auth_events import AuthAuditRecord
from app.auth.server.clients import User, check_password
from app.auth.server.grants import LAUNCH_TTL_S, Grantee
from app.auth.server.signin import DEVICE_COOKIE, DEVICE_TTL_S
from app.auth.server.store import secret_key
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
    "prompt",
    "max_age",
)
LAUNCH_BODY_MAX_BYTES = 16 * 1024  # POST /auth/launch: three short strings fit many times over
LAUNCH_BODY_MAX_DEPTH = 4  # nesting of JSON objects and arrays in it
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


def _page(template: str, status: int = 200, headers: dict[str, str] | None = None, **values: Any) -> Response:
    body = render_template(template, **values)
    return Response(
        body,
        status=status,
        content_type="text/html; charset=utf-8",
        headers={
            "Cache-Control": "no-store",  # who may frame the page: app.web.headers ('self' in the demo only)
            "Content-Security-Policy": "default-src 'self'; style-src 'self' 'unsafe-inline'",
            **(headers or {}),
        },
    )


def _error_page(message: str) -> Response:
    """Errors that must not redirect (unknown client, unregistered redirect URI): RFC 6749 4.1.2.1."""
    return _page("auth_error.html", 400, message=message)


def _with_params(uri: str, params: dict[str, str]) -> str:
    separator = "&" if "?" in uri else "?"
    return f"{uri}{separator}{urlencode(params)}"


def _redirect_error(redirect_uri: str, error: str, description: str, state: str | None) -> Response:
    params = {"error": error, "error_description": description}
    if state is not None:
        params["state"] = state
    params["iss"] = server().fhir_base  # RFC 9207: errors included
    return redirect(_with_params(redirect_uri, params), 302)  # type: ignore[return-value]


def _with_iss(response: Response) -> Response:
    """RFC 9207: the authorization response names its issuer (mix-up attacks)."""
    location = response.headers.get("Location")
    if location and "iss=" not in location.partition("?")[2]:
        response.headers["Location"] = _with_params(location, {"iss": server().fhir_base})
    return response


def _address() -> str | None:
    return request.remote_addr


def _who(user: User) -> str:
    return user.fhir_user or user.username


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

    def refuse(error: str, description: str) -> Response:
        return _redirect_error(redirect_uri, error, description, state)

    if (params.get("aud") or params.get("resource") or "").rstrip("/") != smart.fhir_base:
        return refuse("invalid_request", "aud must be this FHIR server's base URL")
    if params.get("response_type") != "code":
        return refuse("unsupported_response_type", "response_type must be code")
    if not params.get("code_challenge") or params.get("code_challenge_method") != "S256":
        return refuse("invalid_request", "PKCE with code_challenge_method=S256 is required")
    prompts = set(params.get("prompt", "").split())
    if "none" in prompts and len(prompts) > 1:
        return refuse("invalid_request", "prompt=none cannot be combined with other values")
    if not params.get("max_age", "0").isdigit():
        return refuse("invalid_request", "max_age must be a number of seconds")
    scopes = params.get("scope", "").split()
    launch_key = launch = None
    if "launch" in scopes:
        launch_key = secret_key(params["launch"]) if params.get("launch") else None
        launch = smart.store.get("launch", launch_key) if launch_key else None
        if launch is None or launch["client_id"] != client.client_id:
            return refuse("invalid_request", "launch is unknown, used, expired or for another application")
    granted = client.get_allowed_scope(params.get("scope", "")).split()
    if launch is None and "launch/patient" not in scopes:  # no patient context: no patient scopes
        granted = [s for s in granted if not s.startswith("patient/")]
    if not granted:
        return refuse("invalid_scope", "none of the requested scopes can be granted to this application")
    login = smart.sessions.load(session.get("sid"))
    user = smart.users.get(login["user"]) if login else None
    again = login is not None and user is not None and _must_sign_in_again(login, params, prompts)
    if login is None or user is None or again:
        if "none" in prompts:
            return refuse("login_required", "the user is not signed in")
        return _login(params, client, again)
    if "none" in prompts:
        return refuse("consent_required", "this server asks the user's consent")
    if launch_key is not None and not _bind_launch(launch_key, user.username):
        return refuse("invalid_request", "launch is unknown, used, expired or for another application")
    patient = launch["patient"] if launch else None
    chosen = None  # the picker's summary of the patient, looked up once per request
    if patient is None and "launch/patient" in scopes:
        patient = request.form.get("patient") if request.method == "POST" and _csrf_ok() else None
        chosen = smart.find_patient(patient) if patient and not nhs_number_problem(patient) else None
        if patient and request.form.get("step") != "consent":  # the user chose a patient: audited
            smart.record_picker(client.client_id, _who(user), _address(), chosen=patient, status=200 if chosen else 404)
        if chosen is None:
            return _picker(params, client, patient, user)
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
            patient_display=chosen["nhs_display"] if chosen else patient,
            patient_born=chosen["birth_date"] if chosen else None,
            csrf=_csrf(),
            scopes=[(s, describe_scope(s)) for s in granted],
        )
    if request.form.get("decision") != "allow":
        if launch_key is not None:
            smart.store.take("launch", launch_key)  # a declined launch is spent, not left for another try
        return refuse("access_denied", "the user declined")
    if launch_key is not None and smart.store.take("launch", launch_key) is None:
        return refuse("invalid_request", "launch was already used")
    online = "online_access" in granted and "offline_access" not in granted
    grantee = Grantee(
        username=user.username,
        fhir_user=user.fhir_user,
        name=user.name,
        patient=patient,
        fhir_context=launch.get("fhirContext", []) if launch else [],
        need_patient_banner=launch is None,
        nonce=params.get("nonce"),
        auth_time=int(login["auth_time"]),
        session=secret_key(session["sid"]) if online else None,  # online_access lives with the session
    )
    try:
        grant = smart.authorization.get_consent_grant(end_user=grantee)
    except OAuth2Error as error:
        return refuse(error.error, error.description or error.error)
    return _with_iss(smart.authorization.create_authorization_response(grant_user=grantee, grant=grant))


def _must_sign_in_again(login: dict[str, Any], params: dict[str, str], prompts: set[str]) -> bool:
    """prompt=login, or a sign-in older than max_age: the user signs in again, once per authorization
    request (a sign-in made for this request, named by its PKCE challenge, satisfies it)."""
    if login.get("fresh_for") == params.get("code_challenge"):
        return False
    if "login" in prompts:
        return True
    max_age = params.get("max_age")
    return max_age is not None and time.time() - float(login["auth_time"]) > int(max_age)


def _bind_launch(launch_key: str, username: str) -> bool:
    """A launch id belongs to the first user who opens it: another user cannot take its context."""
    store = server().store
    if store.add_once("launch-user", launch_key, LAUNCH_TTL_S, {"user": username}):
        return True
    bound = store.get("launch-user", launch_key)
    return bound is None or bound.get("user") == username


def _login(params: dict[str, str], client: Any, again: bool = False) -> Response:
    message = "Sign in again to continue." if again else None
    status = 200
    if request.method == "POST" and request.form.get("step") == "login":
        message, status = "The user name or password is not right.", 401
        if _csrf_ok():
            signed_in = _sign_in(params, client)
            if signed_in is not None:
                return signed_in
    return _page("auth_login.html", status, client=client, params=params, message=message, csrf=_csrf())


def _sign_in(params: dict[str, str], client: Any) -> Response | None:
    """Check the posted user name and password under the throttle: the redirect on success, a 429 page
    while attempts must wait, None when they are not right."""
    smart = server()
    username = request.form.get("username", "")[:128]
    address = _address()
    device = smart.throttle.device_for(request.cookies.get(DEVICE_COOKIE), username)
    wait = smart.throttle.wait_s(username, address, device)
    if wait:
        smart.record(AuthAuditRecord("login", 429, client.client_id, username, address, description="throttled"))
        message = f"Too many failed sign-ins: try again in {wait} seconds."
        return _page(
            "auth_login.html",
            429,
            headers={"Retry-After": str(wait)},
            client=client,
            params=params,
            message=message,
            csrf=_csrf(),
        )
    user = smart.users.get(username)
    if not check_password(user, request.form.get("password", "")) or user is None:
        smart.throttle.failed(username, address, device)
        smart.record(AuthAuditRecord("login", 401, client.client_id, username, address, description="wrong password"))
        return None
    smart.throttle.succeeded(username, device)
    smart.sessions.end(session.get("sid"))  # whoever was signed in here before is signed out
    session.clear()
    session["sid"] = smart.sessions.start(user.username, fresh_for=params.get("code_challenge"))
    session["csrf"] = secrets.token_urlsafe(16)
    smart.record(AuthAuditRecord("login", 200, client.client_id, _who(user), address))
    response = _continue(params)
    if device is None:  # this browser is now one the user signs in from (signin.SignInThrottle)
        response.set_cookie(
            DEVICE_COOKIE,
            smart.throttle.new_device(user.username),
            max_age=DEVICE_TTL_S,
            path="/auth",
            secure=bool(current_app.config.get("SESSION_COOKIE_SECURE")),
            httponly=True,
            samesite="Lax",
        )
    return response


def _continue(params: dict[str, str]) -> Response:
    """After login: back to the authorize endpoint with the same parameters (GET)."""
    return redirect(f"{request.path}?{urlencode(params)}", 303)  # type: ignore[return-value]


def _picker(params: dict[str, str], client: Any, chosen: str | None, user: User) -> Response:
    smart = server()
    query = (request.values.get("q") or "").strip()[:200]
    found: list[dict[str, str]] = []
    message: str | None = None
    if query:
        found, message = smart.find_patients(query)
        patients = tuple(p["nhs_number"] for p in found)
        smart.record_picker(client.client_id, _who(user), _address(), query=query, found=patients)
    elif chosen:
        message = "That NHS number has no imaging records; search again."
    return _page(
        "auth_picker.html", client=client, params=params, query=query, found=found, message=message, csrf=_csrf()
    )


LAUNCHER_PATH = "/apps/launcher/"  # the demo's EHR launch simulator (app.web.launcher), the one `next` of /signin


class _Launcher:
    """Who asks the user to sign in at /auth/signin (the sign-in page names it; the audit names its id)."""

    client_id = "ehr-launcher"
    name = "The EHR launch simulator"


@bp.route("/signin", methods=["GET", "POST"])
def signin() -> Response:
    """The demo's EHR launch simulator signs its clinician in here: the same sign-in page, throttle and
    audit as an authorization, then back to the simulator. Demo only (404 elsewhere); `next` can only
    be the simulator (no open redirect)."""
    smart = server()
    if not smart.settings.demo:
        return _page("auth_error.html", 404, message="There is no such page.")
    params = {"next": LAUNCHER_PATH}
    login = smart.sessions.load(session.get("sid"))
    if login is not None and smart.users.get(login["user"]) is not None and request.method == "GET":
        return redirect(LAUNCHER_PATH, 303)  # type: ignore[return-value]
    if request.method == "POST" and request.form.get("step") == "login":
        response = _login(params, _Launcher())
        if response.status_code == 303:  # signed in (the device cookie, if any, stays on the response)
            response.headers["Location"] = LAUNCHER_PATH
        return response
    return _page("auth_login.html", client=_Launcher(), params=params, message=None, csrf=_csrf())


@bp.route("/logout", methods=["GET", "POST"])
def logout() -> Response:
    """Sign-out: GET asks (a link cannot sign anyone out by surprise), POST with the form's CSRF value
    ends the login session here and in every process; online_access refresh tokens end with it."""
    smart = server()
    login = smart.sessions.load(session.get("sid"))
    if request.method == "POST" and _csrf_ok():
        ended = smart.sessions.end(session.get("sid"))
        session.clear()
        if ended is not None:
            user = smart.users.get(ended["user"])
            who = _who(user) if user else ended["user"]
            smart.record(AuthAuditRecord("logout", 200, None, who, _address()))
        return _page("auth_logout.html", signed_out=True, user=None, csrf="")
    user = smart.users.get(login["user"]) if login else None
    return _page("auth_logout.html", signed_out=user is None, user=user, csrf=_csrf())


@bp.post("/token")
def token() -> Response:
    smart = server()
    response: Response = smart.authorization.create_token_response()
    _audit_token(response)
    return response


def _audit_token(response: Response) -> None:
    """The token endpoint's answer, issued (IHE ITI-71) or refused, with its client, user and patient."""
    smart = server()
    grant_type = request.form.get("grant_type", "")[:40]
    try:
        body = orjson.loads(response.get_data())
    except orjson.JSONDecodeError:
        body = {}
    body = body if isinstance(body, dict) else {}
    issued = response.status_code == 200 and "access_token" in body
    claims = smart.decode_own(str(body["access_token"])) if issued else None
    if claims is not None:
        user = claims.get("fhirUser") or (claims.get("sub") if claims.get("sub") != claims.get("client_id") else None)
        record = AuthAuditRecord(
            "token",
            response.status_code,
            claims.get("client_id"),
            user,
            _address(),
            patient=claims.get("patient"),
            detail=f"grant_type={grant_type} jti={claims.get('jti')} scope={claims.get('scope')}"[:500],
        )
    else:
        basic = request.authorization.username if request.authorization is not None else None
        claimed = request.form.get("client_id") or basic  # as sent: the client was not (or not yet) authenticated
        error = f"{body.get('error', 'error')}: {body.get('error_description', '')}"
        record = AuthAuditRecord(
            "token",
            response.status_code,
            claimed[:128] if claimed else None,
            None,
            _address(),
            description=error,
            detail=f"grant_type={grant_type}",
        )
    smart.record(record)


@bp.post("/revoke")
def revoke() -> Response:
    """RFC 7009: the caller must identify itself (a public client by its client_id, others by their
    credentials) and may revoke only its own tokens; an unknown token is 200 (nothing to revoke)."""
    if not request.form.get("token"):
        return _invalid_request("token is required")
    client = _calling_client()
    if client is None:
        return _invalid_client("the client must identify itself (client_id, or its credentials)")
    if not server().revoke(request.form.get("token", ""), client):
        return _oauth_error(400, "invalid_grant", "the token was issued to another client: not revoked")
    return Response(b"", 200, headers={"Cache-Control": "no-store"})


@bp.post("/introspect")
def introspect() -> Response:
    """RFC 7662: 200 with active true/false. Confidential clients and resource servers may introspect
    any token; the bearer of another token only its own client's and user's (else active: false)."""
    smart = server()
    caller = smart.introspection_caller(_calling_client(public_allowed=False), request.headers.get("Authorization"))
    if caller is None:
        smart.record(AuthAuditRecord("introspect", 401, None, None, _address(), description="caller not authenticated"))
        return _invalid_client("authenticate as a confidential client, or send a bearer token")
    body = smart.introspect(request.form.get("token", ""), caller)
    patient = body.get("patient") if isinstance(body.get("patient"), str) else None
    smart.record(
        AuthAuditRecord(
            "introspect",
            200,
            caller["client_id"],
            caller["user"] if caller["user"] != caller["client_id"] else None,
            _address(),
            patient=patient,
            detail=f"active={str(body.get('active')).lower()} token_client={body.get('client_id', '')}",
        )
    )
    return Response(orjson.dumps(body), 200, content_type="application/json", headers={"Cache-Control": "no-store"})


def _oauth_error(status: int, error: str, description: str, headers: dict[str, str] | None = None) -> Response:
    return Response(
        orjson.dumps({"error": error, "error_description": description}),
        status,
        content_type="application/json",
        headers={"Cache-Control": "no-store", **(headers or {})},
    )


def _invalid_client(description: str) -> Response:
    """RFC 6749 5.2: client authentication failed (401 with a challenge)."""
    return _oauth_error(401, "invalid_client", description, {"WWW-Authenticate": 'Basic realm="smart-auth"'})


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
    """The EHR launch API: an EPR's backend client asks for a launch id for a patient (and study).

    The caller is authenticated before its body is read; the body is then read within a size and a
    nesting limit: whatever is sent, the answer is 201, 400 or 401, never a 500.
    """
    smart = server()
    claims = smart.launch_issuer(request.headers.get("Authorization"))
    if claims is None:
        smart.record(AuthAuditRecord("launch", 401, None, None, _address(), description="not a launch issuer"))
        return _oauth_error(
            401,
            "invalid_token",
            "a system-level token of a client registered as launch_issuer is required",
            {"WWW-Authenticate": f'Bearer realm="{smart.fhir_base}", error="invalid_token"'},  # RFC 6750 3
        )
    body, problem = _launch_body()
    result = smart.issue_launch(body) if problem is None else {"error": "invalid_request", "error_description": problem}
    status = 201 if "launch" in result else 400
    patient = body.get("patient") if isinstance(body.get("patient"), str) else None
    smart.record(
        AuthAuditRecord(
            "launch",
            status,
            claims.client_id,
            None,
            _address(),
            patient=patient if patient and nhs_number_problem(patient) is None else None,
            description=result.get("error_description"),
            detail=f"for client {str(body.get('client_id', ''))[:128]}",
        )
    )
    headers = {"Cache-Control": "no-store"}
    return Response(orjson.dumps(result), status, content_type="application/json", headers=headers)


def _launch_body() -> tuple[dict[str, Any], str | None]:
    """The launch request's body (a JSON object or a form) and None, or {} and why it was refused."""
    if (request.content_length or 0) > LAUNCH_BODY_MAX_BYTES:
        return {}, f"the body is larger than {LAUNCH_BODY_MAX_BYTES} bytes"
    raw = request.stream.read(LAUNCH_BODY_MAX_BYTES + 1)
    if len(raw) > LAUNCH_BODY_MAX_BYTES:
        return {}, f"the body is larger than {LAUNCH_BODY_MAX_BYTES} bytes"
    body: Any
    if request.is_json:
        if _json_depth(raw) > LAUNCH_BODY_MAX_DEPTH:
            return {}, f"the JSON body is nested deeper than {LAUNCH_BODY_MAX_DEPTH} levels"
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return {}, "the body is not valid JSON"
    elif not raw or request.mimetype == "application/x-www-form-urlencoded":
        try:
            body = dict(parse_qsl(raw.decode("utf-8"), keep_blank_values=True))
        except (UnicodeDecodeError, ValueError):
            return {}, "the form is not valid"
    else:
        body = None
    if not isinstance(body, dict):
        return {}, "the body must be a JSON object or a form"
    return body, None


def _json_depth(raw: bytes) -> int:
    """How deeply objects and arrays nest in a JSON text (strings skipped), counted without parsing it."""
    depth = deepest = 0
    in_string = escaped = False
    for byte in raw:
        if in_string:
            if escaped:
                escaped = False
            elif byte == 0x5C:  # backslash
                escaped = True
            elif byte == 0x22:  # quote
                in_string = False
        elif byte == 0x22:
            in_string = True
        elif byte in (0x5B, 0x7B):  # [ {
            depth += 1
            deepest = max(deepest, depth)
        elif byte in (0x5D, 0x7D):  # ] }
            depth -= 1
    return deepest
