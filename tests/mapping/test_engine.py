"""DICOM JSON -> FHIR R4 ImagingStudy through the real table (mappings/imagingstudy.yaml) and engine.

One test (or table of cases) per row of docs/mapping-reference.md, every specialty's modality and
Storage SOP Class, odd data as archives send it, and pydicom's to_json_dict() as an input.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest
from pydicom import uid as sop
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset as PydicomDataset
from pydicom.sr.codedict import codes
from pydicom.tag import Tag

from app.core import systems
from app.core.mapping.context import TrustMapping
from app.core.mapping.engine import StudyMapper
from app.core.mapping.patient import subject_reference
from tests.mapping.dicom_builders import (
    EMPTY,
    INSTANCE_UID,
    NHS_NUMBER,
    SERIES_UID,
    STUDY_UID,
    code_item,
    dataset,
    element,
    instance,
    series,
    study,
)
from tests.mapping.fhir import validate_resource

Dataset = dict[str, Any]

DCM = "http://dicom.nema.org/resources/ontology/DCM"
SNOMED = "http://snomed.info/sct"
LOINC = "http://loinc.org"
RFC3986 = "urn:ietf:rfc:3986"
ACSN = {
    "coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "ACSN", "display": "Accession ID"}]
}
LOCAL_SYSTEM = "https://fhir.nhs.uk/R0A/Id/local-patient-identifier"
KEPT_AS_TEXT = ("information", "warning")  # a local code is kept (as text), so not necessarily a warning
SUBJECT = subject_reference(NHS_NUMBER, study(), LOCAL_SYSTEM)
CID33 = {getattr(codes.CID33, name).value: getattr(codes.CID33, name).meaning for name in codes.CID33.dir()}


def dcm(modality: str) -> dict[str, str]:
    """The expected modality Coding, its display from pydicom's copy of CID 33 (not from our table)."""
    return {"system": DCM, "code": modality, "display": CID33[modality]}


Mapped = tuple[dict[str, Any] | None, list[dict[str, Any]]]
Run = Callable[..., Mapped]


@pytest.fixture
def run(mapper: StudyMapper, trust: TrustMapping) -> Run:
    """Map a study (default: one CT series, instances not fetched); the result must be valid FHIR R4."""

    def run(
        study_ds: Dataset,
        series_list: Sequence[Dataset] | None = None,
        instances: Mapping[str, Sequence[Dataset]] | None = None,
    ) -> Mapped:
        issues: list[dict[str, Any]] = []
        resource = mapper.map_study(
            study_ds, [series()] if series_list is None else list(series_list), instances, trust, SUBJECT, issues
        )
        if resource is not None:
            validate_resource(resource)
        if issues:
            validate_resource({"resourceType": "OperationOutcome", "issue": issues})
        return resource, issues

    return run


def issue_for(
    issues: list[dict[str, Any]], expression: str, *words: str, severities: tuple[str, ...] = ("warning",)
) -> dict[str, Any]:
    """The reported issue on `expression` whose diagnostics name every word (data left out: a warning)."""
    for issue in issues:
        if issue.get("expression") == [expression] and all(w in issue["diagnostics"] for w in words):
            assert issue["severity"] in severities and issue["code"] == "value", issue
            return issue
    raise AssertionError(f"no issue on {expression} naming {words}: {issues}")


def only_series(resource: dict[str, Any] | None) -> dict[str, Any]:
    assert resource is not None
    assert len(resource["series"]) == 1
    return resource["series"][0]


# -- ImagingStudy.identifier, status, id ---------------------------------------------------------


def test_identifier_study_uid_as_urn_oid(run: Run) -> None:
    resource, _ = run(study())
    assert resource is not None
    assert resource["id"] == STUDY_UID
    assert resource["identifier"][0] == {"system": "urn:dicom:uid", "value": f"urn:oid:{STUDY_UID}"}


def test_identifier_accession_with_trust_system(run: Run, trust: TrustMapping) -> None:
    resource, issues = run(study(AccessionNumber="RA12345678"))
    assert resource is not None
    accession = [i for i in resource["identifier"] if i.get("type") == ACSN]
    assert len(accession) == 1
    assert accession[0]["system"] == trust.accession_system
    assert accession[0]["value"] == "RA12345678"
    assert accession[0]["assigner"]["identifier"] == {
        "system": "https://fhir.nhs.uk/Id/ods-organization-code",
        "value": "R0A",
    }
    assert issues == []


def test_identifier_accession_with_iso_issuer_oid(run: Run) -> None:
    issuer = dataset(
        LocalNamespaceEntityID="MFT-RIS", UniversalEntityID="2.16.840.1.113883.3.1234", UniversalEntityIDType="ISO"
    )
    resource, _ = run(study(AccessionNumber="RA1", IssuerOfAccessionNumberSequence=[issuer]))
    assert resource is not None
    accession = [i for i in resource["identifier"] if i.get("type") == ACSN]
    assert [(a["system"], a["value"]) for a in accession] == [("urn:oid:2.16.840.1.113883.3.1234", "RA1")]


@pytest.mark.parametrize(
    "issuer",
    [
        dataset(LocalNamespaceEntityID="MFT-RIS"),
        dataset(UniversalEntityID="ris.mft.nhs.uk", UniversalEntityIDType="DNS"),
        dataset(UniversalEntityID="2.16.abc", UniversalEntityIDType="ISO"),
        dataset(UniversalEntityID="2.16.840.1.113883.3.1234"),
    ],
    ids=["local-namespace-only", "dns", "iso-not-an-oid", "oid-without-type"],
)
def test_identifier_accession_issuer_without_iso_oid_keeps_trust_system(
    run: Run, trust: TrustMapping, issuer: Dataset
) -> None:
    resource, _ = run(study(AccessionNumber="RA1", IssuerOfAccessionNumberSequence=[issuer]))
    assert resource is not None
    assert [i["system"] for i in resource["identifier"] if i.get("type") == ACSN] == [trust.accession_system]


def test_identifier_accession_absent(run: Run) -> None:
    resource, _ = run(study(AccessionNumber=None))
    assert resource is not None
    assert not [i for i in resource["identifier"] if i.get("type") == ACSN]


