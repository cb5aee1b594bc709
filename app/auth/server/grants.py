"""authlib grants tightened to SMART App Launch 2.2, and the tokens they issue.

- PKCE with S256 for every client, public or not; `plain` refused (authlib allows it by default).
- Codes single-use (taken atomically), 60 s, bound to client, redirect URI, challenge and context.
- Codes, refresh tokens and access tokens of one authorization belong to one grant (`grant_id`, the
  refresh family): a replayed code, a reused refresh token or a revoked refresh token revokes the
  grant, and every access token of it fails on the next request (app.auth.tokens checks it).
- Refresh tokens bound to the client, same or narrower scope (a narrower resource scope included),
  context kept, rotated; `online_access` ones (without `offline_access`) live only as long as the
  login session they were granted in.
- A scope that reduces to nothing is `invalid_scope`, never a token with `scope: ''`.
- Backend services: private_key_jwt with RS384/ES384 only, iss = sub = client, aud = token URL,
  exp at most 5 minutes ahead, `jti` never seen before (shared store), key by `kid`.

No state on classes or in flask.g: authlib creates a grant per request with the server it belongs to
(`grant.server`), and the grants find their store and token issuer there, so two servers in one
process (two apps) share nothing. The refresh family travels as an argument to the issuer.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, cast

from authlib.integrations.flask_oauth2 import AuthorizationServer
from authlib.oauth2.rfc6749 import (
    InvalidClientError,
    InvalidGrantError,
    InvalidRequestError,
    InvalidScopeError,
    grants,
)
from authlib.oauth2.rfc7523 import JWTBearerClientAssertion
from authlib.oauth2.rfc7636 import CodeChallenge
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet

from app.auth.server.clients import Client, covered_by
from app.auth.server.keys import SigningKeys
from app.auth.server.store import AuthStore, secret_key

CODE_TTL_S = 60
LAUNCH_TTL_S = 300  # an EHR launch id: opened within 5 minutes, once
REFRESH_TTL_S = 90 * 86400  # a refresh token, its family's revocation and a used code's grant are kept this long
ASSERTION_ALGORITHMS = ("RS384", "ES384")
MAX_ASSERTION_LIFETIME_S = 300
BACKEND_TOKEN_TTL_S = 300


@dataclass
class Grantee:
    """Who a token is for, and the launch context it carries (authlib's 'user')."""

    username: str | None
    fhir_user: str | None = None
    patient: str | None = None
    fhir_context: list[dict[str, str]] = field(default_factory=list)
    need_patient_banner: bool = True
    nonce: str | None = None
    auth_time: int = 0
    grant_id: str | None = None  # the authorization (refresh family) every token issued from it belongs to
    session: str | None = None  # online_access: the login session (its store key) the refresh token lives with
    name: str | None = None  # the user's name as people read it (the id_token's `name`: "Signed in as ...")

    def get_user_id(self) -> str | None:
        return self.username


_hash = secret_key


def revoke_grant(store: AuthStore, grant_id: str) -> None:
    """Every token of the grant fails from now on: refresh tokens here, access tokens at validation."""
    store.put("family-revoked", grant_id, {}, REFRESH_TTL_S)


def grant_revoked(store: AuthStore, grant_id: str | None) -> bool:
    return grant_id is not None and store.get("family-revoked", grant_id) is not None


class StrictCodeChallenge(CodeChallenge):
    """PKCE required of every client, S256 only (SMART checklist 10)."""

    DEFAULT_CODE_CHALLENGE_METHOD = "S256"
    SUPPORTED_CODE_CHALLENGE_METHOD = ["S256"]

    def validate_code_challenge(self, grant: Any, redirect_uri: str) -> None:
        data = grant.request.payload.data
        if not data.get("code_challenge") or data.get("code_challenge_method") != "S256":
            raise InvalidRequestError("PKCE is required: code_challenge with code_challenge_method=S256")
        super().validate_code_challenge(grant, redirect_uri)

    def validate_code_verifier(self, grant: Any, result: Any) -> None:
        verifier = grant.request.form.get("code_verifier")
        if not verifier or not verifier.strip():
            raise InvalidRequestError("Missing 'code_verifier'")
        if verifier == grant.request.authorization_code.code_challenge:
            raise InvalidGrantError("The code_verifier must not be the code_challenge")
        super().validate_code_verifier(grant, result)

    def get_authorization_code_challenge(self, authorization_code: Any) -> str:
        return str(authorization_code.code_challenge)

    def get_authorization_code_challenge_method(self, authorization_code: Any) -> str:
        return "S256"


@dataclass
class StoredCode:
    """An authorization code's record, as authlib expects to read it back."""

    client_id: str
    redirect_uri: str
    scope: str
    code_challenge: str
    grantee: dict[str, Any]

    def get_redirect_uri(self) -> str:
        return self.redirect_uri

    def get_scope(self) -> str:
        return self.scope


class SmartAuthorizationServer(AuthorizationServer):
    """authlib's Flask authorization server, holding what its grants need: the state store and the
    token issuer (registered as the default token generator)."""

    def __init__(
        self, store: AuthStore, issuer: TokenIssuer, session_alive: Callable[[str], bool] = lambda key: False
    ) -> None:
        super().__init__()
        self.store = store
        self.issuer = issuer
        self.session_alive = session_alive  # online_access refresh tokens: is their login session still on?


class _OfServer:
    """For grants: the store of the server that created this grant (authlib sets `self.server`)."""

    server: Any

    @property
    def store(self) -> AuthStore:
        return cast(SmartAuthorizationServer, self.server).store


class AuthorizationCodeGrant(_OfServer, grants.AuthorizationCodeGrant):
    TOKEN_ENDPOINT_AUTH_METHODS = ["none", "client_secret_basic", "client_secret_post", "private_key_jwt"]

    def save_authorization_code(self, code: str, request: Any) -> None:
        grantee: Grantee = request.user
        scope = request.client.get_allowed_scope(request.scope or "")
        if grantee.patient is None:  # patient scopes without a patient context are not granted (fail closed)
            scope = " ".join(s for s in scope.split() if not s.startswith("patient/"))
        if not scope:
            raise InvalidScopeError("none of the requested scopes can be granted")
        grantee.grant_id = grantee.grant_id or secrets.token_urlsafe(12)
        # Kept after the code is used (or expires): a second use of the code finds its grant and revokes it.
        self.store.put("code-grant", _hash(code), {"grant": grantee.grant_id}, REFRESH_TTL_S)
        self.store.put(
            "code",
            _hash(code),
            {
                "client_id": request.client.client_id,
                "redirect_uri": request.payload.redirect_uri,
                "scope": scope,
                "code_challenge": request.payload.data.get("code_challenge"),
                "grantee": asdict(grantee),
            },
            CODE_TTL_S,
        )

    def query_authorization_code(self, code: str, client: Client) -> StoredCode | None:
        key = _hash(code)
        found = self.store.take("code", key)  # single use, whatever happens next
        if found is None:
            used = self.store.get("code-grant", key)
            if used is not None:  # RFC 6749 4.1.2: a code used twice revokes what was issued with it
                revoke_grant(self.store, used["grant"])
            return None
        if found["client_id"] != client.client_id:
            return None
        return StoredCode(**found)

    def delete_authorization_code(self, authorization_code: StoredCode) -> None:
        """Already removed when it was taken."""

    def authenticate_user(self, authorization_code: StoredCode) -> Grantee:
        return Grantee(**authorization_code.grantee)


@dataclass
class StoredRefresh:
    client_id: str
    scope: str
    family: str
    grantee: dict[str, Any]
    key: str = ""

    def check_client(self, client: Client) -> bool:
        return self.client_id == client.client_id

    def get_scope(self) -> str:
        return self.scope


class RefreshTokenGrant(_OfServer, grants.RefreshTokenGrant):
    TOKEN_ENDPOINT_AUTH_METHODS = ["none", "client_secret_basic", "client_secret_post", "private_key_jwt"]
    INCLUDE_NEW_REFRESH_TOKEN = True

    def authenticate_refresh_token(self, refresh_token: str) -> StoredRefresh | None:
        """Looked up, not yet used up: a request refused for its client or scope leaves it valid."""
        key = _hash(refresh_token)
        found = self.store.get("refresh", key)
        if found is None:
            family = self.store.get("refresh-used", key)
            if family is not None:  # reuse of a rotated token: revoke everything issued from it
                revoke_grant(self.store, family["family"])
            return None
        if grant_revoked(self.store, found["family"]):
            return None
        session = found["grantee"].get("session")
        if session and not cast(SmartAuthorizationServer, self.server).session_alive(session):
            return None  # online_access: the user signed out, or the session timed out
        return StoredRefresh(**found, key=key)

    def _validate_token_scope(self, token: StoredRefresh) -> None:
        """RFC 6749 6: the scope asked for may be narrower than the one granted, never wider. Narrower
        includes a narrower resource scope (`patient/ImagingStudy.rs` of `patient/*.rs`), as at
        authorization (Client.get_allowed_scope)."""
        asked = (self.request.payload.scope or "").split()
        if asked and not covered_by(token.get_scope(), asked):
            raise InvalidScopeError("the scope asked for is wider than the one granted")

    def authenticate_user(self, refresh_token: StoredRefresh) -> Grantee:
        return Grantee(**refresh_token.grantee)

    def issue_token(self, user: Grantee, refresh_token: StoredRefresh) -> dict[str, Any]:
        """authlib's, but the new refresh token joins the family of the one it replaces (reuse of any
        of them revokes all)."""
        issuer = cast(SmartAuthorizationServer, self.server).issuer
        return issuer(
            self.GRANT_TYPE,
            self.request.client,
            user,
            self.request.payload.scope or refresh_token.get_scope(),
            include_refresh_token=self.INCLUDE_NEW_REFRESH_TOKEN,
            refresh_family=refresh_token.family,
        )

    def revoke_old_credential(self, refresh_token: StoredRefresh) -> None:
        """Rotation: the old token is used up atomically; if another request used it first, this is
        reuse, and the family is revoked (the token just issued with it included)."""
        if self.store.take("refresh", refresh_token.key) is None:
            revoke_grant(self.store, refresh_token.family)
            raise InvalidGrantError("the refresh token was already used")
        self.store.put("refresh-used", refresh_token.key, {"family": refresh_token.family}, REFRESH_TTL_S)


class SmartClientAssertion(JWTBearerClientAssertion):
    """private_key_jwt client authentication as SMART Backend Services requires it."""

    CLIENT_AUTH_METHOD = "private_key_jwt"

    def __init__(self, token_url: str, store: AuthStore) -> None:
        super().__init__(validate_jti=True, leeway=30)
        self._token_url = token_url
        self.store = store

    def get_audiences(self) -> list[str]:
        return [self._token_url]

    def __call__(self, query_client: Any, request: Any) -> Any:
        data = request.form
        if data.get("client_assertion") and data.get("client_assertion_type") != self.CLIENT_ASSERTION_TYPE:
            raise InvalidClientError(
                description="client_assertion_type must be urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
            )
        return super().__call__(query_client, request)

    def resolve_client_public_key(self, client: Client) -> KeySet:
        if client.jwks is None:
            raise InvalidClientError(description="the client has no registered keys")
        return client.jwks.key_set(None)

    def process_assertion_claims(self, assertion: str, resolve_key: Any) -> dict[str, Any]:
        headers, _claims = self.extract_assertion(assertion)
        kid = headers.get("kid")
        keys = resolve_key
        if isinstance(keys, KeySet) and kid is not None and kid not in {k.kid for k in keys.keys}:
            raise InvalidClientError(description="the assertion's kid is not among the client's keys")
        try:
            token = jwt.decode(assertion, keys, algorithms=list(ASSERTION_ALGORITHMS))
        except JoseError as exc:
            raise InvalidClientError(description=exc.description or "invalid client assertion") from exc
        exp = token.claims.get("exp")
        if isinstance(exp, (int, float)) and exp > time.time() + MAX_ASSERTION_LIFETIME_S + 30:
            raise InvalidClientError(description="the assertion's exp is more than 5 minutes ahead")
        self.verify_claims(token.claims)
        return token.claims

    def validate_jti(self, claims: dict[str, Any], jti: str) -> bool:
        ttl = max(float(claims.get("exp", 0)) - time.time(), 0.0) + 60
        return self.store.add_once("assertion-jti", f"{claims['iss']}:{jti}", ttl)


class ClientCredentialsGrant(grants.ClientCredentialsGrant):
    TOKEN_ENDPOINT_AUTH_METHODS = ["private_key_jwt"]

    def validate_token_request(self) -> None:
        """Backend services: the scopes asked for, cut to the client's registration; none left is an error."""
        super().validate_token_request()
        if not self.request.client.get_allowed_scope(self.request.payload.scope or ""):
            raise InvalidScopeError("none of the requested scopes is registered for this client")

    def create_token_response(self) -> tuple[int, dict[str, Any], list[tuple[str, str]]]:
        scope = self.request.client.get_allowed_scope(self.request.payload.scope or "")
        token = self.generate_token(scope=scope, include_refresh_token=False)
        self.save_token(token)
        return 200, token, self.TOKEN_RESPONSE_HEADER


class TokenIssuer:
    """Signs access tokens (JWT) and id_tokens; keeps refresh tokens in the store."""

    def __init__(
        self, issuer: str, audience: str, keys: SigningKeys, store: AuthStore, lifetime_s: int, style_url: str
    ) -> None:
        self.issuer = issuer
        self.audience = audience
        self.keys = keys
        self.store = store
        self.lifetime_s = lifetime_s
        self.style_url = style_url

    def _sign(self, claims: dict[str, Any], alg: str) -> str:
        key = self.keys.current
        return jwt.encode({"alg": alg, "kid": key.kid, "typ": "JWT"}, claims, key, algorithms=[alg])

    def __call__(
        self,
        grant_type: str,
        client: Client,
        user: Grantee | None = None,
        scope: str | None = None,
        expires_in: int | None = None,
        include_refresh_token: bool = True,
        refresh_family: str | None = None,
    ) -> dict[str, Any]:
        """authlib's token generator signature; `refresh_family` (a refresh grant's) keeps the new
        refresh token in the family of the one it replaces, else the user's grant's, else a new
        family starts. Access tokens of a user carry it as `grant_id`: revoking the grant revokes them."""
        now = int(time.time())
        scope = scope or ""
        backend = grant_type == "client_credentials"
        lifetime = BACKEND_TOKEN_TTL_S if backend else self.lifetime_s
        claims: dict[str, Any] = {
            "iss": self.issuer,
            "aud": self.audience,
            "iat": now,
            "nbf": now,
            "exp": now + lifetime,
            "jti": secrets.token_urlsafe(16),
            "client_id": client.client_id,
            "scope": scope,
            "sub": (user.username if user and user.username else client.client_id),
        }
        token: dict[str, Any] = {"token_type": "Bearer", "expires_in": lifetime, "scope": scope}
        family = refresh_family or (user.grant_id if user else None) or secrets.token_urlsafe(12)
        if user is not None and not backend:
            claims["grant_id"] = family
            if user.patient:
                claims["patient"] = user.patient
                token["patient"] = user.patient
                token["need_patient_banner"] = user.need_patient_banner
            if user.fhir_context:
                claims["fhirContext"] = user.fhir_context
                token["fhirContext"] = user.fhir_context
            if user.fhir_user and "fhirUser" in scope.split():
                claims["fhirUser"] = user.fhir_user
            token["smart_style_url"] = self.style_url
            # Introspection answers with the launch context the token response had (SMART 2.2).
            claims["smart_style_url"] = self.style_url
            if user.patient:
                claims["need_patient_banner"] = user.need_patient_banner
            if "openid" in scope.split():
                token["id_token"] = self._id_token(client, user, now)
        token["access_token"] = self._sign(claims, "RS384")
        wants_refresh = {"offline_access", "online_access"} & set(scope.split())
        if include_refresh_token and not backend and user is not None and wants_refresh:
            token["refresh_token"] = self._refresh_token(client, user, scope, family)
        return token

    def _id_token(self, client: Client, user: Grantee, now: int) -> str:
        claims: dict[str, Any] = {
            "iss": self.issuer,
            "aud": client.client_id,
            "sub": user.username or "",
            "iat": now,
            "exp": now + self.lifetime_s,
            "auth_time": user.auth_time or now,
        }
        if user.fhir_user:
            claims["fhirUser"] = user.fhir_user
        if user.name:
            claims["name"] = user.name  # OpenID Connect standard claim: what an app shows as the signed-in user
        if user.nonce:
            claims["nonce"] = user.nonce
        return self._sign(claims, "RS256")

    def _refresh_token(self, client: Client, user: Grantee, scope: str, family: str) -> str:
        token = secrets.token_urlsafe(32)
        self.store.put(
            "refresh",
            _hash(token),
            {"client_id": client.client_id, "scope": scope, "family": family, "grantee": asdict(user)},
            REFRESH_TTL_S,
        )
        return token
