"""Patients by NHS number, from the imaging records of every trust, and IHE PIXm over the cross-reference."""

from __future__ import annotations

from typing import Any

from app.core import systems
from app.core.compartment import Compartment
from app.core.errors import Forbidden, InvalidRequest, NotFound, quote
from app.core.mapping.patient import subject_number
from app.core.query import NameQuery
from app.core.search.study import StudySearch
from app.federation.search import Federation
from app.federation.xref import PatientXref
from app.settings import Settings

Resource = dict[str, Any]
Issues = list[dict[str, Any]]
PIX_NOT_FOUND = "sourceIdentifier Patient Identifier not found"


class PatientService:
    """Patient search, read and $ihe-pix, each under the request's patient compartment."""

    def __init__(self, settings: Settings, federation: Federation) -> None:
        self.settings = settings
        self.federation = federation

    def search(self, numbers: frozenset[str] | None, compartment: Compartment) -> tuple[list[Resource], Issues]:
        """Patients for NHS numbers (in order), a number with no records left out."""
        wanted = compartment.patients(numbers)
        if wanted is None:
            raise InvalidRequest("a Patient search needs _id or identifier (NHS number)")
        return self.federation.patients(sorted(wanted))

    def read(self, nhs_number: str, compartment: Compartment) -> Resource:
        # Not 403, and the id not named: another patient reads exactly like one nobody holds.
        compartment.require(nhs_number, "the Patient")
        patient, _issues = self.federation.patient(nhs_number)
        if patient is None:
            raise NotFound("the Patient has no imaging records in any trust archive", patients=(nhs_number,))
        return patient

    # -- what the authorization server's patient picker needs (auth.server.PatientFinder) ------------------
    def patient(self, nhs_number: str) -> tuple[Resource | None, Issues]:
        return self.federation.patient(nhs_number)

    def patients_by_name(self, name: NameQuery) -> tuple[list[Resource], Issues]:
        return self.federation.patients_by_name(name)

    def study_problem(self, nhs_number: str, study_uid: str) -> str | None:
        """Why the study cannot be this patient's context (an EHR launch stays in one patient's compartment),
        or None when it is the patient's. An archive that did not answer is said so, never taken as a no."""
        compartment = Compartment(self.settings.base_url, nhs_number)
        search = StudySearch(nhs_numbers=compartment.patients(None), study_uids=frozenset({study_uid}))
        result = self.federation.search(search)
        if compartment.keep(result.studies, subject_number):
            return None
        if any(i["code"] == "incomplete" for i in result.issues):
            return "imaging_study could not be checked: an archive did not answer; try again"
        return "imaging_study is not a study of that patient"

    # -- IHE PIXm -------------------------------------------------------------------------------------------
    def pix(self, system: str, value: str, target_systems: set[str], compartment: Compartment) -> Resource:
        """$ihe-pix over the CSV cross-reference: every identifier of the same patient.

        An unknown identifier and another patient's identifier (under a patient scope) read alike.
        """
        xref = self.federation.xref
        if not isinstance(xref, PatientXref):
            raise NotFound("this facade reads its cross-reference from another PIXm service")
        trusts = {systems.local_patient_identifier(t.ods_code): t.id for t in self.settings.trusts}
        known = {systems.NHS_NUMBER, *trusts}
        if system not in known:
            raise InvalidRequest(f"sourceIdentifier Assigning Authority {quote(system)} not found", "sourceIdentifier")
        if target_systems - known:
            raise Forbidden(self.settings.base_url, "targetSystem not found")  # PIXm: 403
        if system == systems.NHS_NUMBER:
            nhs: str | None = value if xref.holds(value) else None
        else:
            nhs = xref.nhs_number_for(trusts[system], value)
        if nhs is None or not compartment.admits(nhs):
            # IHE ITI-83's wording, the same for another patient's identifier and an unknown one (the value
            # is not echoed: the two bodies are byte for byte the same); the audit names the patient.
            targeted = nhs or (value if system == systems.NHS_NUMBER else None)
            raise NotFound(PIX_NOT_FOUND, "sourceIdentifier", patients=(targeted,) if targeted else ())
        identifiers = [(systems.NHS_NUMBER, nhs)]
        for trust in self.settings.trusts:
            identifiers += [
                (systems.local_patient_identifier(trust.ods_code), key.patient_id)
                for key in xref.local_keys(nhs, trust.id)
            ]
        wanted = [
            (s, v) for s, v in identifiers if (s, v) != (system, value) and (not target_systems or s in target_systems)
        ]
        parameters: list[Resource] = [
            {"name": "targetIdentifier", "valueIdentifier": {"system": s, "value": v}} for s, v in wanted
        ]
        parameters.append({"name": "targetId", "valueReference": {"reference": f"Patient/{nhs}"}})
        return {"resourceType": "Parameters", "parameter": parameters}
