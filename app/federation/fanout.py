"""Fan-out: one search's archive queries, in parallel, each trust within its own time budget.

- QIDO-RS archives are asked without a thread: their queries are conversations (app.archives.exchange)
  that the search's own thread runs all at once on non-blocking sockets, each within its trust's
  deadline, so a hanging archive costs one idle socket until then and nothing else.
- Bulkheads for the rest (DIMSE, folders, reads one study at a time, an archive behind an HTTP proxy):
  every trust has its own small thread pool, so a hanging archive can only tie up its own threads,
  never the healthy trusts' ones.
- Where the archive can find a patient's series without the study UIDs (QIDO-RS, the folder),
  the studies and series requests go out together: one round trip of latency, still two requests.
- A job carries its deadline down to the adapter (archives.budget), so an abandoned request stops
  when its budget does.
- The circuit breaker hears each trust's outcome once per search: success, failure or timeout,
  decided here (what an archive's error means for it: `CircuitBreaker.heard`; back-pressure such as
  429 or 503 with Retry-After is no failure); a late answer after the deadline is ignored, so it can neither hide a slow
  archive nor count a timeout twice. (A threaded trust is settled once the multiplexed ones have ended:
  its answer, if complete by then, is taken even when it came after its own, shorter, deadline.)
- Each trust's answer is handed to `on_answer` as soon as it is complete, so mapping overlaps the
  wait for slower archives (a threaded trust's after the multiplexed trusts' have ended).
- Reads that go one study at a time are made for at most a cap of studies per search and archive,
  the newest: the series of an archive that needs the study UIDs for them (DIMSE: one SERIES C-FIND
  per study) for `federation.max_study_reads`; the instance-level metadata (for a read or a
  dicom-class or instance search: one instance query per study, at any archive) for
  `federation.max_instance_reads`. The others are left out with an `incomplete` note naming the cap:
  the search's size can never turn into a deadline overrun that the breaker would count as the
  archive's failure.
"""

from __future__ import annotations

import contextvars
import logging
import time
from collections import defaultdict
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any, cast

from app.archives import budget
from app.archives.exchange import Multiplexer, Origin, Outcome, Steps
from app.archives.protocol import Archive, ArchiveError, ConversationalArchive, Found
from app.core import dicom_json as dj
from app.core.dicom_json import Dataset
from app.core.mapping.context import TrustMapping
from app.core.query import StudyQuery
from app.federation.circuit import CircuitBreaker, CircuitOpen
from app.settings import TrustSettings

log = logging.getLogger(__name__)
_STUDY_TIME = dj.tag("StudyTime")  # with StudyDate: which studies are the newest


@dataclass(frozen=True)
class TrustArchive:
    """A configured trust with its archive adapter, circuit, threads and the facts its resources carry."""

    settings: TrustSettings
    archive: Archive
    mapping: TrustMapping
    timeout_s: float
    breaker: CircuitBreaker
    pool: ThreadPoolExecutor


