"""structlog, configured once per process.

Key-value context travels in contextvars (a request id bound by the RPC layer
shows on every line of that request). A terminal gets the console renderer,
anything else (files, CI, log collectors) one JSON object per line.
"""

from __future__ import annotations

import logging
import os
import sys

import structlog


def configure(service: str, level: str | None = None, fmt: str | None = None) -> None:
    """Configure structlog and the stdlib root logger for this process."""
    level_name = (level or os.environ.get("TRAINYARD_LOG_LEVEL", "info")).upper()
    fmt = fmt or os.environ.get("TRAINYARD_LOG_FORMAT", "auto")
    use_console = fmt == "console" or (fmt == "auto" and sys.stderr.isatty())
    renderer: structlog.types.Processor = (
        structlog.dev.ConsoleRenderer() if use_console else structlog.processors.JSONRenderer()
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.StackInfoRenderer(),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(getattr(logging, level_name, logging.INFO)),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(service=service)
    # Libraries that log through the stdlib (minio/urllib3, grpc) go to stderr at WARNING.
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(name)s %(levelname)s %(message)s")


def get_logger(name: str) -> structlog.stdlib.BoundLogger:
    return structlog.get_logger(name)
