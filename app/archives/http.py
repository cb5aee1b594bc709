"""HTTP plumbing shared by every upstream HTTP client: QIDO-RS, WADO-RS, readiness probes, PIXm.

One pooled requests Session set-up (with the archive's TLS options), upstream credentials, the
Retry-After header, and the one mapping from a failed request to the short, patient-free reason
an OperationOutcome, a log line or /readyz may show.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from typing import Any

import requests
from requests.adapters import HTTPAdapter

from app.archives.protocol import ArchiveError
from app.settings import config_secret

# Connections kept per host: a search asks an archive from several threads at once (paging, studies
# and series together, concurrent users), and a pool smaller than that would reconnect every time.
POOL_CONNECTIONS = 4
POOL_MAXSIZE = 16


def new_session(tls: Mapping[str, Any] | None = None) -> requests.Session:
    """A Session with a connection pool sized for concurrent searches and the upstream's TLS options
    (`ca_bundle`, `verify`, `client_cert`, `client_key` of the settings schema)."""
    session = requests.Session()
    for scheme in ("http://", "https://"):
        session.mount(scheme, HTTPAdapter(pool_connections=POOL_CONNECTIONS, pool_maxsize=POOL_MAXSIZE))
    tls = tls or {}
    if tls.get("ca_bundle"):
        session.verify = tls["ca_bundle"]
    elif tls.get("verify") is False:
        session.verify = False
    if tls.get("client_cert"):
        session.cert = (tls["client_cert"], tls["client_key"]) if tls.get("client_key") else tls["client_cert"]
    return session


def failure_reason(exc: requests.RequestException, timeout_s: float) -> str:
    """Why a request got no answer, in a few words without a URL, a host or a patient in them."""
    # Most specific first: SSLError and ConnectTimeout are both ConnectionErrors too.
    if isinstance(exc, requests.exceptions.SSLError):
        return "TLS failure"
    if isinstance(exc, requests.exceptions.ConnectTimeout):
        return f"connection timed out after {timeout_s:g} s"
    if isinstance(exc, requests.exceptions.Timeout):
        return f"no answer within {timeout_s:g} s"
    if isinstance(exc, requests.exceptions.ConnectionError):
        return "connection refused or reset"
    return "request failed"


def retry_after_seconds(value: str | None) -> float | None:
    """A Retry-After header given in seconds (None when absent or an HTTP date)."""
    if value and value.strip().isdigit():
        return float(value.strip())
    return None


class UpstreamAuth:
    """Upstream credentials: none, basic, bearer, or OAuth 2.0 client credentials (token cached)."""

    def __init__(self, config: dict[str, Any], session: requests.Session, name: str, timeout_s: float) -> None:
        self.kind = config.get("type", "none")
        self.config = config
        self.session = session
        self.name = name
        self.timeout_s = timeout_s
        self._token: str | None = None
        self._expires = 0.0
        self._lock = threading.Lock()

    def headers(self) -> dict[str, str]:
        if self.kind == "bearer":
            return {"Authorization": f"Bearer {config_secret(self.config, 'token')}"}
        if self.kind == "oauth2":
            return {"Authorization": f"Bearer {self._client_credentials_token()}"}
        return {}

    def basic(self) -> tuple[str, str] | None:
        if self.kind == "basic":
            return (self.config["username"], config_secret(self.config, "password"))
        return None

    def _client_credentials_token(self) -> str:
        with self._lock:
            if self._token and time.monotonic() < self._expires - 30:
                return self._token
            data = {"grant_type": "client_credentials", "scope": self.config.get("scope", "")}
            try:
                response = self.session.post(
                    self.config["token_url"],
                    data=data,
                    timeout=self.timeout_s,
                    auth=(self.config["client_id"], config_secret(self.config, "client_secret")),
                )
                response.raise_for_status()
                body = response.json()
                self._token = str(body["access_token"])
                self._expires = time.monotonic() + float(body.get("expires_in", 300))
            except (requests.RequestException, ValueError, KeyError):
                raise ArchiveError(self.name, "could not obtain an upstream access token") from None
            return self._token