def test_identifier_study_id(run: Run) -> None:
    resource, _ = run(study(StudyID="1001"))
    assert resource is not None
    study_ids = [i for i in resource["identifier"] if i.get("value") == "1001"]
    assert len(study_ids) == 1 and "system" not in study_ids[0]
    assert study_ids[0].get("type") != ACSN


def test_status_available(run: Run) -> None:
    resource, _ = run(study())
    assert resource is not None and resource["status"] == "available"


# -- ImagingStudy.modality, subject --------------------------------------------------------------


def test_modality_from_modalities_in_study(run: Run) -> None:
    resource, _ = run(study(ModalitiesInStudy=["CT", "PT"]), [series(Modality="CT")])
    assert resource is not None
    assert resource["modality"] == [dcm("CT"), dcm("PT")]
    assert all(c["system"] != "DCM" for c in resource["modality"])


def test_modality_union_of_series_when_study_has_none(run: Run) -> None:
    resource, _ = run(
        study(ModalitiesInStudy=None),
        [
            series(SeriesNumber=1, Modality="CT"),
            series(SeriesNumber=2, Modality="MR", SeriesInstanceUID=f"{STUDY_UID}.2"),
            series(SeriesNumber=3, Modality="CT", SeriesInstanceUID=f"{STUDY_UID}.3"),
        ],
    )
    assert resource is not None
    assert resource["modality"] == [dcm("CT"), dcm("MR")]


def test_modality_adds_series_modality_missing_from_study(run: Run) -> None:
    resource, _ = run(
        study(ModalitiesInStudy=["CT"]),
        [series(Modality="CT"), series(Modality="SR", SeriesInstanceUID=f"{STUDY_UID}.2", SeriesNumber=2)],
    )
    assert resource is not None
    assert resource["modality"] == [dcm("CT"), dcm("SR")]


def test_modality_unknown_code_left_out_and_reported(run: Run) -> None:
    resource, issues = run(study(ModalitiesInStudy=["CT", "XX"]))
    assert resource is not None
    assert resource["modality"] == [dcm("CT")]
    issue_for(issues, "ImagingStudy.modality", "'XX'")


def test_modality_lower_case_and_padded_accepted(run: Run) -> None:
    resource, issues = run(study(ModalitiesInStudy=["ct ", " pt"]), [series(Modality="ct")])
    assert resource is not None
    assert resource["modality"] == [dcm("CT"), dcm("PT")]
    assert only_series(resource)["modality"] == dcm("CT")
    assert issues == []


def test_subject_is_the_resolved_patient(run: Run) -> None:
    resource, _ = run(study())
    assert resource is not None
    assert resource["subject"] == SUBJECT
    assert resource["subject"]["identifier"] == {"system": systems.NHS_NUMBER, "value": NHS_NUMBER}


# -- ImagingStudy.started ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("da", "tm", "offset", "expected"),
    [
        ("20240305", "143015", None, "2024-03-05T14:30:15+00:00"),
        ("20240705", "143015", None, "2024-07-05T14:30:15+01:00"),
        ("20240305", "143015.123", "+0100", "2024-03-05T14:30:15.123+01:00"),
        ("20240705", "0930", "-0500", "2024-07-05T09:30:00-05:00"),
        ("20240305", "14", None, "2024-03-05T14:00:00+00:00"),
        ("2024.03.05", "143015", None, "2024-03-05T14:30:15+00:00"),
        ("20240305", None, None, "2024-03-05"),
        ("20240305", None, "+0100", "2024-03-05"),
        ("202403", None, None, "2024-03"),
    ],
    ids=[
        "winter",
        "summer",
        "offset-plus",
        "offset-minus",
        "partial-time",
        "legacy-date",
        "date-only",
        "date-only-with-offset",
        "partial-date",
    ],
)
def test_started_from_date_time_and_offset(
    run: Run, da: str, tm: str | None, offset: str | None, expected: str
) -> None:
    resource, issues = run(study(StudyDate=da, StudyTime=tm, TimezoneOffsetFromUTC=offset))
    assert resource is not None
    assert resource["started"] == expected
    assert issues == []


def test_started_absent_without_study_date(run: Run) -> None:
    resource, issues = run(study(StudyDate=None, StudyTime=None))
    assert resource is not None and "started" not in resource
    assert issues == []


def test_series_started_uses_study_offset(run: Run) -> None:
    resource, _ = run(study(TimezoneOffsetFromUTC="-0500"), [series(SeriesDate="20240705", SeriesTime="150000")])
    assert only_series(resource)["started"] == "2024-07-05T15:00:00-05:00"


def test_series_started_own_offset_wins(run: Run) -> None:
    resource, _ = run(
        study(TimezoneOffsetFromUTC="-0500"),
        [series(SeriesDate="20240705", SeriesTime="150000", TimezoneOffsetFromUTC="+0200")],
    )
    assert only_series(resource)["started"] == "2024-07-05T15:00:00+02:00"


def test_series_started_in_trust_zone(run: Run) -> None:
    resource, _ = run(study(), [series(SeriesDate="20240705", SeriesTime="150000")])
    assert only_series(resource)["started"] == "2024-07-05T15:00:00+01:00"


# -- referrer, interpreter, counts, description ---------------------------------------------------


def test_referrer_display(run: Run) -> None:
    resource, issues = run(study(ReferringPhysicianName="Smith^Jane^^Dr"))
    assert resource is not None
    assert resource["referrer"] == {"display": "Dr Jane Smith"}
    assert issues == []


def test_interpreter_every_reader(run: Run) -> None:
    resource, _ = run(study(NameOfPhysiciansReadingStudy=["Brown^Tom", "Green^Ann^^Dr"]))
    assert resource is not None
    assert resource["interpreter"] == [{"display": "Tom Brown"}, {"display": "Dr Ann Green"}]


def test_counts_from_tags(run: Run) -> None:
    resource, _ = run(
        study(NumberOfStudyRelatedSeries=5, NumberOfStudyRelatedInstances=120),
        [series(NumberOfSeriesRelatedInstances=30)],
    )
    assert resource is not None
    assert (resource["numberOfSeries"], resource["numberOfInstances"]) == (5, 120)
    assert only_series(resource)["numberOfInstances"] == 30


