"""The submitter's messages (featurepull.tasks.sending): a LazySender, whose producer app has
no result backend, sends what a MessageSender over the full producer app sends; a producer
that cannot be made fails the first message. (A submit refused before its first message loads
no Celery: tests/test_imports.py.)"""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
import redis

from featurepull.config import Settings
from featurepull.tasks.sending import LazySender, shard_sender
from featurepull.worker.producer import producer_app
from tests.tasks.conftest import NewJob, queued_messages

# Different for every message (ids), or naming the sending process and thread.
_PER_MESSAGE = {"id", "root_id", "correlation_id", "delivery_tag", "reply_to", "origin"}


def _message(raw: bytes) -> dict[str, Any]:
    """A queued message without what differs from one message, or process, to the next."""
    message = json.loads(raw)
    message["headers"] = {k: v for k, v in message["headers"].items() if k not in _PER_MESSAGE}
    message["properties"] = {k: v for k, v in message["properties"].items()
                             if k not in _PER_MESSAGE and k != "delivery_info"}
    return message


def test_a_lazy_sender_sends_what_the_full_producer_app_sends(
        settings: Settings, new_job: NewJob) -> None:
    meta = new_job([1, 2, 3])
    queues = [f"sending-{uuid.uuid4().hex[:8]}" for _ in range(2)]
    client = redis.Redis.from_url(settings.redis_url)
    lazy = LazySender(settings.model_copy(update={"jobs": settings.jobs.model_copy(
        update={"queue": queues[0]})}))
    try:
        lazy(meta, 0)
    finally:
        lazy.close()
    app = producer_app(settings)
    try:
        with shard_sender(app, queues[1]) as send:
            send(meta, 0)
    finally:
        app.close()
    try:
        (lazy_sent,), (full_sent,) = (queued_messages(client, queue) for queue in queues)
        assert lazy_sent[:2] == ("featurepull.read_shard", [meta.job_id, 0])
        assert lazy_sent[:3] == full_sent[:3]  # and the same argsrepr
        assert _message(lazy_sent[3]) == _message(full_sent[3])
    finally:
        client.delete(*queues)


def test_a_producer_that_cannot_be_made_fails_the_first_message(settings: Settings,
                                                               new_job: NewJob) -> None:
    meta = new_job([1])
    lazy = LazySender(settings.model_copy(update={"redis_url": "redis://127.0.0.1:port/0"}))
    with pytest.raises(ValueError):  # redis-py's, of the URL's port
        lazy(meta, 0)
    lazy.close()  # nothing was made: nothing to release
