"""`python -m app postman-env`: a local Postman environment holding freshly minted demo tokens.

In the demo only (demo: true; refused elsewhere): the tokens are signed with the demo server's own
signing key file (auth.signing_keys), as its authorization server would issue them, so that Postman or
`newman run` can use the whole collection with no browser step:

    access_token           user context: the Postman app's token for dr.khan (user/*.rs), 1 hour
    patient_access_token   patient context: the Postman app's token for dr.khan in the demo patient's
                           compartment (launch/patient patient/*.rs), 1 hour
    audit_access_token     system context: the portal's Backend Services token for AuditEvent, 5 minutes
    system_access_token    system context: the portal's Backend Services token for the clinical types, 5 minutes

with the demo's base URLs (base_url, auth_base, dicomweb_base) for the server at --base, and every other
value of the committed, token-free postman/demo.postman_environment.json. The file is written to
postman/local.postman_environment.json (git-ignored) with mode 0600. The tokens' issuer and audience are
--base: the server must run with that base URL (`make demo` does: http://127.0.0.1:8080/fhir).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from app.auth.server.clients import client_from_config
from app.auth.server.grants import Grantee, TokenIssuer
from app.auth.server.keys import SigningKeys
from app.auth.server.store import open_store
from app.settings import EmbeddedAuthSettings, Settings

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "postman" / "demo.postman_environment.json"
LOCAL = ROOT / "postman" / "local.postman_environment.json"
USER, USER_FHIR, USER_NAME = "dr.khan", "Practitioner/dr-khan", "Dr Aisha Khan"
APP_CLIENT, SYSTEM_CLIENT = "postman", "portal"
USER_SCOPE = "user/*.rs openid fhirUser"
PATIENT_SCOPE = "launch/patient patient/*.rs openid fhirUser"
SYSTEM_SCOPE = "system/ImagingStudy.rs system/Patient.rs system/Endpoint.rs system/Organization.rs"
AUDIT_SCOPE = "system/AuditEvent.rs"
TOKENS = ("access_token", "patient_access_token", "audit_access_token", "system_access_token")


class NotTheDemo(Exception):
    """The configuration is not the demo's (or has no embedded authorization server)."""


def mint(settings: Settings, base: str, patient: str) -> dict[str, str]:
    """The four tokens, signed with the configuration's signing key file, for a server whose base is `base`."""
    auth = settings.auth
    if not settings.demo or not isinstance(auth, EmbeddedAuthSettings):
        raise NotTheDemo("postman-env mints tokens for the demo only (demo: true, auth.mode: embedded)")
    base = base.rstrip("/")
    root = base.rsplit("/", 1)[0]
    issuer = TokenIssuer(
        base,
        base,
        SigningKeys(auth.signing_keys),
        open_store(auth.store),
        auth.access_token_lifetime_s,
        f"{root}/auth/smart-style.json",
    )
    clients = {c["client_id"]: client_from_config(c, root) for c in auth.clients}
    user = Grantee(USER, USER_FHIR, name=USER_NAME)
    in_patient = Grantee(USER, USER_FHIR, patient, name=USER_NAME)

    def token(client: str, grantee: Grantee | None, scope: str) -> str:
        grant = "client_credentials" if grantee is None else "authorization_code"
        answer = issuer(grant, clients[client], grantee, scope, include_refresh_token=False)
        return str(answer["access_token"])

    return {
        "access_token": token(APP_CLIENT, user, USER_SCOPE),
        "patient_access_token": token(APP_CLIENT, in_patient, PATIENT_SCOPE),
        "audit_access_token": token(SYSTEM_CLIENT, None, AUDIT_SCOPE),
        "system_access_token": token(SYSTEM_CLIENT, None, SYSTEM_SCOPE),
    }


def environment(settings: Settings, base: str, template: Path = TEMPLATE) -> dict[str, Any]:
    """The committed environment, its URLs pointed at `base` and its tokens filled in."""
    doc: dict[str, Any] = json.loads(template.read_text(encoding="utf-8"))
    values = {v["key"]: v for v in doc["values"]}
    root = base.rstrip("/").rsplit("/", 1)[0]
    urls = {"base_url": base.rstrip("/"), "auth_base": f"{root}/auth", "dicomweb_base": f"{root}/dicomweb"}
    tokens = mint(settings, base, str(values["nhs_number"]["value"]))
    for key, value in {**urls, **tokens}.items():
        entry = values.setdefault(key, {"key": key, "type": "secret" if key in TOKENS else "default", "enabled": True})
        entry["value"] = value
    doc["values"] = list(values.values())
    doc["name"] = f"{doc['name']} (local, tokens minted)"
    doc["id"] = f"{doc['id'][:-12]}000000000001"
    return doc


def write(settings: Settings, base: str, out: Path = LOCAL) -> Path:
    doc = environment(settings, base)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # it holds bearer tokens
    with os.fdopen(fd, "w", encoding="utf-8") as file:
        json.dump(doc, file, indent=2)
        file.write("\n")
    return out
