"""Access token validation for the resource server (SMART checklist items 23 and 25).

Signed JWTs are checked with joserfc (authlib's JOSE library): the signature against the issuer's
keys (a KeySource: a JWKS fetched by URL, cached per its Cache-Control, refreshed once on an unknown
`kid`; or the embedded server's own key file), an algorithm allow-list (never `none`, never HMAC:
a public key used as an HMAC secret is the classic forgery), `iss`, `aud` = this server's base URL,
`exp`, `nbf`, with a small clock skew. Opaque tokens are introspected (RFC 7662) when the configured
issuer says so.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import requests
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet

from app.core.identity import nhs_number_problem

ALLOWED_ALGORITHMS = ("RS256", "RS384", "ES256", "ES384")
CLOCK_SKEW_S = 30
VERIFIED_CACHE_SIZE = 4096
_MAX_AGE = re.compile(r"max-age=(\d+)")


class InvalidToken(Exception):
    """The token cannot be trusted; `reason` goes into WWW-Authenticate's error_description."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class AccessClaims:
    """What a valid token says about its bearer."""

    client_id: str
    subject: str | None
    scope: str
    patient: str | None = None
    fhir_user: str | None = None
    jti: str | None = None
    issuer: str = ""
    expires_at: int = 0
    extra: dict[str, Any] = field(default_factory=dict)
    grant_id: str | None = None  # the embedded server's grant (refresh family) the token was issued from


def claims_from_payload(payload: dict[str, Any]) -> AccessClaims:
    scope = payload.get("scope", payload.get("scp"))
    if isinstance(scope, list):
        scope = " ".join(str(s) for s in scope)
    client_id = payload.get("client_id") or payload.get("azp") or payload.get("sub")
    if not isinstance(client_id, str) or not isinstance(scope, str) or not scope.strip():
        raise InvalidToken("the token names no client or no scope")
    patient = payload.get("patient")
    if patient not in (None, "") and (not isinstance(patient, str) or nhs_number_problem(patient)):
        # The patient context is the compartment boundary: anything but an NHS number fails closed.
        raise InvalidToken("the token's patient context is not an NHS number")
    return AccessClaims(
        client_id=client_id,
        subject=payload.get("sub") if isinstance(payload.get("sub"), str) else None,
        scope=scope,
        patient=patient if isinstance(patient, str) and patient else None,
        fhir_user=payload.get("fhirUser") if isinstance(payload.get("fhirUser"), str) else None,
        jti=payload.get("jti") if isinstance(payload.get("jti"), str) else None,
        issuer=str(payload.get("iss", "")),
        expires_at=int(payload.get("exp", 0)),
        grant_id=payload.get("grant_id") if isinstance(payload.get("grant_id"), str) else None,
    )


class KeySource(Protocol):
    """An issuer's public keys. The same KeySet object is returned for as long as the keys are
    unchanged: a new object means they changed (rotated, retired), and verified tokens are verified again."""

    def key_set(self, kid: str | None) -> KeySet: ...


class JwksSource:
    """An issuer's signing keys: inline (fixed, from the configuration), or from a URL cached per
    Cache-Control max-age."""

    def __init__(
        self,
        url: str | None = None,
        keys: dict[str, Any] | None = None,
        default_ttl_s: float = 300.0,
        min_refresh_s: float = 10.0,
        timeout_s: float = 5.0,
    ) -> None:
        self.url = url
        self._inline = keys
        self.default_ttl_s = default_ttl_s
        self.min_refresh_s = min_refresh_s
        self.timeout_s = timeout_s
        self._keys: KeySet | None = None
        self._expires = 0.0
        self._fetched = 0.0
        self._lock = threading.Lock()
        self.fetches = 0

    def _load(self) -> None:
        if self._inline is not None:
            self._keys, self._expires = KeySet.import_key_set(self._inline), float("inf")  # type: ignore[arg-type]
            return
        assert self.url is not None
        self.fetches += 1
        self._fetched = time.monotonic()
        try:
            response = requests.get(self.url, timeout=self.timeout_s, headers={"Accept": "application/json"})
            response.raise_for_status()
            keys = KeySet.import_key_set(response.json())
        except (requests.RequestException, ValueError, JoseError) as exc:
            raise InvalidToken(f"the issuer's keys could not be fetched ({type(exc).__name__})") from None
        match = _MAX_AGE.search(response.headers.get("Cache-Control", ""))
        ttl = float(match.group(1)) if match else self.default_ttl_s
        if "no-store" in response.headers.get("Cache-Control", "") or "no-cache" in response.headers.get(
            "Cache-Control", ""
        ):
            ttl = 0.0
        self._keys, self._expires = keys, time.monotonic() + ttl

    def key_set(self, kid: str | None) -> KeySet:
        """The keys, refreshed when stale, or once (rate-limited) when `kid` is not among them."""
        with self._lock:
            if self._keys is None or time.monotonic() >= self._expires:
                self._load()
            assert self._keys is not None
            known = {k.kid for k in self._keys.keys}
            if (
                kid is not None
                and kid not in known
                and self._inline is None
                and time.monotonic() - self._fetched >= self.min_refresh_s
            ):
                self._load()
            return self._keys


