"""Every identifier system and code system URI the facade writes or reads, each written once here."""

from __future__ import annotations

# NHS England identifiers
NHS_NUMBER = "https://fhir.nhs.uk/Id/nhs-number"
ODS_ORGANIZATION_CODE = "https://fhir.nhs.uk/Id/ods-organization-code"


def local_patient_identifier(ods_code: str) -> str:
    """A trust's local patient numbers (NHS England's local-identifier pattern)."""
    return f"https://fhir.nhs.uk/{ods_code}/Id/local-patient-identifier"


def accession_number(ods_code: str) -> str:
    """A trust's accession numbers, unless its configuration names another system."""
    return f"https://fhir.nhs.uk/{ods_code}/Id/accession-number"


# DICOM
DCM = "http://dicom.nema.org/resources/ontology/DCM"  # DICOM controlled terminology (PS3.16)
DICOM_UID = "urn:dicom:uid"  # ImagingStudy.identifier of the StudyInstanceUID
DCM_UID = "http://dicom.nema.org/resources/ontology/DCMUID"  # DICOM UIDs as codes (PS3.6 Annex A; XDS-I format codes)
URI = "urn:ietf:rfc:3986"  # identifiers and codes that are URIs (urn:oid:...)
OID_PREFIX = "urn:oid:"

# Terminologies
SNOMED = "http://snomed.info/sct"
LOINC = "http://loinc.org"
IHE_FORMAT_CODE = "http://ihe.net/fhir/ihe.formatcode.fhir/CodeSystem/formatcode"  # IHE document format codes
CONFIDENTIALITY = "http://terminology.hl7.org/CodeSystem/v3-Confidentiality"
DIAGNOSTIC_SERVICE_SECTION = "http://terminology.hl7.org/CodeSystem/v2-0074"
V2_0203 = "http://terminology.hl7.org/CodeSystem/v2-0203"  # identifier types (ACSN)
PARTICIPATION_TYPE = "http://terminology.hl7.org/CodeSystem/v3-ParticipationType"
OBSERVATION_VALUE = "http://terminology.hl7.org/CodeSystem/v3-ObservationValue"  # SUBSETTED
ORGANIZATION_TYPE = "http://terminology.hl7.org/CodeSystem/organization-type"
ENDPOINT_CONNECTION_TYPE = "http://terminology.hl7.org/CodeSystem/endpoint-connection-type"
ENDPOINT_PAYLOAD_TYPE = "http://terminology.hl7.org/CodeSystem/endpoint-payload-type"
RESTFUL_SECURITY_SERVICE = "http://terminology.hl7.org/CodeSystem/restful-security-service"

# Audit (IHE BALP)
BALP = "https://profiles.ihe.net/ITI/BALP/StructureDefinition"
IHE_EVENT_TYPE = "urn:ihe:event-type-code"
SECURITY_ROLE_TYPE = "http://terminology.hl7.org/CodeSystem/extra-security-role-type"
AUDIT_EVENT_TYPE = "http://terminology.hl7.org/CodeSystem/audit-event-type"
AUDIT_ENTITY_TYPE = "http://terminology.hl7.org/CodeSystem/audit-entity-type"
OBJECT_ROLE = "http://terminology.hl7.org/CodeSystem/object-role"
RESTFUL_INTERACTION = "http://hl7.org/fhir/restful-interaction"
SECURITY_SOURCE_TYPE = "http://terminology.hl7.org/CodeSystem/security-source-type"

# OAuth 2.0
JWT_BEARER_ASSERTION = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"  # RFC 7523 client assertions

# SMART and IHE definitions
SMART_OAUTH_URIS = "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris"
SMART_REQUIRES_ACCESS_TOKEN = "http://fhir.org/argonaut/smart-imaging/StructureDefinition/requires-access-token"
PIXM_OPERATION = "https://profiles.ihe.net/ITI/PIXm/OperationDefinition/IHE.PIXm.pix"