def test_counts_derived_from_series_when_absent(run: Run) -> None:
    resource, _ = run(
        study(NumberOfStudyRelatedSeries=None, NumberOfStudyRelatedInstances=None),
        [
            series(NumberOfSeriesRelatedInstances=3),
            series(SeriesInstanceUID=f"{STUDY_UID}.2", SeriesNumber=2, NumberOfSeriesRelatedInstances=4),
        ],
    )
    assert resource is not None
    assert (resource["numberOfSeries"], resource["numberOfInstances"]) == (2, 7)


def test_counts_derived_from_instances_when_absent(run: Run) -> None:
    instances = {SERIES_UID: [instance(SOPInstanceUID=f"{SERIES_UID}.{n}", InstanceNumber=n) for n in (1, 2, 3)]}
    resource, _ = run(
        study(NumberOfStudyRelatedSeries=None, NumberOfStudyRelatedInstances=None),
        [series(NumberOfSeriesRelatedInstances=None)],
        instances,
    )
    assert resource is not None
    assert only_series(resource)["numberOfInstances"] == 3
    assert (resource["numberOfSeries"], resource["numberOfInstances"]) == (1, 3)


def test_counts_not_guessed_when_unknown(run: Run) -> None:
    resource, _ = run(
        study(NumberOfStudyRelatedSeries=None, NumberOfStudyRelatedInstances=None),
        [series(NumberOfSeriesRelatedInstances=None)],
    )
    assert resource is not None
    assert resource["numberOfSeries"] == 1
    assert "numberOfInstances" not in resource
    assert "numberOfInstances" not in only_series(resource)


def test_counts_derived_count_series_left_out(run: Run) -> None:
    """FHIR numberOfSeries is the study's count, which "may be larger than the number of series elements"."""
    resource, issues = run(
        study(NumberOfStudyRelatedSeries=None, NumberOfStudyRelatedInstances=None),
        [series(), series(SeriesInstanceUID=f"{STUDY_UID}.2", SeriesNumber=2, Modality=None)],
    )
    assert resource is not None and len(resource["series"]) == 1
    issue_for(issues, "ImagingStudy.series", "Modality")
    assert resource["numberOfSeries"] == 2


def test_description(run: Run) -> None:
    resource, _ = run(study(StudyDescription="  CT Chest with contrast "))
    assert resource is not None and resource["description"] == "CT Chest with contrast"


# -- procedureCode, reasonCode, location, endpoint ------------------------------------------------


@pytest.mark.parametrize(
    ("scheme", "system", "code", "meaning"),
    [
        ("SCT", SNOMED, "77477000", "Computerized axial tomography"),
        ("LN", LOINC, "24627-2", "CT Chest"),
        ("DCM", DCM, "113014", "Study"),
    ],
    ids=["snomed", "loinc", "dcm"],
)
def test_procedure_code_standard_scheme(run: Run, scheme: str, system: str, code: str, meaning: str) -> None:
    resource, issues = run(study(ProcedureCodeSequence=[code_item(code, scheme, meaning)]))
    assert resource is not None
    assert resource["procedureCode"] == [
        {"coding": [{"system": system, "code": code, "display": meaning}], "text": meaning}
    ]
    assert issues == []


def test_procedure_code_local_scheme_text_only_and_reported(run: Run) -> None:
    resource, issues = run(
        study(
            ProcedureCodeSequence=[
                code_item("CCHEC", "99MFT", "CT Chest with contrast"),
                code_item("77477000", "SCT", "CT"),
            ]
        )
    )
    assert resource is not None
    assert resource["procedureCode"][0] == {"text": "CT Chest with contrast"}
    assert resource["procedureCode"][1]["coding"][0]["system"] == SNOMED
    issue_for(issues, "ImagingStudy.procedureCode", "99MFT", "CCHEC", severities=KEPT_AS_TEXT)


def test_procedure_code_local_scheme_without_meaning_reports_truthfully(run: Run) -> None:
    """The issue says the code was 'kept as text': then some text must hold it."""
    resource, issues = run(study(ProcedureCodeSequence=[code_item("CCHEC", "99MFT")]))
    assert resource is not None
    diagnostics = issue_for(issues, "ImagingStudy.procedureCode", "99MFT", severities=KEPT_AS_TEXT)["diagnostics"]
    if "kept as text" in diagnostics:
        assert any("CCHEC" in c.get("text", "") for c in resource.get("procedureCode", [])), resource


def test_reason_code_text_and_coded(run: Run) -> None:
    resource, _ = run(
        study(
            ReasonForTheRequestedProcedure="Suspected PE",
            ReasonForRequestedProcedureCodeSequence=[code_item("59282003", "SCT", "Pulmonary embolism")],
        )
    )
    assert resource is not None
    assert resource["reasonCode"] == [
        {
            "coding": [{"system": SNOMED, "code": "59282003", "display": "Pulmonary embolism"}],
            "text": "Pulmonary embolism",
        },
        {"text": "Suspected PE"},
    ]


def test_location_display(run: Run) -> None:
    resource, _ = run(
        study(
            InstitutionName="Manchester Royal Infirmary",
            InstitutionalDepartmentName="Radiology",
            InstitutionAddress="Oxford Road, Manchester M13 9WL",
        )
    )
    assert resource is not None
    assert resource["location"] == {"display": "Manchester Royal Infirmary, Radiology, Oxford Road, Manchester M13 9WL"}


def test_location_absent_without_institution(run: Run) -> None:
    resource, _ = run(study())
    assert resource is not None and "location" not in resource


def test_endpoint_is_the_trust_wado_endpoint(run: Run, trust: TrustMapping) -> None:
    resource, _ = run(study())
    assert resource is not None
    assert resource["endpoint"] == [{"reference": f"Endpoint/{trust.endpoint_id}"}]


# -- series ---------------------------------------------------------------------------------------


def test_series_core_elements(run: Run) -> None:
    resource, issues = run(
        study(),
        [
            series(
                SeriesInstanceUID=SERIES_UID,
                SeriesNumber=3,
                Modality="CT",
                SeriesDescription="Axial 1mm",
                NumberOfSeriesRelatedInstances=250,
            )
        ],
    )
    assert only_series(resource) == {
        "uid": SERIES_UID,
        "number": 3,
        "modality": dcm("CT"),
        "description": "Axial 1mm",
        "numberOfInstances": 250,
    }
    assert issues == []


