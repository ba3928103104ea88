"""Logging set-up of the stage entry points (library code only creates loggers)."""

from __future__ import annotations

import logging

FORMAT = "%(levelname)s %(name)s: %(message)s"


def configure_logging(level: int = logging.INFO) -> None:
    """Configure the root logger once, for a stage's `main()`."""
    logging.basicConfig(level=level, format=FORMAT)
