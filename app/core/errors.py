"""The FHIR error family: every failure the API reports becomes one OperationOutcome here.

FhirError                      500 exception (the base; never shows a stack trace)
├── InvalidRequest             400 invalid (a bad parameter value, a malformed id)
│   └── TooCostly              400 too-costly (a search no archive could answer sensibly)
├── AddressRefused             403 forbidden (an operations endpoint closed to the client's address)
├── NotFound                   404 not-found
├── Conflict                   409 conflict (archives disagree about whose study it is)
├── MethodNotAllowed           405 not-supported
├── NotAcceptable              406 not-supported (a format other than FHIR JSON)
└── TooManyRequests            429 throttled (the client's rate limit; Retry-After says when to come back)
"""

from __future__ import annotations

from typing import Any

OPERATION_OUTCOME = "OperationOutcome"
QUOTED_MAX = 100  # characters of a client's value that a diagnostics message may quote
DIAGNOSTICS_MAX = 500  # a diagnostics message longer than this is cut (a safety net behind `quote`)


def cut(value: str, limit: int = QUOTED_MAX) -> str:
    """A client's value as a diagnostics message may show it: at most `limit` characters of it, saying how
    long it was when it is cut, so that an error never echoes a whole oversized value back."""
    if len(value) <= limit:
        return value
    return f"{value[:limit]}... ({len(value)} characters)"


def quote(value: str, limit: int = QUOTED_MAX) -> str:
    """`cut`, in quotes (the repr of what is shown): for a value inside a sentence."""
    if len(value) <= limit:
        return repr(value)
    return f"{value[:limit]!r}... ({len(value)} characters)"


def quote_all(values: list[str], most: int = 5, quoted: bool = True) -> str:
    """Several of a client's values: the first `most` of them shown (sharing QUOTED_MAX characters between
    them, 20 each at least; in quotes unless `quoted` is False) and the rest counted."""
    each = max(20, QUOTED_MAX // max(1, min(len(values), most)))
    show = quote if quoted else cut
    named = ", ".join(show(v, each) for v in values[:most])
    return named + (f" and {len(values) - most} more" if len(values) > most else "")


def _bounded(diagnostics: str) -> str:
    if len(diagnostics) <= DIAGNOSTICS_MAX:
        return diagnostics
    return f"{diagnostics[:DIAGNOSTICS_MAX]}... (cut)"


def operation_outcome(issues: list[dict[str, Any]]) -> dict[str, Any]:
    """The one place that builds an OperationOutcome resource."""
    return {"resourceType": OPERATION_OUTCOME, "issue": issues}


def issue(severity: str, code: str, diagnostics: str, expression: str | None = None) -> dict[str, Any]:
    """One OperationOutcome.issue; `expression` names the parameter or element at fault."""
    item: dict[str, Any] = {"severity": severity, "code": code, "diagnostics": diagnostics}
    if expression:
        item["expression"] = [expression]
    return item


class FhirError(Exception):
    """An error that the API reports as an OperationOutcome with an HTTP status."""

    status_code = 500
    issue_code = "exception"

    def __init__(
        self,
        diagnostics: str,
        expression: str | None = None,
        headers: dict[str, str] | None = None,
        patients: tuple[str, ...] = (),
    ) -> None:
        diagnostics = _bounded(diagnostics)
        super().__init__(diagnostics)
        self.diagnostics = diagnostics
        self.expression = expression
        self.headers = headers or {}
        # The patients a refused request targeted: written to its AuditEvent, never shown to the client.
        self.patients = patients

    def to_dict(self) -> dict[str, Any]:
        return operation_outcome([issue("error", self.issue_code, self.diagnostics, self.expression)])


class InvalidRequest(FhirError):
    """A request the server understood but refuses: bad parameter value, bad id."""

    status_code = 400
    issue_code = "invalid"


class TooCostly(InvalidRequest):
    """A search so broad that answering it would mean reading whole archives."""

    issue_code = "too-costly"


class Forbidden(FhirError):
    """RFC 6750 3.1 insufficient_scope: the token is valid but does not allow this (403, Bearer challenge)."""

    status_code = 403
    issue_code = "forbidden"

    def __init__(self, realm: str, reason: str, scope: str = "", patients: tuple[str, ...] = ()) -> None:
        challenge = f'Bearer realm="{realm}", error="insufficient_scope", error_description="{reason}"'
        if scope:
            challenge += f', scope="{scope}"'
        super().__init__(reason, headers={"WWW-Authenticate": challenge}, patients=patients)


class NotFound(FhirError):
    """The resource does not exist, or the caller may not know that it exists."""

    status_code = 404
    issue_code = "not-found"


class Conflict(FhirError):
    """The archives disagree (one study UID under two patients): nothing is shown until they agree."""

    status_code = 409
    issue_code = "conflict"


class MethodNotAllowed(FhirError):
    """The interaction is not supported on this resource type (the facade is read-only)."""

    status_code = 405
    issue_code = "not-supported"


class NotAcceptable(FhirError):
    """The client asked for a format this server does not produce."""

    status_code = 406
    issue_code = "not-supported"


class AddressRefused(FhirError):
    """An operations endpoint (/metrics) that the configuration closes to the client's address."""

    status_code = 403
    issue_code = "forbidden"


class TooManyRequests(FhirError):
    """RFC 6585 section 4: the client sent more requests than its rate limit allows."""

    status_code = 429
    issue_code = "throttled"

    def __init__(self, retry_after_s: int) -> None:
        super().__init__(
            f"rate limit exceeded: retry after {retry_after_s} s", headers={"Retry-After": str(retry_after_s)}
        )
        self.retry_after_s = retry_after_s


class UpstreamFailure(FhirError):
    """A trust archive could not serve what was asked of it (the image gateway): the status says how."""

    CODES = {501: "not-supported", 502: "exception", 503: "transient", 504: "timeout"}

    def __init__(self, status: int, diagnostics: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(diagnostics, headers=headers)
        self.status_code = status if status in self.CODES else 502
        self.issue_code = self.CODES[self.status_code]
