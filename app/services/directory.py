"""The trusts' directory data (Endpoints, Organizations): built once from the settings, no patient data."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from app.core.errors import NotFound

Resource = dict[str, Any]


@dataclass(frozen=True)
class Directory:
    endpoints: list[Resource]
    organizations: list[Resource]

    def resources(self, resource_type: str) -> list[Resource]:
        return self.endpoints if resource_type == "Endpoint" else self.organizations

    def read(self, resource_type: str, resource_id: str) -> Resource:
        found = next((r for r in self.resources(resource_type) if r["id"] == resource_id), None)
        if found is None:
            raise NotFound(f"{resource_type}/{resource_id} does not exist")
        return found

    def search(
        self, resource_type: str, criteria: list[tuple[Callable[[Resource, str], bool], list[str]]]
    ) -> list[Resource]:
        """The resources matching every criterion (each: a test and the values, any of which may match)."""
        matches = self.resources(resource_type)
        for test, values in criteria:
            matches = [r for r in matches if any(test(r, v) for v in values)]
        return matches
