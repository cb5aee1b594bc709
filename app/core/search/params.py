"""FHIR search parameters -> typed searches. Pure: every value is validated here, before any I/O.

Commas separate alternatives (OR); a repeated parameter narrows (AND). A value that could act as
a DICOM wildcard or list upstream is refused with 400 here, so that it never reaches an archive.
Unknown parameters are ignored (and left out of the self link) unless the client asked for
``Prefer: handling=strict``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import tzinfo

from app.core.dicom_json import UID_PATTERN
from app.core.errors import InvalidRequest
from app.core.identity import nhs_number_problem
from app.core.mapping.patient import NHS_NUMBER_SYSTEM
from app.core.query import is_plain_key
from app.core.search.dates import DateFilter, DateValueError, parse_filter

DCM_SYSTEM = "http://dicom.nema.org/resources/ontology/DCM"
DICOM_UID_SYSTEM = "urn:dicom:uid"
RFC3986 = "urn:ietf:rfc:3986"
SNOMED = "http://snomed.info/sct"
ACSN_TYPE = ("http://terminology.hl7.org/CodeSystem/v2-0203", "ACSN")
ODS_SYSTEM = "https://fhir.nhs.uk/Id/ods-organization-code"
_SNOMED_CODE = re.compile(r"^[0-9]{6,18}\Z")  # \Z: $ would also match before a final newline
_MODALITY = re.compile(r"^[A-Z0-9]{1,16}\Z")
_ID = re.compile(r"^[A-Za-z0-9\-.]{1,64}\Z")
COMMON = ("_count", "_format", "_pretty", "_summary", "_elements", "_sort", "_include", "_cursor")

Pairs = list[tuple[str, str]]


@dataclass(frozen=True)
class Token:
    system: str | None
    code: str


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
    paging: Paging = field(default_factory=lambda: Paging())


@dataclass
class Paging:
    """The result-shaping parameters every search type shares."""

    count: int = 50
    offset: int = 0
    summary_count: bool = False
    elements: tuple[str, ...] = ()
    sort_descending: bool = True
    includes: tuple[str, ...] = ()


@dataclass
class ParsedQuery:
    search: StudySearch
    used: Pairs  # the recognised parameters, canonical, for self/next links and cursors


def _split(value: str) -> list[str]:
    parts = [p.strip() for p in value.split(",")]
    if not all(parts):
        raise InvalidRequest(f"empty value in {value!r}")
    return parts


def _token(raw: str) -> Token:
    if "|" in raw:
        system, code = raw.split("|", 1)
        return Token(system or None, code)
    return Token(None, raw)


def _uid(raw: str, name: str) -> str:
    value = raw.removeprefix("urn:oid:")
    if len(value) > 64 or not UID_PATTERN.match(value):
        raise InvalidRequest(f"{raw!r} is not a DICOM UID", name)
    return value


def nhs_number(raw: str, name: str) -> str:
    problem = nhs_number_problem(raw)
    if problem:
        raise InvalidRequest(problem, name)
    return raw


def _patient_reference(raw: str, name: str) -> str:
    ref = raw.rsplit("/_history", 1)[0]
    parts = ref.split("/")
    if len(parts) >= 2:
        if parts[-2] != "Patient":
            raise InvalidRequest(f"{raw!r}: only Patient references are supported", name)
        ref = parts[-1]
    return nhs_number(ref, name)


def _patient_identifier(raw: str, name: str) -> str:
    token = _token(raw)
    if token.system not in (None, NHS_NUMBER_SYSTEM):
        raise InvalidRequest(f"{raw!r}: patients are identified by NHS number ({NHS_NUMBER_SYSTEM})", name)
    return nhs_number(token.code, name)


class _StudyParser:
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
        reader = _patient_identifier if name.endswith("identifier") else _patient_reference
        self._narrow_patients({reader(v, name) for v in _split(value)})

    def identifier(self, name: str, value: str) -> None:
        uids: set[str] = set()
        accessions: list[Token] = []
        for raw in _split(value):
            if name == "identifier:of-type":
                parts = raw.split("|")
                if len(parts) != 3 or (parts[0], parts[1]) != ACSN_TYPE:
                    raise InvalidRequest(f"{raw!r}: only {ACSN_TYPE[0]}|ACSN|<accession> is supported", name)
                accessions.append(Token(None, self._accession(parts[2], name)))
                continue
            token = _token(raw)
            # A bare value is a study UID only when it looks like one: dotted, or urn:oid:.
            looks_like_uid = token.code.startswith("urn:oid:") or ("." in token.code and UID_PATTERN.match(token.code))
            if token.system == DICOM_UID_SYSTEM or (token.system is None and looks_like_uid):
                uids.add(_uid(token.code, name))
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
                f"{code!r} is not an accession number (at most 16 characters, no * ? \\ , % or control characters)",
                name,
            )
        return code

    def _id(self, name: str, value: str) -> None:
        self._narrow_uids({_uid(v, name) for v in _split(value)})

    def started(self, name: str, value: str) -> None:
        try:
            self.search.started += (parse_filter(value, self.zone),)
        except DateValueError as exc:
            raise InvalidRequest(str(exc), name) from None

    def modality(self, name: str, value: str) -> None:
        codes = []
        for token in map(_token, _split(value)):
            if (
                token.system not in (None, DCM_SYSTEM)
                or not _MODALITY.match(token.code)
                or token.code not in self.known_modalities
            ):
                raise InvalidRequest(f"{token.code!r} is not a DICOM modality code ({DCM_SYSTEM})", name)
            codes.append(token.code)
        self.search.modalities = tuple(codes)

    def series(self, name: str, value: str) -> None:
        self.search.series_uids = tuple(_uid(v, name) for v in _split(value))

    def instance(self, name: str, value: str) -> None:
        self.search.instance_uids = tuple(_uid(v, name) for v in _split(value))

    def dicom_class(self, name: str, value: str) -> None:
        classes = []
        for token in map(_token, _split(value)):
            if token.system not in (None, RFC3986):
                raise InvalidRequest(f"dicom-class system must be {RFC3986}", name)
            classes.append(_uid(token.code, name))
        self.search.dicom_classes = tuple(classes)

    def bodysite(self, name: str, value: str) -> None:
        sites = []
        for token in map(_token, _split(value)):
            if token.system not in (None, SNOMED) or not _SNOMED_CODE.match(token.code):
                raise InvalidRequest(f"{token.code!r} is not a SNOMED CT concept id ({SNOMED})", name)
            sites.append(token)
        self.search.body_sites = tuple(sites)

    def endpoint(self, name: str, value: str) -> None:
        ids = set()
        for raw in _split(value):
            ref = raw.rsplit("/", 1)[-1]
            if not _ID.match(ref) or ("/" in raw and raw.rsplit("/", 2)[-2] != "Endpoint"):
                raise InvalidRequest(f"{raw!r} is not an Endpoint reference", name)
            ids.add(ref)
        self.search.endpoint_ids = frozenset(ids)

    def status(self, name: str, value: str) -> None:
        allowed = ("registered", "available", "cancelled", "entered-in-error", "unknown")
        statuses = [t.code for t in map(_token, _split(value))]
        if any(s not in allowed for s in statuses):
            raise InvalidRequest(f"status must be one of {', '.join(allowed)}", name)
        self.search.statuses = tuple(statuses)


STUDY_PARAMETERS: dict[str, Callable[[_StudyParser, str, str], None]] = {
    "_id": _StudyParser._id,
    "patient": _StudyParser.patient,
    "subject": _StudyParser.patient,
    "patient.identifier": _StudyParser.patient,
    "patient:identifier": _StudyParser.patient,
    "subject.identifier": _StudyParser.patient,
    "subject:identifier": _StudyParser.patient,
    "identifier": _StudyParser.identifier,
    "identifier:of-type": _StudyParser.identifier,
    "started": _StudyParser.started,
    "modality": _StudyParser.modality,
    "series": _StudyParser.series,
    "instance": _StudyParser.instance,
    "dicom-class": _StudyParser.dicom_class,
    "bodysite": _StudyParser.bodysite,
    "endpoint": _StudyParser.endpoint,
    "status": _StudyParser.status,
}

STUDY_ELEMENTS = frozenset(
    (
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
    )
)


def parse_paging(
    pairs: Pairs, default_count: int, max_count: int, includes: frozenset[str], elements: frozenset[str], sortable: bool
) -> tuple[Paging, Pairs]:
    """The shared result parameters; returns them with their canonical pairs."""
    paging = Paging(count=default_count)
    used: Pairs = []
    for name, value in pairs:
        if name == "_count":
            if not (value.isascii() and value.isdigit()):  # str.isdigit() alone accepts "²", which int() refuses
                raise InvalidRequest(f"_count must be a non-negative integer, not {value!r}", name)
            paging.count = min(int(value), max_count)
            paging.summary_count = paging.summary_count or paging.count == 0
            used.append((name, str(paging.count)))
        elif name == "_summary":
            if value not in ("count", "false"):
                raise InvalidRequest("_summary supports 'count' and 'false'", name)
            paging.summary_count = paging.summary_count or value == "count"
            used.append((name, value))
        elif name == "_elements":
            wanted = tuple(_split(value))
            unknown = [e for e in wanted if e not in elements]
            if unknown:
                raise InvalidRequest(f"_elements: unknown element(s) {', '.join(unknown)}", name)
            paging.elements = wanted
            used.append((name, ",".join(wanted)))
        elif name == "_sort" and sortable:
            if value not in ("started", "-started"):
                raise InvalidRequest("_sort supports 'started' and '-started'", name)
            paging.sort_descending = value.startswith("-")
            used.append((name, value))
        elif name == "_include":
            if value not in includes:
                raise InvalidRequest(f"_include supports {', '.join(sorted(includes)) or 'nothing here'}", name)
            paging.includes += (value,)
            used.append((name, value))
    return paging, used


def unknown_parameters(pairs: Pairs, known: set[str]) -> list[str]:
    return sorted({n for n, _ in pairs if n not in known and n not in COMMON})


def parse_study_search(
    pairs: Pairs, zone: tzinfo, known_modalities: frozenset[str], default_count: int, max_count: int
) -> ParsedQuery:
    """Validate an ImagingStudy search; raises InvalidRequest (400) naming the parameter at fault."""
    parser = _StudyParser(zone, known_modalities)
    used: Pairs = []
    for name, value in pairs:
        handler = STUDY_PARAMETERS.get(name)
        if handler is None:
            continue
        if not value:
            raise InvalidRequest(f"parameter {name} has an empty value", name)
        handler(parser, name, value)
        used.append((name, value))
    paging, paging_used = parse_paging(
        pairs,
        default_count,
        max_count,
        frozenset({"ImagingStudy:endpoint", "ImagingStudy:subject", "ImagingStudy:patient"}),
        STUDY_ELEMENTS,
        sortable=True,
    )
    parser.search.paging = paging
    return ParsedQuery(parser.search, sorted(used + paging_used))
