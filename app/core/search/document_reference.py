"""The DocumentReference search (IHE MHD ITI-67 "Find Document References"): its parameters, declared
once (DOCUMENT_REFERENCE), and their parser. Pure.

A DocumentReference is derived from a study found in a trust archive (app/core/mapping/document_reference.py),
so most parameters become criteria of the study search the federation already answers (patient, dates,
accession, study UID, holding trust); the rest (type, category, status, format) are checked on the
built resources. Every value is validated here, before any I/O.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from datetime import tzinfo

from app.core import systems
from app.core.errors import InvalidRequest, quote
from app.core.mapping.document_reference import CATEGORY, FORMATS, STATUS, parse_document_id
from app.core.search.registry import Pairs, QueryName, ResourceSearch, SearchParameter
from app.core.search.study import _PATIENT_IDENTIFIER, _PATIENT_REFERENCE, StudyParser, StudySearch
from app.core.search.values import Token, parse_token, split_values

_ODS = re.compile(r"^[A-Z0-9]{3,8}\Z")
_CODE = re.compile(r"^[A-Za-z0-9.:\-_]{1,64}\Z")
STATUSES = ("current", "superseded", "entered-in-error")


def code_tokens(name: str, value: str) -> tuple[Token, ...]:
    """A token parameter's comma-separated `[system|]code` values, each code checked (400 before any I/O)."""
    tokens = tuple(parse_token(v) for v in split_values(value))
    for token in tokens:
        if not _CODE.match(token.code):
            raise InvalidRequest(f"{quote(token.code)} is not a code", name)
    return tokens


@dataclass
class DocumentSearch:
    """A DocumentReference search after validation: the study search behind it and the criteria checked on
    the built DocumentReferences. Empty tuples mean "not constrained"."""

    study: StudySearch = field(default_factory=StudySearch)
    ids: frozenset[tuple[str, str]] | None = None  # (ODS code, StudyInstanceUID) named by _id
    custodians: frozenset[str] | None = None  # ODS codes
    types: tuple[tuple[Token, ...], ...] = ()  # each parameter: one of its tokens must match (AND of ORs)
    categories: tuple[tuple[Token, ...], ...] = ()
    formats: tuple[tuple[Token, ...], ...] = ()
    statuses: tuple[tuple[str, ...], ...] = ()
    uid_identifiers: frozenset[str] | None = None  # identifier UIDs: a study's, or a report object's SOPInstanceUID


class DocumentParser:
    """Applies each recognised parameter to a DocumentSearch; study criteria go through the StudyParser."""

    def __init__(self, zone: tzinfo, known_modalities: frozenset[str]) -> None:
        self.studies = StudyParser(zone, known_modalities)
        self.search = DocumentSearch(study=self.studies.search)

    def logical_id(self, name: str, value: str) -> None:
        found = set()
        for raw in split_values(value):
            parsed = parse_document_id(raw)
            if parsed is None:
                raise InvalidRequest(f"{quote(raw)} is not the id of a DocumentReference of this server", name)
            found.add(parsed)
        current = self.search.ids
        self.search.ids = frozenset(found if current is None else current & found)
        self.studies._narrow_uids({uid for _, uid in found})

    def patient(self, name: str, value: str) -> None:
        self.studies.patient(name, value)

    def date(self, name: str, value: str) -> None:
        self.studies.started(name, value)

    def identifier(self, name: str, value: str) -> None:
        self.studies.identifier(name, value)
        found = set()
        for raw in split_values(value):
            token = parse_token(raw)
            dicom = token.system == systems.DICOM_UID or token.code.startswith(systems.OID_PREFIX)
            if name == "identifier" and dicom:
                found.add(token.code.removeprefix(systems.OID_PREFIX))
        if found:  # also a report object's entry (its identifier is the object's SOPInstanceUID)
            current = self.search.uid_identifiers
            self.search.uid_identifiers = frozenset(found if current is None else current & found)

    def related(self, name: str, value: str) -> None:
        """An accession number: `[<system>|]<value>` (the `:identifier` form), or a bare value."""
        accessions = []
        for raw in split_values(value):
            token = parse_token(raw)
            accessions.append(Token(token.system, self.studies._accession(token.code, name)))
        self.studies.search.accessions += tuple(accessions)

    def custodian(self, name: str, value: str) -> None:
        codes = set()
        for raw in split_values(value):
            token = parse_token(raw)
            code = token.code.removeprefix("Organization/")
            if token.system not in (None, systems.ODS_ORGANIZATION_CODE) or not _ODS.match(code):
                raise InvalidRequest(f"{quote(raw)} is not an ODS code or an Organization reference", name)
            codes.add(code)
        current = self.search.custodians
        self.search.custodians = frozenset(codes if current is None else current & codes)

    @staticmethod
    def _tokens(name: str, value: str) -> tuple[Token, ...]:
        return code_tokens(name, value)

    def type(self, name: str, value: str) -> None:
        self.search.types += (self._tokens(name, value),)

    def category(self, name: str, value: str) -> None:
        self.search.categories += (self._tokens(name, value),)

    def format(self, name: str, value: str) -> None:
        self.search.formats += (self._tokens(name, value),)

    def status(self, name: str, value: str) -> None:
        statuses = tuple(t.code for t in map(parse_token, split_values(value)))
        if any(s not in STATUSES for s in statuses):
            raise InvalidRequest(f"status must be one of {', '.join(STATUSES)}", name)
        self.search.statuses += (statuses,)