@dataclass(frozen=True)
class _Verified:
    """A token whose signature was checked, with the key set that checked it."""

    claims: AccessClaims
    kid: str | None
    keys: KeySet


class JwtValidator:
    """Validates signed JWT access tokens of one issuer for one audience."""

    def __init__(
        self,
        issuer: str,
        audience: str,
        jwks: KeySource,
        is_revoked: Callable[[AccessClaims], bool] | None = None,
    ) -> None:
        self.issuer = issuer
        self.audience = audience
        self.jwks = jwks
        self.is_revoked = is_revoked
        self._verified: dict[str, _Verified] = {}
        self._lock = threading.Lock()

    def validate(self, token: str) -> AccessClaims:
        """The token's claims. A verified token is remembered (bounded, until it expires) so that its
        signature is checked once while the issuer's keys stay the same; expiry and revocation (of
        the token, or of the grant it was issued from: `is_revoked` is given the claims) are checked
        on every call."""
        verified = self._verified.get(token)
        if verified is not None and self.jwks.key_set(verified.kid) is not verified.keys:
            # The keys changed since (rotation, retirement): a token of a retired key must fail now.
            self._verified.pop(token, None)
            verified = None
        if verified is None:
            verified = self._verify(token)
            with self._lock:
                if len(self._verified) >= VERIFIED_CACHE_SIZE:
                    self._verified.pop(next(iter(self._verified)))
                self._verified[token] = verified
        claims = verified.claims
        if claims.expires_at and claims.expires_at < time.time() - CLOCK_SKEW_S:
            self._verified.pop(token, None)
            raise InvalidToken("the token has expired")
        if self.is_revoked is not None and self.is_revoked(claims):
            raise InvalidToken("the token has been revoked")
        return claims

    def _verify(self, token: str) -> _Verified:
        used: list[tuple[str | None, KeySet]] = []

        def resolve_key(guest: Any) -> KeySet:
            kid = guest.headers().get("kid")
            keys = self.jwks.key_set(kid)
            if kid is not None and kid not in {k.kid for k in keys.keys}:
                raise InvalidToken("the token's signing key (kid) is not one of the issuer's keys")
            used.append((kid, keys))
            return keys

        try:
            decoded = jwt.decode(token, resolve_key, algorithms=list(ALLOWED_ALGORITHMS))
        except InvalidToken:
            raise
        except JoseError as exc:
            raise InvalidToken(_describe(exc)) from None
        except (ValueError, TypeError):
            raise InvalidToken("the token is malformed") from None
        registry = jwt.JWTClaimsRegistry(
            leeway=CLOCK_SKEW_S,
            iss={"essential": True, "value": self.issuer},
            aud={"essential": True, "value": self.audience},
            exp={"essential": True},
        )
        try:
            registry.validate(decoded.claims)
        except JoseError as exc:
            raise InvalidToken(_describe(exc)) from None
        kid, keys = used[-1]
        return _Verified(claims_from_payload(decoded.claims), kid, keys)


class IntrospectionValidator:
    """RFC 7662: asks the issuer whether an (opaque) token is active."""

    def __init__(self, url: str, client_id: str, client_secret: str, audience: str, timeout_s: float = 5.0) -> None:
        self.url = url
        self.auth = (client_id, client_secret)
        self.audience = audience
        self.timeout_s = timeout_s
        self.session = requests.Session()

    def validate(self, token: str) -> AccessClaims:
        try:
            response = self.session.post(self.url, data={"token": token}, auth=self.auth, timeout=self.timeout_s)
            response.raise_for_status()
            body = response.json()
        except (requests.RequestException, ValueError):
            raise InvalidToken("the token could not be introspected") from None
        if not isinstance(body, dict) or body.get("active") is not True:
            raise InvalidToken("the token is not active")
        aud = body.get("aud")  # S21: an answer that names no audience is not taken as ours (fail closed)
        if self.audience not in (aud if isinstance(aud, list) else [aud]):
            raise InvalidToken("the token is not for this server (aud)")
        exp = body.get("exp")
        if isinstance(exp, (int, float)) and exp < time.time() - CLOCK_SKEW_S:
            raise InvalidToken("the token has expired")
        return claims_from_payload(body)


def _describe(exc: JoseError) -> str:
    name = type(exc).__name__
    return {
        "BadSignatureError": "the token's signature is not valid",
        "ExpiredTokenError": "the token has expired",
        "UnsupportedAlgorithmError": "the token's algorithm is not allowed",
        "MissingAlgorithmError": "the token's algorithm is not allowed",
        "MissingClaimError": f"the token lacks a required claim ({exc.description or exc})",
        "InvalidClaimError": f"the token's claim is not valid ({exc.description or exc})",
        "DecodeError": "the token is malformed",
        "InvalidPayloadError": "the token is malformed",
    }.get(name, f"the token is not valid ({name})")
