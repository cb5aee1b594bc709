"""The trusts' Organization and Endpoint resources, built from configuration (pure)."""

from __future__ import annotations

from typing import Any

from app.core.mapping.context import TrustMapping

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
        "type": [
            {
                "coding": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/organization-type",
                        "code": "prov",
                        "display": "Healthcare Provider",
                    }
                ]
            }
        ],
        "name": trust.name,
        "endpoint": [trust.endpoint_reference],
    }


def endpoint_resource(
    trust: TrustMapping, address: str, requires_token: bool, available: bool = True
) -> dict[str, Any]:
    """The trust's WADO-RS Endpoint: clients append /studies/{StudyInstanceUID} to `address`.

    `requires_token`: the address wants the caller's SMART access token (the facade's own gateway),
    stated with the SMART Imaging Access extension. `available` False: the trust's images cannot be
    retrieved (a DIMSE-only archive without WADO-RS), and the Endpoint says so with status `off`.
    """
    extension = [{"url": REQUIRES_ACCESS_TOKEN, "valueBoolean": True}] if requires_token else []
    return {
        "resourceType": "Endpoint",
        "id": trust.endpoint_id,
        **({"extension": extension} if extension else {}),
        "identifier": [{"system": "urn:ietf:rfc:3986", "value": address}],
        "status": "active" if available else "off",
        "connectionType": {"system": CONNECTION_TYPE, "code": "dicom-wado-rs", "display": "DICOM WADO-RS"},
        "name": f"{trust.name} imaging archive (DICOMweb WADO-RS)",
        "managingOrganization": trust.organization_reference,
        "payloadType": [
            {"coding": [{"system": PAYLOAD_TYPE, "code": "any", "display": "Any"}], "text": "DICOM WADO-RS"}
        ],
        "payloadMimeType": ["application/dicom"],
        "address": address,
    }


def viewer_endpoint_resource(trust: TrustMapping, viewer: dict[str, Any]) -> dict[str, Any]:
    """The trust's own zero-footprint viewer (IHE Invoke Image Display).

    `address` is an RFC 6570 template: the EPR fills {studyUID}, {accessionNumber} and {patientID}
    (the NHS number) from the ImagingStudy and opens the result in a browser.
    """
    return {
        "resourceType": "Endpoint",
        "id": trust.viewer_endpoint_id,
        "identifier": [{"system": "urn:ietf:rfc:3986", "value": viewer["url_template"]}],
        "status": "active",
        "connectionType": {"system": CONNECTION_TYPE, "code": "ihe-iid", "display": "IHE IID"},
        "name": viewer.get("name") or f"{trust.name} image viewer (IHE Invoke Image Display)",
        "managingOrganization": trust.organization_reference,
        "payloadType": [
            {
                "coding": [{"system": PAYLOAD_TYPE, "code": "none", "display": "None"}],
                "text": "IHE Invoke Image Display",
            }
        ],
        "payloadMimeType": ["text/html"],
        "address": viewer["url_template"],
    }
