"""The Patient, Endpoint and Organization searches, declared once, and SEARCHES: every type's search. Pure.

Patients are found by NHS number only. Endpoints and Organizations are directory data held in
memory: each parameter keeps the resources that one of its values matches.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from app.core import systems
from app.core.errors import InvalidRequest
from app.core.search.audit import AUDIT_EVENT
from app.core.search.diagnostic_report import DIAGNOSTIC_REPORT
from app.core.search.document_reference import DOCUMENT_REFERENCE
from app.core.search.registry import Pairs, ParsedSearch, ResourceSearch, SearchParameter
from app.core.search.study import IMAGING_STUDY
from app.core.search.values import nhs_number, parse_token, split_values

Resource = Mapping[str, Any]
Match = Callable[[Resource, str], bool]

# ------------------------------------------------------------------------------------- Patient


@dataclass
class PatientQuery:
    nhs_numbers: frozenset[str] | None = None  # None: no patient named


class PatientParser:
    def __init__(self) -> None:
        self.query = PatientQuery()

    def nhs_numbers(self, name: str, value: str) -> None:
        found = frozenset(self._number(name, v) for v in split_values(value))
        current = self.query.nhs_numbers
        self.query.nhs_numbers = found if current is None else current & found

    @staticmethod
    def _number(name: str, raw: str) -> str:
        token = parse_token(raw)
        if name == "identifier" and token.system not in (None, systems.NHS_NUMBER):
            raise InvalidRequest(f"patients are identified by NHS number ({systems.NHS_NUMBER})", name)
        return nhs_number(token.code, name)


PATIENT: ResourceSearch[PatientParser] = ResourceSearch(
    type="Patient",
    parameters=(
        SearchParameter(
            name="_id",
            type="token",
            documentation="NHS numbers, comma-separated.",
            schema={"type": "string", "pattern": "^[0-9]{10}(,[0-9]{10})*$"},
            example="9992975962",
            parse=PatientParser.nhs_numbers,
        ),
        SearchParameter(
            name="identifier",
            type="token",
            documentation=f"`[{systems.NHS_NUMBER}|]<NHS number>`, comma-separated.",
            schema={"type": "string"},
            example=f"{systems.NHS_NUMBER}|9992975962",
            parse=PatientParser.nhs_numbers,
        ),
    ),
    elements=(  # every root element of an R4 Patient (the facade fills identifier, name, gender, birthDate)
        "identifier",
        "name",
        "gender",
        "birthDate",
        "active",
        "telecom",
        "deceased",
        "address",
        "maritalStatus",
        "multipleBirth",
        "photo",
        "contact",
        "communication",
        "generalPractitioner",
        "managingOrganization",
        "link",
    ),
)


def parse_patient_search(pairs: Pairs, default_count: int, max_count: int) -> ParsedSearch[PatientQuery]:
    """Validate a Patient search (the view decides what no patient means)."""
    parser = PatientParser()
    paging, used = PATIENT.parse(parser, pairs, default_count, max_count)
    return ParsedSearch(parser.query, paging, used)


# ---------------------------------------------------------------------- Endpoint, Organization


@dataclass
class DirectoryQuery:
    """Per parameter, its matcher and values: a resource is kept when, for each, one value matches."""

    filters: list[tuple[Match, tuple[str, ...]]] = field(default_factory=list)

    def select(self, resources: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
        return [r for r in resources if all(any(match(r, v) for v in values) for match, values in self.filters)]


def _matcher(match: Match) -> Callable[[DirectoryQuery, str, str], None]:
    def parse(query: DirectoryQuery, name: str, value: str) -> None:
        query.filters.append((match, tuple(split_values(value))))

    return parse


def _token_match(value: str, system: str, code: str) -> bool:
    token = parse_token(value)
    return token.code == code and token.system in (None, system)


def _id(resource: Resource, value: str) -> bool:
    return bool(resource["id"] == value)


def _name(resource: Resource, value: str) -> bool:
    return str(resource.get("name", "")).casefold().startswith(value.casefold())


_NAME = SearchParameter(
    name="name",
    type="string",
    documentation="Starts-with match on the name, case-insensitive.",
    schema={"type": "string"},
    example="Bolton",
    parse=_matcher(_name),
)

ENDPOINT: ResourceSearch[DirectoryQuery] = ResourceSearch(
    type="Endpoint",
    elements=(  # every root element of an R4 Endpoint
        "identifier",
        "status",
        "connectionType",
        "name",
        "managingOrganization",
        "contact",
        "period",
        "payloadType",
        "payloadMimeType",
        "address",
        "header",
    ),
    parameters=(
        SearchParameter(
            name="_id",
            type="token",
            documentation="Endpoint ids, comma-separated: `<trust>-wado-rs`, or `<trust>-ihe-iid` for a trust's "
            "viewer.",
            schema={"type": "string"},
            example="bolton-wado-rs",
            parse=_matcher(_id),
        ),
        SearchParameter(
            name="organization",
            type="reference",
            documentation="`Organization/<ODS code>` or the bare ODS code, comma-separated.",
            schema={"type": "string"},
            example="Organization/RMC",
            parse=_matcher(lambda r, v: r["managingOrganization"]["reference"] in (v, f"Organization/{v}")),
        ),
        SearchParameter(
            name="connection-type",
            type="token",
            documentation=f"`[<system>|]<code>`: `dicom-wado-rs` (the image gateway) or `ihe-iid` (a viewer) "
            f"({systems.ENDPOINT_CONNECTION_TYPE}).",
            schema={"type": "string"},
            example="dicom-wado-rs",
            parse=_matcher(lambda r, v: _token_match(v, r["connectionType"]["system"], r["connectionType"]["code"])),
        ),
        SearchParameter(
            name="status",
            type="token",
            documentation="`active`, or `off` for a trust that offers no image retrieval.",
            schema={"type": "string"},
            example="active",
            parse=_matcher(lambda r, v: bool(r["status"] == v)),
        ),
        _NAME,
    ),
)

ORGANIZATION: ResourceSearch[DirectoryQuery] = ResourceSearch(
    type="Organization",
    elements=(  # every root element of an R4 Organization
        "identifier",
        "active",
        "type",
        "name",
        "alias",
        "telecom",
        "address",
        "partOf",
        "contact",
        "endpoint",
    ),
    parameters=(
        SearchParameter(
            name="_id",
            type="token",
            documentation="ODS codes, comma-separated.",
            schema={"type": "string"},
            example="RMC",
            parse=_matcher(_id),
        ),
        SearchParameter(
            name="identifier",
            type="token",
            documentation=f"`[{systems.ODS_ORGANIZATION_CODE}|]<ODS code>`, comma-separated.",
            schema={"type": "string"},
            example=f"{systems.ODS_ORGANIZATION_CODE}|RMC",
            parse=_matcher(lambda r, v: _token_match(v, r["identifier"][0]["system"], r["identifier"][0]["value"])),
        ),
        _NAME,
    ),
)

DIRECTORIES: Mapping[str, ResourceSearch[DirectoryQuery]] = {s.type: s for s in (ENDPOINT, ORGANIZATION)}


def parse_directory_search(
    resource_type: str, pairs: Pairs, default_count: int, max_count: int
) -> ParsedSearch[DirectoryQuery]:
    """Validate an Endpoint or Organization search; `.query.select(resources)` applies it."""
    query = DirectoryQuery()
    paging, used = DIRECTORIES[resource_type].parse(query, pairs, default_count, max_count)
    return ParsedSearch(query, paging, used)


# ------------------------------------------------------------------------------- every type

SEARCHES: Mapping[str, ResourceSearch[Any]] = {
    s.type: s
    for s in (IMAGING_STUDY, PATIENT, ENDPOINT, ORGANIZATION, AUDIT_EVENT, DOCUMENT_REFERENCE, DIAGNOSTIC_REPORT)
}
"""Every searchable type's search, by type name."""
