"""The one small interface every trust archive adapter implements (folder, DICOMweb, DIMSE).

Adapters are asked with the typed queries of app.core.query and answer DICOM JSON datasets. What an
adapter can do beyond the four calls is declared in its `capabilities`, never probed with getattr;
its failures are ArchiveError (or ArchiveRetryLater); `Probe` is what a readiness probe found.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from app.core.dicom_json import Dataset
from app.core.query import StudyQuery

if TYPE_CHECKING:
    from app.archives.exchange import Origin, Steps


@dataclass
class Found:
    """What an archive answered. `incomplete` says why it may not be everything (truncation, 206...)."""

    datasets: list[Dataset]
    incomplete: str | None = None


@dataclass(frozen=True)
class Capabilities:
    """What an archive can do beyond the protocol's calls; wrappers pass their adapter's on unchanged."""

    # find_series answers a patient's series without the study UIDs (QIDO-RS /series?PatientID=, the
    # folder's index), so the studies and series requests can go out together. DIMSE cannot.
    series_by_patient: bool = False
    # find_studies and find_series are also written as conversations (app.archives.exchange) that a
    # search's fan-out runs with the other archives' at once, without a thread each: ConversationalArchive.
    conversations: bool = False


@dataclass(frozen=True)
class Probe:
    """What a readiness probe found: reachable or not, and a short, patient-free reason when not."""

    reachable: bool
    reason: str | None = None


class ArchiveError(Exception):
    """An archive could not answer; `reason` is a short, patient-free phrase for the outcome."""

    def __init__(self, archive: str, reason: str) -> None:
        super().__init__(f"{archive}: {reason}")
        self.archive = archive
        self.reason = reason


class ArchiveRejected(ArchiveError):
    """The archive answered, but refused this query or garbled its answer (4xx, malformed data): it is up.

    Its circuit breaker hears no failure: only transport failures, upstream 5xx and timeouts count,
    so that a query the archive finds too large (413) can never take a trust out for everyone.
    """


class ArchiveRetryLater(ArchiveError):
    """The archive asked us to come back later (429/503 with Retry-After)."""

    def __init__(self, archive: str, reason: str, retry_after_s: float) -> None:
        super().__init__(archive, reason)
        self.retry_after_s = retry_after_s


@runtime_checkable
class Archive(Protocol):
    """A trust archive, queried at study, series and instance level in DICOM JSON."""

    name: str
    capabilities: Capabilities

    @property
    def adapter(self) -> Archive:
        """The adapter itself, beneath any wrappers (metering, caching): an adapter answers itself.

        The registry builds image sources and probes from it (app.archives.registry)."""
        ...

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


class ConversationalArchive(Archive, Protocol):
    """An archive whose capabilities say `conversations`: its study and series queries as conversations,
    and the Origin a multiplexer reaches it at (None: not multiplexable, e.g. behind an HTTP proxy)."""

    @property
    def origin(self) -> Origin | None: ...

    def studies_steps(self, query: StudyQuery) -> Steps[Found]: ...

    def series_steps(self, query: StudyQuery, study_uids: tuple[str, ...] = ()) -> Steps[Found]: ...
