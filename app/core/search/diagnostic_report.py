"""The DiagnosticReport search: its parameters, declared once (DIAGNOSTIC_REPORT), and their parser. Pure.

Reports are read from the report objects (SR, encapsulated PDF) of the studies a study search finds, so the
patient, date, accession and study criteria become criteria of that study search; the rest are checked on the
built reports. R4 has no search parameter for DiagnosticReport.imagingStudy: `imaging-study` is this server's
own, published with its definition (IMAGING_STUDY_PARAMETER) in the CapabilityStatement.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import tzinfo
from typing import Any

from app.core import systems
from app.core.errors import InvalidRequest, quote
from app.core.mapping.document_reference import parse_document_id
from app.core.search.document_reference import _patient_parameter as _document_patient_parameter
from app.core.search.document_reference import code_tokens
from app.core.search.registry import Include, Pairs, QueryName, ResourceSearch, SearchParameter
from app.core.search.study import StudyParser, StudySearch
from app.core.search.values import Token, parse_token, split_values, uid

STATUSES = ("registered", "partial", "preliminary", "final", "amended", "corrected", "appended", "cancelled")
IMAGING_STUDY_PARAMETER_PATH = "SearchParameter/DiagnosticReport-imaging-study"  # under the base URL


@dataclass
class ReportSearch:
    """A DiagnosticReport search after validation. Empty tuples mean "not constrained"."""

    study: StudySearch = field(default_factory=StudySearch)
    ids: frozenset[tuple[str, str]] | None = None  # (ODS code, SOPInstanceUID)
    report_uids: frozenset[str] | None = None  # identifier: SOPInstanceUIDs
    categories: tuple[tuple[Token, ...], ...] = ()
    codes: tuple[tuple[Token, ...], ...] = ()
    statuses: tuple[tuple[str, ...], ...] = ()


class ReportParser:
    def __init__(self, zone: tzinfo, known_modalities: frozenset[str]) -> None:
        self.studies = StudyParser(zone, known_modalities)
        self.search = ReportSearch(study=self.studies.search)

    def logical_id(self, name: str, value: str) -> None:
        found = set()
        for raw in split_values(value):
            parsed = parse_document_id(raw)
            if parsed is None:
                raise InvalidRequest(f"{quote(raw)} is not the id of a DiagnosticReport of this server", name)
            found.add(parsed)
        current = self.search.ids
        self.search.ids = frozenset(found if current is None else current & found)
        self.studies.search.instance_uids += tuple(sorted({u for _, u in found}))

    def patient(self, name: str, value: str) -> None:
        self.studies.patient(name, value)

    def date(self, name: str, value: str) -> None:
        self.studies.started(name, value)

    def identifier(self, name: str, value: str) -> None:
        found = set()
        for raw in split_values(value):
            token = parse_token(raw)
            if token.system not in (None, systems.DICOM_UID):
                raise InvalidRequest(f"report identifiers are SOPInstanceUIDs ({systems.DICOM_UID})", name)
            found.add(uid(token.code, name))
        current = self.search.report_uids
        self.search.report_uids = frozenset(found if current is None else current & found)
        self.studies.search.instance_uids += tuple(sorted(found))

    def based_on(self, name: str, value: str) -> None:
        accessions = []
        for raw in split_values(value):
            token = parse_token(raw)
            accessions.append(Token(token.system, self.studies._accession(token.code, name)))
        self.studies.search.accessions += tuple(accessions)

    def imaging_study(self, name: str, value: str) -> None:
        uids = set()
        for raw in split_values(value):
            ref = raw.rsplit("/_history", 1)[0]
            parts = ref.split("/")
            if len(parts) >= 2 and parts[-2] != "ImagingStudy":
                raise InvalidRequest(f"{quote(raw)} is not an ImagingStudy reference", name)
            uids.add(uid(parts[-1], name))
        self.studies._narrow_uids(uids)

    def category(self, name: str, value: str) -> None:
        self.search.categories += (code_tokens(name, value),)

    def code(self, name: str, value: str) -> None:
        self.search.codes += (code_tokens(name, value),)

    def status(self, name: str, value: str) -> None:
        statuses = tuple(t.code for t in map(parse_token, split_values(value)))
        if any(s not in STATUSES for s in statuses):
            raise InvalidRequest(f"status must be one of {', '.join(STATUSES)}", name)
        self.search.statuses += (statuses,)


def _patient(name: str, documentation: str) -> SearchParameter[ReportParser]:
    found = _document_patient_parameter(name, documentation)
    return SearchParameter(
        name=found.name,
        type=found.type,
        documentation=found.documentation,
        schema=found.schema,
        example=found.example,
        parse=ReportParser.patient,
        aliases=found.aliases,
    )


DIAGNOSTIC_REPORT: ResourceSearch[ReportParser] = ResourceSearch(
    type="DiagnosticReport",
    parameters=(
        SearchParameter(
            name="_id",
            type="token",
            documentation="DiagnosticReport ids (`<ODS code>-<SOPInstanceUID>` of the report object), comma-separated.",
            schema={"type": "string"},
            example="RMC-2.25.1",
            parse=ReportParser.logical_id,
        ),
        _patient("patient", "`Patient/<NHS number>` or the bare NHS number, comma-separated."),
        _patient("subject", "As `patient`: only Patient subjects."),
        SearchParameter(
            name="date",
            type="date",
            documentation="The examination's date (`effectiveDateTime`), with an optional prefix; repeat for a range.",
            schema={"$ref": "#/components/schemas/DateSearchValue"},
            example=["ge2015-01-01", "lt2030-01-01"],
            repeated=True,
            parse=ReportParser.date,
        ),
        SearchParameter(
            name="category",
            type="token",
            documentation=f"`[{systems.DIAGNOSTIC_SERVICE_SECTION}|]RAD` (every report), or a DICOM modality "
            f"(`{systems.DCM}|<code>`) of the study, comma-separated.",
            schema={"type": "string"},
            example="RAD",
            parse=ReportParser.category,
        ),
        SearchParameter(
            name="code",
            type="token",
            documentation="The procedure (`code`), `[<system>|]<code>`, comma-separated.",
            schema={"type": "string"},
            example=f"{systems.LOINC}|18748-4",
            parse=ReportParser.code,
        ),
        SearchParameter(
            name="identifier",
            type="token",
            documentation=f"The report object's SOPInstanceUID: `{systems.DICOM_UID}|urn:oid:<uid>` or the bare UID, "
            "comma-separated.",
            schema={"type": "string"},
            example=f"{systems.DICOM_UID}|urn:oid:2.25.1",
            parse=ReportParser.identifier,
        ),
        SearchParameter(
            name="based-on",
            type="reference",
            documentation="The study's accession number (`basedOn.identifier`), `[<system>|]<value>`, comma-separated.",
            schema={"type": "string"},
            example="RMC03391306",
            parse=ReportParser.based_on,
            aliases=(
                QueryName(
                    name="based-on:identifier",
                    documentation="As `based-on`.",
                    schema={"type": "string"},
                    example="RMC03391306",
                ),
            ),
        ),
        SearchParameter(
            name="status",
            type="token",
            documentation=f"One of {', '.join(f'`{s}`' for s in STATUSES)}, comma-separated.",
            schema={"type": "string"},
            example="final",
            parse=ReportParser.status,
        ),
        SearchParameter(
            name="imaging-study",
            type="reference",
            documentation=f"`ImagingStudy/<StudyInstanceUID>` or the bare UID: the reports of a study "
            f"(`DiagnosticReport.imagingStudy`; this server's SearchParameter `{IMAGING_STUDY_PARAMETER_PATH}`, "
            "defined in the CapabilityStatement).",
            schema={"type": "string"},
            example="ImagingStudy/2.25.7492698656716832304557205269405902835",
            parse=ReportParser.imaging_study,
        ),
    ),
    elements=(
        "identifier",
        "basedOn",
        "status",
        "category",
        "code",
        "subject",
        "encounter",
        "effective",
        "issued",
        "performer",
        "resultsInterpreter",
        "specimen",
        "result",
        "imagingStudy",
        "media",
        "conclusion",
        "conclusionCode",
        "presentedForm",
    ),
    includes=(Include("DiagnosticReport:imaging-study", "ImagingStudy"),),
    sort="date",
)


def imaging_study_search_parameter(base_url: str) -> dict[str, Any]:
    """The definition of `imaging-study` (R4 has none for DiagnosticReport.imagingStudy), as a SearchParameter."""
    return {
        "resourceType": "SearchParameter",
        "id": "DiagnosticReport-imaging-study",
        "url": f"{base_url}/{IMAGING_STUDY_PARAMETER_PATH}",
        "name": "imaging-study",
        "status": "active",
        "description": "The ImagingStudy a DiagnosticReport reports on (DiagnosticReport.imagingStudy).",
        "code": "imaging-study",
        "base": ["DiagnosticReport"],
        "type": "reference",
        "expression": "DiagnosticReport.imagingStudy",
        "xpathUsage": "normal",
        "target": ["ImagingStudy"],
    }


@dataclass
class ParsedReportQuery:
    search: ReportSearch
    used: Pairs


def parse_report_search(
    pairs: Pairs, zone: tzinfo, known_modalities: frozenset[str], default_count: int, max_count: int
) -> ParsedReportQuery:
    parser = ReportParser(zone, known_modalities)
    paging, used = DIAGNOSTIC_REPORT.parse(parser, pairs, default_count, max_count)
    parser.studies.search.paging = paging
    return ParsedReportQuery(replace(parser.search, study=parser.studies.search), used)
