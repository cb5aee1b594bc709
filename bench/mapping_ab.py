"""P3 side by side: the mapper of another commit (the "old" side) against this tree's, interleaved.

Each side runs in a child process of its own (the two implementations share module names), with
`app`, `bench` and `tools` imported from its own source tree: the old one exported with `git
archive`, the new one this checkout. The rounds alternate old/new (the order flipped every round)
so that noise from the shared machine hits both sides alike. Each child maps, per pass, the 104
canned studies of bench.facade_cpu's P3 row and every study of the demo dataset (bench.mapping_cpu's
input), with their series, and reports the median CPU per study over its passes.

Run: python -m bench.mapping_ab [--old main] [--rounds 3] [--passes 7] [--data DEMO_DATA_DIR] [--cold]
(--cold: every cache of the mapping emptied before each pass, as for studies it has never seen;
 without --data the demo part is left out; tests/demo_dataset.py's folder under test-artifacts/ fits).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
import timeit
from collections import defaultdict
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def canned_inputs(archives: int = 8, studies: int = 13) -> list[tuple[Any, ...]]:
    """(study, its series, trust mapping, subject) of the canned archives' bench patient: P3's input."""
    from zoneinfo import ZoneInfo

    from app.core.mapping.context import TrustMapping
    from app.core.mapping.patient import subject_reference
    from bench.canned_archive import bench_nhs_number, make_archive
    from tools.demo.generate import TRUSTS

    inputs = []
    for index in range(archives):
        canned = make_archive(index, bench_nhs_number(), studies)
        t = TRUSTS[index]
        trust = TrustMapping(
            t.id, t.ods_code, t.name, f"https://fhir.nhs.uk/{t.ods_code}/Id/accession-number",
            ZoneInfo("Europe/London"), f"{t.id}-wado-rs",
        )  # fmt: skip
        for study in canned.studies:
            uid = study["0020000D"]["Value"][0]
            series = [s for s in canned.series if s["0020000D"]["Value"][0] == uid]
            inputs.append((study, series, trust, subject_reference(None, study, "urn:local")))
    return inputs


def _demo_inputs(data: Path) -> list[tuple[Any, ...]]:
    from zoneinfo import ZoneInfo

    from app.archives.folder.archive import FolderArchive
    from app.core.mapping.context import TrustMapping
    from app.core.mapping.patient import subject_reference
    from app.core.query import StudyQuery
    from tools.demo.generate import TRUSTS

    inputs = []
    for t in TRUSTS:
        if not (data / t.id).is_dir():
            continue
        archive = FolderArchive(t.id, data / t.id)
        trust = TrustMapping(
            t.id, t.ods_code, t.name, f"https://fhir.nhs.uk/{t.ods_code}/Id/accession-number",
            ZoneInfo("Europe/London"), f"{t.id}-wado-rs",
        )  # fmt: skip
        by_study: dict[str, list[Any]] = defaultdict(list)
        for series in archive.find_series(StudyQuery()).datasets:
            by_study[series["0020000D"]["Value"][0]].append(series)
        for study in archive.find_studies(StudyQuery()).datasets:
            uid = study["0020000D"]["Value"][0]
            inputs.append((study, by_study[uid], trust, subject_reference(None, study, "urn:local")))
    return inputs


def forget(mapper: Any) -> None:
    """Empty every cache the mapping keeps (lru_cache functions of app.core, the compiled rows' memos)."""
    for name, module in list(sys.modules.items()):
        if name.startswith("app.core"):
            for value in vars(module).values():
                if callable(getattr(value, "cache_clear", None)):
                    value.cache_clear()
    if mapper.study_fields is not None:
        for name, value in mapper.study_fields.__globals__.items():
            if name.startswith("M") and name[1:].isdigit() and isinstance(value, dict):
                value.clear()


def worker(root: Path, passes: int, data: Path | None, cold: bool) -> dict[str, float]:
    """In the child: map the inputs `passes` times with `root`'s mapper; median us per study."""
    sys.path.insert(0, str(root))
    from app.core.mapping.tables import load_mapper

    mapper = load_mapper()
    sets = {"canned": canned_inputs()}
    if data is not None:
        sets["demo"] = _demo_inputs(data)
    out = {}
    for name, inputs in sets.items():
        for study, series, trust, subject in inputs:  # warm the caches, as a running facade has them
            mapper.map_study(study, series, None, trust, subject, [])
        runs = []
        for _ in range(passes):
            if cold:
                forget(mapper)
            start = time.process_time()
            for study, series, trust, subject in inputs:
                mapper.map_study(study, series, None, trust, subject, [])
            runs.append((time.process_time() - start) / len(inputs) * 1e6)
        out[name] = statistics.median(runs)
        out[f"{name}_min"] = min(runs)
        out[f"{name}_studies"] = len(inputs)
    # how fast the shared machine ran Python meanwhile: the best of 5 timings of one dict.get (ns)
    best = min(timeit.repeat("d.get('a')", setup="d = {'a': 1}", number=200_000, repeat=5))
    out["dict_get_ns"] = best / 200_000 * 1e9
    return out


def export(rev: str, into: Path) -> Path:
    archive = into / "old.tar"
    paths = ["app", "bench", "tools", "mappings"]
    subprocess.run(["git", "archive", "-o", str(archive), rev, *paths], cwd=ROOT, check=True)
    with tarfile.open(archive) as tar:
        tar.extractall(into / "old", filter="data")
    return into / "old"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--old", default="main", help="git revision of the old side (default: main)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--passes", type=int, default=7)
    parser.add_argument("--data", type=Path, help="a demo dataset folder (tools.demo.generate output)")
    parser.add_argument("--cold", action="store_true", help="empty the mapping's caches before each pass")
    parser.add_argument("--worker", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.passes, args.data, args.cold)))
        return
    with tempfile.TemporaryDirectory(prefix="mapping-ab-") as tmp:
        sides = {"old": export(args.old, Path(tmp)), "new": ROOT}
        results: dict[str, list[dict[str, float]]] = {"old": [], "new": []}
        for n in range(args.rounds):
            for side in ("old", "new") if n % 2 == 0 else ("new", "old"):
                command = [sys.executable, str(Path(__file__).resolve()), "--worker", str(sides[side])]
                command += ["--passes", str(args.passes)] + (["--data", str(args.data)] if args.data else [])
                command += ["--cold"] if args.cold else []
                line = subprocess.run(command, cwd=sides[side], capture_output=True, text=True, check=True).stdout
                results[side].append(json.loads(line.strip().splitlines()[-1]))
    caches = "emptied before each pass" if args.cold else "warm"
    print(f"P3 mapping CPU per study (us), old = {args.old}, new = this tree; median of {args.passes} passes per run")
    print(f"(the mapping's caches {caches}; rounds alternate old/new)")
    for name in ("canned", "demo"):
        if name not in results["new"][0]:
            continue
        old = [r[name] for r in results["old"]]
        new = [r[name] for r in results["new"]]
        count = int(results["new"][0][f"{name}_studies"])
        print(
            f"  {name:6} ({count} studies): old {' '.join(f'{v:5.1f}' for v in old)}  |  "
            f"new {' '.join(f'{v:5.1f}' for v in new)}  |  median old {statistics.median(old):.1f} "
            f"new {statistics.median(new):.1f} ({statistics.median(old) / statistics.median(new):.2f}x)"
        )
        low_old, low_new = min(r[f"{name}_min"] for r in results["old"]), min(r[f"{name}_min"] for r in results["new"])
        print(f"  {'':6} fastest pass of all (the least disturbed): old {low_old:.1f}, new {low_new:.1f} "
              f"({low_old / low_new:.2f}x)")  # fmt: skip
    calibration = {side: statistics.median(r["dict_get_ns"] for r in runs) for side, runs in results.items()}
    old_ns, new_ns = calibration["old"], calibration["new"]
    print(f"  one dict.get meanwhile (ns, median of the runs): old {old_ns:.1f}, new {new_ns:.1f}")


if __name__ == "__main__":
    main()