@pytest.mark.parametrize(
    ("term", "code", "display"),
    [
        ("CHEST", "816094009", "Chest"),
        ("chest", "816094009", "Chest"),
        ("ABDOMEN", "818981001", "Abdomen"),
        ("ABDOMENPELVIS", "818982008", "Abdomen and Pelvis"),
    ],
    ids=["chest-2026a", "lower-case", "abdomen", "abdomen-pelvis"],
)
def test_series_body_site_annex_l(run: Run, term: str, code: str, display: str) -> None:
    resource, issues = run(study(), [series(BodyPartExamined=term)])
    assert only_series(resource)["bodySite"] == {"system": SNOMED, "code": code, "display": display}
    assert issues == []


def test_series_body_site_unknown_term_left_out_and_reported(run: Run) -> None:
    resource, issues = run(study(), [series(BodyPartExamined="LEFTWING")])
    assert "bodySite" not in only_series(resource)
    issue_for(issues, "ImagingStudy.series.bodySite", "BodyPartExamined", "LEFTWING")


@pytest.mark.parametrize(
    ("laterality", "image_laterality", "code"),
    [
        ("L", None, "7771000"),
        ("R", None, "24028007"),
        ("B", None, "51440002"),
        ("U", None, None),
        (None, "R", "24028007"),
        (None, "L", "7771000"),
        ("l", None, "7771000"),
        (None, None, None),
    ],
    ids=[
        "left",
        "right",
        "bilateral",
        "unpaired",
        "image-laterality-right",
        "image-laterality-left",
        "lower-case",
        "absent",
    ],
)
def test_series_laterality(run: Run, laterality: str | None, image_laterality: str | None, code: str | None) -> None:
    resource, issues = run(study(), [series(Laterality=laterality, ImageLaterality=image_laterality)])
    found = only_series(resource).get("laterality")
    assert (found["code"] if found else None) == code
    if found:
        assert found["system"] == SNOMED
    assert issues == []


def test_series_laterality_invalid_left_out_and_reported(run: Run) -> None:
    resource, issues = run(study(), [series(Laterality="X")])
    assert "laterality" not in only_series(resource)
    issue_for(issues, "ImagingStudy.series.laterality", "Laterality", "'X'")


def test_series_performer_roles(run: Run) -> None:
    resource, _ = run(
        study(), [series(PerformingPhysicianName="House^Greg^^Dr", OperatorsName=["Tech^Ann", "Tech^Bob"])]
    )
    performers = only_series(resource)["performer"]
    assert [(p["function"]["coding"][0]["code"], p["actor"]["display"]) for p in performers] == [
        ("PPRF", "Dr Greg House"),
        ("SPRF", "Ann Tech"),
        ("SPRF", "Bob Tech"),
    ]
    assert all(
        p["function"]["coding"][0]["system"] == "http://terminology.hl7.org/CodeSystem/v3-ParticipationType"
        for p in performers
    )


def test_series_performer_absent(run: Run) -> None:
    resource, _ = run(study(), [series(OperatorsName=EMPTY)])
    assert "performer" not in only_series(resource)


def test_series_ordered_by_number_then_uid(run: Run) -> None:
    resource, _ = run(
        study(),
        [
            series(SeriesInstanceUID=f"{STUDY_UID}.9", SeriesNumber=None),
            series(SeriesInstanceUID=f"{STUDY_UID}.2", SeriesNumber=2),
            series(SeriesInstanceUID=f"{STUDY_UID}.8", SeriesNumber=None),
            series(SeriesInstanceUID=f"{STUDY_UID}.1", SeriesNumber="10"),
            series(SeriesInstanceUID=f"{STUDY_UID}.3", SeriesNumber=1),
        ],
    )
    assert resource is not None
    assert [s["uid"].rsplit(".", 1)[1] for s in resource["series"]] == ["3", "2", "1", "8", "9"]


# -- instances ------------------------------------------------------------------------------------


def test_instance_core_elements(run: Run) -> None:
    resource, issues = run(
        study(), [series()], {SERIES_UID: [instance(SOPClassUID=str(sop.CTImageStorage), InstanceNumber=7)]}
    )
    assert only_series(resource)["instance"] == [
        {
            "uid": INSTANCE_UID,
            "sopClass": {"system": RFC3986, "code": f"urn:oid:{sop.CTImageStorage}", "display": "CT Image Storage"},
            "number": 7,
        }
    ]
    assert issues == []


def test_instance_private_sop_class_without_display(run: Run) -> None:
    private = "1.2.826.0.1.3680043.8.498.999.1"
    resource, _ = run(study(), [series()], {SERIES_UID: [instance(SOPClassUID=private)]})
    assert only_series(resource)["instance"][0]["sopClass"] == {"system": RFC3986, "code": f"urn:oid:{private}"}


@pytest.mark.parametrize(
    ("label", "concept", "title", "expected"),
    [
        ("KEY_IMAGES", [code_item("113000", "DCM", "Of Interest")], "Report", "KEY_IMAGES"),
        (None, [code_item("18748-4", "LN", "Diagnostic imaging report")], "Report", "Diagnostic imaging report"),
        (None, [code_item("18748-4", "LN")], "Discharge letter", "Discharge letter"),
        (None, None, "Discharge letter", "Discharge letter"),
        (None, None, None, None),
    ],
    ids=["content-label-first", "concept-name-second", "concept-without-meaning", "document-title-last", "none"],
)
def test_instance_title(
    run: Run, label: str | None, concept: list[Dataset] | None, title: str | None, expected: str | None
) -> None:
    inst = instance(ContentLabel=label, ConceptNameCodeSequence=concept, DocumentTitle=title)
    resource, _ = run(study(), [series()], {SERIES_UID: [inst]})
    assert only_series(resource)["instance"][0].get("title") == expected


def test_instances_ordered_by_number(run: Run) -> None:
    numbers = [3, 1, None, 2]
    instances = {
        SERIES_UID: [
            instance(SOPInstanceUID=f"{SERIES_UID}.{i}", InstanceNumber=n) for i, n in enumerate(numbers, start=1)
        ]
    }
    resource, _ = run(study(), [series()], instances)
    assert [i.get("number") for i in only_series(resource)["instance"]] == [1, 2, 3, None]


# -- every specialty ------------------------------------------------------------------------------

