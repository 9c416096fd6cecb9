"""The submitter's messages (featurepull.tasks.task_messages): a RedisTaskSender writes into
Redis what Celery's own send_task (featurepull.tasks.sending.MessageSender over the producer
app) writes — the queue's binding, each message, its task-sent event —, byte for byte but
for ids, the clock's time and who sent it. A Celery or kombu that writes otherwise fails
here. (A submit loads no Celery: tests/test_imports.py; workers run what it sends:
tests/test_cli_submit.py.)"""

from __future__ import annotations

import base64
import json
import re
import uuid
from collections.abc import Callable
from typing import Any

import redis

from featurepull.config import Settings
from featurepull.tasks.sending import shard_sender
from featurepull.tasks.task_messages import RedisTaskSender
from featurepull.worker.producer import producer_app
from tests.tasks.conftest import NewJob

_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_TIMESTAMP = re.compile(r'"timestamp": [0-9.e+]+')
_SENDER = re.compile(r'"reply_to": "[^"]*"')


def _normalized(raw: bytes) -> str:
    """A message as stored, with its body decoded, and its ids, time and reply address
    (Celery's per-thread id of the app) replaced by placeholders; all else as written."""
    text = raw.decode()
    body = json.loads(text)["body"]
    text = text.replace(body, "<body>") + " <body>: " + base64.b64decode(body).decode()
    return _SENDER.sub('"reply_to": <app>',
                       _TIMESTAMP.sub('"timestamp": <now>', _UUID.sub("<id>", text)))


def _sent(client: redis.Redis, queue: str, db: int,
          send: Callable[[], None]) -> tuple[list[str], list[str], dict[str, set[bytes]]]:
    """What ``send`` writes for ``queue``: its messages, its task-sent events (in order) and
    the queue's binding sets."""
    events = client.pubsub()
    events.subscribe(f"/{db}.celeryev/task.sent")
    events.get_message(timeout=5)  # the subscription's confirmation
    send()
    published = []
    while (message := events.get_message(timeout=5)) is not None:
        published.append(_normalized(message["data"]))
    events.close()
    queued = [_normalized(raw) for raw in reversed(client.lrange(queue, 0, -1))]
    bindings = {key: client.smembers(f"{key}.{queue}")
                for key in ("_kombu.binding", "_kombu.binding_permanent")}
    client.delete(queue, *(f"{key}.{queue}" for key in bindings))
    return queued, published, bindings


def test_the_submitters_messages_are_celerys(settings: Settings, new_job: NewJob) -> None:
    meta = new_job([1, 2, 3])
    client = redis.Redis.from_url(settings.redis_url)
    db = client.connection_pool.connection_kwargs["db"]
    queue = f"sending-{uuid.uuid4().hex[:8]}"

    def ours() -> None:
        send = RedisTaskSender(client, queue)
        send(meta, 0)
        send(meta, 1)
        send.scan(meta, 0)

    def celerys() -> None:
        app = producer_app(settings)
        try:
            with shard_sender(app, queue) as send:
                send(meta, 0)
                send(meta, 1)
                send.scan(meta, 0)
        finally:
            app.close()

    written: Any = _sent(client, queue, db, ours)
    assert written == _sent(client, queue, db, celerys)
    queued, published, bindings = written
    assert [re.findall(r'"task": "([^"]+)"', text) for text in queued] == [
        ["featurepull.read_shard"], ["featurepull.read_shard"], ["featurepull.scan_segments"]]
    assert f'<body>: [["{meta.job_id}", 1], {{}}, {{"callbacks": null' in queued[1]
    assert [f'"clock": {n},' in text for n, text in enumerate(published, 1)] == [True] * 3
    assert bindings["_kombu.binding"] == {f"{queue}\x06\x16\x06\x16{queue}".encode()}
