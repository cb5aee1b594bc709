"""HTTP plumbing shared by every upstream HTTP client: QIDO-RS, WADO-RS, readiness probes, PIXm.

One pooled requests Session set-up (with the archive's TLS options), upstream credentials, the
Retry-After header, and the one mapping from a failed request to the short, patient-free reason
an OperationOutcome, a log line or /readyz may show.
"""

from __future__ import annotations

import base64
import os
import ssl
import threading
import time
from collections.abc import Mapping
from typing import Any

import requests
import urllib3
from requests.adapters import HTTPAdapter
from requests.utils import DEFAULT_CA_BUNDLE_PATH, default_user_agent, get_netrc_auth
from urllib3.util.ssl_ import create_urllib3_context

from app.archives.exchange import MAX_REDIRECTS, Kind, Origin, Reply, Request, Unanswered
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


class UpstreamPool:
    """urllib3's connection pool used directly, for the hot QIDO-RS path: what a requests Session decides
    on every request (environment proxies and CA bundle, .netrc credentials, the TLS options, redirects
    followed) is decided once, here, for the archive's base URL. `session` is the archive's requests
    Session, whose settings (verify, cert) it takes."""

    def __init__(self, url: str, session: requests.Session) -> None:
        env = session.merge_environment_settings(url, {}, None, session.verify, session.cert)
        tls: dict[str, Any] = {}
        verify = env["verify"]
        if verify is False:
            tls["cert_reqs"] = "CERT_NONE"
        else:
            tls["cert_reqs"] = "CERT_REQUIRED"
            bundle = verify if isinstance(verify, str) else DEFAULT_CA_BUNDLE_PATH
            tls["ca_cert_dir" if os.path.isdir(bundle) else "ca_certs"] = bundle
        cert = env["cert"]
        if cert:
            tls["cert_file"], tls["key_file"] = (cert[0], cert[1]) if isinstance(cert, tuple) else (cert, None)
        options: dict[str, Any] = {"num_pools": POOL_CONNECTIONS, "maxsize": POOL_MAXSIZE, "block": False, **tls}
        scheme = url.split(":", 1)[0].lower()
        proxy = (env["proxies"] or {}).get(scheme) or (env["proxies"] or {}).get("all")
        self.manager: urllib3.PoolManager = (
            urllib3.ProxyManager(proxy, **options) if proxy else urllib3.PoolManager(**options)
        )
        netrc = get_netrc_auth(url) if session.trust_env else None
        self.netrc_header = {"Authorization": _basic(*netrc)} if netrc else {}
        # What requests sends by default; no retries (as requests' adapter), redirects followed as requests does.
        self.base_headers = {"User-Agent": default_user_agent(), "Accept-Encoding": "gzip, deflate"}
        self.retries = urllib3.Retry(
            total=None, connect=0, read=0, status=0, other=0, redirect=MAX_REDIRECTS, raise_on_redirect=False
        )
        # The same archive without a pool thread (app.archives.exchange.Multiplexer): not through a proxy.
        self.multiplexable = proxy is None
        self.origin = Origin(
            self.base_headers, _tls_context(tls) if scheme == "https" else None, credentials=self.netrc_header
        )

    def exchange(self, request: Request) -> Reply:
        """One Request of a conversation (app.archives.exchange.run), or Unanswered saying why none came."""
        try:
            status, headers, body = self.get(request.url, request.timeout_s, request.headers, request.basic)
        except BrokenBody:
            raise Unanswered("failed") from None
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise Unanswered(_unanswered_kind(exc)) from None
        return Reply(status, headers, body)

    def get(
        self, url: str, timeout_s: float, headers: Mapping[str, str], basic: tuple[str, str] | None
    ) -> tuple[int, Mapping[str, str], bytes]:
        """Status, headers and the body read in full (decoded); urllib3's exceptions (unwrapped from
        MaxRetryError) when there is no answer, BrokenBody when the body breaks off (as requests:
        a ConnectionError before the answer, another failure during the body)."""
        sent = {**self.base_headers, **headers}
        if basic is not None:
            sent["Authorization"] = _basic(*basic)
        elif self.netrc_header and "Authorization" not in sent:
            sent.update(self.netrc_header)
        try:
            response = self.manager.request(
                "GET",
                url,
                headers=sent,
                timeout=urllib3.Timeout(connect=timeout_s, read=timeout_s),
                retries=self.retries,
                preload_content=False,
            )
        except urllib3.exceptions.MaxRetryError as exc:
            raise (exc.reason or exc) from None
        try:
            return response.status, response.headers, response.read()
        except urllib3.exceptions.TimeoutError:
            raise
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise BrokenBody(str(exc)) from None
        finally:
            response.release_conn()

    def close(self) -> None:
        self.manager.clear()
        self.origin.close()


