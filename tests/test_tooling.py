"""The layers that `lint-imports` enforces (pyproject.toml) are the ones docs/architecture.md states."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def configured_layers() -> list[str]:
    """The layers contract of [tool.importlinter], top first, as full module names, siblings joined by ' | '."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    contracts = [c for c in config["contracts"] if c["type"] == "layers"]
    assert len(contracts) == 1, contracts
    contract = contracts[0]
    prefixes = [f"{container}." for container in contract.get("containers", [])] or [""]
    assert len(prefixes) == 1, contract["containers"]
    return [" | ".join(prefixes[0] + name.strip() for name in layer.split("|")) for layer in contract["layers"]]


def documented_layers() -> list[str]:
    """The ```layers fenced block of docs/architecture.md: one layer per line, top first."""
    text = (ROOT / "docs" / "architecture.md").read_text()
    blocks = re.findall(r"^```layers\n(.*?)^```", text, flags=re.MULTILINE | re.DOTALL)
    assert len(blocks) == 1, "docs/architecture.md needs exactly one ```layers block"
    return [" | ".join(part.strip() for part in line.split("|")) for line in blocks[0].splitlines() if line.strip()]


def test_documented_layers_are_the_enforced_ones() -> None:
    assert documented_layers() == configured_layers()
