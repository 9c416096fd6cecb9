"""The Celery app, ``featurepull.worker:app``: ``celery -A featurepull.worker worker``.

Settings come from the environment (``FEATUREPULL_*``) and, when ``FEATUREPULL_CONFIG`` names
one, a TOML file — read once, here, at import.
"""

from featurepull.worker.app import app, create_app, producer_app

__all__ = ["app", "create_app", "producer_app"]
