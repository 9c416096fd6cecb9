"""The Celery app, ``featurepull.worker:app``: ``celery -A featurepull.worker worker``.

Settings come from the environment (``FEATUREPULL_*``) and, when ``FEATUREPULL_CONFIG`` names
one, a TOML file — read when the app is first asked for (:func:`~featurepull.worker.app.
worker_app`), not at import: a producer imports ``featurepull.worker.producer`` only.
"""

from __future__ import annotations

from typing import Any

# The variable naming the TOML settings file of every featurepull process: the command
# line's --config default, and how `featurepull worker|beat|flower --config` hands the file
# to Celery's processes. Here, light to import, so the CLI needs neither pydantic nor Celery.
CONFIG_ENV = "FEATUREPULL_CONFIG"


def __getattr__(name: str) -> Any:
    if name == "app":  # `celery -A featurepull.worker worker`
        from featurepull import _huge_pages

        _huge_pages.turn_off()  # before worker.app imports pyarrow
        from featurepull.worker.app import worker_app

        return worker_app()
    if name in ("create_app", "producer_app"):
        import importlib

        return getattr(importlib.import_module("featurepull.worker.app"), name)
    raise AttributeError(f"module 'featurepull.worker' has no attribute {name!r}")


__all__ = ["CONFIG_ENV", "app", "create_app", "producer_app"]
