"""Registered clients and demo users of the embedded authorization server (from configuration).

Client implements authlib's ClientMixin. A client authenticates in exactly one way: `none`
(public, PKCE only), `client_secret_basic`/`client_secret_post` (secret stored hashed), or
`private_key_jwt` (its JWKS inline or by URL).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from app.auth.tokens import JwksSource
from app.core.compartment import FILTERABLE
from app.core.scopes import Grant, parse_scope
from app.settings import config_secret

_SCRYPT = {"n": 2**14, "r": 8, "p": 1}


def hash_secret(secret: str) -> str:
    """`scrypt$<salt>$<hash>`: what the configuration stores for passwords and client secrets."""
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(secret.encode(), salt=salt, dklen=32, **_SCRYPT)
    return f"scrypt${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"


def check_secret(secret: str, stored: str) -> bool:
    try:
        scheme, salt, digest = stored.split("$")
    except ValueError:
        return False
    if scheme != "scrypt":
        return False
    found = hashlib.scrypt(secret.encode(), salt=base64.b64decode(salt), dklen=32, **_SCRYPT)
    return hmac.compare_digest(found, base64.b64decode(digest))


# A well-formed hash that no password matches: an unknown user name costs the same scrypt as a known
# one, so the answer's timing does not tell which user names exist.
_NO_USER_HASH = f"scrypt${base64.b64encode(bytes(16)).decode()}${base64.b64encode(bytes(32)).decode()}"


def check_password(user: User | None, password: str) -> bool:
    """The password is the user's; for an unknown user (None) the hash is computed all the same."""
    matches = check_secret(password, user.password_hash if user is not None else _NO_USER_HASH)
    return matches and user is not None


def _covers(registered: Grant, asked: Grant) -> bool:
    return (
        registered.context == asked.context
        and registered.resource_type in ("*", asked.resource_type)
        and asked.interactions <= registered.interactions
        and (not registered.filters or registered.filters == asked.filters)
    )


def narrowed(held: str, asked: list[str]) -> list[str]:
    """The scopes of `asked` that `held` covers: named in it, or a narrower resource scope (one type
    of `*`, `read` or `rs` of `*.rs`, v1 or v2) of one of its resource scopes."""
    words = held.split()
    grants = [g for g in (parse_scope(s, FILTERABLE) for s in words) if g is not None]
    out = []
    for wanted in dict.fromkeys(asked):
        if wanted in words:
            out.append(wanted)
            continue
        parsed = parse_scope(wanted, FILTERABLE)
        if parsed is not None and any(_covers(g, parsed) for g in grants):
            out.append(wanted)
    return out


def covered_by(held: str, asked: list[str]) -> bool:
    """Every scope of `asked` is within `held` (a refresh may narrow the scope, never widen it)."""
    return len(narrowed(held, asked)) == len(dict.fromkeys(asked))


@dataclass(frozen=True)
class User:
    username: str
    password_hash: str
    name: str
    fhir_user: str | None = None


@dataclass
class Client:
    client_id: str
    grant_types: tuple[str, ...]
    scope: str
    redirect_uris: tuple[str, ...] = ()
    public: bool = False
    secret_hash: str | None = None
    jwks: JwksSource | None = None
    launch_issuer: bool = False
    name: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def auth_method(self) -> str:
        if self.public:
            return "none"
        if self.jwks is not None:
            return "private_key_jwt"
        return "client_secret_basic"

    # -- authlib ClientMixin ---------------------------------------------------------------
    def get_client_id(self) -> str:
        return self.client_id

    def get_default_redirect_uri(self) -> str | None:
        return self.redirect_uris[0] if len(self.redirect_uris) == 1 else None

    def get_allowed_scope(self, scope: str) -> str:
        """Requested scopes cut to the registration (SMART checklist 22): never more, but a narrower
        resource scope (one type of `*`, `read` or `rs` of `*.rs`, v1 or v2) is granted as asked."""
        return " ".join(narrowed(self.scope, (scope or "").split()))

    def check_redirect_uri(self, redirect_uri: str) -> bool:
        return redirect_uri in self.redirect_uris  # exact match, no prefixes or patterns

    def check_client_secret(self, client_secret: str) -> bool:
        return self.secret_hash is not None and check_secret(client_secret, self.secret_hash)

    def check_endpoint_auth_method(self, method: str, endpoint: str) -> bool:
        if self.auth_method == "client_secret_basic":
            return method in ("client_secret_basic", "client_secret_post")
        return method == self.auth_method

    def check_response_type(self, response_type: str) -> bool:
        return response_type == "code" and "authorization_code" in self.grant_types

    def check_grant_type(self, grant_type: str) -> bool:
        return grant_type in self.grant_types


def client_from_config(doc: Mapping[str, Any], origin: str) -> Client:
    """A registered client; a redirect URI written as a path (``/apps/x/``) is on `origin`, the facade's own
    scheme and authority (Settings.public_root), so it follows the address the facade is served at."""
    value = config_secret(doc, "client_secret") if doc.get("client_secret_env") else ""
    secret = hash_secret(value) if value else None
    jwks = None
    if "jwks" in doc or "jwks_uri" in doc:
        jwks = JwksSource(url=doc.get("jwks_uri"), keys=doc.get("jwks"))
    return Client(
        client_id=doc["client_id"],
        grant_types=tuple(doc["grant_types"]),
        scope=doc["scope"],
        redirect_uris=tuple(origin + uri if uri.startswith("/") else uri for uri in doc.get("redirect_uris", ())),
        public=bool(doc.get("public", False)),
        secret_hash=doc.get("client_secret_hash", secret),
        jwks=jwks,
        launch_issuer=bool(doc.get("launch_issuer", False)),
        name=doc.get("name", doc["client_id"]),
    )


def user_from_config(doc: Mapping[str, Any]) -> User:
    return User(doc["username"], doc["password_hash"], doc.get("name", doc["username"]), doc.get("fhir_user"))