def _patient_parameter(name: str, documentation: str) -> SearchParameter[DocumentParser]:
    return SearchParameter(
        name=name,
        type="reference",
        documentation=documentation,
        schema=_PATIENT_REFERENCE.schema,
        example=_PATIENT_REFERENCE.example,
        parse=DocumentParser.patient,
        aliases=tuple(
            QueryName(
                name=f"{name}{joint}identifier",
                documentation=_PATIENT_IDENTIFIER.documentation,
                schema=_PATIENT_IDENTIFIER.schema,
                example=_PATIENT_IDENTIFIER.example,
            )
            for joint in (".", ":")
        ),
    )


_KOS = FORMATS["study"]
DOCUMENT_REFERENCE: ResourceSearch[DocumentParser] = ResourceSearch(
    type="DocumentReference",
    parameters=(
        SearchParameter(
            name="_id",
            type="token",
            documentation="DocumentReference ids (`<ODS code>-<StudyInstanceUID>`, one per study and holding trust; "
            "`<ODS code>-<SOPInstanceUID>` for a report object), comma-separated.",
            schema={"type": "string"},
            example="RMC-2.25.7492698656716832304557205269405902835",
            parse=DocumentParser.logical_id,
        ),
        _patient_parameter("patient", _PATIENT_REFERENCE.documentation),
        _patient_parameter("subject", "As `patient`: only Patient subjects."),
        SearchParameter(
            name="identifier",
            type="token",
            documentation=f"The study: `{systems.DICOM_UID}|urn:oid:<StudyInstanceUID>` or a bare dotted UID; or "
            "its accession number as `[<system>|]<value>`; or a report object: "
            f"`{systems.DICOM_UID}|urn:oid:<SOPInstanceUID>`. Comma-separated.",
            schema={"type": "string"},
            example=f"{systems.DICOM_UID}|urn:oid:2.25.7492698656716832304557205269405902835",
            parse=DocumentParser.identifier,
        ),
        SearchParameter(
            name="date",
            type="date",
            documentation="When the examination was performed (`date` and `context.period`), with an optional prefix; "
            "repeat for a range.",
            schema={"$ref": "#/components/schemas/DateSearchValue"},
            example=["ge2015-01-01", "lt2030-01-01"],
            repeated=True,
            parse=DocumentParser.date,
        ),
        SearchParameter(
            name="period",
            type="date",
            documentation="As `date`: the examination's time (`context.period`).",
            schema={"$ref": "#/components/schemas/DateSearchValue"},
            example=["ge2015-01-01"],
            repeated=True,
            parse=DocumentParser.date,
        ),
        SearchParameter(
            name="type",
            type="token",
            documentation="The procedure (`type`: the study's procedure code, `[<system>|]<code>`), comma-separated.",
            schema={"type": "string"},
            example="CCAPC",
            parse=DocumentParser.type,
        ),
        SearchParameter(
            name="category",
            type="token",
            documentation=f"`[{CATEGORY['system']}|]{CATEGORY['code']}` ({CATEGORY['display']}): every entry.",
            schema={"type": "string"},
            example=f"{CATEGORY['system']}|{CATEGORY['code']}",
            parse=DocumentParser.category,
        ),
        SearchParameter(
            name="status",
            type="token",
            documentation=f"One of {', '.join(f'`{s}`' for s in STATUSES)}; entries for studies found in an archive "
            f"are `{STATUS}`.",
            schema={"type": "string"},
            example=STATUS,
            parse=DocumentParser.status,
        ),
        SearchParameter(
            name="related",
            type="reference",
            documentation="The study's accession number (`context.related`), `[<system>|]<value>`, comma-separated.",
            schema={"type": "string"},
            example="RMC03391306",
            parse=DocumentParser.related,
            aliases=(
                QueryName(
                    name="related:identifier",
                    documentation="As `related`.",
                    schema={"type": "string"},
                    example="RMC03391306",
                ),
            ),
        ),
        SearchParameter(
            name="custodian",
            type="reference",
            documentation=f"The holding trust: `Organization/<ODS code>`, the bare ODS code, or "
            f"`{systems.ODS_ORGANIZATION_CODE}|<ODS code>` (the `:identifier` form). Comma-separated.",
            schema={"type": "string"},
            example="Organization/RMC",
            parse=DocumentParser.custodian,
            aliases=(
                QueryName(
                    name="custodian:identifier",
                    documentation="As `custodian`.",
                    schema={"type": "string"},
                    example=f"{systems.ODS_ORGANIZATION_CODE}|RMC",
                ),
            ),
        ),
        SearchParameter(
            name="format",
            type="token",
            documentation=f"`[<system>|]<format code>`: `{_KOS['code']}` ({_KOS['system']}) for a study, "
            f"`{FORMATS['text']['code']}` for an SR report, `{FORMATS['pdf']['code']}` for a PDF report "
            f"({FORMATS['pdf']['system']}).",
            schema={"type": "string"},
            example=_KOS["code"],
            parse=DocumentParser.format,
        ),
    ),
    elements=(
        "masterIdentifier",
        "identifier",
        "status",
        "docStatus",
        "type",
        "category",
        "subject",
        "date",
        "author",
        "authenticator",
        "custodian",
        "relatesTo",
        "description",
        "securityLabel",
        "content",
        "context",
    ),
    sort="date",
)


@dataclass
class ParsedDocumentQuery:
    search: DocumentSearch
    used: Pairs


def parse_document_search(
    pairs: Pairs, zone: tzinfo, known_modalities: frozenset[str], default_count: int, max_count: int
) -> ParsedDocumentQuery:
    """Validate a DocumentReference search; raises InvalidRequest (400) naming the parameter at fault."""
    parser = DocumentParser(zone, known_modalities)
    paging, used = DOCUMENT_REFERENCE.parse(parser, pairs, default_count, max_count)
    parser.studies.search.paging = paging
    search = replace(parser.search, study=parser.studies.search)
    return ParsedDocumentQuery(search, used)
