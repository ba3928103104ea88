"""The one logging set-up of every entry point: the stages (through `pipelines.logs`), the `emotorch` CLI and
the benches (library code only creates loggers). The gateway's server logs go through uvicorn's configuration."""

from __future__ import annotations

import logging
import sys

FORMAT = "%(levelname)s %(name)s: %(message)s"


def configure_logging(level: int = logging.INFO, timestamps: bool = False) -> None:
    """Configure the root logger once, for a `main()`: to stderr, with the time when a long-running command
    (the local stack, a benchmark) needs it."""
    logging.basicConfig(level=level, format=f"%(asctime)s {FORMAT}" if timestamps else FORMAT, stream=sys.stderr)
