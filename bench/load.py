"""P5: sustained 25 req/s of 8-way patient searches (loopback load generator) for 60 s: 0 errors, P2 holds.

Setup, bench.federation's machinery reused: eight Orthanc + DICOMweb archives on loopback, each behind
a TimedProxy adding DELAY_S (20 ms) to every request; make_corpus's 104-study patient plus PATIENTS
background patients with 2 studies in every archive (16 per search, 1-2 series each), valid NHS
numbers as PatientID; the searches go round the background patients (the big one is not searched),
so no answer is the same one twice in a row and nothing can be served from a cache (the facade's
upstream cache is off, as by default). One facade, `gunicorn wsgi:app` with FACADE_CONFIG pointing to
a temp YAML configured as federation's A (eight trusts, per-archive timeout 2 s, a breaker that never
opens), secured: every search carries a backend-services token the facade validates and audits.

gunicorn: 2 gthread workers x 16 threads. Two workers because the machine has 2 cores and one Python
process uses at most about one core (the GIL); a third would add contention, not capacity. 16 threads
each because a search holds its request thread for its whole latency while it mostly waits on the
archives (the upstream I/O runs on the facade's per-archive pools): at 25 req/s and ~0.5 s at rest
about 13 searches are in flight, and 32 threads leave room for the latency to double before gunicorn
queues. `--keep-alive 30`: a load-generator user sends a search every 2 s on a kept-alive connection,
and gunicorn's default of 2 s would close it just as it is reused.

Load (bench/loadgen.py: locust as a library, in a child process so its gevent monkey-patching stays
out of this process, where the proxies run on real threads): USERS users with constant_throughput
(RATE / USERS) each, started at staggered phases, so searches arrive evenly at RATE/s while each takes
less than USERS / RATE s (2 s); beyond that the rate falls, which the achieved rate shows. Side by
side, in the same run, one locust user per archive sends that archive's own QIDO-RS /studies request,
byte for byte as the facade sends it (captured at the proxy, with its Accept headers), through the same
proxy, DIRECT_RATE/s each: P2's denominator measured under the same load.

An error is a search that did not bring the whole answer: no HTTP answer, a status other than 200,
any OperationOutcome issue (with this corpus every issue means an archive did not answer, or answered
something unusable), or a number of studies other than the patient's. Latency percentiles are over
every search answered, errors included.

Before the load, a short sequential run (BASELINE_ROUNDS rounds, one search and four direct
/studies in shuffled order) gives P2 at rest for the same searches and the same facade, for context.

Run: python -m bench.load [--duration 60] [--rate 25] [--users 50] [--no-results]
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import json
import math
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import orjson
import requests

from bench.federation import (
    ARCHIVES,
    DELAY_S,
    NHS_SYSTEM,
    ROOT,
    TARGETS,
    TIMEOUT_S,
    Client,
    Facade,
    TimedProxy,
    _QuietServer,
    make_corpus,
    ms,
    pct,
    process_cpu_s,
    start_archives,
    start_proxies,
    stop_all,
    trust_doc,
    verdict,
)
from bench.results import write_section
from tests.infra.orthanc import OrthancServer
from tools.demo.generate import TRUSTS

RATE = 25.0  # searches per second, offered
DURATION_S = 60.0
USERS = 50  # locust users sharing RATE: the rate holds while a search takes < USERS / RATE s
PATIENTS = 12  # searched in turn
STUDIES_PER_ARCHIVE = 2  # make_corpus gives every background patient 2 studies in every archive
DIRECT_RATE = 2.0  # direct /studies per archive per second, side by side with the load
WORKERS, THREADS, KEEPALIVE_S = 2, 16, 30
BASELINE_ROUNDS = 40
REQUEST_TIMEOUT_S = 30.0
SUSTAINED = 0.98  # "sustained": at least this share of the offered rate achieved
BUCKET_S = 10.0
PROBE_AGENT = "bench-load-direct-probe"
BACKLOG = 1024  # listen backlog of each proxy


class _BacklogServer(_QuietServer):
    request_queue_size = BACKLOG


class LoadProxy(TimedProxy):
    """A TimedProxy that also records every exchange with its Orthanc: (sent, answered, level, probe?).

    The exchange starts after the injected delay, so its duration is the archive's own answer time;
    the direct probes are told apart from the facade's requests by their User-Agent. Its listen backlog
    is BACKLOG instead of socketserver's 5: under load dozens of connections arrive at once, and past
    the backlog the kernel drops them and the client retries only after a second, a delay of the
    bench's proxy, not of the facade or of the archive.
    """

    server_class = _BacklogServer

    def __init__(self, upstream: str) -> None:
        super().__init__(upstream)
        self.forwarded: list[tuple[float, float, str, bool]] = []

    def forward(self, method: str, target: str, headers: dict[str, str], body: bytes) -> Any:
        began = time.perf_counter()
        try:
            return super().forward(method, target, headers, body)
        finally:
            self.forwarded.append(
                (
                    began,
                    time.perf_counter(),
                    target.split("?")[0].rsplit("/", 1)[-1],
                    headers.get("User-Agent") == PROBE_AGENT,
                )
            )

    def clear(self) -> None:
        super().clear()
        self.forwarded.clear()


@dataclass
class LoadRig:
    orthancs: list[OrthancServer]
    proxies: list[LoadProxy]
    facade: Facade
    patients: list[str]  # NHS numbers searched in turn
    expected: int  # studies per search

    def orthanc_cpu_s(self) -> float:
        return sum(process_cpu_s(o._proc.pid) for o in self.orthancs if o._proc is not None)


def start_load_rig(stack: list[Any], workdir: Path, patients: int) -> LoadRig:
    began = time.monotonic()
    corpus = make_corpus(workdir / "dicom", background=patients)
    orthancs = start_archives(stack, corpus)
    proxies = start_proxies(stack, [o.dicomweb_url for o in orthancs], LoadProxy)
    facade = Facade(
        "load-8",
        [trust_doc(i, p.url) for i, p in enumerate(proxies)],
        1_000_000,
        0,
        workdir,
        workers=WORKERS,
        threads=THREADS,
        gunicorn_args=("--keep-alive", str(KEEPALIVE_S)),
    )
    stack.append(facade)
    facade.start()
    with requests.Session() as probe:
        facade.wait_ready(probe)
    print(
        f"setup: {ARCHIVES} Orthanc archives, {sum(len(f) for f in corpus.files)} instances, gunicorn "
        f"{WORKERS} workers x {THREADS} threads, {time.monotonic() - began:.1f} s",
        flush=True,
    )
    return LoadRig(
        orthancs,
        [p for p in proxies if isinstance(p, LoadProxy)],
        facade,
        [p.nhs for p in corpus.background],
        STUDIES_PER_ARCHIVE * ARCHIVES,
    )


def warm_up(rig: LoadRig) -> list[str]:
    """Every patient searched twice, four at a time (both gunicorn workers get some); incomplete answers
    are returned (a busy machine may delay one past the archive timeout), a non-200 stops the bench."""

    def one(nhs: str) -> list[str]:
        client = Client()
        problems = []
        try:
            for _ in range(2):
                answer = client.search(rig.facade, nhs)
                if answer.status != 200:
                    raise RuntimeError(f"warm-up {nhs}: HTTP {answer.status}: {answer.body}")
                if len(answer.studies) != rig.expected or answer.issues:
                    problems.append(f"{nhs}: {len(answer.studies)} studies, {answer.issues[:1]}")
        finally:
            client.session.close()
        return problems

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        return [p for found in pool.map(one, rig.patients) for p in found]


def direct_requests(rig: LoadRig) -> list[dict[str, Any]]:
    """Per archive: the /studies request the facade sent for each patient, captured at the proxy."""
    out: list[dict[str, Any]] = []
    for proxy in rig.proxies:
        sent = list(zip(proxy.requests, proxy.request_headers, strict=True))
        paths: list[str] = []
        accept: dict[str, str] = {}
        for nhs in rig.patients:
            hits = [
                (target, headers)
                for (method, target), headers in sent
                if method == "GET" and target.split("?")[0].endswith("/studies") and f"PatientID={nhs}" in target
            ]
            if not hits:
                raise RuntimeError(f"the facade sent no /studies request for {nhs} to {proxy.url}")
            target, headers = hits[-1]
            paths.append(target)
            accept = {k: v for k, v in headers.items() if k.lower() in ("accept", "accept-encoding")}
        out.append(
            {
                "base": proxy.base_url,
                "paths": paths,
                "headers": {**accept, "User-Agent": PROBE_AGENT},
                "studies": [STUDIES_PER_ARCHIVE] * len(paths),
            }
        )
    return out


def run_baseline(rig: LoadRig, direct: list[dict[str, Any]], rounds: int) -> dict[str, Any]:
    """At rest: one request at a time, a search and four direct /studies per round, shuffled."""
    client = Client()
    rng = random.Random(5)
    searches: list[float] = []
    archives: list[list[float]] = [[] for _ in range(ARCHIVES)]
    errors: list[str] = []
    try:
        for r in range(rounds):
            patient = r % len(rig.patients)
            tasks = [("search", 0)] + [("direct", (4 * r + k) % ARCHIVES) for k in range(4)]
            rng.shuffle(tasks)
            for kind, i in tasks:
                if kind == "search":
                    answer = client.search(rig.facade, rig.patients[patient])
                    if answer.status != 200 or len(answer.studies) != rig.expected or answer.issues:
                        errors.append(f"HTTP {answer.status}, {len(answer.studies)} studies, {answer.issues[:1]}")
                    searches.append(answer.seconds)
                else:
                    seconds, status, count = client.direct(direct[i]["base"] + direct[i]["paths"][patient])
                    if status != 200 or count != STUDIES_PER_ARCHIVE:
                        errors.append(f"direct {i}: HTTP {status}, {count} studies")
                    archives[i].append(seconds)
    finally:
        client.session.close()
    return {"searches": searches, "archives": archives, "errors": errors}


def machine_jiffies() -> tuple[int, int]:
    """(busy, total) jiffies of all CPUs, from /proc/stat."""
    fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:9]]
    user, nice, system, idle, iowait, irq, softirq, steal = fields
    busy = user + nice + system + irq + softirq + steal
    return busy, busy + idle + iowait


def cpu_snapshot(rig: LoadRig, generator: int) -> dict[str, float]:
    busy, total = machine_jiffies()
    return {
        "wall": time.perf_counter(),
        "facade": rig.facade.cpu_s(),
        "orthanc": rig.orthanc_cpu_s(),
        "bench": process_cpu_s(os.getpid()),
        "generator": process_cpu_s(generator),
        "machine_busy": busy / os.sysconf("SC_CLK_TCK"),
        "machine_total": total / os.sysconf("SC_CLK_TCK"),
    }


def _expect(child: subprocess.Popen[bytes], word: str, log: Path) -> None:
    assert child.stdout is not None
    line = child.stdout.readline().decode(errors="replace").strip()
    if line != word:
        child.wait(timeout=30)
        raise RuntimeError(
            f"load generator said {line!r}, expected {word!r} (exit {child.returncode}):\n"
            + log.read_text(errors="replace")[-3000:]
        )


def run_load(rig: LoadRig, spec: dict[str, Any], workdir: Path) -> dict[str, Any]:
    spec_path, out_path, log_path = workdir / "load-spec.json", workdir / "load-out.json", workdir / "loadgen.log"
    spec_path.write_text(json.dumps(spec), encoding="utf-8")
    with open(log_path, "wb") as log:
        child = subprocess.Popen(
            [sys.executable, "-m", "bench.loadgen", str(spec_path), str(out_path)],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=log,
            start_new_session=True,
        )
    limit = spec["duration"] + 2 * spec["timeout"] + 120

    def kill() -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(child.pid, signal.SIGKILL)

    watchdog = threading.Timer(limit, kill)
    watchdog.start()
    try:
        _expect(child, "ready", log_path)
        before = cpu_snapshot(rig, child.pid)
        assert child.stdin is not None
        child.stdin.write(b"go\n")
        child.stdin.flush()
        _expect(child, "done", log_path)
        after = cpu_snapshot(rig, child.pid)
        child.wait()
    finally:
        watchdog.cancel()
        if child.poll() is None:
            kill()
            child.wait()
    if child.returncode != 0:
        raise RuntimeError(
            f"load generator exited with {child.returncode}:\n" + log_path.read_text(errors="replace")[-3000:]
        )
    out: dict[str, Any] = orjson.loads(out_path.read_bytes())
    out["cpu"] = {k: after[k] - before[k] for k in before}
    out["generator_log"] = log_path.read_text(errors="replace")
    return out


def classify(record: list[Any], expected: int) -> str:
    """'' for a complete answer, else the kind of error."""
    _, _, _, _, status, studies, issues, error = record
    if status == 0:
        return "no HTTP answer"
    if status != 200:
        return "status other than 200"
    if any("did not answer" in i for i in issues):
        return "an archive did not answer"
    if issues or error:
        return "other OperationOutcome issue or unreadable body"
    if studies != expected:
        return "wrong number of studies"
    return ""


def facade_log_problems(facade: Facade) -> str:
    text = facade.log_path.read_text(errors="replace")
    counts = {k: text.count(k) for k in ("WORKER TIMEOUT", "Traceback", "[ERROR]", "[CRITICAL]")}
    found = ", ".join(f"{k}: {v}" for k, v in counts.items() if v)
    return found or "none"


def pq(values: list[float], q: float) -> float:
    """pct(), or NaN for no values (a very short run may leave an archive without a probe)."""
    return pct(values, q) if values else math.nan


def report(
    rig: LoadRig,
    spec: dict[str, Any],
    run: dict[str, Any],
    baseline: dict[str, Any] | None,
    load: tuple[float, float],
    warm_problems: list[str],
) -> str:
    t0, t1 = run["t0"], run["t1"]
    window = t1 - t0
    searches = [r for r in run["records"] if r[0] == "search"]
    kinds = [classify(r, rig.expected) for r in searches]
    errors = [(k, r) for k, r in zip(kinds, searches, strict=True) if k]
    by_kind: dict[str, int] = {}
    for k, _ in errors:
        by_kind[k] = by_kind.get(k, 0) + 1
    seconds = [r[3] for r in searches]
    buckets = int(window // BUCKET_S)
    per_bucket = [
        sum(1 for r in searches if b * BUCKET_S <= r[2] - t0 < (b + 1) * BUCKET_S) / BUCKET_S for b in range(buckets)
    ]
    achieved = len(searches) / window
    direct: list[list[float]] = [[] for _ in range(ARCHIVES)]
    probe_errors: list[str] = []
    for r in run["records"]:
        if r[0] == "direct":
            if r[4] == 200 and r[5] == STUDIES_PER_ARCHIVE and not r[7]:
                direct[r[1]].append(r[3])
            else:
                probe_errors.append(f"archive {r[1]}: HTTP {r[4]}, {r[5]} studies {r[7]}".strip())
    slowest = max(range(ARCHIVES), key=lambda i: pq(direct[i], 95) if direct[i] else -1.0)
    d50, d95 = pq(direct[slowest], 50), pq(direct[slowest], 95)
    f50, f95, f99 = pq(seconds, 50), pq(seconds, 95), pq(seconds, 99)
    ratio, overhead = f95 / d95, f50 - d50
    rate_ok = achieved >= SUSTAINED * spec["rate"]
    p2_ok = ratio <= TARGETS["P2"] and overhead * 1000 <= TARGETS["P2_ms"]
    # A facade that gives up at the archive timeout, measured against archives whose queues its abandoned
    # requests fill, can show a small ratio: with searches failing the ratio says nothing about P2.
    moot = " (moot: searches failed)" if errors else ""

    forwarded = [f for p in rig.proxies for f in p.forwarded if f[0] >= t0]  # in-flight ones too
    facade_calls = [f for f in forwarded if not f[3]]
    levels = {}
    for level in ("studies", "series"):
        times = [b - a for a, b, lv, _ in facade_calls if lv == level]
        levels[level] = f"{ms(pq(times, 50))} / {ms(pq(times, 95))}" if times else "n/a"
    probe_times = [b - a for a, b, _, probe in forwarded if probe]
    cpu = run["cpu"]
    wall = cpu["wall"]
    cores = {k: cpu[k] / wall for k in ("facade", "orthanc", "bench", "generator")}
    machine_busy = cpu["machine_busy"] / wall
    rest = machine_busy - sum(cores.values())
    ncpu = os.cpu_count() or 1
    # Costs per unit of work finished within the window (overloaded, much of what arrives is done later).
    answered = max(sum(1 for r in searches if r[2] + r[3] <= t1), 1)
    per_search = {k: cpu[k] / answered for k in ("facade", "bench")}
    per_request = cpu["orthanc"] / max(sum(1 for f in forwarded if f[1] <= t1), 1)
    per_search["orthanc"] = per_request * len(forwarded) / max(len(searches), 1)
    need = {k: v * spec["rate"] for k, v in per_search.items()}

    rows = [
        (
            "offered load",
            f"{spec['rate']:g} searches/s for {window:.0f} s: {spec['users']} locust users x "
            f"constant_throughput({spec['rate'] / spec['users']:g}); {len(rig.patients)} patients in turn, "
            f"{rig.expected} studies each",
            "",
            "",
        ),
        (
            "**searches started in the window; achieved rate** (per 10 s: min / max)",
            f"{len(searches)}; **{achieved:.2f} req/s** ("
            + (f"{min(per_bucket):.1f} / {max(per_bucket):.1f}" if per_bucket else "n/a")
            + ")",
            f">= {SUSTAINED * spec['rate']:g} req/s ({SUSTAINED:.0%} of {spec['rate']:g})",
            verdict(rate_ok),
        ),
        (
            "**errors** (no answer, non-200, any OperationOutcome issue, wrong study count)",
            f"**{len(errors)}** of {len(searches)}"
            + (" (" + "; ".join(f"{k}: {v}" for k, v in sorted(by_kind.items())) + ")" if errors else ""),
            "0",
            verdict(not errors),
        ),
        (
            "facade search latency under load p50 / p95 / p99 / max",
            f"{ms(f50)} / {ms(f95)} / {ms(f99)} / {ms(max(seconds, default=math.nan))}",
            "",
            "",
        ),
        (
            f"direct QIDO-RS /studies under load, p95 per archive ({min(len(d) for d in direct)}-"
            f"{max(len(d) for d in direct)} each); slowest ({TRUSTS[slowest].id}) p50 / p95",
            ", ".join(f"{pq(d, 95) * 1000:.0f}" for d in direct) + f" ms; {ms(d50)} / {ms(d95)}",
            "",
            "",
        ),
        (
            "**P2 under load: facade p95 / slowest archive p95**",
            f"**{ratio:.2f}x**",
            f"<= {TARGETS['P2']}x",
            verdict(ratio <= TARGETS["P2"]) + moot,
        ),
        (
            "**P2 under load: p50 overhead (facade p50 - slowest archive p50)**",
            f"**{overhead * 1000:.1f} ms**",
            f"<= {TARGETS['P2_ms']:g} ms",
            verdict(overhead * 1000 <= TARGETS["P2_ms"]) + moot,
        ),
    ]
    if baseline is not None:
        b_arch = baseline["archives"]
        b_slow = max(range(ARCHIVES), key=lambda i: pq(b_arch[i], 95) if b_arch[i] else -1.0)
        b50, b95 = pq(baseline["searches"], 50), pq(baseline["searches"], 95)
        s50, s95 = pq(b_arch[b_slow], 50), pq(b_arch[b_slow], 95)
        rows.append(
            (
                f"context, at rest (sequential, {len(baseline['searches'])} searches, {len(b_arch[0])} direct "
                "per archive): facade p50 / p95; slowest archive p50 / p95; P2 ratio; p50 overhead",
                f"{ms(b50)} / {ms(b95)}; {ms(s50)} / {ms(s95)}; {b95 / s95:.2f}x; {(b50 - s50) * 1000:.1f} ms"
                + (f"; {len(baseline['errors'])} errors" if baseline["errors"] else ""),
                "",
                "",
            )
        )
    rows += [
        (
            "where the time goes: upstream requests per search in the window; the archives' own answer time "
            f"(proxy -> Orthanc, after the {DELAY_S * 1000:g} ms delay) for the facade's /studies, its /series, "
            "the direct probes, p50 / p95",
            f"{len(facade_calls) / max(len(searches), 1):.1f}; {levels['studies']}; {levels['series']}; "
            + (f"{ms(pq(probe_times, 50))} / {ms(pq(probe_times, 95))}" if probe_times else "n/a"),
            "",
            "",
        ),
        (
            f"CPU over the window, cores busy on average (of {ncpu}): facade (gunicorn master + workers); "
            "8 Orthancs; bench process (8 proxies); load generator; the rest of the machine (other processes)",
            f"{cores['facade']:.2f}; {cores['orthanc']:.2f}; {cores['bench']:.2f}; {cores['generator']:.2f}; "
            f"{max(rest, 0.0):.2f} (machine busy {machine_busy:.2f} = {machine_busy / ncpu:.0%})",
            "",
            "",
        ),
        (
            "CPU over the window per search answered in it: facade; Orthanc per upstream request answered",
            f"{per_search['facade'] * 1000:.0f} ms; {per_request * 1000:.1f} ms",
            "",
            "",
        ),
        (
            f"CPU the offered {spec['rate']:g} req/s would take at this run's cost per search: facade + 8 Orthancs + "
            "proxies (the direct probes' small share included)",
            " + ".join(f"{need[k]:.2f}" for k in ("facade", "orthanc", "bench"))
            + f" = **{sum(need.values()):.2f} cores** (the machine has {ncpu})",
            "",
            "",
        ),
        (
            "**P5: sustained rate, 0 errors, P2 holds under load**",
            "",
            "all three",
            verdict(rate_ok and not errors and p2_ok),
        ),
    ]
    lines = ["| measure | value | target | met? |", "|---|---|---|---|"]
    lines += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows]
    setup = (
        f"Setup: {ARCHIVES} Orthanc 1.10 + DICOMweb archives on loopback, each behind a FaultProxy adding "
        f"{DELAY_S * 1000:g} ms to every request; searches of {len(rig.patients)} patients in turn "
        f"({STUDIES_PER_ARCHIVE} studies in every archive, 1-2 series each); facade served by gunicorn "
        f"(gthread, {WORKERS} workers x {THREADS} threads, keep-alive {KEEPALIVE_S} s), per-archive timeout "
        f"{TIMEOUT_S:g} s, upstream cache off, SMART token on every search; load generator: locust "
        f"(FastHttpUser) in its own process, plus one user per archive sending its direct /studies "
        f"{spec['direct_rate']:g}/s through the same proxy. Load average at start / end: "
        f"{load[0]:.1f} / {load[1]:.1f} (other processes share the machine)."
    )
    notes = []
    seen: set[str] = set()
    for kind, r in errors:
        text = f"{kind}: HTTP {r[4]}, {r[5]} studies, {r[6][:1]} {r[7]}".strip()
        if text not in seen and len(seen) < 3:
            seen.add(text)
            notes.append(f"error example: {text}")
    notes.append(f"direct probe errors: {len(probe_errors)}" + (f" (first: {probe_errors[0]})" if probe_errors else ""))
    loc = run["locust"]
    notes.append(
        f"locust's own count: {loc['requests']} requests, {loc['failures']} failures (searches and "
        "probes); " + ("it warned that its CPU was above 90%" if loc["cpu_warning"] else "no CPU warning from locust")
    )
    if warm_problems:
        notes.append(
            f"warm-up: {len(warm_problems)} of {2 * len(rig.patients)} searches incomplete (first: {warm_problems[0]})"
        )
    notes.append(
        f"in-flight searches drained {run['drained'] - t1:.1f} s after the window; facade log problems: "
        f"{facade_log_problems(rig.facade)}"
    )
    return setup + "\n\n" + "\n".join(lines) + "\n\n" + "\n".join(f"- {n}" for n in notes) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=DURATION_S, help="seconds of load (default 60)")
    parser.add_argument("--rate", type=float, default=RATE, help="searches per second offered (default 25)")
    parser.add_argument("--users", type=int, default=USERS, help="locust users sharing the rate (default 50)")
    parser.add_argument("--patients", type=int, default=PATIENTS, help="patients searched in turn (default 12)")
    parser.add_argument(
        "--baseline-rounds",
        type=int,
        default=BASELINE_ROUNDS,
        help="sequential rounds at rest before the load, for context (0: none)",
    )
    parser.add_argument("--no-results", action="store_true", help="print the table, leave bench/RESULTS.md alone")
    args = parser.parse_args()
    began = time.monotonic()
    load_start = os.getloadavg()[0]
    workdir = Path(tempfile.mkdtemp(prefix="bench-load-"))
    stack: list[Any] = []
    try:
        rig = start_load_rig(stack, workdir, args.patients)
        warm_problems = warm_up(rig)
        direct = direct_requests(rig)
        baseline = run_baseline(rig, direct, args.baseline_rounds) if args.baseline_rounds > 0 else None
        for proxy in rig.proxies:
            proxy.clear()
        base_path = urlsplit(rig.facade.base).path
        spec = {
            "origin": f"http://127.0.0.1:{rig.facade.port}",
            "rate": args.rate,
            "users": args.users,
            "duration": args.duration,
            "timeout": REQUEST_TIMEOUT_S,
            "direct_rate": DIRECT_RATE,
            "search_headers": {"Accept": "application/fhir+json", "Authorization": f"Bearer {rig.facade.token}"},
            "searches": [
                {
                    "path": f"{base_path}/ImagingStudy?patient.identifier={NHS_SYSTEM}%7C{nhs}&_count=200",
                    "studies": rig.expected,
                }
                for nhs in rig.patients
            ],
            "direct": direct,
        }
        print(f"load: {args.rate:g} searches/s for {args.duration:g} s", flush=True)
        run = run_load(rig, spec, workdir)
        body = report(rig, spec, run, baseline, (load_start, os.getloadavg()[0]), warm_problems)
        body += (
            f"\nTotal run time {time.monotonic() - began:.0f} s. Run: `python -m bench.load"
            + (f" --duration {args.duration:g}" if args.duration != DURATION_S else "")
            + "`.\n"
        )
        print(body if args.no_results else write_section("Load (P5)", body))
    finally:
        stop_all(stack)
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