def _tls_context(tls: Mapping[str, Any]) -> ssl.SSLContext:
    """The SSL context urllib3 would build from the same options, for the multiplexer's connections."""
    verify = tls.get("cert_reqs") != "CERT_NONE"
    context = create_urllib3_context(cert_reqs=ssl.CERT_REQUIRED if verify else ssl.CERT_NONE)
    if verify:
        context.load_verify_locations(cafile=tls.get("ca_certs"), capath=tls.get("ca_cert_dir"))
    else:
        context.check_hostname = False
    if tls.get("cert_file"):
        context.load_cert_chain(tls["cert_file"], tls.get("key_file"))
    return context


def _unanswered_kind(exc: Exception) -> Kind:
    errors = urllib3.exceptions
    if isinstance(exc, errors.SSLError):
        return "tls"
    if isinstance(exc, errors.NewConnectionError):  # a ConnectTimeoutError subclass in urllib3 2
        return "refused"
    if isinstance(exc, errors.ConnectTimeoutError):
        return "connect_timeout"
    if isinstance(exc, errors.TimeoutError):
        return "timeout"
    if isinstance(exc, (errors.ProtocolError, ConnectionError)):
        return "refused"
    return "failed"


def _basic(username: str, password: str) -> str:
    """The Basic credentials as requests writes them (latin-1, base64)."""
    return "Basic " + base64.b64encode(f"{username}:{password}".encode("latin-1")).decode("ascii")


class BrokenBody(Exception):
    """The answer's body broke off (reset, truncated, undecodable)."""


def pool_failure_reason(exc: Exception, timeout_s: float) -> str:
    """failure_reason for urllib3's exceptions (UpstreamPool): the same few words."""
    if isinstance(exc, BrokenBody):
        return Unanswered("failed").reason(timeout_s)
    return Unanswered(_unanswered_kind(exc)).reason(timeout_s)


def failure_reason(exc: requests.RequestException, timeout_s: float) -> str:
    """Why a request got no answer, in a few words without a URL, a host or a patient in them."""
    # Most specific first: SSLError and ConnectTimeout are both ConnectionErrors too.
    kind: Kind = "failed"
    if isinstance(exc, requests.exceptions.SSLError):
        kind = "tls"
    elif isinstance(exc, requests.exceptions.ConnectTimeout):
        kind = "connect_timeout"
    elif isinstance(exc, requests.exceptions.Timeout):
        kind = "timeout"
    elif isinstance(exc, requests.exceptions.ConnectionError):
        kind = "refused"
    return Unanswered(kind).reason(timeout_s)


def retry_after_seconds(value: str | None) -> float | None:
    """A Retry-After header given in seconds (None when absent or an HTTP date)."""
    if value and value.strip().isdigit():
        return float(value.strip())
    return None


def authorization_value(auth: UpstreamAuth) -> str | None:
    """The Authorization header value `auth` sends (bearer, OAuth 2.0 token or basic), None without
    credentials: for a relay that is not this process (gateway.relay: nginx)."""
    bearer = auth.headers().get("Authorization")
    if bearer is not None:
        return bearer
    basic = auth.basic()
    return _basic(*basic) if basic is not None else None


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
