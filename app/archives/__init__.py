"""Trust archive adapters behind one protocol; the registry (registry.py) builds them from the settings."""

from __future__ import annotations

from app.archives.protocol import Archive, ArchiveError
from app.archives.registry import build_archive
from app.core.query import PatientKey, StudyQuery

__all__ = ["Archive", "ArchiveError", "PatientKey", "StudyQuery", "build_archive"]
