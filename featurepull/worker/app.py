"""Building the Celery app from settings, and the worker process lifecycle."""

from __future__ import annotations

import os
from typing import Any

from celery import Celery
from celery.signals import worker_process_init

from featurepull.config import Settings, load_settings
from featurepull.tasks import celery_tasks
from featurepull.tasks.jobs import reset_process_state

CONFIG_ENV = "FEATUREPULL_CONFIG"


def celery_config(settings: Settings) -> dict[str, Any]:
    """Celery settings: JSON only, late acks, one message at a time, events for Flower."""
    jobs = settings.jobs
    transport = {
        # Longer than a shard may run, or Redis hands a running shard to a second worker.
        "visibility_timeout": jobs.visibility_timeout_s,
        "unacked_restore_interval": jobs.redelivery_check_s,
        "unacked_restore_throttle": 1,
    }
    return {
        "broker_url": settings.redis_url,
        "result_backend": settings.redis_url,
        "task_serializer": "json",
        "result_serializer": "json",
        "event_serializer": "json",
        "accept_content": ["json"],
        "result_accept_content": ["json"],
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        "worker_send_task_events": True,
        "task_send_sent_event": True,
        "task_track_started": True,
        "task_default_queue": jobs.queue,
        "broker_transport_options": transport,
        "result_backend_transport_options": {"visibility_timeout": jobs.visibility_timeout_s},
        "result_expires": jobs.ttl_s,
        "broker_connection_retry_on_startup": True,
        "task_annotations": {
            "featurepull.read_shard": {
                "soft_time_limit": jobs.shard_soft_time_limit_s,
                "time_limit": jobs.shard_time_limit_s,
            },
            "featurepull.finish_job": {"time_limit": jobs.shard_time_limit_s},
        },
    }


def create_app(settings: Settings) -> Celery:
    """A Celery app for ``settings``, with featurepull's tasks registered."""
    app = Celery("featurepull", set_as_current=True)
    app.conf.update(celery_config(settings))
    celery_tasks.configure(settings)
    app.finalize()
    return app


def producer_app(settings: Settings) -> Celery:
    """A Celery app that only sends featurepull tasks (a submitting process, not a worker)."""
    app = Celery("featurepull-producer", set_as_current=False)
    app.conf.update(celery_config(settings))
    return app


@worker_process_init.connect
def _after_fork(**_: Any) -> None:
    # Nothing network-bound crosses a fork: readers and Redis clients are rebuilt per child.
    reset_process_state()


app = create_app(load_settings(os.environ.get(CONFIG_ENV)))
