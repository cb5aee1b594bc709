"""The search-parameter registry (app/core/search): one declaration per type, and what is derived from it.

The parsers are checked on their own here (pure: no app); that the views read exactly the registry's
names is checked over HTTP in tests/test_openapi.py, and the CapabilityStatement and the OpenAPI
document there too. The README's API table must list exactly the registry's parameters.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from app.core.errors import InvalidRequest
from app.core.search.audit import AUDIT_EVENT, parse_audit_search
from app.core.search.registry import COMMON, QueryName, ResourceSearch, SearchParameter
from app.core.search.resources import (
    ENDPOINT,
    ORGANIZATION,
    PATIENT,
    SEARCHES,
    parse_directory_search,
    parse_patient_search,
)
from app.core.search.study import IMAGING_STUDY, ParsedQuery, parse_study_search

ROOT = Path(__file__).resolve().parents[2]
LONDON = ZoneInfo("Europe/London")
NHS, OTHER_NHS = "9992975962", "9434765919"
MODALITIES = frozenset({"CT", "MR", "US"})


def refused(call: Any, *args: Any) -> InvalidRequest:
    with pytest.raises(InvalidRequest) as caught:
        call(*args)
    return caught.value


def study(pairs: list[tuple[str, str]]) -> ParsedQuery:
    return parse_study_search(pairs, LONDON, MODALITIES, 50, 100)


# -------------------------------------------------------------------------------- the declarations


def test_every_searchable_type_is_registered_under_its_name() -> None:
    assert set(SEARCHES) == {
        "ImagingStudy",
        "Patient",
        "Endpoint",
        "Organization",
        "AuditEvent",
        "DocumentReference",
        "DiagnosticReport",
    }
    assert all(search.type == name for name, search in SEARCHES.items())
    assert SEARCHES["ImagingStudy"] is IMAGING_STUDY and SEARCHES["AuditEvent"] is AUDIT_EVENT


def test_a_query_name_declared_twice_or_shadowing_a_result_parameter_is_refused() -> None:
    def parameter(name: str, *aliases: str) -> SearchParameter[object]:
        return SearchParameter(
            name=name,
            type="token",
            documentation="",
            schema={},
            parse=lambda state, n, v: None,
            aliases=tuple(QueryName(name=a, documentation="", schema={}) for a in aliases),
        )

    with pytest.raises(ValueError, match="patient"):
        ResourceSearch(type="X", parameters=(parameter("patient"), parameter("patient")))
    with pytest.raises(ValueError, match=r"a\.b"):
        ResourceSearch(type="X", parameters=(parameter("a", "a.b"), parameter("a.b")))
    with pytest.raises(ValueError, match="_count"):
        ResourceSearch(type="X", parameters=(parameter("_count"),))


def test_the_imaging_study_names_are_the_parameters_and_their_modifiers_and_chains() -> None:
    assert IMAGING_STUDY.known == {
        "_id",
        "identifier",
        "identifier:of-type",
        "patient",
        "patient.identifier",
        "patient:identifier",
        "subject",
        "subject.identifier",
        "subject:identifier",
        "started",
        "modality",
        "series",
        "instance",
        "dicom-class",
        "bodysite",
        "endpoint",
        "status",
    }
    subject = IMAGING_STUDY.parameter("subject:identifier")
    assert subject is not None
    assert subject.name == "subject"
    assert IMAGING_STUDY.parameter("nope") is None
    assert IMAGING_STUDY.include_targets == {
        "ImagingStudy:endpoint": "Endpoint",
        "ImagingStudy:patient": "Patient",
        "ImagingStudy:subject": "Patient",
    }
    assert PATIENT.known == {"_id", "identifier"}
    assert ENDPOINT.known == {"_id", "organization", "connection-type", "status", "name"}
    assert ORGANIZATION.known == {"_id", "identifier", "name"}
    assert AUDIT_EVENT.known == {"patient", "date", "agent"}


def test_the_result_parameters_each_type_offers() -> None:
    offered = {name: [r.name for r in search.result_parameters()] for name, search in SEARCHES.items()}
    assert offered == {
        "ImagingStudy": ["_count", "_summary", "_elements", "_sort", "_include", "_cursor"],
        "Patient": ["_count", "_summary", "_elements", "_cursor"],
        "Endpoint": ["_count", "_summary", "_elements", "_cursor"],
        "Organization": ["_count", "_summary", "_elements", "_cursor"],
        "AuditEvent": ["_count", "_summary", "_elements", "_cursor"],
        "DocumentReference": ["_count", "_summary", "_elements", "_sort", "_cursor"],
        "DiagnosticReport": ["_count", "_summary", "_elements", "_sort", "_include", "_cursor"],
    }
    assert all(r.name in COMMON for s in SEARCHES.values() for r in s.result_parameters())
    sort = next(r for r in IMAGING_STUDY.result_parameters() if r.name == "_sort")
    assert sort.schema["enum"] == ["started", "-started"]


def _examples(search: ResourceSearch[Any]) -> list[tuple[str, str]]:
    pairs = []
    for parameter in search.parameters:
        for query in parameter.query_names:
            values = query.example if isinstance(query.example, list) else [query.example]
            assert values and all(isinstance(v, str) and v for v in values), f"{search.type} {query.name}"
            pairs += [(query.name, v) for v in values]
    return pairs


def test_every_documented_example_is_accepted_by_its_own_parser() -> None:
    parsed = study(_examples(IMAGING_STUDY))
    assert {name for name, _ in parsed.used} == IMAGING_STUDY.known
    assert parse_patient_search(_examples(PATIENT), 50, 100).query.nhs_numbers == frozenset({NHS})
    for directory in (ENDPOINT, ORGANIZATION):
        assert {n for n, _ in parse_directory_search(directory.type, _examples(directory), 50, 100).used} == (
            directory.known
        )
    assert {n for n, _ in parse_audit_search(_examples(AUDIT_EVENT), LONDON, 50, 100).used} == AUDIT_EVENT.known


def test_unknown_names_are_neither_parameters_nor_result_parameters() -> None:
    pairs = [("foo", "1"), ("patient.identifier", NHS), ("_sort", "x"), ("_format", "json"), ("bar", "")]
    assert IMAGING_STUDY.unknown(pairs) == ["bar", "foo"]
    assert AUDIT_EVENT.unknown([("patient", NHS), ("subject", NHS)]) == ["subject"]


# ---------------------------------------------------------------------------------- ImagingStudy


def test_the_study_search_keeps_its_canonical_pairs_and_criteria() -> None:
    parsed = study(
        [
            ("subject:identifier", f"https://fhir.nhs.uk/Id/nhs-number|{NHS}"),
            ("patient", f"Patient/{NHS},{OTHER_NHS}"),
            ("modality", "CT,MR"),
            ("_count", "500"),
            ("_sort", "started"),
            ("_include", "ImagingStudy:endpoint"),
            ("foo", "bar"),
        ]
    )
    assert parsed.search.nhs_numbers == frozenset({NHS})
    assert parsed.search.modalities == ("CT", "MR")
    assert parsed.search.paging.count == 100 and not parsed.search.paging.sort_descending
    assert parsed.search.paging.includes == ("ImagingStudy:endpoint",)
    assert parsed.used == [
        ("_count", "100"),
        ("_include", "ImagingStudy:endpoint"),
        ("_sort", "started"),
        ("modality", "CT,MR"),
        ("patient", f"Patient/{NHS},{OTHER_NHS}"),
        ("subject:identifier", f"https://fhir.nhs.uk/Id/nhs-number|{NHS}"),
    ]


@pytest.mark.parametrize(
    ("pairs", "diagnostics", "expression"),
    [
        ([("status", "")], "parameter status has an empty value", "status"),
        (
            [("identifier", "1.2.3,ACC1")],
            "identifier: mix study UIDs and accession numbers in separate parameters",
            "identifier",
        ),
        (
            [("identifier:of-type", "a|b")],
            "'a|b': only http://terminology.hl7.org/CodeSystem/v2-0203|ACSN|<accession> is supported",
            "identifier:of-type",
        ),
        (
            [("status", "bogus")],
            "status must be one of registered, available, cancelled, entered-in-error, unknown",
            "status",
        ),
        (
            [("modality", "ZZ")],
            "'ZZ' is not a DICOM modality code (http://dicom.nema.org/resources/ontology/DCM)",
            "modality",
        ),
        ([("subject", "Practitioner/1")], "'Practitioner/1': only Patient references are supported", "subject"),
        ([("patient", "9992975962,")], "empty value in '9992975962,'", None),
        ([("_sort", "date")], "_sort supports 'started' and '-started'", "_sort"),
        (
            [("_include", "ImagingStudy:x")],
            "_include supports ImagingStudy:endpoint, ImagingStudy:patient, ImagingStudy:subject",
            "_include",
        ),
        ([("_elements", "identifier,nope")], "_elements: unknown element(s) nope", "_elements"),
    ],
)
def test_the_study_search_refuses_with_the_same_messages(
    pairs: list[tuple[str, str]], diagnostics: str, expression: str | None
) -> None:
    error = refused(study, pairs)
    assert (error.diagnostics, error.expression) == (diagnostics, expression)


def test_the_study_search_counts_the_distinct_values_of_each_criterion() -> None:
    """What the cost caps count (app/federation/search.py, S1): values after repeats are combined, each
    criterion under the parameter that sets it; result parameters are no criteria, however long."""
    parsed = study(
        [
            ("patient", f"{NHS},{OTHER_NHS}"),
            ("subject", NHS),  # a repeat narrows: one patient is left
            ("identifier", "2.25.1,2.25.2,urn:oid:2.25.2"),
            ("modality", "CT,MR,CT"),
            ("started", "ge2020"),
            ("started", "lt2030"),
            ("series", "2.25.3,2.25.4"),
            ("_elements", ",".join(["identifier"] * 25)),
            ("_include", "ImagingStudy:endpoint"),
            ("_sort", "started"),
        ]
    )
    counted = [(c.parameter, c.values) for c in parsed.search.values_by_parameter()]
    assert counted == [("patient", 1), ("_id", 2), ("started", 2), ("modality", 2), ("series", 2)]
    assert [c.what for c in parsed.search.values_by_parameter()][:2] == [
        "NHS numbers (patient, subject)",
        "study UIDs (_id, identifier)",
    ]


# ---------------------------------------------------------------------- Patient, directories, audit


def test_the_patient_search_narrows_by_nhs_number() -> None:
    parsed = parse_patient_search(
        [
            ("_id", f"{NHS},{OTHER_NHS}"),
            ("identifier", f"https://fhir.nhs.uk/Id/nhs-number|{NHS}"),
            ("_elements", "name"),
        ],
        10,
        100,
    )
    assert parsed.query.nhs_numbers == frozenset({NHS})
    assert parsed.paging.count == 10 and parsed.paging.elements == ("name",)
    assert parse_patient_search([("_count", "5")], 10, 100).query.nhs_numbers is None
    error = refused(parse_patient_search, [("identifier", f"other|{NHS}")], 10, 100)
    assert (error.diagnostics, error.expression) == (
        "patients are identified by NHS number (https://fhir.nhs.uk/Id/nhs-number)",
        "identifier",
    )
    assert refused(parse_patient_search, [("_id", "9434765918")], 10, 100).expression == "_id"
    assert refused(parse_patient_search, [("_elements", "status")], 10, 100).expression == "_elements"
    assert refused(parse_patient_search, [("_include", "ImagingStudy:patient")], 10, 100).expression == "_include"


ENDPOINTS = [
    {
        "id": f"{trust}-{kind}",
        "name": f"{trust.title()} {kind}",
        "status": "active",
        "managingOrganization": {"reference": f"Organization/{ods}"},
        "connectionType": {"system": "http://terminology.hl7.org/CodeSystem/endpoint-connection-type", "code": code},
    }
    for trust, ods in (("bolton", "RMC"), ("salford", "RM3"))
    for kind, code in (("wado-rs", "dicom-wado-rs"), ("ihe-iid", "ihe-iid"))
]


def test_the_directory_searches_filter_the_directory() -> None:
    def ids(pairs: list[tuple[str, str]]) -> list[str]:
        return [r["id"] for r in parse_directory_search("Endpoint", pairs, 50, 100).query.select(ENDPOINTS)]

    assert ids([]) == [e["id"] for e in ENDPOINTS]
    assert ids([("organization", "RMC")]) == ["bolton-wado-rs", "bolton-ihe-iid"]
    assert ids([("organization", "Organization/RMC,RM3"), ("connection-type", "ihe-iid")]) == [
        "bolton-ihe-iid",
        "salford-ihe-iid",
    ]
    assert ids([("connection-type", "other|ihe-iid")]) == []
    assert ids([("name", "SAL"), ("_id", "salford-wado-rs,bolton-wado-rs")]) == ["salford-wado-rs"]
    assert ids([("status", "off")]) == []
    assert ids([("_elements", "name")]) == ids([])  # C2: any root element may be asked for
    assert refused(ids, [("_elements", "nonsense")]).expression == "_elements"
    assert refused(ids, [("name", "")]).expression == "name"
    organizations = [
        {
            "id": "RMC",
            "name": "Bolton",
            "identifier": [{"system": "https://fhir.nhs.uk/Id/ods-organization-code", "value": "RMC"}],
        }
    ]
    found = parse_directory_search(
        "Organization", [("identifier", "https://fhir.nhs.uk/Id/ods-organization-code|RMC")], 50, 100
    )
    assert found.query.select(organizations) == organizations
    assert parse_directory_search("Organization", [("identifier", "x|RMC")], 50, 100).query.select(organizations) == []


def test_the_audit_search_gives_the_store_criteria() -> None:
    parsed = parse_audit_search(
        [("patient", f"Patient/{NHS}"), ("agent", "client:portal"), ("date", "eq2020-06-01"), ("_count", "5")],
        LONDON,
        50,
        100,
    )
    assert parsed.query.store_criteria() == {
        "patient": NHS,
        "client_id": "portal",
        "since": "2020-05-31T23:00:00.000Z",  # London is UTC+1 in June
        "until": "2020-06-01T23:00:00.000Z",
    }
    assert parsed.paging.count == 5
    assert parse_audit_search([("date", "gt2020")], LONDON, 50, 100).query.store_criteria() == {
        "since": "2021-01-01T00:00:00.000Z"
    }
    assert parse_audit_search([("agent", "")], LONDON, 50, 100).query.client_id == ""  # kept from before the registry
    error = refused(parse_audit_search, [("date", "ne2020")], LONDON, 50, 100)
    assert (error.diagnostics, error.expression) == ("date: the ne prefix is not supported for AuditEvent", "date")


# ------------------------------------------------------------------------------------- the README


def _api_table() -> dict[str, str]:
    """README.md's API table: resource type -> its search-parameter cell."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("\n## The API\n", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| ") and not line.startswith("| resource ")]
    cells = [[c.strip() for c in re.split(r"(?<!\\)\|", row)[1:-1]] for row in rows]
    assert all(len(c) == 3 for c in cells), cells
    return {c[0]: c[2] for c in cells}


