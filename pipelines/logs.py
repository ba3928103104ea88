"""The stages' logging set-up: the project's one definition, `emotorch.logs` (light: no third-party import)."""

from __future__ import annotations

from emotorch.logs import FORMAT, configure_logging

__all__ = ["FORMAT", "configure_logging"]
