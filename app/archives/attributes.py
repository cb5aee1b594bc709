"""The DICOM attributes the facade asks archives for, at each query level (QIDO includefield).

One list for every adapter, so that the folder archive answers exactly what a DICOMweb or DIMSE
archive is asked for, and the mapping tables never wait for an attribute nobody requested.
"""

from __future__ import annotations

PATIENT = (
    "PatientName",
    "PatientID",
    "IssuerOfPatientID",
    "IssuerOfPatientIDQualifiersSequence",
    "OtherPatientIDsSequence",
    "PatientBirthDate",
    "PatientSex",
)

STUDY = (
    "SpecificCharacterSet",
    "StudyInstanceUID",
    "StudyDate",
    "StudyTime",
    "TimezoneOffsetFromUTC",
    "AccessionNumber",
    "IssuerOfAccessionNumberSequence",
    "StudyID",
    "ModalitiesInStudy",
    "ReferringPhysicianName",
    "NameOfPhysiciansReadingStudy",
    "StudyDescription",
    "ProcedureCodeSequence",
    "ReasonForTheRequestedProcedure",
    "ReasonForRequestedProcedureCodeSequence",
    "InstitutionName",
    "InstitutionalDepartmentName",
    "InstitutionAddress",
    "NumberOfStudyRelatedSeries",
    "NumberOfStudyRelatedInstances",
    *PATIENT,
)

SERIES = (
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "SeriesNumber",
    "Modality",
    "SeriesDescription",
    "NumberOfSeriesRelatedInstances",
    "BodyPartExamined",
    "Laterality",
    "SeriesDate",
    "SeriesTime",
    "PerformingPhysicianName",
    "OperatorsName",
    "TimezoneOffsetFromUTC",
)

INSTANCE = (
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "SOPInstanceUID",
    "SOPClassUID",
    "InstanceNumber",
    "ContentLabel",
    "ConceptNameCodeSequence",
    "DocumentTitle",
    "ImageLaterality",
)
