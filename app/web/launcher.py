"""The EHR launch simulator at /apps/launcher/ (demo: true only; 404 otherwise): what
launch.smarthealthit.org does for a SMART app, for this facade's own apps.

The clinician signs in with the authorization server's own sign-in (/auth/signin: same page,
password check, throttle and audit), finds a patient by name or NHS number (the patient picker's
search, audited as it is), optionally picks one of the patient's studies and a registered app. The
server then creates the launch id for that user and context as POST /auth/launch does
(EmbeddedAuthServer.issue_launch: the patient must have records and the study be the patient's),
binds it to the signed-in user, audits it, and shows the app in an EHR-like frame with its own patient
banner: the app opens with `iss` and `launch` and runs its EHR launch (the sign-in and consent pages
may be framed by this origin in the demo: app.web.headers).
"""

from __future__ import annotations

import hmac
from typing import Any
from urllib.parse import urlencode

from flask import Blueprint, Response, abort, redirect, render_template, request, session

from app.audit.auth_events import AuthAuditRecord
from app.auth.server import EmbeddedAuthServer
from app.auth.server.clients import User
from app.auth.server.grants import LAUNCH_TTL_S
from app.auth.server.store import secret_key
from app.core import display
from app.core.compartment import Compartment
from app.core.errors import FhirError
from app.core.identity import nhs_number_problem
from app.web.components import components

CLIENT_ID = "ehr-launcher"  # how the audit names the simulator
PAGE_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; frame-src 'self'; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'"
)


def _server() -> EmbeddedAuthServer:
    app = components()
    if not app.settings.demo or app.auth_server is None:
        abort(404)
    return app.auth_server


def _user(smart: EmbeddedAuthServer) -> User | None:
    login = smart.sessions.load(session.get("sid"))
    return smart.users.get(login["user"]) if login else None


def _page(template: str, status: int = 200, **values: Any) -> Response:
    response = Response(render_template(template, **values), status, content_type="text/html; charset=utf-8")
    response.headers["Content-Security-Policy"] = PAGE_POLICY
    response.headers["Cache-Control"] = "no-store"
    return response


def _apps(smart: EmbeddedAuthServer) -> list[dict[str, str]]:
    """The registered apps an EHR can launch: public or confidential clients with a launch URL that
    may be given the `launch` scope."""
    return [
        {"client_id": c.client_id, "name": c.name, "url": c.redirect_uris[0]}
        for c in smart.clients.values()
        if c.redirect_uris and "launch" in c.scope.split()
    ]


def _studies(nhs_number: str) -> list[dict[str, str]]:
    """The patient's studies, newest first, as the simulator lists them (the patient's compartment only)."""
    imaging = components().services.imaging
    try:
        parsed = imaging.parse([("patient", nhs_number), ("_count", "100")])
        result = imaging.search(parsed.search, Compartment("launcher", patient=nhs_number))
    except FhirError:
        return []
    rows = []
    for study in sorted(result.studies, key=lambda s: str(s.get("started", "")), reverse=True):
        modalities = ", ".join(m.get("code", "") for m in study.get("modality", []))
        rows.append(
            {
                "uid": study["id"],
                "date": display.format_datetime(study.get("started")),
                "text": " ".join(x for x in (modalities, study.get("description", "")) if x) or "Study",
            }
        )
    return rows


def _csrf_ok() -> bool:
    sent = request.form.get("csrf", "")
    return bool(sent) and hmac.compare_digest(sent.encode(), str(session.get("csrf", "")).encode())


def launcher() -> Response:
    """The simulator's one page: find a patient, then choose a study (optional) and an app."""
    smart = _server()
    user = _user(smart)
    if user is None:
        return redirect("/auth/signin", 303)  # type: ignore[return-value]
    query = (request.args.get("q") or "").strip()[:200]
    found: list[dict[str, str]] = []
    message = None
    if query:
        found, message = smart.find_patients(query)
        smart.record_picker(
            CLIENT_ID,
            user.fhir_user or user.username,
            request.remote_addr,
            query=query,
            found=tuple(p["nhs_number"] for p in found),
        )
    chosen = None
    patient = request.args.get("patient", "")
    if patient:
        chosen = smart.find_patient(patient) if nhs_number_problem(patient) is None else None
        if chosen is None:
            message = "That NHS number has no imaging records; search again."
        else:
            smart.record_picker(CLIENT_ID, user.fhir_user or user.username, request.remote_addr, chosen=patient)
    return _page(
        "launcher.html",
        user=user,
        query=query,
        found=found,
        message=message,
        chosen=chosen,
        studies=_studies(chosen["nhs_number"]) if chosen else [],
        apps=_apps(smart),
        csrf=session.get("csrf", ""),
    )


def launch() -> Response:
    """Create the launch for the signed-in user and the chosen context, and show the app in the frame."""
    smart = _server()
    user = _user(smart)
    if user is None:
        return redirect("/auth/signin", 303)  # type: ignore[return-value]
    if not _csrf_ok():
        return _page("launcher_error.html", 400, user=user, message="The form has expired: start the launch again.")
    body = {"client_id": request.form.get("app", ""), "patient": request.form.get("patient", "")}
    if request.form.get("study"):
        body["imaging_study"] = request.form["study"]
    apps = {a["client_id"]: a for a in _apps(smart)}
    result = (
        smart.issue_launch(body)
        if body["client_id"] in apps
        else {"error": "invalid_request", "error_description": "choose one of the registered apps"}
    )
    who = user.fhir_user or user.username
    status = 201 if "launch" in result else 400
    patient = body["patient"] if nhs_number_problem(body["patient"]) is None else None
    smart.record(
        AuthAuditRecord(
            "launch",
            status,
            CLIENT_ID,
            who,
            request.remote_addr,
            patient=patient,
            description=result.get("error_description"),
            detail=f"for client {body['client_id'][:128]}",
        )
    )
    if "launch" not in result:
        return _page("launcher_error.html", 400, user=user, message=result.get("error_description", "refused"))
    # The launch belongs to this user: another one who opened it could not take its context.
    smart.store.add_once("launch-user", secret_key(result["launch"]), LAUNCH_TTL_S, {"user": user.username})
    chosen = smart.find_patient(body["patient"])
    app = apps[body["client_id"]]
    url = f"{app['url']}?{urlencode({'iss': result['iss'], 'launch': result['launch']})}"
    return _page("launcher_frame.html", user=user, patient=chosen, app=app, url=url, study=body.get("imaging_study"))


def register(bp: Blueprint) -> None:
    bp.add_url_rule("/apps/launcher/", "launcher", launcher, methods=["GET"])
    bp.add_url_rule("/apps/launcher/launch", "launcher_launch", launch, methods=["POST"])
