"""For operators: /healthz, /readyz and /metrics at the server root, request ids, JSON access logs,
Prometheus request metrics and the per-client rate limit. `init_ops` wires them into the app.

None of the three endpoints needs a SMART token and none shows patient data; /metrics answers only
the addresses in `ops.metrics_allow` (loopback by default). The rate limit is keyed once the FHIR
blueprint or the gateway has authenticated the caller (`rate_key`): a confidential client's token on
its client_id; a public client's (every user of the sample app shares its client_id) on its client_id
and user, or its client_id and address when the token names no user. Calls without a token are keyed
on the remote address. The operations endpoints are never limited, so a probe is not refused while a
client is.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import time
from dataclasses import dataclass
from typing import Any, Protocol, cast

import orjson
from flask import Blueprint, Flask, Response, current_app, g, request
from prometheus_client import CONTENT_TYPE_LATEST

from app.audit.store import AuditStore
from app.core.errors import AddressRefused, FhirError, TooManyRequests
from app.federation.fanout import TrustArchive
from app.ops.ratelimit import RateLimiter
from app.ops.readiness import Readiness
from app.settings import EmbeddedAuthSettings, Settings
from app.telemetry import logs, metrics

access_log = logging.getLogger("app.access")
bp = Blueprint("ops", __name__)
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
_KEY = "gm_imaging_facade_ops"
_OWN_HEADERS = frozenset({"content-type", "content-length", "www-authenticate", "retry-after"})


@dataclass
class Ops:
    """What the operations hooks need, one per app (`ops()`)."""

    settings: Settings
    trusts: list[TrustArchive]
    readiness: Readiness
    limiter: RateLimiter | None
    metrics_allow: tuple[Network, ...]
    # Client ids the embedded server registers as public; None under an external authorization server,
    # where whether a client is public is not known: there any token that names a user is keyed per user.
    public_clients: frozenset[str] | None = None

    def may_read_metrics(self, address: str | None) -> bool:
        try:
            ip = ipaddress.ip_address(address or "")
        except ValueError:
            return False
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        return any(ip in network for network in self.metrics_allow)


def ops(app: Flask | None = None) -> Ops:
    """The operations state of `app` (default: the app handling the current request)."""
    return cast(Ops, (app or current_app).extensions[_KEY])


def _json(body: dict[str, Any], status: int = 200) -> Response:
    return Response(
        orjson.dumps(body), status=status, content_type="application/json", headers={"Cache-Control": "no-store"}
    )


@bp.route("/healthz", methods=["GET"])
def healthz() -> Response:
    """The process is alive and answers HTTP; nothing else is checked."""
    return _json({"status": "ok"})


@bp.route("/readyz", methods=["GET"])
def readyz() -> Response:
    """503 with the same report when not ready: a probe reads the status, an operator the reasons."""
    ready, report = ops().readiness.report()
    return _json(report, 200 if ready else 503)


@bp.route("/metrics", methods=["GET"])
def prometheus_metrics() -> Response:
    if not ops().may_read_metrics(request.remote_addr):
        raise AddressRefused("/metrics is not open to this client address (ops.metrics_allow)")
    _record_circuits()
    return Response(metrics.exposition(), content_type=CONTENT_TYPE_LATEST, headers={"Cache-Control": "no-store"})


# -- hooks --------------------------------------------------------------------------------------
def _begin() -> None:
    """First hook of every request: its id, its clock, and the rate limit of callers without a token."""
    request_id = logs.accept_request_id(request.headers.get(logs.REQUEST_ID_HEADER))
    g.ops_request = (request_id, logs.bind_request_id(request_id), time.perf_counter())
    g.ops_deferred = False
    limiter = ops().limiter
    if limiter is None or request.blueprint == "ops":
        return
    if request.blueprint in ("fhir", "dicomweb") and request.headers.get("Authorization"):
        g.ops_deferred = True  # limited by client_id once the FHIR API or the gateway has checked the token
        return
    _take(limiter, f"address:{request.remote_addr}")


def limit_authenticated() -> None:
    """After authentication (FHIR blueprint hook, or the gateway's view): the token's client, or the
    address on public paths."""
    limiter = ops().limiter
    if limiter is None or not g.get("ops_deferred"):
        return
    g.ops_deferred = False
    access = g.get("access")
    if access is not None and not access.insecure:
        _take(limiter, rate_key(access.claims, request.remote_addr, ops().public_clients))
    else:
        _take(limiter, f"address:{request.remote_addr}")


class TokenClaims(Protocol):
    """What the rate limit reads of a validated token (app.auth.tokens.AccessClaims)."""

    @property
    def client_id(self) -> str: ...
    @property
    def subject(self) -> str | None: ...
    @property
    def fhir_user(self) -> str | None: ...


def rate_key(claims: TokenClaims, address: str | None, public_clients: frozenset[str] | None) -> str:
    """The bucket of an authenticated call: `client:<id>` for a confidential client, and for a public one
    `client:<id>|user:<user>` (its token names a user) or `client:<id>|address:<address>`, so that one user
    of a public app cannot exhaust every other user's requests."""
    user = claims.fhir_user or (claims.subject if claims.subject != claims.client_id else None)
    public = claims.client_id in public_clients if public_clients is not None else user is not None
    if not public:
        return f"client:{claims.client_id}"
    return f"client:{claims.client_id}|" + (f"user:{user}" if user else f"address:{address}")


def _take(limiter: RateLimiter, key: str) -> None:
    retry_after = limiter.take(key)
    if retry_after is not None:
        metrics.RATE_LIMITED.labels(key.split(":", 1)[0]).inc()
        raise TooManyRequests(retry_after)


def _finish(response: Response) -> Response:
    """Last hook: a refused token counts against its address; request id header, metrics, access log."""
    state = g.get("ops_request")
    if state is None:
        return response
    limiter = ops().limiter
    if limiter is not None and g.get("ops_deferred") and response.status_code == 401:
        g.ops_deferred = False  # the token was refused: an unauthenticated call, limited by address
        try:
            _take(limiter, f"address:{request.remote_addr}")
        except FhirError as error:
            refused = current_app.make_response(current_app.handle_user_exception(error))
            # The CORS answer and the security headers already given stand (this hook runs after theirs).
            for name, value in response.headers.items():
                if name.lower() not in _OWN_HEADERS and name not in refused.headers:
                    refused.headers.add(name, value)
            response = refused
    request_id, _token, started = state
    elapsed = time.perf_counter() - started
    route = request.url_rule.rule if request.url_rule is not None else "<unmatched>"
    response.headers[logs.REQUEST_ID_HEADER] = request_id
    if "Access-Control-Allow-Origin" in response.headers:  # a browser app may read the id too
        exposed = response.headers.get("Access-Control-Expose-Headers")
        response.headers["Access-Control-Expose-Headers"] = (
            f"{exposed}, {logs.REQUEST_ID_HEADER}" if exposed else logs.REQUEST_ID_HEADER
        )
    metrics.HTTP_REQUESTS.labels(request.method, route, str(response.status_code)).inc()
    metrics.HTTP_DURATION.labels(request.method, route).observe(elapsed)
    _record_circuits()
    extra: dict[str, Any] = {
        "method": request.method,
        "route": route,
        "status": response.status_code,
        "duration_ms": round(elapsed * 1000, 1),
    }
    if ops().settings.ops.log_patient_data:  # debugging only: the path and query name patients
        extra.update(path=request.path, query=request.query_string.decode("latin-1"))
    access_log.info("%s %s %s", request.method, route, response.status_code, extra=extra)
    return response


def _end(_error: BaseException | None) -> None:
    state = g.pop("ops_request", None)
    if state is not None:
        logs.unbind_request_id(state[1])


def _record_circuits() -> None:
    """This process's circuit states into the gauge (in multiprocess mode the worst live worker's shows)."""
    for trust in ops().trusts:
        metrics.CIRCUIT_STATE.labels(trust.settings.id).set(metrics.CIRCUIT_STATES[trust.breaker.state])


def init_ops(app: Flask, settings: Settings, trusts: list[TrustArchive], audit: AuditStore) -> Ops:
    """JSON logs, the operations endpoints and the request hooks; call after the blueprints are registered."""
    logs.configure_logging(settings.ops.log_level)
    found = Ops(
        settings,
        trusts,
        Readiness(trusts, audit, settings.ops),
        RateLimiter(settings.ops.rate_limit) if settings.ops.rate_limit else None,
        tuple(ipaddress.ip_network(n) for n in settings.ops.metrics_allow),
        frozenset(c["client_id"] for c in settings.auth.clients if c.get("public"))
        if isinstance(settings.auth, EmbeddedAuthSettings)
        else None,
    )
    app.extensions[_KEY] = found
    app.register_blueprint(bp)
    app.before_request_funcs.setdefault(None, []).insert(0, _begin)  # before every other hook
    app.before_request_funcs.setdefault("fhir", []).append(limit_authenticated)  # after authenticate
    app.after_request_funcs.setdefault(None, []).insert(0, _finish)  # after hooks run in reverse: last
    app.teardown_request(_end)
    with app.app_context():
        _record_circuits()
    logging.getLogger("app").info(
        "facade ready: %d trust archives, metrics %s, rate limit %s",
        len(settings.trusts),
        f"multiprocess in {os.environ[metrics.MULTIPROC_ENV]}" if metrics.multiprocess_mode() else "single-process",
        settings.ops.rate_limit.store if settings.ops.rate_limit else "off",
    )
    return found
