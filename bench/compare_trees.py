"""C1 side by side for two source trees: the facade of another checkout (e.g. `git archive <commit>` unpacked)
and this one, against the same canned archives, searches interleaved in shuffled pairs, so that a shared
machine's load hits both alike. CPU per search is read from /proc around each search (each facade serves
only its own searches).

Run: python -m bench.compare_trees /path/to/other/tree [--rounds 150]
"""

from __future__ import annotations

import argparse
import random
import tempfile
from pathlib import Path

import requests

import bench.federation as fed
from bench.facade_cpu import (
    ARCHIVES,
    DELAY_S,
    STUDIES_PER_ARCHIVE,
    CannedArchives,
    Searcher,
    calibration_ns,
    load_average,
)
from bench.federation import Facade, pct, trust_doc


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("other", type=Path, help="the other source tree (its own wsgi.py, app/, config/)")
    parser.add_argument("--rounds", type=int, default=150)
    args = parser.parse_args()
    archives = CannedArchives(ARCHIVES, STUDIES_PER_ARCHIVE, DELAY_S, 0.0)
    workdir = Path(tempfile.mkdtemp(prefix="bench-compare-"))
    trusts = [trust_doc(i, u) for i, u in enumerate(archives.urls)]
    here = fed.ROOT
    facades = [Facade("other", trusts, 10**6, 60.0, workdir), Facade("this", trusts, 10**6, 60.0, workdir)]
    try:
        fed.ROOT = args.other.resolve()  # Facade.start runs gunicorn in bench.federation.ROOT
        facades[0].start()
        fed.ROOT = here
        facades[1].start()
        session = requests.Session()
        for facade in facades:
            facade.wait_ready(session)
        client = Searcher(ARCHIVES * STUDIES_PER_ARCHIVE)
        for facade in facades:
            for _ in range(10):
                client.search(facade, archives.patient)
        load = load_average()
        cpu = {f.label: 0.0 for f in facades}
        latency: dict[str, list[float]] = {f.label: [] for f in facades}
        errors = 0
        for _ in range(args.rounds):
            for facade in random.sample(facades, 2):
                before = facade.cpu_s()
                out = client.search(facade, archives.patient)
                cpu[facade.label] += facade.cpu_s() - before
                latency[facade.label].append(out.seconds)
                errors += not out.ok
        for label in cpu:
            print(
                f"{label}: C1 {cpu[label] / args.rounds * 1000:.1f} ms CPU per search; "
                f"p50 {pct(latency[label], 50) * 1000:.1f} ms, p95 {pct(latency[label], 95) * 1000:.1f} ms"
            )
        print(f"errors {errors}; load {load} -> {load_average()}; dict.get {calibration_ns():.0f} ns")
    finally:
        fed.ROOT = here
        for facade in facades:
            facade.stop()
        archives.stop()


if __name__ == "__main__":
    main()
