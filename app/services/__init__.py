"""The facade's services as the web layer sees them: searches, reads, includes, the trust directory."""

from __future__ import annotations

from app.services.build import build_facade
from app.services.imaging import Facade, ScopeRefused

__all__ = ["Facade", "ScopeRefused", "build_facade"]
