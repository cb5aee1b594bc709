"""Whose study is it? The image gateway's compartment check, asked of the trust archive itself."""

from __future__ import annotations

import threading
import time

from cachetools import TTLCache

from app.archives import budget
from app.archives.images import RetrievalError
from app.archives.protocol import ArchiveError
from app.core.compartment import Compartment
from app.core.errors import NotFound
from app.core.mapping.patient import nhs_number_of
from app.core.query import StudyQuery
from app.federation.circuit import CircuitOpen
from app.federation.search import Federation

Owners = tuple[str | None, ...]


class StudyOwners:
    """(trust, study UID) -> the NHS numbers its archive files the study under (None: unresolved).

    A viewer asks for one study's frames many times a second: the owner is asked of the archive once,
    then reused for `ttl_s` (0: never kept). Only successful answers are kept; the size is bounded.
    """

    def __init__(self, federation: Federation, ttl_s: float, max_entries: int = 10_000) -> None:
        self.federation = federation
        self.trusts = {t.settings.id: t for t in federation.trusts}
        self._cache: TTLCache[tuple[str, str], Owners] | None = TTLCache(max_entries, ttl_s) if ttl_s > 0 else None
        self._lock = threading.Lock()

    def owners(self, trust_id: str, study_uid: str) -> Owners:
        """Empty when the archive does not hold the study. Asked of the archive (its breaker respected),
        so the gateway's compartment check never trusts the caller's word."""
        key = (trust_id, study_uid)
        if self._cache is not None:
            with self._lock:
                cached = self._cache.get(key)
            if cached is not None:
                return cached
        trust = self.trusts[trust_id]
        try:
            trust.breaker.before_call()
        except CircuitOpen:
            raise RetrievalError(trust_id, 503, "the archive is not answering (circuit open)", 30.0) from None
        try:
            with budget.until(time.monotonic() + trust.timeout_s):
                found = trust.archive.find_studies(StudyQuery(study_uids=(study_uid,)))
        except ArchiveError as exc:
            trust.breaker.heard(exc)  # a 4xx or back-pressure is no failure of the archive
            raise RetrievalError(trust_id, 502, exc.reason) from None
        trust.breaker.success()
        rule = trust.settings.nhs_number
        owners = tuple(
            nhs_number_of(d, rule.match, rule.issuer, trust_id, self.federation.xref.reverse) for d in found.datasets
        )
        if self._cache is not None:
            with self._lock:
                self._cache[key] = owners
        return owners

    def check(self, trust_id: str, study_uid: str, compartment: Compartment) -> tuple[str, ...]:
        """The study's patient when the compartment may see it; 404 otherwise, byte for byte the answer for a
        study the trust does not hold (another patient's study and no study at all look the same). A study
        whose identity does not resolve to one patient is refused whatever the token: the FHIR API does not
        show it under a patient either. The refusal names the owners to the audit only."""
        owners = self.owners(trust_id, study_uid)
        resolved = tuple(sorted({o for o in owners if o}))
        if not compartment.admits_all(owners):
            raise NotFound(f"the study is not held by trust {trust_id}", patients=resolved)
        return resolved
