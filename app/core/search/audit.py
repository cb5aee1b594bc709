"""The AuditEvent search (patient, date, agent) -> audit store criteria: declared once (AUDIT_EVENT). Pure."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import tzinfo

from app.core.errors import InvalidRequest
from app.core.instants import utc_instant
from app.core.search.dates import DateValueError, parse_filter
from app.core.search.registry import Pairs, ParsedSearch, ResourceSearch, SearchParameter
from app.core.search.values import patient_reference


@dataclass
class AuditQuery:
    """The audit store's criteria (None: not constrained); instants are UTC, [since, until)."""

    patient: str | None = None
    client_id: str | None = None
    since: str | None = None
    until: str | None = None

    def store_criteria(self) -> dict[str, str]:
        """The keyword arguments of the audit store's search and count."""
        return {k: v for k, v in asdict(self).items() if v is not None}


class AuditParser:
    """Applies each recognised parameter to an AuditQuery (a repeated parameter: the last one wins)."""

    def __init__(self, zone: tzinfo) -> None:
        self.zone = zone
        self.query = AuditQuery()

    def patient(self, name: str, value: str) -> None:
        self.query.patient = patient_reference(value, name)

    def agent(self, name: str, value: str) -> None:
        self.query.client_id = value.removeprefix("client:")

    def date(self, name: str, value: str) -> None:
        try:
            found = parse_filter(value, self.zone)
        except DateValueError as exc:
            raise InvalidRequest(str(exc), name) from None
        if found.prefix in ("ge", "gt", "sa", "eq"):
            self.query.since = utc_instant(found.range.start if found.prefix in ("ge", "eq") else found.range.end)
        if found.prefix in ("le", "lt", "eb", "eq"):
            self.query.until = utc_instant(found.range.end if found.prefix in ("le", "eq") else found.range.start)
        if found.prefix == "ne":
            raise InvalidRequest("date: the ne prefix is not supported for AuditEvent", name)


AUDIT_EVENT: ResourceSearch[AuditParser] = ResourceSearch(
    type="AuditEvent",
    elements=(  # every root element of an R4 AuditEvent
        "type",
        "subtype",
        "action",
        "period",
        "recorded",
        "outcome",
        "outcomeDesc",
        "purposeOfEvent",
        "agent",
        "source",
        "entity",
    ),
    parameters=(
        SearchParameter(
            name="patient",
            type="reference",
            documentation="`Patient/<NHS number>` or the bare NHS number.",
            schema={"type": "string"},
            example="Patient/9992975962",
            parse=AuditParser.patient,
        ),
        SearchParameter(
            name="date",
            type="date",
            documentation="The recorded time, with a `ge`, `gt`, `le`, `lt`, `sa`, `eb` or `eq` prefix "
            "(`ne` is refused).",
            schema={"$ref": "#/components/schemas/DateSearchValue"},
            example="ge2020-01-01",
            parse=AuditParser.date,
        ),
        SearchParameter(
            name="agent",
            type="token",
            documentation="The client id (`client:` prefix optional).",
            schema={"type": "string"},
            example="portal",
            parse=AuditParser.agent,
        ),
    ),
    refuse_empty=False,  # as before the registry: `agent=` is the client id ""
)


def parse_audit_search(pairs: Pairs, zone: tzinfo, default_count: int, max_count: int) -> ParsedSearch[AuditQuery]:
    """Validate an AuditEvent search; raises InvalidRequest (400) naming the parameter at fault."""
    parser = AuditParser(zone)
    paging, used = AUDIT_EVENT.parse(parser, pairs, default_count, max_count)
    return ParsedSearch(parser.query, paging, used)