SPECIALTIES = [
    ("CT", sop.CTImageStorage),
    ("MR", sop.MRImageStorage),
    ("CR", sop.ComputedRadiographyImageStorage),
    ("DX", sop.DigitalXRayImageStorageForPresentation),
    ("MG", sop.DigitalMammographyXRayImageStorageForPresentation),
    ("NM", sop.NuclearMedicineImageStorage),
    ("PT", sop.PositronEmissionTomographyImageStorage),
    ("US", sop.UltrasoundImageStorage),
    ("XA", sop.XRayAngiographicImageStorage),
    ("RF", sop.XRayRadiofluoroscopicImageStorage),
    ("ES", sop.VLEndoscopicImageStorage),
    ("XC", sop.VLPhotographicImageStorage),
    ("GM", sop.VLMicroscopicImageStorage),
    ("SM", sop.VLWholeSlideMicroscopyImageStorage),
    ("OP", sop.OphthalmicPhotography8BitImageStorage),
    ("OPT", sop.OphthalmicTomographyImageStorage),
    ("ECG", sop.TwelveLeadECGWaveformStorage),
    ("HD", sop.HemodynamicWaveformStorage),
    ("SR", sop.ComprehensiveSRStorage),
    ("DOC", sop.EncapsulatedPDFStorage),
    ("KO", sop.KeyObjectSelectionDocumentStorage),
    ("PR", sop.GrayscaleSoftcopyPresentationStateStorage),
    ("SEG", sop.SegmentationStorage),
]


@pytest.mark.parametrize(("modality", "sop_class"), SPECIALTIES, ids=[m for m, _ in SPECIALTIES])
def test_specialty_modality_and_sop_class(run: Run, modality: str, sop_class: sop.UID) -> None:
    resource, issues = run(
        study(ModalitiesInStudy=[modality]),
        [series(Modality=modality)],
        {SERIES_UID: [instance(SOPClassUID=str(sop_class))]},
    )
    assert resource is not None
    assert resource["modality"] == [dcm(modality)]
    assert only_series(resource)["modality"] == dcm(modality)
    assert only_series(resource)["instance"][0]["sopClass"] == {
        "system": RFC3986,
        "code": f"urn:oid:{sop_class}",
        "display": sop_class.name,
    }
    assert issues == []


# -- odd data -------------------------------------------------------------------------------------


def pydicom_study(charset: str, keyword_tag: int, raw: bytes) -> Dataset:
    """A study whose person name arrives as raw bytes in `charset`, decoded by pydicom's to_json_dict()."""
    ds = PydicomDataset()
    ds.SpecificCharacterSet = charset
    ds.StudyInstanceUID = STUDY_UID
    ds.StudyDate = "20240305"
    ds[keyword_tag] = RawDataElement(Tag(keyword_tag), "PN", len(raw), raw, 0, False, True)
    return ds.to_json_dict()


@dataclass(frozen=True)
class Odd:
    """An odd input; `issue` is (element, words) expected among the issues, None when none may be raised."""

    id: str
    study: Dataset
    check: Callable[[dict[str, Any] | None], bool]
    issue: tuple[str, tuple[str, ...]] | None = None
    series: list[Dataset] = field(default_factory=lambda: [series()])
    instances: dict[str, list[Dataset]] | None = None


def _series0(r: dict[str, Any] | None) -> dict[str, Any]:
    assert r is not None
    return r["series"][0]


