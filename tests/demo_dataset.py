"""The demo dataset for a test session: generated once per process, in a temporary folder.

Shared by the root conftest's `demo_data` fixture and by modules that need the manifest at import
time (tests/auth). Generation is deterministic (the default seed), so every test sees the data the
manifest describes, whatever is or is not in the repository's demo-data/ folder.
"""

from __future__ import annotations

import atexit
import shutil
import tempfile
from functools import lru_cache
from pathlib import Path

from tools.demo.generate import generate


@lru_cache(maxsize=1)
def demo_dataset() -> Path:
    root = Path(tempfile.mkdtemp(prefix="gm-demo-data-"))
    atexit.register(shutil.rmtree, root, True)
    generate(root / "data")
    return root / "data"
