"""Images at archive speed: the gateway's byte relay handed to nginx (gateway.relay: nginx).

The facade keeps every check (token, scope, path, owner, audit before the first byte: app.web.gateway)
and then answers nginx with an empty response carrying

    X-Accel-Redirect: /_gateway/relay/{trust}/{WADO-RS path built from the validated target}[?{query}]
    X-Gateway-Archive-Authorization: the archive's own credentials (bearer or basic), when it has any
    X-Gateway-Accept-Encoding: the Accept-Encoding to send the archive (the client's, else identity)

nginx redirects internally to the trust's internal location, which `nginx_config` generates from the
facade's configuration (`python -m app nginx-config`): it captures the two values from the facade's
response ($upstream_http_...), which nginx never passes on to the client, sends the archive only those
and the client's Accept (never the client's Authorization or any other header), streams the answer
without spooling it to disk, and turns every archive error into the OperationOutcome the Python relay
would give (error_page to internal locations whose bodies are rendered here, by the same mapping).

The facade hands over only requests that nginx marked with the relay key (X-Gateway-Relay-Key, set by
nginx on every request it proxies, whatever the client sent): a request that reached the facade some
other way, a folder archive's retrieval, a thumbnail and a HEAD keep the Python relay.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Iterable, Mapping

import orjson
from flask import Response, request

from app.archives.dicomweb.wado import status_error
from app.archives.images import Handoff, RetrievalError
from app.archives.registry import WadoUpstream, wado_upstream
from app.core.errors import FhirError, InvalidRequest, NotAcceptable, NotFound, UpstreamFailure
from app.settings import Settings
from app.web.headers import ALWAYS, FRAME_ANCESTORS, PRIVATE
from app.web.negotiation import FHIR_JSON

RELAY_PREFIX = "/_gateway/relay/"
ERROR_PREFIX = "/_gateway/error/"
KEY_HEADER = "X-Gateway-Relay-Key"
AUTHORIZATION_HEADER = "X-Gateway-Archive-Authorization"
ENCODING_HEADER = "X-Gateway-Accept-Encoding"
# Headers of every image response, relayed by either relay (app.web.gateway).
IMAGE_HEADERS = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff", "Vary": "Accept, Accept-Encoding"}
# What nginx adds to its answers: what the facade adds to its own (app.web.headers), and to images.
_ERROR_HEADERS = {**ALWAYS, **PRIVATE, "Content-Security-Policy": FRAME_ANCESTORS, "X-Frame-Options": "DENY"}
_CLIENT_HEADERS = {**_ERROR_HEADERS, **IMAGE_HEADERS}
# The archive's headers that never reach the client (the Python relay passes only Content-Type,
# Content-Length and Content-Encoding; nginx hides Date, Server, X-Pad and X-Accel-* itself).
_HIDDEN = (
    "Set-Cookie", "Cache-Control", "Pragma", "Expires", "Vary", "ETag", "Last-Modified", "Accept-Ranges",
    "Content-Disposition", "Content-Location", "Location", "Link", "Refresh", "WWW-Authenticate",
    "Access-Control-Allow-Origin", "Access-Control-Allow-Credentials", "Access-Control-Allow-Headers",
    "Access-Control-Allow-Methods", "Access-Control-Expose-Headers", "Access-Control-Max-Age",
    "Strict-Transport-Security", "Content-Security-Policy", "X-Frame-Options", "X-Content-Type-Options",
    "Referrer-Policy", "X-Request-ID", "Keep-Alive", "Alt-Svc", "Clear-Site-Data",
)  # fmt: skip
# Never obeyed when the archive sends them: the archive cannot redirect nginx, set its rate or buffering.
_IGNORED = (
    "X-Accel-Redirect", "X-Accel-Expires", "X-Accel-Limit-Rate", "X-Accel-Buffering", "X-Accel-Charset",
    "Expires", "Cache-Control", "Set-Cookie", "Vary",
)  # fmt: skip
# A WADO-RS path as WadoTarget.path() and the RENDER_PARAMETERS values make it: nothing else is handed over.
_SAFE_SEGMENT = re.compile(r"\A(studies|series|instances|frames|metadata|rendered|[0-9][0-9.,]*)\Z")
_SAFE_QUERY = re.compile(r"\A[a-z]+=[-0-9a-z.,]+(&[a-z]+=[-0-9a-z.,]+)*\Z")
_CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"  # Debian's (and the nginx image's) system bundle


class UnsafeHandoff(InvalidRequest):
    """A path that is not a validated WADO-RS path (a bug upstream of here): nothing is handed over (400)."""


def relay_key(settings: Settings) -> str:
    """The value nginx sends in KEY_HEADER: derived from the cursor secret, so every instance agrees and
    a client that cannot read the facade's or nginx's configuration cannot make it."""
    return hmac.new(settings.cursor_secret, b"gateway-relay", hashlib.sha256).hexdigest()


def wanted(settings: Settings) -> bool:
    """Whether this request may be handed to nginx: the relay is nginx and nginx marked the request."""
    if settings.gateway_relay != "nginx":
        return False
    return hmac.compare_digest(request.headers.get(KEY_HEADER, "").encode(), relay_key(settings).encode())


def accel_uri(trust_id: str, path: str) -> str:
    """The internal URI of one validated resource; UnsafeHandoff for anything else (no dot segment, no
    encoded character, no other parameter can reach nginx's redirect)."""
    resource, _, query = path.partition("?")
    segments = resource.split("/")
    if not re.fullmatch(r"[a-z0-9-]{1,40}", trust_id) or not all(_SAFE_SEGMENT.match(s) for s in segments):
        raise UnsafeHandoff(f"not a WADO-RS path: {resource[:80]!r}")
    if any(set(s) <= {"."} or ".." in s for s in segments) or (query and not _SAFE_QUERY.match(query)):
        raise UnsafeHandoff(f"not a WADO-RS path: {path[:80]!r}")
    return f"{RELAY_PREFIX}{trust_id}/{path}"


def handoff_response(trust_id: str, handoff: Handoff) -> Response:
    """The facade's answer to nginx: no body, the internal redirect and what the archive must be sent."""
    headers = {"X-Accel-Redirect": accel_uri(trust_id, handoff.path), ENCODING_HEADER: handoff.accept_encoding}
    if handoff.authorization is not None:
        headers[AUTHORIZATION_HEADER] = handoff.authorization
    response = Response(status=200, headers=headers)
    # nginx would keep the charset of a Content-Type here for its own answer: there is none.
    del response.headers["Content-Type"]
    return response


# ----------------------------------------------------------------------------- nginx configuration


def outcome_of(error: RetrievalError) -> FhirError:
    """The OperationOutcome a retrieval that failed before its first byte gets (either relay)."""
    diagnostics = f"trust {error.archive}: {error.reason}"
    retry = {"Retry-After": str(int(error.retry_after_s))} if error.retry_after_s is not None else None
    if error.status == 404:
        return NotFound(diagnostics)
    if error.status == 406:
        return NotAcceptable(diagnostics)
    return UpstreamFailure(error.status, diagnostics, retry)


def _quoted(text: str) -> str:
    """An nginx single-quoted string with `text` (no variable: a dollar sign is refused)."""
    if "$" in text:
        raise ValueError("a generated nginx string holds no variable")
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _header_lines(headers: Mapping[str, str], indent: str) -> list[str]:
    return [f"{indent}add_header {name} {_quoted(value)} always;" for name, value in headers.items()]


# Stands for the archive's status in a generated body; nginx puts in $upstream_status (digits) when it answers.
_STATUS = "UPSTREAMSTATUS"


def _error_location(uri: str, error: FhirError, extra: Iterable[str] = ()) -> list[str]:
    body = _quoted(orjson.dumps(error.to_dict()).decode()).replace(_STATUS, "$gateway_archive_status")
    lines = [f"location = {uri} {{", "    internal;", f"    error_page 404 = {ERROR_PREFIX}not-found;"]
    lines += [f"    default_type {_quoted(FHIR_JSON)};"]
    if "$gateway_archive_status" in body:  # the last of $upstream_status ("200 : 503": the facade's, the archive's)
        lines += [
            "    set $gateway_archive_status 502;",
            '    if ($upstream_status ~ "([0-9]{3})$") { set $gateway_archive_status $1; }',
        ]
    lines += [f"    {line}" for line in extra]
    lines += _header_lines(_ERROR_HEADERS | {k: v for k, v in error.headers.items() if k != "Retry-After"}, "    ")
    lines += ["    add_header X-Request-ID $request_id always;"]
    lines += [f"    return {error.status_code} {body};", "}"]
    return lines


# Archive statuses answered by a location of their own (the others: "other"); the reasons are the
# Python relay's (app.archives.dicomweb.wado.status_error), so both relays say the same.
_OWN_STATUSES = (401, 403, 404, 406, 501)
_ALL_ERRORS = tuple(s for s in range(300, 600) if s != 499)  # 499: nginx's own (client closed)


def _trust_locations(trust_id: str, upstream: WadoUpstream, timeout_s: float, ca_bundle: str) -> list[str]:
    errors = f"{ERROR_PREFIX}{trust_id}/"
    seconds = f"{max(1, round(timeout_s))}s"
    base = upstream.base_url + "/"
    lines = [
        f"# trust {trust_id}: WADO-RS at {base}",
        f"location ^~ {RELAY_PREFIX}{trust_id}/ {{",
        "    internal;",
        "    # The facade's answer (the X-Accel-Redirect response) is still the upstream here: keep its values.",
        f"    set $gateway_authorization $upstream_http_{AUTHORIZATION_HEADER.lower().replace('-', '_')};",
        f"    set $gateway_accept_encoding $upstream_http_{ENCODING_HEADER.lower().replace('-', '_')};",
        f"    proxy_pass {base};",
        "    proxy_http_version 1.1;",
        "    # Nothing of the client's request but its Accept: not its Authorization, cookies or other headers.",
        "    proxy_pass_request_headers off;",
        "    proxy_pass_request_body off;",
        "    proxy_set_header Authorization $gateway_authorization;",
        "    proxy_set_header Accept $http_accept;",
        "    proxy_set_header Accept-Encoding $gateway_accept_encoding;",
        "    proxy_set_header X-Request-ID $request_id;",
        f"    proxy_connect_timeout {seconds};",
        f"    proxy_send_timeout {seconds};",
        f"    proxy_read_timeout {seconds};",
        "    # Streamed as it comes, never spooled to disk, in reads of up to 1 MB (nginx's 4 KB default",
        "    # costs the archive and the client dearly); proxy_buffers only satisfy nginx's size checks.",
        "    proxy_buffering off;",
        "    proxy_buffer_size 1m;",
        "    proxy_buffers 4 1m;",
        "    proxy_busy_buffers_size 2m;",
        "    proxy_max_temp_file_size 0;",
        "    gzip off;",
        "    proxy_next_upstream off;",
        f"    proxy_ignore_headers {' '.join(_IGNORED)};",
    ]
    lines += [f"    proxy_hide_header {name};" for name in _HIDDEN]
    lines += _header_lines(_CLIENT_HEADERS, "    ")
    lines += ["    add_header X-Request-ID $request_id always;"]
    if base.startswith("https://"):
        tls = upstream.tls
        lines += ["    proxy_ssl_server_name on;"]
        if tls.get("verify") is False and not tls.get("ca_bundle"):
            lines += ["    proxy_ssl_verify off;"]
        else:
            lines += [
                "    proxy_ssl_verify on;",
                "    proxy_ssl_verify_depth 4;",
                f"    proxy_ssl_trusted_certificate {tls.get('ca_bundle') or ca_bundle};",
            ]
        if tls.get("client_cert"):
            lines += [f"    proxy_ssl_certificate {tls['client_cert']};"]
            lines += [f"    proxy_ssl_certificate_key {tls.get('client_key') or tls['client_cert']};"]
    lines += ["    # Every archive error, and nginx's own (unreachable, timed out), as the facade's OperationOutcome."]
    lines += ["    proxy_intercept_errors on;"]
    for status in _OWN_STATUSES:
        lines += [f"    error_page {status} = {errors}{status};"]
    lines += [f"    error_page 400 = {errors}400;", f"    error_page 429 503 = {errors}503;"]
    lines += [f"    error_page 502 = {errors}502;", f"    error_page 504 = {errors}504;"]
    others = [str(s) for s in _ALL_ERRORS if s not in (*_OWN_STATUSES, 400, 429, 503, 502, 504)]
    for start in range(0, len(others), 20):
        lines += [f"    error_page {' '.join(others[start : start + 20])} = {errors}other;"]
    lines += ["}"]
    for status in _OWN_STATUSES:
        lines += _error_location(f"{errors}{status}", outcome_of(status_error(trust_id, status, {}, None)))
    # 400: the media type asked for (406) when the client named one, else a resource the archive lacks (501).
    lines += _error_location(
        f"{errors}400",
        outcome_of(status_error(trust_id, 400, {}, None)),
        [f"if ($http_accept) {{ rewrite ^ {errors}406 last; }}"],
    )
    busy = status_error(trust_id, 503, {}, None)
    busy.reason = busy.reason.replace("503", _STATUS)
    busy.retry_after_s = None  # the archive's, below
    lines += _error_location(
        f"{errors}503",
        outcome_of(busy),
        [
            f"set $gateway_retry_after {int(busy.retry_after_s or 5)};",
            'if ($upstream_http_retry_after ~ "^\\s*([0-9]{1,9})\\s*$") { set $gateway_retry_after $1; }',
            "add_header Retry-After $gateway_retry_after always;",
        ],
    )
    lines += _error_location(
        f"{errors}502", outcome_of(RetrievalError(trust_id, 502, "connection refused or reset, or HTTP 502"))
    )
    lines += _error_location(
        f"{errors}504", outcome_of(RetrievalError(trust_id, 504, f"no answer within {timeout_s:g} s"))
    )
    other = status_error(trust_id, 599, {}, None)  # "HTTP 599 from the archive", with the archive's status
    other.reason = other.reason.replace("599", _STATUS)
    lines += _error_location(f"{errors}other", outcome_of(other))
    return lines


def nginx_config(settings: Settings, ca_bundle: str = _CA_BUNDLE) -> str:
    """The server-context include of deploy/nginx.template.conf for this configuration: the relay key
    nginx marks requests with, each trust's internal relay location and its error locations."""
    lines = [
        "# GENERATED by `python -m app nginx-config` from the facade's configuration (gateway.relay: nginx):",
        "# include it in the server block of deploy/nginx.template.conf. It holds the relay key (derived from",
        "# the cursor secret): keep it as private as the facade's configuration.",
        f"# gateway.relay is {settings.gateway_relay!r} in that configuration"
        + ("" if settings.gateway_relay == "nginx" else ": the facade relays images itself and ignores this file."),
        f"set $gateway_relay_key {_quoted(relay_key(settings))};",
        "",
        "# Nothing under the internal prefix is served to a client (404, an OperationOutcome).",
        f"location ^~ {RELAY_PREFIX.rsplit('/', 2)[0]}/ {{",
        "    internal;",
        f"    error_page 404 = {ERROR_PREFIX}not-found;",
        "    return 404;",
        "}",
    ]
    lines += _error_location(f"{ERROR_PREFIX}not-found", NotFound("no such resource"))
    for trust in settings.trusts:
        upstream = wado_upstream(trust)
        if upstream is not None:
            lines += ["", *_trust_locations(trust.id, upstream, settings.timeout_of(trust), ca_bundle)]
    return "\n".join(lines) + "\n"