def _names(cell: str) -> list[str]:
    return [t.replace("\\|", "|") for t in re.findall(r"`([^`]+)`", cell)]


@pytest.mark.parametrize("resource_type", sorted(SEARCHES))
def test_the_readme_lists_exactly_the_registry_parameters(resource_type: str) -> None:
    """The cell: every query name in declaration order, `;`, then the result parameters offered (values
    after `=` are among those accepted; `_sort` and `_include` list all of them)."""
    search = SEARCHES[resource_type]
    table = _api_table()
    assert resource_type in table, f"README.md's API table has no {resource_type} row"
    criteria, _, results = table[resource_type].partition("; ")
    assert _names(criteria) == [n for parameter in search.parameters for n in parameter.names]
    listed = dict(token.partition("=")[::2] for token in _names(results))
    offered = {r.name: r for r in search.result_parameters() if r.name != "_cursor"}
    assert list(listed) == list(offered)
    for name, values in listed.items():
        if values:
            schema = offered[name].schema
            assert set(values.split("|")) <= set(schema["enum"]), name
            if name in ("_sort", "_include"):
                assert values.split("|") == list(schema["enum"]), name


@pytest.mark.parametrize(
    ("pairs", "diagnostics"),
    [
        ([("bodysite", "chest")], "'chest' is not a SNOMED CT concept id (http://snomed.info/sct)"),
        ([("modality", "XX")], "'XX' is not a DICOM modality code (http://dicom.nema.org/resources/ontology/DCM)"),
        ([("dicom-class", "http://x|1.2")], "dicom-class system must be urn:ietf:rfc:3986"),
    ],
)
def test_the_study_search_names_the_code_system_a_value_must_come_from(
    pairs: list[tuple[str, str]], diagnostics: str
) -> None:
    assert refused(study, pairs).diagnostics == diagnostics
