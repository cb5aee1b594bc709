"""The one small interface every trust archive adapter implements (folder, DICOMweb, DIMSE).

Adapters are asked with the typed queries of app.core.query and answer DICOM JSON datasets.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from app.core.dicom_json import Dataset
from app.core.query import StudyQuery


@dataclass
class Found:
    """What an archive answered. `incomplete` says why it may not be everything (truncation, 206...)."""

    datasets: list[Dataset]
    incomplete: str | None = None


class ArchiveError(Exception):
    """An archive could not answer; `reason` is a short, patient-free phrase for the outcome."""

    def __init__(self, archive: str, reason: str) -> None:
        super().__init__(f"{archive}: {reason}")
        self.archive = archive
        self.reason = reason


@runtime_checkable
class Archive(Protocol):
    """A trust archive, queried at study, series and instance level in DICOM JSON."""

    name: str

    def find_studies(self, query: StudyQuery) -> Found:
        """Study-level datasets (with patient attributes) matching the query."""
        ...

    def find_series(self, query: StudyQuery, study_uids: tuple[str, ...]) -> Found:
        """Series-level datasets, each with its StudyInstanceUID, of the studies matching the query.

        `study_uids` are the studies find_studies returned for the same query: an archive that can
        ask for all of a patient's series at once ignores them; one that cannot (DIMSE) uses them.
        """
        ...

    def find_instances(self, study_uid: str, series_uid: str | None = None) -> Found:
        """Instance-level datasets of one study (optionally one series), each with its series UID."""
        ...

    def close(self) -> None:
        """Release connections; the archive is not used afterwards."""
        ...
