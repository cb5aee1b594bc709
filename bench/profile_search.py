"""Where the facade's CPU goes in a search, all threads included: py-spy samples the gunicorn worker
(1 worker, canned archives) while 8 clients search in a closed loop; the collapsed stacks are summed
per function (inclusive, over all threads) and per frame at the top of the stack (self).

Needs the py-spy binary (pip install py-spy; not a dependency of the project): --py-spy PATH.
Run: python -m bench.profile_search [--seconds 15] [--py-spy /path/to/py-spy] [--top 40]
"""

from __future__ import annotations

import argparse
import collections
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import requests

from bench.facade_cpu import ARCHIVES, DELAY_S, STUDIES_PER_ARCHIVE, CannedArchives, Searcher, closed_loop
from bench.federation import Facade, trust_doc


def summarise(raw: Path, top: int) -> str:
    inclusive: collections.Counter[str] = collections.Counter()
    own: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack:
            continue
        count = int(count_text)
        frames = [
            f.split(" (")[0] + " (" + f.split(" (")[1].split(":")[0] + ")" if " (" in f else f for f in stack.split(";")
        ]
        total += count
        for frame in set(frames[1:]):  # frames[0] is the thread
            inclusive[frame] += count
        own[frames[-1]] += count
    out = [f"{total} samples (all threads)", "", "inclusive:"]
    out += [f"{100 * n / total:5.1f}%  {f}" for f, n in inclusive.most_common(top)]
    out += ["", "self:"]
    out += [f"{100 * n / total:5.1f}%  {f}" for f, n in own.most_common(top)]
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--py-spy", default=shutil.which("py-spy") or "/tmp/pyspy/bin/py-spy")
    parser.add_argument("--top", type=int, default=45)
    parser.add_argument("--native", action="store_true")
    parser.add_argument("--idle", action="store_true", help="all threads, idle ones too (default: the GIL holder)")
    parser.add_argument("--stacks", nargs="*", default=[], help="print the heaviest full stacks through these")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="bench-profile-"))
    archives = CannedArchives(ARCHIVES, STUDIES_PER_ARCHIVE, DELAY_S, 0.0)
    facade = Facade("A", [trust_doc(i, u) for i, u in enumerate(archives.urls)], 10**6, 60.0, workdir, workers=1)
    try:
        facade.start()
        facade.wait_ready(requests.Session())
        client = Searcher(ARCHIVES * STUDIES_PER_ARCHIVE)
        for _ in range(10):
            client.search(facade, archives.patient)
        assert facade.process is not None
        worker = int(Path(f"/proc/{facade.process.pid}/task/{facade.process.pid}/children").read_text().split()[0])
        raw = workdir / "profile.txt"
        spy = subprocess.Popen(
            [args.py_spy, "record", "--pid", str(worker), "--threads", "--format", "raw", "--rate", "250",
             "--duration", str(int(args.seconds)), "--output", str(raw), "--nonblocking",
             *(["--native"] if args.native else []), *(["--idle"] if args.idle else ["--gil"])],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        result: dict[str, Any] = {}
        loop = threading.Thread(
            target=lambda: result.update(closed_loop(facade, archives.patient, 8, args.seconds + 1))
        )
        loop.start()
        spy.wait()
        loop.join()
        time.sleep(0.2)
        print(
            f"closed loop: {result.get('rate', 0):.1f} searches/s, "
            f"{float(result.get('cpu_per_search', 0)) * 1000:.1f} ms"
            " CPU per search (sampled, so a little higher than unsampled)"
        )
        print(summarise(raw, args.top))
        for name in args.stacks:
            print(f"\nheaviest stacks through {name}:")
            lines = [ln for ln in raw.read_text().splitlines() if name in ln]
            lines.sort(key=lambda ln: -int(ln.rpartition(" ")[2]))
            for ln in lines[:5]:
                print(
                    ln.rpartition(" ")[2],
                    " <- ".join(f.split(" (")[0] for f in reversed(ln.rpartition(" ")[0].split(";"))),
                )
    finally:
        facade.stop()
        archives.stop()


if __name__ == "__main__":
    main()
