"""Route the engine's Python `logging` records (semla_ros.catseg, .core, .engine, .backends, ...) to the
node's rclpy logger.

Why: below ros/ the code is plain Python and logs through `logging`; without this bridge those records
go to Python's last-resort stderr handler (warnings only, no node name, not in /rosout) and
`--log-level debug` shows none of them. With it they carry the node's name, honour its log level and
reach /rosout like the node's own lines.
"""
from __future__ import annotations

import logging

from rclpy.logging import LoggingSeverity

PACKAGE_LOGGER = "semla_ros"


class RclpyHandler(logging.Handler):
    """Each record becomes one line of `logger` at the matching severity, prefixed by the module it came from."""

    def __init__(self, logger):
        super().__init__()
        self.logger = logger

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = f"{record.name}: {record.getMessage()}"
            if record.levelno >= logging.CRITICAL:
                self.logger.fatal(text)
            elif record.levelno >= logging.ERROR:
                self.logger.error(text)
            elif record.levelno >= logging.WARNING:
                self.logger.warning(text)
            elif record.levelno >= logging.INFO:
                self.logger.info(text)
            else:
                self.logger.debug(text)
        except Exception:  # a logging failure must never reach the code that logged
            self.handleError(record)


def route_python_logging(logger, package: str = PACKAGE_LOGGER) -> logging.Logger:
    """Send `package`'s Python log records to the rclpy `logger` (replacing an earlier bridge) and let
    through what that logger's level lets through. Returns the Python logger."""
    python_logger = logging.getLogger(package)
    for handler in list(python_logger.handlers):
        if isinstance(handler, RclpyHandler):
            python_logger.removeHandler(handler)
    python_logger.addHandler(RclpyHandler(logger))
    python_logger.propagate = False   # once, through rclpy; not again through the root logger
    debug = logger.is_enabled_for(LoggingSeverity.DEBUG)
    python_logger.setLevel(logging.DEBUG if debug else logging.INFO)
    return python_logger