ODD = [
    Odd(
        "invalid-study-date",
        study(StudyDate="20231345"),
        lambda r: r is not None and "started" not in r,
        ("ImagingStudy.started", ("StudyDate", "20231345")),
    ),
    Odd(
        "study-date-seven-digits",
        study(StudyDate="2023023"),
        lambda r: r is not None and "started" not in r,
        ("ImagingStudy.started", ("StudyDate", "2023023")),
    ),
    Odd(
        "study-date-letters",
        study(StudyDate="abcd"),
        lambda r: r is not None and "started" not in r,
        ("ImagingStudy.started", ("StudyDate", "abcd")),
    ),
    Odd(
        "invalid-study-time",
        study(StudyTime="2561"),
        lambda r: r is not None and "started" not in r,
        ("ImagingStudy.started", ("StudyTime", "2561")),
    ),
    Odd(
        "time-without-date",
        study(StudyDate=None, StudyTime="1430"),
        lambda r: r is not None and "started" not in r,
        ("ImagingStudy.started", ("1430",)),
    ),
    Odd(
        "time-with-partial-date",
        study(StudyDate="202403", StudyTime="1430"),
        lambda r: r is not None and r.get("started") in (None, "2024-03"),
        ("ImagingStudy.started", ("202403",)),
    ),
    Odd(
        "offset-without-sign",
        study(TimezoneOffsetFromUTC="0100"),
        lambda r: r is not None and "started" not in r,
        ("ImagingStudy.started", ("'0100'",)),
    ),
    Odd(
        "offset-beyond-fhir-range",
        study(TimezoneOffsetFromUTC="+1430"),
        lambda r: r is not None and "started" not in r,
        ("ImagingStudy.started", ("'+1430'",)),
    ),
    Odd(
        "invalid-series-time",
        study(),
        lambda r: "started" not in _series0(r),
        ("ImagingStudy.series.started", ("SeriesTime", "2561")),
        [series(SeriesDate="20240305", SeriesTime="2561")],
    ),
    Odd("missing-study-time", study(StudyTime=None), lambda r: r is not None and r["started"] == "2024-03-05"),
    Odd("missing-description", study(StudyDescription=None), lambda r: r is not None and "description" not in r),
    Odd(
        "multi-valued-referrer",
        study(ReferringPhysicianName=["Smith^Jane^^Dr", "Jones^Bob"]),
        lambda r: r is not None and r["referrer"] == {"display": "Dr Jane Smith"},
        ("ImagingStudy.referrer", ("ReferringPhysicianName",)),
    ),
    Odd(
        "multi-valued-description",
        study(StudyDescription=["CT Chest", "CT Abdomen"]),
        lambda r: r is not None and r["description"] == "CT Chest",
        ("ImagingStudy.description", ("StudyDescription",)),
    ),
    Odd(
        "utf-8-name",
        pydicom_study("ISO_IR 192", 0x00080090, b"\xc3\x93'Brien^Zo\xc3\xab"),
        lambda r: r is not None and r["referrer"] == {"display": "Zoë Ó'Brien"},
        None,
        [],
    ),
    Odd(
        "latin-1-name",
        pydicom_study("ISO_IR 100", 0x00080090, b"M\xfcller^Ren\xe9e"),
        lambda r: r is not None and r["referrer"] == {"display": "Renée Müller"},
        None,
        [],
    ),
    Odd(
        "latin-1-reader",
        pydicom_study("ISO_IR 100", 0x00081060, b"Fran\xe7ois^Ana\xefs"),
        lambda r: r is not None and r["interpreter"] == [{"display": "Anaïs François"}],
        None,
        [],
    ),
    Odd(
        "pn-as-plain-string",
        study(ReferringPhysicianName=element("PN", "Smith^Jane")),
        lambda r: r is not None and r["referrer"] == {"display": "Jane Smith"},
    ),
    Odd(
        "pn-without-alphabetic",
        study(ReferringPhysicianName=element("PN", {"Ideographic": "山田^太郎"})),
        lambda r: r is not None and r["referrer"] == {"display": "太郎 山田"},
    ),
    Odd("empty-pn", study(ReferringPhysicianName=EMPTY), lambda r: r is not None and "referrer" not in r),
    Odd("empty-pn-components", study(ReferringPhysicianName="^^^^"), lambda r: r is not None and "referrer" not in r),
    Odd("lo-without-value", study(StudyDescription=element("LO")), lambda r: r is not None and "description" not in r),
    Odd(
        "lo-empty-string", study(StudyDescription=element("LO", "")), lambda r: r is not None and "description" not in r
    ),
    Odd(
        "lo-blank-string",
        study(StudyDescription=element("LO", "   ")),
        lambda r: r is not None and "description" not in r,
    ),
    Odd(
        "lo-null-value", study(StudyDescription=element("LO", None)), lambda r: r is not None and "description" not in r
    ),
    Odd(
        "sh-accession-empty-string",
        study(AccessionNumber=element("SH", "")),
        lambda r: r is not None and all(i.get("type") != ACSN for i in r["identifier"]),
    ),
    Odd(
        "is-as-string",
        study(NumberOfStudyRelatedSeries=element("IS", "3")),
        lambda r: r is not None and r["numberOfSeries"] == 3,
    ),
    Odd(
        "is-as-padded-string",
        study(NumberOfStudyRelatedSeries=element("IS", " 3 ")),
        lambda r: r is not None and r["numberOfSeries"] == 3,
    ),
    Odd(
        "is-as-number",
        study(NumberOfStudyRelatedSeries=element("IS", 3)),
        lambda r: r is not None and r["numberOfSeries"] == 3,
    ),
    Odd(
        "is-as-float",
        study(NumberOfStudyRelatedSeries=element("IS", 3.0)),
        lambda r: r is not None and r["numberOfSeries"] == 3,
    ),
    Odd(
        "is-garbage",
        study(NumberOfStudyRelatedSeries=element("IS", "x")),
        lambda r: r is not None and r["numberOfSeries"] == 1,
        ("ImagingStudy.numberOfSeries", ("NumberOfStudyRelatedSeries", "'x'")),
    ),
    Odd(
        "is-negative",
        study(NumberOfStudyRelatedInstances=element("IS", "-1")),
        lambda r: r is not None and r.get("numberOfInstances") in (None, 1),
        ("ImagingStudy.numberOfInstances", ("NumberOfStudyRelatedInstances", "-1")),
    ),
    Odd(
        "is-beyond-unsigned-int",
        study(NumberOfStudyRelatedInstances=element("IS", "999999999999")),
        lambda r: r is not None and r.get("numberOfInstances", 0) <= 2**31 - 1,
        ("ImagingStudy.numberOfInstances", ("NumberOfStudyRelatedInstances", "999999999999")),
    ),
    Odd(
        "series-number-as-string",
        study(),
        lambda r: _series0(r)["number"] == 4,
        None,
        [series(SeriesNumber=element("IS", "4"))],
    ),
    Odd(
        "series-number-garbage",
        study(),
        lambda r: "number" not in _series0(r),
        ("ImagingStudy.series.number", ("SeriesNumber", "'four'")),
        [series(SeriesNumber=element("IS", "four"))],
    ),
    Odd(
        "no-study-uid",
        study(StudyInstanceUID=None),
        lambda r: r is None,
        ("ImagingStudy.identifier", ("StudyInstanceUID",)),
    ),
    Odd(
        "empty-study-uid",
        study(StudyInstanceUID=EMPTY),
        lambda r: r is None,
        ("ImagingStudy.identifier", ("StudyInstanceUID",)),
    ),
    Odd(
        "invalid-study-uid",
        study(StudyInstanceUID="1.2.abc"),
        lambda r: r is None,
        ("ImagingStudy.identifier", ("StudyInstanceUID",)),
    ),
    Odd(
        "study-uid-leading-zero",
        study(StudyInstanceUID="1.02.3"),
        lambda r: r is None,
        ("ImagingStudy.identifier", ("StudyInstanceUID",)),
    ),
    Odd(
        "study-uid-too-long",
        study(StudyInstanceUID="1." + "2" * 70),
        lambda r: r is None,
        ("ImagingStudy.identifier", ("StudyInstanceUID",)),
    ),
    Odd(
        "invalid-series-uid",
        study(),
        lambda r: r is not None and "series" not in r,
        ("ImagingStudy.series.uid", ("SeriesInstanceUID",)),
        [series(SeriesInstanceUID="1.2.3.x")],
    ),
    Odd(
        "series-without-modality",
        study(),
        lambda r: r is not None and "series" not in r and r["modality"] == [dcm("CT")],
        ("ImagingStudy.series", ("Modality",)),
        [series(Modality=None)],
    ),
    Odd(
        "series-unknown-modality",
        study(),
        lambda r: r is not None and "series" not in r,
        ("ImagingStudy.series.modality", ("'QQ'",)),
        [series(Modality="QQ")],
    ),
    Odd(
        "one-good-one-bad-series",
        study(NumberOfStudyRelatedSeries=None),
        lambda r: r is not None and [s["uid"] for s in r["series"]] == [SERIES_UID],
        ("ImagingStudy.series", ("Modality",)),
        [series(), series(SeriesInstanceUID=f"{STUDY_UID}.2", SeriesNumber=2, Modality=EMPTY)],
    ),
    Odd(
        "instance-without-sop-class",
        study(),
        lambda r: "instance" not in _series0(r) and _series0(r)["numberOfInstances"] == 1,
        ("ImagingStudy.series.instance", ("SOPClassUID",)),
        [series()],
        {SERIES_UID: [instance(SOPClassUID=None)]},
    ),
    Odd(
        "instance-invalid-sop-class",
        study(),
        lambda r: "instance" not in _series0(r),
        ("ImagingStudy.series.instance", ("SOPClassUID",)),
        [series()],
        {SERIES_UID: [instance(SOPClassUID="1.2.840.10008.5.1.4.1.1.2.x")]},
    ),
    Odd(
        "instance-without-sop-instance-uid",
        study(),
        lambda r: [i["uid"] for i in _series0(r)["instance"]] == [INSTANCE_UID],
        ("ImagingStudy.series.instance", ("SOPInstanceUID",)),
        [series(NumberOfSeriesRelatedInstances=None)],
        {SERIES_UID: [instance(), instance(SOPInstanceUID=None, InstanceNumber=2)]},
    ),
    Odd(
        "sequence-with-non-item",
        study(ProcedureCodeSequence=element("SQ", "garbage", None)),
        lambda r: r is not None and "procedureCode" not in r,
    ),
    Odd(
        "code-item-without-code",
        study(ProcedureCodeSequence=[dataset(CodeMeaning="CT Chest")]),
        lambda r: r is not None and r["procedureCode"] == [{"text": "CT Chest"}],
    ),
]


