"""Helpers for driving the embedded SMART authorization server (app/auth/server) like a browser and a
backend client would, through the Flask test client.

* `Browser`: one cookie jar (one login session). It sends authorization requests by GET or POST,
  reads the login, patient picker and consent pages with html.parser, and submits their forms to
  the form's `action` (the path, without the query string) with the hidden fields, the csrf value
  and the button pressed, as a browser does.
* `pkce()`: an S256 verifier/challenge pair.
* `client_assertion(...)`: a private_key_jwt assertion signed with joserfc; `forged_assertion(...)`
  builds `alg: none` and HS256-with-the-public-key assertions by hand.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
import uuid
from dataclasses import dataclass, field
from html.parser import HTMLParser
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

from joserfc import jwt
from smart_support import b64url

FHIR_BASE = "http://127.0.0.1:8080/fhir"
AUTH_ROOT = "http://127.0.0.1:8080/auth"
TOKEN_URL = f"{AUTH_ROOT}/token"
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
PASSWORD = "imaging-demo"


# ----------------------------------------------------------------------------- PKCE and JWTs


def pkce() -> tuple[str, str]:
    """(code_verifier, S256 code_challenge)."""
    verifier = secrets.token_urlsafe(48)
    return verifier, b64url(hashlib.sha256(verifier.encode()).digest())


def jwt_parts(token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Header and payload of a compact JWS, unverified."""
    header, payload, _ = token.split(".")
    pad = lambda s: s + "=" * (-len(s) % 4)  # noqa: E731
    return json.loads(base64.urlsafe_b64decode(pad(header))), json.loads(base64.urlsafe_b64decode(pad(payload)))


def assertion_claims(client_id: str, **override: Any) -> dict[str, Any]:
    """iss = sub = client, aud = the token URL, exp in 4 minutes, a fresh jti; None removes a claim."""
    now = int(time.time())
    claims = {
        "iss": client_id,
        "sub": client_id,
        "aud": TOKEN_URL,
        "iat": now,
        "exp": now + 240,
        "jti": str(uuid.uuid4()),
    }
    claims.update(override)
    return {k: v for k, v in claims.items() if v is not None}


def client_assertion(key: Any, client_id: str, *, alg: str = "RS384", kid: str | None = None, **override: Any) -> str:
    header = {"alg": alg, "kid": kid if kid is not None else key.kid, "typ": "JWT"}
    return jwt.encode(header, assertion_claims(client_id, **override), key, algorithms=[alg])


def unsigned_assertion(header: dict[str, Any], claims: dict[str, Any]) -> str:
    return f"{b64url(header)}.{b64url(claims)}."


def hs256_assertion(secret: bytes, header: dict[str, Any], claims: dict[str, Any]) -> str:
    """HS256 by hand: joserfc refuses to use an RSA public key as an HMAC secret."""
    signing_input = f"{b64url(header)}.{b64url(claims)}"
    mac = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64url(mac)}"


# ----------------------------------------------------------------------------- HTML forms


@dataclass
class Form:
    action: str
    method: str
    fields: dict[str, str] = field(default_factory=dict)  # hidden and text inputs (name -> value)
    buttons: list[dict[str, str]] = field(default_factory=list)  # submit buttons (id, name, value)

    def button(self, **match: str) -> dict[str, str]:
        found = [b for b in self.buttons if all(b.get(k) == v for k, v in match.items())]
        assert len(found) == 1, f"expected one button {match} in {self.buttons}"
        return found[0]


class _FormParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.forms: list[Form] = []
        self._current: Form | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "form":
            self._current = Form(a.get("action", ""), a.get("method", "get").lower())
            self.forms.append(self._current)
        elif self._current is not None and tag == "input" and a.get("name"):
            self._current.fields[a["name"]] = a.get("value", "")
        elif self._current is not None and tag == "button":
            self._current.buttons.append(
                {"id": a.get("id", ""), "name": a.get("name", ""), "value": a.get("value", "")}
            )

    def handle_endtag(self, tag: str) -> None:
        if tag == "form":
            self._current = None


def forms_of(response: Any) -> list[Form]:
    parser = _FormParser()
    parser.feed(response.get_data(as_text=True))
    return parser.forms


def page_kind(response: Any) -> str:
    """login | picker | consent | error | redirect | other."""
    if response.status_code in (302, 303):
        return "redirect"
    forms = forms_of(response)
    steps = {f.fields.get("step") for f in forms}
    if "login" in steps:
        return "login"
    if "consent" in steps:
        return "consent"
    if any("q" in f.fields for f in forms):
        return "picker"
    if response.status_code == 400 and "This request cannot continue" in response.get_data(as_text=True):
        return "error"
    return "other"


def redirect_params(response: Any) -> tuple[str, dict[str, str]]:
    """(the Location without its query, its query parameters); AssertionError if not a redirect."""
    assert response.status_code in (302, 303), (response.status_code, response.get_data(as_text=True)[:500])
    location = response.headers["Location"]
    parts = urlsplit(location)
    query = {k: v[0] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
    return f"{parts.scheme}://{parts.netloc}{parts.path}", query


# ----------------------------------------------------------------------------- the browser


class Browser:
    """A user agent with its own cookie jar, driving /auth/authorize."""

    def __init__(self, app: Any) -> None:
        self.http = app.test_client()

    def authorize(self, params: dict[str, str], method: str = "GET") -> Any:
        if method == "GET":
            return self.http.get(f"/auth/authorize?{urlencode(params)}")
        return self.http.post("/auth/authorize", data=params)

    def submit(self, response: Any, form: Form, extra: dict[str, str] | None = None) -> Any:
        assert form.method == "post", form
        assert form.action and "?" not in form.action, f"forms post to the path only: {form.action!r}"
        return self.http.post(form.action, data={**form.fields, **(extra or {})})

    def login(self, response: Any, username: str = "dr.khan", password: str = PASSWORD) -> Any:
        """Fill in the login page; follow the 303 back to the authorize endpoint."""
        (form,) = [f for f in forms_of(response) if f.fields.get("step") == "login"]
        answer = self.submit(response, form, {"username": username, "password": password})
        if answer.status_code == 303:
            location = answer.headers["Location"]
            parts = urlsplit(location)
            assert parts.path == "/auth/authorize", location
            return self.http.get(f"{parts.path}?{parts.query}")
        return answer

    def pick(self, response: Any, nhs_number: str) -> Any:
        """Search the picker by NHS number, then choose that patient."""
        (search,) = [f for f in forms_of(response) if "q" in f.fields]
        found = self.submit(response, search, {"q": nhs_number})
        choices = [f for f in forms_of(found) if f.fields.get("patient") == nhs_number]
        assert len(choices) == 1, found.get_data(as_text=True)[:2000]
        return self.submit(found, choices[0])

    def consent(self, response: Any, decision: str = "allow") -> Any:
        (form,) = [f for f in forms_of(response) if f.fields.get("step") == "consent"]
        button = form.button(value=decision)
        return self.submit(response, form, {button["name"]: button["value"]})

    def run(
        self,
        params: dict[str, str],
        *,
        method: str = "GET",
        username: str = "dr.khan",
        patient: str | None = None,
        decision: str = "allow",
    ) -> Any:
        """The whole user journey: login (if needed), picker (if shown), consent. The final response."""
        response = self.authorize(params, method)
        if page_kind(response) == "login":
            response = self.login(response, username)
        if page_kind(response) == "picker":
            assert patient is not None, "the picker was shown but no patient was given"
            response = self.pick(response, patient)
        if page_kind(response) == "consent":
            response = self.consent(response, decision)
        return response
