"""Trust archive adapters behind one protocol; `build_archive` picks one by configuration."""

from __future__ import annotations

from ..config import TrustSettings
from .folder import FolderArchive
from .protocol import Archive, ArchiveError, PatientKey, StudyQuery

__all__ = ["Archive", "ArchiveError", "PatientKey", "StudyQuery", "build_archive"]


def build_archive(trust: TrustSettings) -> Archive:
    kind = trust.archive["type"]
    if kind == "folder":
        return FolderArchive(trust.id, trust.archive["path"])
    raise ValueError(f"trusts[{trust.id}].archive.type: unknown archive type {kind!r}")