@pytest.mark.parametrize("case", ODD, ids=[c.id for c in ODD])
def test_map_study_odd_data(run: Run, case: Odd) -> None:
    resource, issues = run(case.study, case.series, case.instances)  # validates resource and issues
    assert case.check(resource), resource
    if case.issue is None:
        assert issues == []
    else:
        element_path, words = case.issue
        issue_for(issues, element_path, *words)
        assert all(STUDY_UID in i["diagnostics"] or "?" in i["diagnostics"] for i in issues)


# -- purity --------------------------------------------------------------------------------------


def test_map_study_leaves_input_unchanged_and_repeats(run: Run) -> None:
    inputs = realistic_study_by_hand(int)
    before = copy.deepcopy(inputs)
    first = run(*inputs)
    assert inputs == before
    assert run(*inputs) == first
    assert copy.deepcopy(first) == first


# -- pydicom's to_json_dict() as input -------------------------------------------------------------

ISSUER_OID = "2.16.840.1.113883.3.5678"
CT_SERIES_UID = f"{STUDY_UID}.1"
SR_SERIES_UID = f"{STUDY_UID}.2"


def _code(value: str, scheme: str, meaning: str) -> PydicomDataset:
    item = PydicomDataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = value, scheme, meaning
    return item


def realistic_study_with_pydicom() -> tuple[Dataset, list[Dataset], dict[str, list[Dataset]]]:
    ds = PydicomDataset()
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.StudyInstanceUID = STUDY_UID
    ds.StudyDate, ds.StudyTime, ds.TimezoneOffsetFromUTC = "20240705", "101500.25", "+0100"
    ds.AccessionNumber = "RA87654321"
    issuer = PydicomDataset()
    issuer.LocalNamespaceEntityID, issuer.UniversalEntityID, issuer.UniversalEntityIDType = "RIS", ISSUER_OID, "ISO"
    ds.IssuerOfAccessionNumberSequence = [issuer]
    ds.StudyID = "77"
    ds.ModalitiesInStudy = ["CT", "SR"]
    ds.ReferringPhysicianName = "O'Brien^Zoë^^Dr"
    ds.NameOfPhysiciansReadingStudy = ["Brown^Tom", "Green^Ann"]
    ds.NumberOfStudyRelatedSeries = 2
    ds.NumberOfStudyRelatedInstances = 3
    ds.StudyDescription = "CT Chest with contrast"
    ds.ProcedureCodeSequence = [_code("77477000", "SCT", "CT"), _code("CCHEC", "99MFT", "CT chest local")]
    ds.ReasonForTheRequestedProcedure = "Cough"
    ds.InstitutionName = "Manchester Royal Infirmary"
    ds.PatientID, ds.IssuerOfPatientID, ds.PatientName = NHS_NUMBER, "NHS", "Jones^Robert"

    ct = PydicomDataset()
    ct.StudyInstanceUID, ct.SeriesInstanceUID, ct.SeriesNumber, ct.Modality = STUDY_UID, CT_SERIES_UID, 1, "CT"
    ct.SeriesDescription, ct.NumberOfSeriesRelatedInstances, ct.BodyPartExamined = "Axial", 2, "CHEST"
    ct.Laterality, ct.SeriesDate, ct.SeriesTime = "B", "20240705", "101700"
    ct.PerformingPhysicianName, ct.OperatorsName = "House^Greg", ["Tech^Ann"]
    sr = PydicomDataset()
    sr.StudyInstanceUID, sr.SeriesInstanceUID, sr.SeriesNumber, sr.Modality = STUDY_UID, SR_SERIES_UID, 2, "SR"
    sr.NumberOfSeriesRelatedInstances = 1

    images = []
    for number in (2, 1):
        image = PydicomDataset()
        image.SOPClassUID, image.SOPInstanceUID = sop.CTImageStorage, f"{CT_SERIES_UID}.{number}"
        image.InstanceNumber = number
        images.append(image)
    report = PydicomDataset()
    report.SOPClassUID, report.SOPInstanceUID, report.InstanceNumber = (
        sop.ComprehensiveSRStorage,
        f"{SR_SERIES_UID}.1",
        1,
    )
    report.ConceptNameCodeSequence = [_code("18748-4", "LN", "Diagnostic imaging report")]
    return (
        ds.to_json_dict(),
        [ct.to_json_dict(), sr.to_json_dict()],
        {CT_SERIES_UID: [i.to_json_dict() for i in images], SR_SERIES_UID: [report.to_json_dict()]},
    )


