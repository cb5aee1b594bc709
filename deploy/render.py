"""Render the deployment templates (deploy/*.template.*) with string.Template.

    python deploy/render.py           # write deploy/compose/facade.yaml and deploy/compose/nginx.conf
    python deploy/render.py --check   # exit 1 when the committed renderings differ from the templates

The values for compose are compose.yaml's `x-template-values` (hosts are compose service names); the
native proof in tests/deploy/ renders the same templates with loopback hosts and free ports. A missing
value is an error (Template.substitute), never an empty string.
"""

from __future__ import annotations

import argparse
import string
import sys
from collections.abc import Mapping
from pathlib import Path

import yaml

DEPLOY = Path(__file__).resolve().parent
FACADE_TEMPLATE = DEPLOY / "facade.template.yaml"
NGINX_TEMPLATE = DEPLOY / "nginx.template.conf"
COMPOSE_FILE = DEPLOY / "compose.yaml"
# template -> its rendering for compose (mounted by compose.yaml)
COMPOSE_RENDERINGS = {
    FACADE_TEMPLATE: DEPLOY / "compose" / "facade.yaml",
    NGINX_TEMPLATE: DEPLOY / "compose" / "nginx.conf",
}
GENERATED = "# GENERATED from deploy/{name}: edit the template, then run `python deploy/render.py`.\n"


def placeholders(template: Path) -> set[str]:
    """The names a template asks for."""
    found: set[str] = set()
    for match in string.Template.pattern.finditer(template.read_text(encoding="utf-8")):
        name = match.group("named") or match.group("braced")
        if name:
            found.add(name)
    return found


def render(template: Path, values: Mapping[str, object]) -> str:
    """The template with every placeholder replaced (KeyError for a missing value)."""
    return string.Template(template.read_text(encoding="utf-8")).substitute({k: str(v) for k, v in values.items()})


def compose_values() -> dict[str, str]:
    document = yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))
    return {str(k): str(v) for k, v in document["x-template-values"].items()}


def compose_rendering(template: Path) -> str:
    return GENERATED.format(name=template.name) + render(template, compose_values())


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python deploy/render.py", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--check", action="store_true", help="write nothing; exit 1 when a committed rendering is out of date"
    )
    check = parser.parse_args(argv).check
    stale = []
    for template, target in COMPOSE_RENDERINGS.items():
        text = compose_rendering(template)
        if check:
            if not target.is_file() or target.read_text(encoding="utf-8") != text:
                stale.append(str(target.relative_to(DEPLOY.parent)))
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text, encoding="utf-8")
            print(f"wrote {target.relative_to(DEPLOY.parent)}")
    if stale:
        print(f"out of date (run python deploy/render.py): {', '.join(stale)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
