"""The demo dataset for a test session: generated once, then reused while the generator is unchanged.

Shared by the root conftest's `demo_data` fixture and by modules that need the manifest at import
time (tests/auth). Generation is deterministic (the default seed) but no longer cheap (real-sized
images, tens of megabytes), so the dataset lives in test-artifacts/demo-data-v<version>-<digest>/:
the generator's version and a digest of its source files name the folder, so a changed generator
gets a fresh folder and an unchanged one is generated once, whatever the number of runs. It is
built in a temporary sibling and renamed into place under a lock (concurrent sessions wait for
one generation), and older folders are removed. Tests only read it: a test that needs to change
files copies them first.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import sys
from functools import lru_cache
from pathlib import Path

from tools.demo.generate import GENERATOR_VERSION, MANIFEST_NAME, dataset_version, generate

ROOT = Path(__file__).resolve().parent.parent
CACHE_ROOT = ROOT / "test-artifacts"
PREFIX = "demo-data-v"
SOURCES = (ROOT / "tools" / "demo" / "generate.py", ROOT / "tools" / "demo" / "pixels.py")


def cache_key() -> str:
    """`<version>-<digest>`: the generator's version and a digest of its source files."""
    digest = hashlib.sha256()
    for source in SOURCES:
        digest.update(source.read_bytes())
    return f"{GENERATOR_VERSION}-{digest.hexdigest()[:12]}"


def _complete(folder: Path) -> bool:
    return dataset_version(folder) == GENERATOR_VERSION


@lru_cache(maxsize=1)
def demo_dataset() -> Path:
    folder = CACHE_ROOT / f"{PREFIX}{cache_key()}"
    if _complete(folder):
        return folder
    CACHE_ROOT.mkdir(parents=True, exist_ok=True)
    with (CACHE_ROOT / "demo-data.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another session may be generating it right now
        if _complete(folder):
            return folder
        building = CACHE_ROOT / f".{folder.name}.building-{os.getpid()}"
        shutil.rmtree(building, ignore_errors=True)
        print(f"\ngenerating the demo dataset into {folder} (once per generator version)", file=sys.stderr)
        generate(building, progress=sys.stderr)
        shutil.rmtree(folder, ignore_errors=True)
        os.replace(building, folder)
        for stale in CACHE_ROOT.glob(f"{PREFIX}*"):
            if stale != folder:
                shutil.rmtree(stale, ignore_errors=True)
        for stale in CACHE_ROOT.glob(f".{PREFIX}*.building-*"):
            shutil.rmtree(stale, ignore_errors=True)
    assert (folder / MANIFEST_NAME).is_file()
    return folder
