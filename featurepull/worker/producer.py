"""Celery's settings for featurepull, and the small app a producer sends tasks with.

Light on purpose: ``featurepull submit`` and :func:`featurepull.submit` import this, never
the worker's app (``featurepull.worker.app``), its signal receivers or its scorers.
"""

from __future__ import annotations

from typing import Any

from celery import Celery

from featurepull.config import Settings

# Result-backend writes retried through a Redis outage: full-jitter backoff from 10 ms,
# doubling to at most 10 s, about two minutes in all (as long as a shard waits for Redis).
RESULT_BACKEND_RETRIES = 30


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
        # Celery stores STARTED before a task's body runs (and its result after): failing
        # there, outside the body, the task is failed and its message acked (acks_late) —
        # a shard lost for good. So these writes wait out an outage, as the body does.
        "result_backend_always_retry": True,
        "result_backend_max_retries": RESULT_BACKEND_RETRIES,
        "broker_connection_retry_on_startup": True,
        "task_annotations": {
            "featurepull.read_shard": {
                "soft_time_limit": jobs.shard_soft_time_limit_s,
                "time_limit": jobs.shard_time_limit_s,
            },
            "featurepull.scan_segments": {
                "soft_time_limit": jobs.shard_soft_time_limit_s,
                "time_limit": jobs.shard_time_limit_s,
            },
            "featurepull.finish_job": {"time_limit": jobs.shard_time_limit_s},
        },
    }


def producer_app(settings: Settings, results: bool = True) -> Celery:
    """A Celery app that only sends featurepull tasks (a submitting process, not a worker).

    ``results=False``: without the result backend, for a sender that never waits on what it
    sends (a job's state is in its own record): Celery's ``send_task`` would otherwise load
    the Redis backend and subscribe to each message's result channel (a second connection,
    a SUBSCRIBE and an UNSUBSCRIBE per shard). The messages are the same either way."""
    app = Celery("featurepull-producer", set_as_current=False)
    app.conf.update(celery_config(settings))
    if not results:
        app.conf.result_backend = None
    return app
