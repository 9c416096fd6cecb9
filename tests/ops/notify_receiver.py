"""Another team's Celery app, as a scoring pipeline would run it: it never imports
featurepull. It starts a job by sending ``featurepull.submit_job`` by name, and its own worker
(``celery -A tests.ops.notify_receiver worker``) receives the job's end notification.

Each notification is recorded in Redis, in the list ``RECEIVED_KEY``, with whether the
receiving process had imported featurepull (it must not have). Configured from the
environment: ``RECEIVER_REDIS_URL`` (broker and results, shared with featurepull) and
``RECEIVER_QUEUE``.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

import redis
from celery import Celery

TASK = "scoring.features_ready"
RECEIVED_KEY = "scoring:notifications"

app = Celery("scoring", broker=os.environ.get("RECEIVER_REDIS_URL", "redis://127.0.0.1:6379/0"),
             backend=os.environ.get("RECEIVER_REDIS_URL", "redis://127.0.0.1:6379/0"))
app.conf.update(task_serializer="json", accept_content=["json"], result_accept_content=["json"],
                task_default_queue=os.environ.get("RECEIVER_QUEUE", "scoring"),
                task_acks_late=True, worker_prefetch_multiplier=1)


@app.task(name=TASK)
def features_ready(summary: dict[str, Any]) -> None:
    """What a scoring pipeline would do next; here: write down what arrived."""
    record = {"summary": summary,
              "featurepull_imported": any(m.split(".")[0] == "featurepull" for m in sys.modules)}
    client = redis.Redis.from_url(app.conf.broker_url)
    client.rpush(RECEIVED_KEY, json.dumps(record))
