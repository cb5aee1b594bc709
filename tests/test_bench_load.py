"""The load bench's machinery runs end to end: a 3-second run prints its result table.

Only that the bench works is checked (rig, locust child process, report); never its timings.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.integration


def test_a_short_load_run_prints_its_table() -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.load",
            "--duration",
            "3",
            "--rate",
            "4",
            "--users",
            "4",
            "--patients",
            "2",
            "--baseline-rounds",
            "2",
            "--no-results",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=400,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    for row in (
        "| **searches started in the window; achieved rate**",
        "| **errors**",
        "| **P2 under load: facade p95 / slowest archive p95** |",
        "| **P5: sustained rate",
    ):
        assert row in done.stdout, done.stdout
