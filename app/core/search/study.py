"""The ImagingStudy search: its parameters, declared once (IMAGING_STUDY), and their parser. Pure.

Adding a parameter: a field of StudySearch, a method of StudyParser, an entry in IMAGING_STUDY;
then apply it in the federation (app/federation/search.py: `plan` or `_matches`). The
CapabilityStatement, the OpenAPI document, the strict unknown-parameter check, the self links and
the cursors follow from the entry.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import tzinfo

from app.core import dicom_json as dj
from app.core import systems
from app.core.errors import QUOTED_MAX, InvalidRequest, quote
from app.core.query import is_plain_key
from app.core.search.dates import DateFilter, DateValueError, parse_filter
from app.core.search.registry import Include, Paging, Pairs, QueryName, ResourceSearch, SearchParameter
from app.core.search.values import (
    Token,
    parse_token,
    patient_identifier,
    patient_reference,
    split_values,
    uid,
)

ACSN_TYPE = (systems.V2_0203, "ACSN")
STATUSES = ("registered", "available", "cancelled", "entered-in-error", "unknown")
_SNOMED_CODE = re.compile(r"^[0-9]{6,18}\Z")  # \Z: $ would also match before a final newline
_MODALITY = re.compile(r"^[A-Z0-9]{1,16}\Z")
_ID = re.compile(r"^[A-Za-z0-9\-.]{1,64}\Z")


@dataclass
class StudySearch:
    """An ImagingStudy search after validation. Empty tuples mean "not constrained"."""

    nhs_numbers: frozenset[str] | None = None  # None: no patient criterion
    study_uids: frozenset[str] | None = None
    accessions: tuple[Token, ...] = ()
    started: tuple[DateFilter, ...] = ()
    modalities: tuple[str, ...] = ()
    series_uids: tuple[str, ...] = ()
    instance_uids: tuple[str, ...] = ()
    dicom_classes: tuple[str, ...] = ()
    body_sites: tuple[Token, ...] = ()
    endpoint_ids: frozenset[str] | None = None
    statuses: tuple[str, ...] = ()
    matches_nothing: bool = False  # criteria found disjoint (a scope filter and the client's): ask nobody
    paging: Paging = field(default_factory=lambda: Paging())

    def values_by_parameter(self) -> list[Criterion]:
        """Each criterion the search carries, named by the parameter that sets it, with its distinct values
        (what the cost caps of app.federation.search count; result parameters are not criteria)."""
        found = [
            Criterion("patient", "NHS numbers (patient, subject)", len(self.nhs_numbers or ())),
            Criterion("_id", "study UIDs (_id, identifier)", len(self.study_uids or ())),
            Criterion("identifier", "accession numbers (identifier)", len({a.code for a in self.accessions})),
            Criterion("started", "dates (started)", len(self.started)),
            Criterion("modality", "modalities (modality)", len(set(self.modalities))),
            Criterion("series", "series UIDs (series)", len(set(self.series_uids))),
            Criterion("instance", "instance UIDs (instance)", len(set(self.instance_uids))),
            Criterion("dicom-class", "SOP classes (dicom-class)", len(set(self.dicom_classes))),
            Criterion("bodysite", "body sites (bodysite)", len(set(self.body_sites))),
            Criterion("endpoint", "endpoints (endpoint)", len(self.endpoint_ids or ())),
            Criterion("status", "statuses (status)", len(set(self.statuses))),
        ]
        return [c for c in found if c.values]


@dataclass(frozen=True)
class Criterion:
    """One criterion of a search: the parameter that sets it, what its values are, and how many."""

    parameter: str
    what: str
    values: int


@dataclass
class ParsedQuery:
    search: StudySearch
    used: Pairs  # the recognised parameters, canonical, for self/next links and cursors


class StudyParser:
    """Applies each recognised parameter to a StudySearch; one method per parameter family."""

    def __init__(self, zone: tzinfo, known_modalities: frozenset[str]) -> None:
        self.zone = zone
        self.known_modalities = known_modalities
        self.search = StudySearch()

    def _narrow_patients(self, values: set[str]) -> None:
        current = self.search.nhs_numbers
        self.search.nhs_numbers = frozenset(values if current is None else current & values)

    def _narrow_uids(self, values: set[str]) -> None:
        current = self.search.study_uids
        self.search.study_uids = frozenset(values if current is None else current & values)

    def patient(self, name: str, value: str) -> None:
        reader = patient_identifier if name.endswith("identifier") else patient_reference
        self._narrow_patients({reader(v, name) for v in split_values(value)})

    def identifier(self, name: str, value: str) -> None:
        uids: set[str] = set()
        accessions: list[Token] = []
        for raw in split_values(value):
            if name == "identifier:of-type":
                parts = raw.split("|")
                if len(parts) != 3 or (parts[0], parts[1]) != ACSN_TYPE:
                    raise InvalidRequest(f"{quote(raw)}: only {ACSN_TYPE[0]}|ACSN|<accession> is supported", name)
                accessions.append(Token(None, self._accession(parts[2], name)))
                continue
            token = parse_token(raw)
            # A bare value is a study UID only when it looks like one: dotted, or urn:oid:.
            looks_like_uid = token.code.startswith(systems.OID_PREFIX) or ("." in token.code and dj.is_uid(token.code))
            if token.system == systems.DICOM_UID or (token.system is None and looks_like_uid):
                uids.add(uid(token.code, name))
            else:
                accessions.append(Token(token.system, self._accession(token.code, name)))
        if uids and accessions:
            raise InvalidRequest("identifier: mix study UIDs and accession numbers in separate parameters", name)
        if uids:
            self._narrow_uids(uids)
        else:
            self.search.accessions += tuple(accessions)

    @staticmethod
    def _accession(code: str, name: str) -> str:
        if len(code) > 16 or not is_plain_key(code):
            raise InvalidRequest(
                f"{quote(code)} is not an accession number "
                "(at most 16 characters, no * ? \\ , % or control characters)",
                name,
            )
        return code

    def logical_id(self, name: str, value: str) -> None:
        self._narrow_uids({uid(v, name) for v in split_values(value)})

    def started(self, name: str, value: str) -> None:
        try:
            self.search.started += (parse_filter(value, self.zone),)
        except DateValueError as exc:
            # The date parser quotes the whole value; no date is that long, so a long one is named cut.
            problem = str(exc) if len(value) <= QUOTED_MAX else f"{quote(value)} is not a FHIR date or dateTime"
            raise InvalidRequest(problem, name) from None

    def modality(self, name: str, value: str) -> None:
        codes = []
        for token in map(parse_token, split_values(value)):
            if (
                token.system not in (None, systems.DCM)
                or not _MODALITY.match(token.code)
                or token.code not in self.known_modalities
            ):
                raise InvalidRequest(f"{quote(token.code)} is not a DICOM modality code ({systems.DCM})", name)
            codes.append(token.code)
        self.search.modalities = tuple(codes)

    def series(self, name: str, value: str) -> None:
        self.search.series_uids = tuple(uid(v, name) for v in split_values(value))

    def instance(self, name: str, value: str) -> None:
        self.search.instance_uids = tuple(uid(v, name) for v in split_values(value))

    def dicom_class(self, name: str, value: str) -> None:
        classes = []
        for token in map(parse_token, split_values(value)):
            if token.system not in (None, systems.URI):
                raise InvalidRequest(f"dicom-class system must be {systems.URI}", name)
            classes.append(uid(token.code, name))
        self.search.dicom_classes = tuple(classes)

    def bodysite(self, name: str, value: str) -> None:
        sites = []
        for token in map(parse_token, split_values(value)):
            if token.system not in (None, systems.SNOMED) or not _SNOMED_CODE.match(token.code):
                problem = f"{quote(token.code)} is not a SNOMED CT concept id ({systems.SNOMED})"
                raise InvalidRequest(problem, name)
            sites.append(token)
        self.search.body_sites = tuple(sites)

    def endpoint(self, name: str, value: str) -> None:
        ids = set()
        for raw in split_values(value):
            ref = raw.rsplit("/", 1)[-1]
            if not _ID.match(ref) or ("/" in raw and raw.rsplit("/", 2)[-2] != "Endpoint"):
                raise InvalidRequest(f"{quote(raw)} is not an Endpoint reference", name)
            ids.add(ref)
        self.search.endpoint_ids = frozenset(ids)

    def status(self, name: str, value: str) -> None:
        statuses = [t.code for t in map(parse_token, split_values(value))]
        if any(s not in STATUSES for s in statuses):
            raise InvalidRequest(f"status must be one of {', '.join(STATUSES)}", name)
        self.search.statuses = tuple(statuses)


# ------------------------------------------------------------------------------ the declarations

_UIDS = {"$ref": "#/components/schemas/UidList"}
_NHS = "[0-9]{10}"
_PATIENT_REFERENCE = QueryName(
    name="patient",
    documentation="`Patient/<NHS number>` or the bare NHS number, comma-separated.",
    schema={"type": "string", "pattern": f"^(Patient/)?{_NHS}(,(Patient/)?{_NHS})*$"},
    example="Patient/9992975962",
)


def _literal(text: str) -> str:
    """`text` as a pattern that matches it (re.escape also escapes "-": not an escape in ECMA 262 unicode mode)."""
    return re.sub(r"([.|?*+()\[\]{}^$\\])", r"\\\1", text)


_SYSTEM = _literal(systems.NHS_NUMBER)
_PATIENT_IDENTIFIER = QueryName(
    name="patient.identifier",
    documentation=f"`{systems.NHS_NUMBER}|<NHS number>` (system optional), comma-separated.",
    schema={"type": "string", "pattern": rf"^({_SYSTEM}\|)?{_NHS}(,({_SYSTEM}\|)?{_NHS})*$"},
    example=f"{systems.NHS_NUMBER}|9992975962",
)


def _patient_parameter(name: str, documentation: str) -> SearchParameter[StudyParser]:
    """patient and subject: a reference, and the chained and modified identifier forms."""
    return SearchParameter(
        name=name,
        type="reference",
        documentation=documentation,
        schema=_PATIENT_REFERENCE.schema,
        example=_PATIENT_REFERENCE.example,
        parse=StudyParser.patient,
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


IMAGING_STUDY: ResourceSearch[StudyParser] = ResourceSearch(
    type="ImagingStudy",
    parameters=(
        SearchParameter(
            name="_id",
            type="token",
            documentation="StudyInstanceUIDs, the logical ids (`urn:oid:` prefix allowed), comma-separated.",
            schema=_UIDS,
            example="2.25.7492698656716832304557205269405902835",
            parse=StudyParser.logical_id,
        ),
        SearchParameter(
            name="identifier",
            type="token",
            documentation=f"`{systems.DICOM_UID}|urn:oid:<StudyInstanceUID>`, a bare dotted UID, or an accession "
            "number as `[<system>|]<value>` (at most 16 characters, no `* ? \\ , %` or control characters). "
            "Comma-separated; UIDs and accessions go in separate parameters.",
            schema={"type": "string"},
            example=f"{systems.DICOM_UID}|urn:oid:2.25.7492698656716832304557205269405902835",
            parse=StudyParser.identifier,
            aliases=(
                QueryName(
                    name="identifier:of-type",
                    documentation=f"`{ACSN_TYPE[0]}|ACSN|<accession>`.",
                    schema={"type": "string", "pattern": rf"^{_literal(ACSN_TYPE[0])}\|ACSN\|[^|]+$"},
                    example=f"{ACSN_TYPE[0]}|ACSN|RMC03391306",
                ),
            ),
        ),
        _patient_parameter("patient", _PATIENT_REFERENCE.documentation),
        _patient_parameter("subject", "As `patient`: only Patient subjects."),
        SearchParameter(
            name="started",
            type="date",
            documentation="The study's date/time with an optional prefix (eq, ne, lt, le, gt, ge, sa, eb); partial "
            "dates; repeat for a range. Zone-less values are read in the configured time zone.",
            schema={"$ref": "#/components/schemas/DateSearchValue"},
            example=["ge2015-01-01", "lt2030-01-01"],
            repeated=True,
            parse=StudyParser.started,
        ),
        SearchParameter(
            name="modality",
            type="token",
            documentation=f"DICOM modality codes (`[{systems.DCM}|]CT`), comma-separated.",
            schema={"type": "string"},
            example="CT",
            parse=StudyParser.modality,
        ),
        SearchParameter(
            name="series",
            type="token",
            documentation="SeriesInstanceUIDs held by the study, comma-separated.",
            schema=_UIDS,
            example="2.25.109947854258270594202602255132433494957",
            parse=StudyParser.series,
        ),
        SearchParameter(
            name="instance",
            type="token",
            documentation="SOPInstanceUIDs held by the study, comma-separated.",
            schema=_UIDS,
            example="2.25.234405553998416918436261809104547925191",
            parse=StudyParser.instance,
        ),
        SearchParameter(
            name="dicom-class",
            type="token",
            documentation=f"SOP Class UIDs (`[{systems.URI}|][urn:oid:]<uid>`), comma-separated.",
            schema={"type": "string"},
            example="1.2.840.10008.5.1.4.1.1.2",
            parse=StudyParser.dicom_class,
        ),
        SearchParameter(
            name="bodysite",
            type="token",
            documentation=f"SNOMED CT body site of a series, PS3.16 Annex L (`[{systems.SNOMED}|]<concept id>`), "
            "comma-separated.",
            schema={"type": "string"},
            example=f"{systems.SNOMED}|416775004",
            parse=StudyParser.bodysite,
        ),
        SearchParameter(
            name="endpoint",
            type="reference",
            documentation="`Endpoint/<id>` or the bare id: only studies held by that trust archive.",
            schema={"type": "string"},
            example="Endpoint/bolton-wado-rs",
            parse=StudyParser.endpoint,
        ),
        SearchParameter(
            name="status",
            type="token",
            documentation=f"One of {', '.join(f'`{s}`' for s in STATUSES)}, comma-separated; studies found in an "
            "archive are `available`.",
            schema={"type": "string"},
            example="available",
            parse=StudyParser.status,
        ),
    ),
    elements=(
        "identifier",
        "status",
        "modality",
        "subject",
        "encounter",
        "started",
        "basedOn",
        "referrer",
        "interpreter",
        "endpoint",
        "numberOfSeries",
        "numberOfInstances",
        "procedureReference",
        "procedureCode",
        "location",
        "reasonCode",
        "reasonReference",
        "note",
        "description",
        "series",
    ),
    includes=(
        Include("ImagingStudy:endpoint", "Endpoint"),
        Include("ImagingStudy:patient", "Patient"),
        Include("ImagingStudy:subject", "Patient"),
    ),
    sort="started",
)


def parse_study_search(
    pairs: Pairs, zone: tzinfo, known_modalities: frozenset[str], default_count: int, max_count: int
) -> ParsedQuery:
    """Validate an ImagingStudy search; raises InvalidRequest (400) naming the parameter at fault."""
    parser = StudyParser(zone, known_modalities)
    paging, used = IMAGING_STUDY.parse(parser, pairs, default_count, max_count)
    parser.search.paging = paging
    return ParsedQuery(parser.search, used)