@dataclass
class TrustAnswer:
    trust: TrustArchive
    studies: list[Dataset] = field(default_factory=list)
    series: list[Dataset] = field(default_factory=list)
    instances: dict[str, dict[str, list[Dataset]]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    left_out: set[str] = field(default_factory=set)  # studies found but not read: over max_study_reads

    def note(self, incomplete: str | None) -> None:
        if incomplete and incomplete not in self.notes:
            self.notes.append(incomplete)


def failure_issue(trust: TrustArchive, reason: str) -> dict[str, Any]:
    return {
        "severity": "warning",
        "code": "incomplete",
        "diagnostics": f"{trust.settings.name} ({trust.settings.ods_code}, archive '{trust.settings.id}') "
        f"did not answer: {reason}; results may be incomplete",
    }


def _unfiltered(query: StudyQuery) -> bool:
    return not query.modalities and query.date_from is None and query.date_to is None and query.accession_number is None


def _parallel_series(trust: TrustArchive, queries: list[StudyQuery], with_instances: bool) -> bool:
    return (
        not with_instances
        and trust.archive.capabilities.series_by_patient
        and all(q.patient is not None and q.series_uid is None and q.sop_instance_uid is None for q in queries)
    )


# -- the jobs that run on a trust's threads ---------------------------------------------------
def _studies(trust: TrustArchive, queries: list[StudyQuery], deadline: float) -> list[Found]:
    with budget.until(deadline):
        return [trust.archive.find_studies(q) for q in queries]


def _series(trust: TrustArchive, queries: list[StudyQuery], deadline: float) -> list[Found]:
    with budget.until(deadline):
        return [trust.archive.find_series(q, ()) for q in queries]


def _sequential(trust: TrustArchive, queries: list[StudyQuery], with_instances: bool, deadline: float) -> TrustAnswer:
    """Studies, then the series of the studies found (DIMSE needs their UIDs), then instances; each kind of
    read of one study at a time for at most its cap of studies (the module's docstring)."""
    answer = TrustAnswer(trust)
    limits = trust.settings.limits
    series_one_by_one = not trust.archive.capabilities.series_by_patient
    with budget.until(deadline):
        for query in queries:
            new = _add_studies(answer, trust.archive.find_studies(query))
            if with_instances:  # one instance-metadata query per study
                new = _within_study_reads(answer, new, limits.max_instance_reads, "federation.max_instance_reads")
            if series_one_by_one:  # one SERIES C-FIND per study
                new = _within_study_reads(answer, new, limits.max_study_reads, "federation.max_study_reads")
            if new:
                _add_series(answer, trust.archive.find_series(query, tuple(sorted(new))), query)
        if with_instances:
            for study in answer.studies:
                uid = dj.first_text(study, dj.STUDY_INSTANCE_UID) or ""
                instances = trust.archive.find_instances(uid)
                answer.note(instances.incomplete)
                by_series: dict[str, list[Dataset]] = defaultdict(list)
                for instance in instances.datasets:
                    by_series[dj.first_text(instance, dj.SERIES_INSTANCE_UID) or ""].append(instance)
                answer.instances[uid] = by_series
    return answer


# -- assembling answers -----------------------------------------------------------------------
def _add_studies(answer: TrustAnswer, found: Found) -> list[str]:
    answer.note(found.incomplete)
    known = {dj.first_text(s, dj.STUDY_INSTANCE_UID) for s in answer.studies}
    new = []
    for study in found.datasets:
        uid = dj.first_text(study, dj.STUDY_INSTANCE_UID)
        if uid and uid not in known:
            known.add(uid)
            new.append(uid)
            answer.studies.append(study)
    return new


def _within_study_reads(answer: TrustAnswer, new: list[str], limit: int, setting: str) -> list[str]:
    """The studies just found that may still be read one by one: the newest, while fewer than `limit`
    have been in this search. The others are taken out of the answer, with a note naming `setting`."""
    left = limit - (len(answer.studies) - len(new))
    if len(new) <= left:
        return new
    dates = {
        dj.first_text(s, dj.STUDY_INSTANCE_UID): (
            dj.first_text(s, dj.STUDY_DATE) or "",
            dj.first_text(s, _STUDY_TIME) or "",
        )
        for s in answer.studies
    }
    kept = sorted(new, key=lambda uid: (*dates[uid], uid), reverse=True)[: max(left, 0)]
    dropped = set(new) - set(kept)
    answer.studies = [s for s in answer.studies if dj.first_text(s, dj.STUDY_INSTANCE_UID) not in dropped]
    answer.left_out |= dropped
    answer.note(
        f"more than {limit} studies matched; {limit} were read, the newest first, and the others were left out "
        f"({setting})"
    )
    return kept


def _add_series(answer: TrustAnswer, found: Found, query: StudyQuery) -> None:
    answer.note(found.incomplete)
    studies = {dj.first_text(s, dj.STUDY_INSTANCE_UID) for s in answer.studies}
    known = {dj.first_text(s, dj.SERIES_INSTANCE_UID) for s in answer.series}
    for item in found.datasets:
        uid = dj.first_text(item, dj.SERIES_INSTANCE_UID)
        study = dj.first_text(item, dj.STUDY_INSTANCE_UID)
        if not uid or uid in known or study in answer.left_out:
            continue
        if study in studies:
            known.add(uid)
            answer.series.append(item)
        elif query.patient is not None and _unfiltered(query):
            # A series of the patient's whose study the archive did not list: it cut its answer.
            answer.note("it returned series of studies missing from its study list")


def _series_shortfall(answer: TrustAnswer) -> str | None:
    """An archive that counts more series for a study than it returned has cut its answer silently."""
    received: dict[str, int] = defaultdict(int)
    for series in answer.series:
        received[dj.first_text(series, dj.STUDY_INSTANCE_UID) or ""] += 1
    for study in answer.studies:
        counted = dj.values(study, dj.NUMBER_OF_STUDY_RELATED_SERIES)
        number = dj.unsigned(counted[0]) if counted else None
        if number is not None and received[dj.first_text(study, dj.STUDY_INSTANCE_UID) or ""] < number:
            return "it returned fewer series than it counts for a study (a silently truncated answer)"
    return None


def _conversation(archive: ConversationalArchive, level: str, queries: list[StudyQuery]) -> Steps[list[Found]]:
    """_studies or _series as one conversation: the queries one after another, no thread."""
    found = []
    for query in queries:
        steps = archive.studies_steps(query) if level == "studies" else archive.series_steps(query, ())
        found.append((yield from steps))
    return found


def _origin(trust: TrustArchive) -> Origin | None:
    """Where a multiplexer reaches the trust's archive, when its queries are conversations."""
    if not trust.archive.capabilities.conversations:
        return None
    return cast(ConversationalArchive, trust.archive).origin


@dataclass(eq=False)  # identity: a search's pending trusts are told apart by who they are
class _Pending:
    """One trust's outstanding jobs in one search: futures on its threads, or conversations (None) that
    the multiplexer runs in the search's own thread and whose outcomes it hands to `conversed`."""

    trust: TrustArchive
    queries: list[StudyQuery]
    deadline: float
    jobs: dict[str, Future[Any] | None]
    results: dict[str, Any] = field(default_factory=dict)
    failure: Exception | None = None
    timed_out: bool = False
    connecting: bool = False  # timed out before its archive accepted a connection

    def finished(self) -> bool:
        return set(self.results) == set(self.jobs)

    def conversed(self, name: str, outcome: Outcome) -> None:
        if outcome.timed_out:
            self.timed_out = True
            self.connecting = outcome.connecting
        elif outcome.error is not None:
            self.failure = self.failure or outcome.error
        else:
            self.results[name] = outcome.result

    def answer(self) -> TrustAnswer:
        if "all" in self.results:
            answer: TrustAnswer = self.results["all"]
        else:
            answer = TrustAnswer(self.trust)
            for found in self.results["studies"]:
                _add_studies(answer, found)
            if "series" not in self.jobs:
                return answer
            for query, found in zip(self.queries, self.results["series"], strict=True):
                _add_series(answer, found, query)
        answer.note(_series_shortfall(answer))
        return answer


def _submit(pool: ThreadPoolExecutor, job: Callable[..., Any], *args: Any) -> Future[Any]:
    """Run the job in a copy of the caller's context: its log lines and upstream requests carry the
    request's id (app.telemetry.logs). One copy per job: a context cannot be entered by two threads at once."""
    return pool.submit(contextvars.copy_context().run, job, *args)


def fan_out(
    trusts: list[TrustArchive],
    plans: dict[str, list[StudyQuery]],
    with_instances: bool,
    deadline_s: float,
    issues: list[dict[str, Any]],
    on_answer: Callable[[TrustAnswer], None],
    studies_only: bool = False,
) -> None:
    """Ask every planned trust in parallel; `on_answer` gets each complete answer, in arrival order.

    A trust whose circuit is open is not asked; one that fails, or does not answer within
    min(its timeout, the deadline), becomes an `incomplete` issue naming it. The archives whose queries
    are conversations (QIDO-RS) are asked all at once from this thread (app.archives.exchange.Multiplexer);
    the others (DIMSE, folders, reads one study at a time) on their trust's threads meanwhile.
    """
    started = time.monotonic()
    by_id = {t.settings.id: t for t in trusts}
    pending: list[_Pending] = []
    conversations: list[tuple[object, Steps[Any], Origin, float]] = []
    for trust_id, queries in plans.items():
        trust = by_id[trust_id]
        try:
            trust.breaker.before_call()
        except CircuitOpen as exc:
            issues.append(failure_issue(trust, str(exc)))
            continue
        deadline = started + min(trust.timeout_s, deadline_s)
        together = studies_only or _parallel_series(trust, queries, with_instances)
        origin = _origin(trust) if together else None
        jobs: dict[str, Future[Any] | None]
        if origin is not None:
            archive = cast(ConversationalArchive, trust.archive)
            jobs = {level: None for level in (("studies",) if studies_only else ("studies", "series"))}
            item = _Pending(trust, queries, deadline, jobs)
            conversations += [
                ((item, level), _conversation(archive, level, queries), origin, deadline) for level in jobs
            ]
        elif studies_only:
            jobs = {"studies": _submit(trust.pool, _studies, trust, queries, deadline)}
        elif together:
            jobs = {
                "studies": _submit(trust.pool, _studies, trust, queries, deadline),
                "series": _submit(trust.pool, _series, trust, queries, deadline),
            }
        else:
            jobs = {"all": _submit(trust.pool, _sequential, trust, queries, with_instances, deadline)}
        pending.append(_Pending(trust, queries, deadline, jobs) if origin is None else item)

    def conclude(item: _Pending) -> bool:
        """Tell the breaker and the caller how the trust's search ended; False while it has not."""
        outcome = _settle(item)
        if outcome is None and not item.timed_out and time.monotonic() < item.deadline:
            return False
        pending.remove(item)
        if outcome is None:
            for job in item.jobs.values():
                if job is not None:
                    job.cancel()
            item.trust.breaker.failure()
            waited = f"{item.deadline - started:.3g} s"
            reason = f"connection timed out after {waited}" if item.connecting else f"no answer within {waited}"
            issues.append(failure_issue(item.trust, reason))
        elif isinstance(outcome, TrustAnswer):
            item.trust.breaker.success()
            issues.extend(_notes(item.trust, outcome))
            on_answer(outcome)
        else:
            issues.append(failure_issue(item.trust, outcome))
        return True

    def conversed(key: object, outcome: Outcome) -> None:
        item, level = cast(tuple[_Pending, str], key)
        item.conversed(level, outcome)
        if item in pending:
            conclude(item)

    if conversations:
        Multiplexer().run(conversations, conversed)
    while pending:
        # Wait only on jobs still running: a finished one would wake the loop at once, and keep it
        # spinning while the same trust's other job is still out.
        running = [job for item in pending for job in item.jobs.values() if job is not None and not job.done()]
        if running:
            nearest = min(p.deadline for p in pending)
            wait(running, timeout=max(nearest - time.monotonic(), 0.0), return_when=FIRST_COMPLETED)
        for item in list(pending):
            conclude(item)


def _settle(item: _Pending) -> TrustAnswer | str | None:
    """The trust's answer, or the reason it failed (breaker told), or None while it is still running."""
    failure = item.failure
    for name, job in item.jobs.items():
        if failure is not None:
            break
        if job is None or name in item.results or not job.done():
            continue
        try:
            item.results[name] = job.result()
        except Exception as exc:
            failure = exc
    if isinstance(failure, ArchiveError):  # the breaker decides what it means (circuit.CircuitBreaker.heard)
        item.trust.breaker.heard(failure)
        return failure.reason
    if failure is not None:  # an adapter bug must not take the other trusts' answers down
        log.error("archive %s failed unexpectedly", item.trust.settings.id, exc_info=failure)
        item.trust.breaker.failure()
        return "internal error in its adapter"
    return item.answer() if item.finished() else None


def _notes(trust: TrustArchive, answer: TrustAnswer) -> list[dict[str, Any]]:
    return [
        {
            "severity": "warning",
            "code": "incomplete",
            "diagnostics": f"{trust.settings.name} ({trust.settings.ods_code}): {note}; results may be incomplete",
        }
        for note in answer.notes
    ]
