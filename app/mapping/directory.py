"""The trusts' Organization and Endpoint resources, built from configuration (pure)."""

from __future__ import annotations

from typing import Any

from .context import TrustMapping

ODS_SYSTEM = "https://fhir.nhs.uk/Id/ods-organization-code"
CONNECTION_TYPE = "http://terminology.hl7.org/CodeSystem/endpoint-connection-type"
PAYLOAD_TYPE = "http://terminology.hl7.org/CodeSystem/endpoint-payload-type"
REQUIRES_ACCESS_TOKEN = "http://fhir.org/argonaut/smart-imaging/StructureDefinition/requires-access-token"


def organization_resource(trust: TrustMapping) -> dict[str, Any]:
    return {
        "resourceType": "Organization",
        "id": trust.ods_code,
        "identifier": [{"use": "official", "system": ODS_SYSTEM, "value": trust.ods_code}],
        "active": True,
        "type": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/organization-type",
                              "code": "prov", "display": "Healthcare Provider"}]}],
        "name": trust.name,
        "endpoint": [trust.endpoint_reference],
    }


def endpoint_resource(trust: TrustMapping, address: str, requires_token: bool) -> dict[str, Any]:
    """The trust's WADO-RS Endpoint: clients append /studies/{StudyInstanceUID} to `address`.

    `requires_token`: the address wants the caller's SMART access token (the facade's own gateway),
    stated with the SMART Imaging Access extension.
    """
    extension = [{"url": REQUIRES_ACCESS_TOKEN, "valueBoolean": True}] if requires_token else []
    return {
        "resourceType": "Endpoint",
        "id": trust.endpoint_id,
        **({"extension": extension} if extension else {}),
        "identifier": [{"system": "urn:ietf:rfc:3986", "value": address}],
        "status": "active",
        "connectionType": {"system": CONNECTION_TYPE, "code": "dicom-wado-rs", "display": "DICOM WADO-RS"},
        "name": f"{trust.name} imaging archive (DICOMweb WADO-RS)",
        "managingOrganization": trust.organization_reference,
        "payloadType": [{"coding": [{"system": PAYLOAD_TYPE, "code": "any", "display": "Any"}],
                         "text": "DICOM WADO-RS"}],
        "payloadMimeType": ["application/dicom"],
        "address": address,
    }
