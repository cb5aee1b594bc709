"""Resource protection: every FHIR call but discovery and /metadata needs a valid SMART token.

    Unauthorized   401  missing, malformed, expired, revoked or foreign token (WWW-Authenticate: Bearer)
    Forbidden      403  a valid token whose scopes do not allow the interaction (insufficient_scope;
                        app.core.errors, the one 403 of scopes and compartment alike)

Scopes are decided before any archive is asked (app.core.scopes.decide); the patient compartment the
decision carries is applied on every path by app.core.compartment.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Protocol

import orjson
from joserfc.util import urlsafe_b64decode

from app.auth.tokens import AccessClaims, InvalidToken
from app.core.compartment import COMPARTMENT_TYPES, FILTERABLE, SYSTEM_ONLY_TYPES
from app.core.errors import FhirError, Forbidden
from app.core.scopes import Decision, Scopes, decide, parse_scopes

log = logging.getLogger(__name__)


class Unauthorized(FhirError):
    """RFC 6750 3.1: no usable token. 401 with a Bearer challenge."""

    status_code = 401
    issue_code = "login"

    def __init__(self, realm: str, reason: str | None) -> None:
        challenge = f'Bearer realm="{realm}"'
        if reason is not None:
            challenge += f', error="invalid_token", error_description="{reason}"'
        super().__init__(
            f"authentication required: {reason}"
            if reason
            else "authentication required: send a SMART access token as 'Authorization: Bearer <token>'",
            headers={"WWW-Authenticate": challenge},
        )


class TokenValidator(Protocol):
    def validate(self, token: str) -> AccessClaims: ...


@dataclass(frozen=True)
class Access:
    """The caller, as its token describes it."""

    claims: AccessClaims
    scopes: Scopes
    realm: str
    insecure: bool = False

    @property
    def user(self) -> str | None:
        return self.claims.fhir_user or self.claims.subject

    def require(self, resource_type: str, interaction: str) -> Decision:
        """The decision for one interaction; Forbidden when no scope allows it."""
        if self.insecure:
            return Decision(True)
        decision = decide(self.scopes, resource_type, interaction, self.claims.patient, COMPARTMENT_TYPES)
        if not decision.allowed:
            raise Forbidden(self.realm, decision.reason, f"system/{resource_type}.{interaction}")
        if resource_type in SYSTEM_ONLY_TYPES and not any(
            g.context == "system" for g in self.scopes.matching(resource_type, interaction)
        ):
            raise Forbidden(self.realm, f"{resource_type} needs a system/ scope", f"system/{resource_type}.rs")
        return decision


def _unverified_issuer(token: str) -> str | None:
    """The `iss` claim before verification, only to choose which issuer's keys verify it."""
    parts = token.split(".")
    if len(parts) != 3:
        return None
    try:
        payload: Any = orjson.loads(urlsafe_b64decode(parts[1].encode()))
    except (ValueError, orjson.JSONDecodeError):
        return None
    return payload.get("iss") if isinstance(payload, dict) and isinstance(payload.get("iss"), str) else None


class Protector:
    """Authenticates the bearer of a request against the configured issuers."""

    def __init__(
        self,
        realm: str,
        validators: dict[str, TokenValidator],
        opaque: TokenValidator | None = None,
        insecure: bool = False,
    ) -> None:
        self.realm = realm
        self.validators = validators
        self.opaque = opaque
        self.insecure = insecure
        if insecure:
            log.warning(
                "AUTHORIZATION IS OFF (auth.mode: none): every caller can read every patient's data. "
                "Never run this way with real data."
            )

    def authenticate(self, authorization: str | None) -> Access:
        if self.insecure:
            return Access(
                AccessClaims("insecure-no-auth", None, "system/*.rs"),
                parse_scopes("system/*.rs"),
                self.realm,
                insecure=True,
            )
        if not authorization:
            raise Unauthorized(self.realm, None)
        scheme, _, token = authorization.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token or " " in token:
            raise Unauthorized(self.realm, "the Authorization header is not 'Bearer <token>'")
        issuer = _unverified_issuer(token)
        validator = (self.validators.get(issuer) if issuer else None) or self.opaque
        if validator is None:
            raise Unauthorized(self.realm, "the token was not issued by a trusted issuer")
        try:
            claims = validator.validate(token)
        except InvalidToken as exc:
            raise Unauthorized(self.realm, exc.reason) from None
        return Access(claims, parse_scopes(claims.scope, FILTERABLE), self.realm)
