"""The embedded SMART App Launch 2.2 authorization server, built on authlib's Flask OAuth 2.0 server.

`make demo` runs it so that the demo is a complete, secured system; in production the facade can
instead trust the region's identity provider (auth.mode: external).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import time
from typing import Any, Protocol

from flask import Flask
from flask.sessions import SecureCookieSessionInterface
from itsdangerous import URLSafeTimedSerializer
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import Key, KeySet

from app.audit.auth_events import AuthAuditRecord, build_auth_event
from app.audit.events import AuditRecord, build_events
from app.audit.store import AuditStore
from app.auth.server.clients import Client, client_from_config, user_from_config
from app.auth.server.grants import (
    LAUNCH_TTL_S,
    AuthorizationCodeGrant,
    ClientCredentialsGrant,
    RefreshTokenGrant,
    SmartAuthorizationServer,
    SmartClientAssertion,
    StrictCodeChallenge,
    TokenIssuer,
    grant_revoked,
    revoke_grant,
)
from app.auth.server.keys import SigningKeys
from app.auth.server.signin import LoginSessions, SignInThrottle
from app.auth.server.store import open_store, secret_key
from app.auth.tokens import AccessClaims, InvalidToken, JwtValidator
from app.core import dicom_json as dj
from app.core import display
from app.core.identity import nhs_number_problem
from app.core.query import NameQuery
from app.settings import EmbeddedAuthSettings, Settings


class PatientFinder(Protocol):
    """What the sign-in's patient picker needs of the facade: patients by NHS number or by name, nothing more."""

    def patient(self, nhs_number: str) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]: ...

    def patients_by_name(self, name: NameQuery) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]: ...

    def study_problem(self, nhs_number: str, study_uid: str) -> str | None: ...


CAPABILITIES = [
    "launch-ehr",
    "launch-standalone",
    "authorize-post",
    "client-public",
    "client-confidential-symmetric",
    "client-confidential-asymmetric",
    "context-banner",
    "context-style",
    "context-ehr-patient",
    "context-standalone-patient",
    "permission-offline",
    "permission-online",
    "permission-patient",
    "permission-user",
    "permission-v1",
    "permission-v2",
    "sso-openid-connect",
    "smart-imaging-access",  # Argonaut SMART Imaging Access: the token opens the images (app/gateway.py)
]


def _session_secret(key: Key) -> bytes:
    """A login session secret derived from a private signing key: secret, and the same in every worker."""
    private = json.dumps(key.as_dict(private=True), sort_keys=True).encode()
    return hmac.new(private, b"gm-facade login sessions", hashlib.sha256).digest()


class KeyFileSessions(SecureCookieSessionInterface):
    """Login sessions signed with the secret of the current signing key and accepted with any published
    key's, following the key file as tokens do. A secret fixed at start-up would differ between workers
    started before and after a rotation (a login would fail whenever the other worker answers); this
    way they agree within a second of it, a session begun before it goes on, and retiring a key ends
    the sessions signed with it."""

    def __init__(self, keys: SigningKeys) -> None:
        self.keys = keys
        self._secrets: tuple[KeySet, list[bytes]] | None = None

    def get_signing_serializer(self, app: Flask) -> URLSafeTimedSerializer:
        published = self.keys.key_set()
        derived = self._secrets
        if derived is None or derived[0] is not published:  # derived again only when the keys change
            # itsdangerous signs with the last secret: the current key is the file's first.
            derived = (published, [_session_secret(k) for k in reversed(published.keys)])
            self._secrets = derived
        return URLSafeTimedSerializer(
            derived[1],
            salt=self.salt,
            serializer=self.serializer,
            signer_kwargs={"key_derivation": self.key_derivation, "digest_method": self.digest_method},
        )


