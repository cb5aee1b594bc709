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

from app.auth.server.clients import Client, client_from_config, user_from_config
from app.auth.server.grants import (
    AuthorizationCodeGrant,
    ClientCredentialsGrant,
    RefreshTokenGrant,
    SmartAuthorizationServer,
    SmartClientAssertion,
    StrictCodeChallenge,
    TokenIssuer,
    _hash,
)
from app.auth.server.keys import SigningKeys
from app.auth.server.store import open_store
from app.auth.tokens import AccessClaims, InvalidToken, JwtValidator
from app.core import dicom_json as dj
from app.core.identity import nhs_number_problem
from app.core.query import NameQuery
from app.settings import EmbeddedAuthSettings, Settings


class PatientFinder(Protocol):
    """What the sign-in's patient picker needs of the facade: patients by NHS number or by name, nothing more."""

    def patient(self, nhs_number: str) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]: ...

    def patients_by_name(self, name: NameQuery) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]: ...

    def holds_study(self, nhs_number: str, study_uid: str) -> bool: ...


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
LAUNCH_TTL_S = 300


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

    def __init__(self, settings: Settings, patients: PatientFinder) -> None:
        auth = settings.auth
        assert isinstance(auth, EmbeddedAuthSettings), "the embedded server needs auth.mode embedded"
        self.settings = settings
        self.patients = patients
        self.fhir_base = settings.base_url
        self.root = f"{settings.public_root}/auth"
        self.keys = SigningKeys(auth.signing_keys)
        self.store = open_store(auth.store, settings.audit_path.parent)
        self.clients = {c["client_id"]: client_from_config(c) for c in auth.clients}
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
            is_revoked=lambda jti: self.store.get("revoked", jti) is not None,
        )
        self.authorization = SmartAuthorizationServer(self.store, self.issuer)

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
    def _decode_own(self, token: str) -> dict[str, Any] | None:
        """The claims of an access token this server signed (expired ones included), else None."""
        try:
            decoded = jwt.decode(token, self.keys.key_set(), algorithms=["RS384"])
        except (JoseError, ValueError, TypeError):
            return None
        claims = decoded.claims
        return claims if claims.get("iss") == self.fhir_base else None

    def revoke(self, token: str, hint: str | None, client: Client | None) -> None:
        if client is None or not token:
            return
        refresh = self.store.get("refresh", _hash(token))
        if refresh is not None and refresh["client_id"] == client.client_id:
            self.store.take("refresh", _hash(token))
            self.store.put("family-revoked", refresh["family"], {}, 90 * 86400)
            return
        claims = self._decode_own(token)
        if claims and claims.get("client_id") == client.client_id and claims.get("jti"):
            ttl = max(float(claims.get("exp", 0)) - time.time(), 0.0) + 60
            self.store.put("revoked", str(claims["jti"]), {}, ttl)

    def introspect(self, token: str) -> dict[str, Any]:
        if not token:
            return {"active": False}
        refresh = self.store.get("refresh", _hash(token))
        if refresh is not None and self.store.get("family-revoked", refresh["family"]) is None:
            grantee = refresh["grantee"]
            out = {
                "active": True,
                "client_id": refresh["client_id"],
                "scope": refresh["scope"],
                "token_type": "refresh_token",
                "sub": grantee.get("username"),
            }
            if grantee.get("patient"):
                out["patient"] = grantee["patient"]
            return out
        try:
            claims = self.validator.validate(token)
        except InvalidToken:
            return {"active": False}
        return _introspection(claims, self._decode_own(token) or {})

    def bearer_is_active(self, authorization: str | None) -> bool:
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not token:
            return False
        try:
            self.validator.validate(token.strip())
        except InvalidToken:
            return False
        return True

    def issue_launch(self, authorization: str | None, body: dict[str, Any]) -> dict[str, Any]:
        """A launch id for an EPR: the caller is a backend client registered as a launch issuer."""
        scheme, _, token = (authorization or "").partition(" ")
        try:
            claims = self.validator.validate(token.strip()) if scheme.lower() == "bearer" else None
        except InvalidToken:
            claims = None
        caller = self.clients.get(claims.client_id) if claims else None
        if (
            claims is None
            or caller is None
            or not caller.launch_issuer
            or not any(s.startswith("system/") for s in claims.scope.split())
        ):
            return {
                "status": 401,
                "error": "invalid_token",
                "error_description": "a system-level token of a client registered as launch_issuer is required",
            }
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
        if study is not None and not self.patients.holds_study(patient, study):
            return "imaging_study is not a study of that patient"
        return None

    def create_launch(self, client_id: str, patient: str, imaging_study: str | None = None) -> dict[str, Any]:
        context = [{"reference": f"ImagingStudy/{imaging_study}"}] if imaging_study else []
        launch = secrets.token_urlsafe(24)  # opaque: encodes nothing about the patient
        self.store.put(
            "launch", launch, {"client_id": client_id, "patient": patient, "fhirContext": context}, LAUNCH_TTL_S
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
        }


def _summary(patient: dict[str, Any]) -> dict[str, str]:
    return {
        "nhs_number": patient["id"],
        "name": (patient.get("name") or [{}])[0].get("text", ""),
        "birth_date": patient.get("birthDate", ""),
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
    for key in ("sub", "iat", "aud", "patient", "fhirContext", "fhirUser"):
        if key in raw:
            out[key] = raw[key]
    return out
