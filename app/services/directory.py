"""The trusts' directory data (Endpoints, Organizations): built once from the settings, no patient data."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from app.core.errors import NotFound, quote

Resource = dict[str, Any]


@dataclass(frozen=True)
class Directory:
    endpoints: list[Resource]
    organizations: list[Resource]

    def resources(self, resource_type: str) -> list[Resource]:
        """The directory's resources of one type (Endpoint or Organization)."""
        return {"Endpoint": self.endpoints, "Organization": self.organizations}[resource_type]

    def read(self, resource_type: str, resource_id: str) -> Resource:
        found = next((r for r in self.resources(resource_type) if r["id"] == resource_id), None)
        if found is None:
            raise NotFound(f"{resource_type}/{quote(resource_id)} does not exist")
        return found