class EmbeddedAuthServer:
    """Clients, users, keys, state store and the authlib server, wired for one facade."""

    def __init__(self, settings: Settings, patients: PatientFinder, audit: AuditStore) -> None:
        auth = settings.auth
        assert isinstance(auth, EmbeddedAuthSettings), "the embedded server needs auth.mode embedded"
        self.settings = settings
        self.patients = patients
        self.fhir_base = settings.base_url
        self.root = f"{settings.public_root}/auth"
        self.keys = SigningKeys(auth.signing_keys)
        self.store = open_store(auth.store)
        self.audit = audit  # the facade's one audit store: the server's events beside the API's
        self.sessions = LoginSessions(self.store, auth.sign_in.session_idle_s, auth.sign_in.session_max_s)
        self.throttle = SignInThrottle(self.store, auth.sign_in)
        self.clients = {c["client_id"]: client_from_config(c, settings.public_root) for c in auth.clients}
        self.users = {u["username"]: user_from_config(u) for u in auth.users}
        self.issuer = TokenIssuer(
            self.fhir_base,
            self.fhir_base,
            self.keys,
            self.store,
            auth.access_token_lifetime_s,
            f"{self.root}/smart-style.json",
        )
        self.validator = JwtValidator(
            self.fhir_base,
            self.fhir_base,
            self.keys,  # the key file, reloaded when rotate-keys changes it
            is_revoked=self.is_revoked,
        )
        self.authorization = SmartAuthorizationServer(self.store, self.issuer, self.sessions.alive)

    def is_revoked(self, claims: AccessClaims) -> bool:
        """Checked on every request, in every process (the store is shared): the token itself was
        revoked, or the grant it was issued from (refresh token revoked or reused, code replayed)."""
        if claims.jti and self.store.get("revoked", claims.jti) is not None:
            return True
        return grant_revoked(self.store, claims.grant_id)

    def init_app(self, app: Flask) -> None:
        from app.auth.server.views import SERVER_KEY, bp

        server = self.authorization
        server.init_app(app, query_client=self.query_client, save_token=lambda token, request: None)
        server.register_token_generator("default", self.issuer)
        server.register_client_auth_method("private_key_jwt", SmartClientAssertion(f"{self.root}/token", self.store))
        server.register_grant(AuthorizationCodeGrant, [StrictCodeChallenge(required=True)])
        server.register_grant(RefreshTokenGrant)
        server.register_grant(ClientCredentialsGrant)
        app.extensions[SERVER_KEY] = self
        app.session_interface = KeyFileSessions(self.keys)
        app.register_blueprint(bp, url_prefix="/auth")

    def session_secret(self) -> bytes:
        """The current key's session secret (the app's secret_key; sessions follow the key file: KeyFileSessions)."""
        return _session_secret(self.keys.current)

    # -- lookups used by the flows ---------------------------------------------------------
    def query_client(self, client_id: str) -> Client | None:
        return self.clients.get(client_id)

    def find_patient(self, nhs_number: str) -> dict[str, str] | None:
        """The picker's summary of a patient (NHS number, name, birth date), or None without records."""
        patient, _ = self.patients.patient(nhs_number)
        return _summary(patient) if patient else None

    def find_patients(self, query: str) -> tuple[list[dict[str, str]], str | None]:
        """Patient picker search: an NHS number, or a family name (and given name) matched from its start.

        Both are validated before any archive is asked; the name's one trailing wildcard is added by
        the adapters, never taken from what the user typed.
        """
        digits = query.replace(" ", "")
        if digits.isdigit():
            problem = nhs_number_problem(digits)
            if problem:
                return [], problem
            summary = self.find_patient(digits)
            return ([summary] if summary else []), None if summary else "No imaging records found."
        words = query.replace(",", " ").split()
        try:
            name = NameQuery(words[0], words[1] if len(words) > 1 else None)
        except (ValueError, IndexError):
            return [], "Type an NHS number, or a family name (and a given name): letters only, two at least."
        found, _issues = self.patients.patients_by_name(name)
        if not found:
            return [], "No patient with that name has imaging records."
        more = "More than 50 patients match: be more precise." if len(found) > 50 else None
        return [_summary(p) for p in found[:50]], more

    # -- tokens ----------------------------------------------------------------------------
    def decode_own(self, token: str) -> dict[str, Any] | None:
        """The claims of an access token this server signed (expired ones included), else None."""
        try:
            decoded = jwt.decode(token, self.keys.key_set(), algorithms=["RS384"])
        except (JoseError, ValueError, TypeError):
            return None
        claims = decoded.claims
        return claims if claims.get("iss") == self.fhir_base else None

    def revoke(self, token: str, client: Client) -> bool:
        """RFC 7009 for an identified client: False when the token is another client's (refused, left
        valid); True otherwise, an unknown or invalid token included (nothing to revoke). A refresh
        token revokes its whole grant: its family and every access token issued from it."""
        refresh = self.store.get("refresh", secret_key(token))
        if refresh is not None:
            if refresh["client_id"] != client.client_id:
                return False
            self.store.take("refresh", secret_key(token))
            revoke_grant(self.store, refresh["family"])
            return True
        claims = self.decode_own(token)
        if claims is None or not claims.get("jti"):
            return True
        if claims.get("client_id") != client.client_id:
            return False
        ttl = max(float(claims.get("exp", 0)) - time.time(), 0.0) + 60
        self.store.put("revoked", str(claims["jti"]), {}, ttl)
        return True

    def introspection_caller(self, client: Client | None, authorization: str | None) -> dict[str, Any] | None:
        """Who may introspect, and what: a confidential client authenticated at the endpoint, or the
        bearer of a backend (client_credentials, system-scoped) token of a confidential client, may
        introspect any token (resource servers); the bearer of any other active token only tokens of
        its own client and user. None: neither (401)."""
        if client is not None:
            return {"client_id": client.client_id, "any": True, "user": None}
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return None
        try:
            claims = self.validator.validate(token.strip())
        except InvalidToken:
            return None
        registered = self.clients.get(claims.client_id)
        resource_server = (
            registered is not None
            and not registered.public
            and "client_credentials" in registered.grant_types
            and claims.subject == claims.client_id
            and any(s.startswith("system/") for s in claims.scope.split())
        )
        return {"client_id": claims.client_id, "any": resource_server, "user": claims.subject}

    def introspect(self, token: str, caller: dict[str, Any]) -> dict[str, Any]:
        """RFC 7662 with the launch context the token response had (SMART 2.2: patient, fhirContext,
        need_patient_banner, smart_style_url); inactive for a token the caller may not see."""
        if not token:
            return {"active": False}
        answer = self._introspect(token)
        own = answer.get("client_id") == caller["client_id"] and answer.get("sub") == caller["user"]
        if answer.get("active") and not caller["any"] and not own:
            return {"active": False}  # another client's or user's token: not told apart from an invalid one
        return answer

    def _introspect(self, token: str) -> dict[str, Any]:
        refresh = self.store.get("refresh", secret_key(token))
        if refresh is not None:
            if grant_revoked(self.store, refresh["family"]):
                return {"active": False}
            grantee = refresh["grantee"]
            session = grantee.get("session")
            if session and self.store.get(LoginSessions.KIND, session) is None:
                return {"active": False}  # online_access: its login session has ended
            out = {
                "active": True,
                "client_id": refresh["client_id"],
                "scope": refresh["scope"],
                "token_type": "refresh_token",
                "sub": grantee.get("username"),
                "iss": self.fhir_base,
                "smart_style_url": self.issuer.style_url,
            }
            if grantee.get("patient"):
                out["patient"] = grantee["patient"]
                out["need_patient_banner"] = grantee.get("need_patient_banner", True)
            if grantee.get("fhir_context"):
                out["fhirContext"] = grantee["fhir_context"]
            if grantee.get("fhir_user") and "fhirUser" in refresh["scope"].split():
                out["fhirUser"] = grantee["fhir_user"]
            return out
        try:
            claims = self.validator.validate(token)
        except InvalidToken:
            return {"active": False}
        return _introspection(claims, self.decode_own(token) or {})

    def launch_issuer(self, authorization: str | None) -> AccessClaims | None:
        """The claims of the caller of the EHR launch API, when it is a backend client registered as a
        launch issuer holding a system-level token; else None (401, before the body is read)."""
        scheme, _, token = (authorization or "").partition(" ")
        try:
            claims = self.validator.validate(token.strip()) if scheme.lower() == "bearer" else None
        except InvalidToken:
            return None
        caller = self.clients.get(claims.client_id) if claims else None
        if (
            claims is None
            or caller is None
            or not caller.launch_issuer
            or not any(s.startswith("system/") for s in claims.scope.split())
        ):
            return None
        return claims

    def issue_launch(self, body: dict[str, Any]) -> dict[str, Any]:
        """A launch id for an EPR (the caller was checked by `launch_issuer`), or an OAuth error."""
        client_id, patient, study = body.get("client_id"), body.get("patient"), body.get("imaging_study")
        if not isinstance(client_id, str) or client_id not in self.clients:
            return {"error": "invalid_request", "error_description": "unknown client_id"}
        if not isinstance(patient, str):
            return {"error": "invalid_request", "error_description": "patient must be an NHS number (a string)"}
        if study is not None and not (isinstance(study, str) and dj.is_uid(study)):
            return {"error": "invalid_request", "error_description": "imaging_study must be a StudyInstanceUID"}
        problem = self.launch_context_problem(patient, study)
        if problem:
            return {"error": "invalid_request", "error_description": problem}
        return self.create_launch(client_id, patient, study)

    def launch_context_problem(self, patient: str, study: str | None) -> str | None:
        """Why a launch cannot carry this context: the patient must have records, and the study be theirs
        (a launch's context stays in one patient's compartment, app.core.compartment)."""
        problem = nhs_number_problem(patient)
        if problem or self.find_patient(patient) is None:
            return problem or "the patient has no imaging records"
        return self.patients.study_problem(patient, study) if study is not None else None

    def create_launch(self, client_id: str, patient: str, imaging_study: str | None = None) -> dict[str, Any]:
        context = [{"reference": f"ImagingStudy/{imaging_study}"}] if imaging_study else []
        launch = secrets.token_urlsafe(24)  # opaque: encodes nothing about the patient
        self.store.put(  # kept under its hash, like codes: the store never holds a usable launch id
            "launch",
            secret_key(launch),
            {"client_id": client_id, "patient": patient, "fhirContext": context},
            LAUNCH_TTL_S,
        )
        return {"launch": launch, "expires_in": LAUNCH_TTL_S, "iss": self.fhir_base}

    def smart_configuration(self) -> dict[str, Any]:
        scopes = sorted({s for c in self.clients.values() for s in c.scope.split()})
        return {
            "issuer": self.fhir_base,
            "jwks_uri": f"{self.root}/jwks",
            "authorization_endpoint": f"{self.root}/authorize",
            "token_endpoint": f"{self.root}/token",
            "introspection_endpoint": f"{self.root}/introspect",
            "revocation_endpoint": f"{self.root}/revoke",
            "grant_types_supported": ["authorization_code", "client_credentials", "refresh_token"],
            "response_types_supported": ["code"],
            "code_challenge_methods_supported": ["S256"],
            "scopes_supported": scopes,
            "token_endpoint_auth_methods_supported": [
                "private_key_jwt",
                "client_secret_basic",
                "client_secret_post",
                "none",
            ],
            "token_endpoint_auth_signing_alg_values_supported": ["RS384", "ES384"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "capabilities": CAPABILITIES,
            "authorization_response_iss_parameter_supported": True,  # RFC 9207
        }

    # -- audit -----------------------------------------------------------------------------
    def record(self, record: AuthAuditRecord) -> None:
        """An AuditEvent of the authorization server, committed before the answer leaves."""
        self.audit.write([build_auth_event(record, self.fhir_base)], record.client_id)

    def record_picker(
        self,
        client_id: str,
        user: str,
        address: str | None,
        *,
        query: str | None = None,
        found: tuple[str, ...] = (),
        chosen: str | None = None,
        status: int = 200,
    ) -> None:
        """The patient picker as the FHIR API audits it: a search (PatientQuery, one event per patient
        found) or a choice (PatientRead of the chosen patient; 404 when it has no records)."""
        if chosen is not None:
            record = AuditRecord(
                "read", "Patient", status, client_id, user, address, None, chosen, (chosen,), "patient picker choice"
            )
        else:
            record = AuditRecord(
                "search-type",
                "Patient",
                status,
                client_id,
                user,
                address,
                f"patient-picker?q={query or ''}",
                None,
                found,
            )
        self.audit.write(build_events(record, self.fhir_base), client_id)


def _summary(patient: dict[str, Any]) -> dict[str, str]:
    """The picker's row of a patient, each fact as every page shows it (app.core.display)."""
    return {
        "nhs_number": patient["id"],
        "nhs_display": display.format_nhs_number(patient["id"]),
        "name": display.format_name((patient.get("name") or [{}])[0]) or "Name not recorded",
        "birth_date": display.format_date(patient.get("birthDate")),
        "sex": display.format_gender(patient.get("gender")),
    }


def _introspection(claims: AccessClaims, raw: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {
        "active": True,
        "scope": claims.scope,
        "client_id": claims.client_id,
        "exp": claims.expires_at,
        "iss": claims.issuer,
        "token_type": "Bearer",
    }
    for key in ("sub", "iat", "aud", "patient", "fhirContext", "fhirUser", "need_patient_banner", "smart_style_url"):
        if key in raw:
            out[key] = raw[key]
    return out
