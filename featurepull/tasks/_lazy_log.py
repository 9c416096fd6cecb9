"""A module's structlog logger that imports structlog at its first line logged: the modules
a submitting process imports log only on a failure or in a worker, and structlog with rich,
which it imports for tracebacks, is ~0.04 s of CPU before a submit's first message."""

from __future__ import annotations

from typing import Any


class LazyLogger:
    """``structlog.get_logger(name)``, got at the first attribute asked for (``log.info``)."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._logger: Any = None

    def __getattr__(self, attribute: str) -> Any:
        if self._logger is None:
            import structlog

            self._logger = structlog.get_logger(self._name)
        return getattr(self._logger, attribute)