def realistic_study_by_hand(number: Callable[[int], Any]) -> tuple[Dataset, list[Dataset], dict[str, list[Dataset]]]:
    """The same study as QIDO-RS JSON written out; `number` gives IS values (numbers, or strings)."""
    study_ds = {
        "00080005": {"vr": "CS", "Value": ["ISO_IR 192"]},
        "0020000D": {"vr": "UI", "Value": [STUDY_UID]},
        "00080020": {"vr": "DA", "Value": ["20240705"]},
        "00080030": {"vr": "TM", "Value": ["101500.25"]},
        "00080201": {"vr": "SH", "Value": ["+0100"]},
        "00080050": {"vr": "SH", "Value": ["RA87654321"]},
        "00080051": {
            "vr": "SQ",
            "Value": [
                {
                    "00400031": {"vr": "UT", "Value": ["RIS"]},
                    "00400032": {"vr": "UT", "Value": [ISSUER_OID]},
                    "00400033": {"vr": "CS", "Value": ["ISO"]},
                }
            ],
        },
        "00200010": {"vr": "SH", "Value": ["77"]},
        "00080061": {"vr": "CS", "Value": ["CT", "SR"]},
        "00080090": {"vr": "PN", "Value": [{"Alphabetic": "O'Brien^Zoë^^Dr"}]},
        "00081060": {"vr": "PN", "Value": [{"Alphabetic": "Brown^Tom"}, {"Alphabetic": "Green^Ann"}]},
        "00201206": {"vr": "IS", "Value": [number(2)]},
        "00201208": {"vr": "IS", "Value": [number(3)]},
        "00081030": {"vr": "LO", "Value": ["CT Chest with contrast"]},
        "00081032": {
            "vr": "SQ",
            "Value": [
                {
                    "00080100": {"vr": "SH", "Value": ["77477000"]},
                    "00080102": {"vr": "SH", "Value": ["SCT"]},
                    "00080104": {"vr": "LO", "Value": ["CT"]},
                },
                {
                    "00080100": {"vr": "SH", "Value": ["CCHEC"]},
                    "00080102": {"vr": "SH", "Value": ["99MFT"]},
                    "00080104": {"vr": "LO", "Value": ["CT chest local"]},
                },
            ],
        },
        "00401002": {"vr": "LO", "Value": ["Cough"]},
        "00080080": {"vr": "LO", "Value": ["Manchester Royal Infirmary"]},
        "00100020": {"vr": "LO", "Value": [NHS_NUMBER]},
        "00100021": {"vr": "LO", "Value": ["NHS"]},
        "00100010": {"vr": "PN", "Value": [{"Alphabetic": "Jones^Robert"}]},
    }
    ct = {
        "0020000D": {"vr": "UI", "Value": [STUDY_UID]},
        "0020000E": {"vr": "UI", "Value": [CT_SERIES_UID]},
        "00200011": {"vr": "IS", "Value": [number(1)]},
        "00080060": {"vr": "CS", "Value": ["CT"]},
        "0008103E": {"vr": "LO", "Value": ["Axial"]},
        "00201209": {"vr": "IS", "Value": [number(2)]},
        "00180015": {"vr": "CS", "Value": ["CHEST"]},
        "00200060": {"vr": "CS", "Value": ["B"]},
        "00080021": {"vr": "DA", "Value": ["20240705"]},
        "00080031": {"vr": "TM", "Value": ["101700"]},
        "00081050": {"vr": "PN", "Value": [{"Alphabetic": "House^Greg"}]},
        "00081070": {"vr": "PN", "Value": [{"Alphabetic": "Tech^Ann"}]},
    }
    sr = {
        "0020000D": {"vr": "UI", "Value": [STUDY_UID]},
        "0020000E": {"vr": "UI", "Value": [SR_SERIES_UID]},
        "00200011": {"vr": "IS", "Value": [number(2)]},
        "00080060": {"vr": "CS", "Value": ["SR"]},
        "00201209": {"vr": "IS", "Value": [number(1)]},
    }
    images = [
        {
            "00080016": {"vr": "UI", "Value": [str(sop.CTImageStorage)]},
            "00080018": {"vr": "UI", "Value": [f"{CT_SERIES_UID}.{n}"]},
            "00200013": {"vr": "IS", "Value": [number(n)]},
        }
        for n in (2, 1)
    ]
    report = {
        "00080016": {"vr": "UI", "Value": [str(sop.ComprehensiveSRStorage)]},
        "00080018": {"vr": "UI", "Value": [f"{SR_SERIES_UID}.1"]},
        "00200013": {"vr": "IS", "Value": [number(1)]},
        "0040A043": {
            "vr": "SQ",
            "Value": [
                {
                    "00080100": {"vr": "SH", "Value": ["18748-4"]},
                    "00080102": {"vr": "SH", "Value": ["LN"]},
                    "00080104": {"vr": "LO", "Value": ["Diagnostic imaging report"]},
                }
            ],
        },
    }
    return study_ds, [ct, sr], {CT_SERIES_UID: images, SR_SERIES_UID: [report]}


def test_pydicom_to_json_dict_is_valid_input(run: Run) -> None:
    resource, issues = run(*realistic_study_with_pydicom())
    assert resource is not None
    assert resource["started"] == "2024-07-05T10:15:00.25+01:00"
    assert {"system": f"urn:oid:{ISSUER_OID}", "value": "RA87654321"}.items() <= resource["identifier"][1].items()
    assert resource["referrer"] == {"display": "Dr Zoë O'Brien"}
    assert [s["uid"] for s in resource["series"]] == [CT_SERIES_UID, SR_SERIES_UID]
    ct, sr = resource["series"]
    assert ct["bodySite"]["code"] == "816094009" and ct["laterality"]["code"] == "51440002"
    assert [i["number"] for i in ct["instance"]] == [1, 2]
    assert sr["instance"][0]["title"] == "Diagnostic imaging report"
    assert resource["procedureCode"][1] == {"text": "CT chest local"}
    issue_for(issues, "ImagingStudy.procedureCode", "99MFT", severities=KEPT_AS_TEXT)
    assert len(issues) == 1


@pytest.mark.parametrize("number", [int, str], ids=["is-as-json-number", "is-as-json-string"])
def test_pydicom_to_json_dict_maps_like_hand_written_qido(run: Run, number: Callable[[int], Any]) -> None:
    from_pydicom = run(*realistic_study_with_pydicom())
    by_hand = run(*realistic_study_by_hand(number))
    assert from_pydicom[0] is not None
    assert from_pydicom == by_hand
