"""Paths of the deployment files, and deploy/render.py loaded as a module (deploy/ is no package)."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
COMPOSE_FILE = DEPLOY / "compose.yaml"
COMPOSE_SCHEMA = DEPLOY / "schemas" / "compose-spec.json"
K8S = DEPLOY / "k8s"


def _load(name: str, path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


render = _load("deploy_render", DEPLOY / "render.py")
