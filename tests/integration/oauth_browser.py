"""Postman's OAuth 2.0 helper, done with requests: authorization code + PKCE against a running facade.

`postman_oauth2(auth)` reads an `oauth2` auth block of a Postman collection (v2.1) and `authorization_code_token`
does what the Postman app does with it when one clicks *Get New Access Token*: it opens the authorization URL
with the block's client, redirect URI, scope, state, an S256 challenge and the extra authorization request
parameters (`aud`), lets a user sign in, pick a patient and allow (here: the embedded server's HTML forms, filled
in like a browser would), catches the redirect to the callback URL, and exchanges the code with the verifier,
sending the client id in the body. So the settings shipped in postman/ are checked against the real server.
"""

from __future__ import annotations

import base64
import hashlib
import re
import secrets
from dataclasses import dataclass, field
from html.parser import HTMLParser
from typing import Any
from urllib.parse import parse_qs, urljoin, urlsplit

import requests

_VARIABLE = re.compile(r"\{\{([^{}]+)\}\}")


def resolve(text: str, variables: dict[str, str]) -> str:
    """Postman's `{{name}}` substitution; an unknown name is an error here, not an empty string."""
    return _VARIABLE.sub(lambda m: variables[m.group(1)], text)


def postman_oauth2(auth: dict[str, Any]) -> dict[str, Any]:
    """An `auth` block of type oauth2 as a dict (key -> value)."""
    assert auth["type"] == "oauth2", auth
    return {entry["key"]: entry["value"] for entry in auth["oauth2"]}


@dataclass
class Form:
    action: str
    fields: dict[str, str] = field(default_factory=dict)
    buttons: list[dict[str, str]] = field(default_factory=list)


class _Forms(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.forms: list[Form] = []
        self._open: Form | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {k: v or "" for k, v in attrs}
        if tag == "form":
            self._open = Form(values.get("action", ""))
            self.forms.append(self._open)
        elif self._open is not None and tag == "input" and values.get("name"):
            self._open.fields[values["name"]] = values.get("value", "")
        elif self._open is not None and tag == "button":
            self._open.buttons.append(values)

    def handle_endtag(self, tag: str) -> None:
        if tag == "form":
            self._open = None


def _forms(page: requests.Response) -> list[Form]:
    parser = _Forms()
    parser.feed(page.text)
    return parser.forms


def _one(forms: list[Form], what: str, **fields: str) -> Form:
    found = [f for f in forms if all(f.fields.get(k) == v for k, v in fields.items())]
    assert len(found) == 1, f"expected one {what} form, found {len(found)}"
    return found[0]


class _Window:
    """The sign-in window: one cookie jar, no automatic redirects (the callback must be caught)."""

    def __init__(self) -> None:
        self.http = requests.Session()

    def submit(self, page: requests.Response, form: Form, extra: dict[str, str]) -> requests.Response:
        answer = self.http.post(
            urljoin(page.url, form.action), data={**form.fields, **extra}, allow_redirects=False, timeout=60
        )
        if answer.status_code == 303:  # after sign-in: back to the authorize endpoint
            answer = self.http.get(urljoin(page.url, answer.headers["Location"]), allow_redirects=False, timeout=60)
        return answer


def authorization_code_token(
    settings: dict[str, Any], variables: dict[str, str], username: str, password: str, patient: str | None = None
) -> dict[str, Any]:
    """The token response Postman would get with these OAuth 2.0 settings (code + PKCE, client id in the body)."""
    assert settings["grant_type"] == "authorization_code_with_pkce" and settings["challengeAlgorithm"] == "S256"
    assert settings["client_authentication"] == "body" and not settings.get("useBrowser")
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    redirect_uri = resolve(settings["redirect_uri"], variables)
    state = resolve(settings["state"], variables)
    params = {
        "response_type": "code",
        "client_id": resolve(settings["clientId"], variables),
        "state": state,
        "scope": resolve(settings["scope"], variables),
        "redirect_uri": redirect_uri,
        "code_challenge": challenge,
        "code_challenge_method": "S256",
    }
    params.update(
        {
            p["key"]: resolve(p["value"], variables)
            for p in settings.get("authRequestParams", ())
            if p.get("enabled", True) and p.get("send_as") == "request_url"
        }
    )
    window = _Window()
    page = window.http.get(resolve(settings["authUrl"], variables), params=params, allow_redirects=False, timeout=60)
    assert page.status_code == 200, (page.status_code, page.text[:1000])
    page = window.submit(
        page, _one(_forms(page), "sign-in", step="login"), {"username": username, "password": password}
    )
    if any("q" in f.fields for f in _forms(page)):
        assert patient is not None, "the patient picker was shown but no patient was given"
        found = window.submit(page, _one(_forms(page), "picker search", q=""), {"q": patient})
        page = window.submit(found, _one(_forms(found), "patient choice", patient=patient), {})
    consent = _one(_forms(page), "consent", step="consent")
    callback = window.submit(page, consent, {"decision": "allow"})
    assert callback.status_code == 302, (callback.status_code, callback.text[:1000])
    location = urlsplit(callback.headers["Location"])
    query = {k: v[0] for k, v in parse_qs(location.query).items()}
    assert f"{location.scheme}://{location.netloc}{location.path}" == redirect_uri, callback.headers["Location"]
    assert query.get("state") == state and "code" in query, query
    answer = requests.post(
        resolve(settings["accessTokenUrl"], variables),
        timeout=60,
        data={
            "grant_type": "authorization_code",
            "code": query["code"],
            "redirect_uri": redirect_uri,
            "code_verifier": verifier,
            "client_id": params["client_id"],
            "client_secret": resolve(settings.get("clientSecret", ""), variables),
        },
    )
    assert answer.status_code == 200, answer.text
    return dict(answer.json())
