"""A submitting process's task messages written into the broker's Redis as Celery and kombu
write them, without importing either (~0.05 s of CPU, on the way to the first shard's read).

The broker is the Redis of ``redis_url`` (``featurepull.worker.producer.celery_config``),
and a message is what Celery 5's ``send_task`` (protocol 2, JSON, ``task_send_sent_event``)
over kombu's Redis transport writes there, priority 0 on the default exchange:

- once per sender, the queue's binding, as kombu declares the queue: SADD
  ``_kombu.binding.<queue>`` and ``_kombu.binding_permanent.<queue>`` of
  ``<queue>\\x06\\x16\\x06\\x16<queue>``;
- the message, LPUSHed on the list ``<queue>``: JSON of ``body`` (base64 of the JSON
  ``[args, {}, embed]``), content type and encoding, Celery's ``headers`` (task name and
  id, ``argsrepr``, ``origin`` ...) and kombu's ``properties`` (delivery tag, routing);
- its ``task-sent`` event (Flower's), PUBLISHed on ``/<db>.celeryev/task.sent``.

``tests/tasks/test_sending.py`` compares each with what the installed Celery writes, ids
aside, so a Celery or kombu that writes otherwise fails there. Workers send their messages
through Celery (``featurepull.tasks.sending.MessageSender``).
"""

from __future__ import annotations

import base64
import itertools
import json
import os
import socket
import time
import uuid
from typing import TYPE_CHECKING, Any

from featurepull.tasks import monitor

if TYPE_CHECKING:
    import redis

    from featurepull.tasks.store import JobMeta

SHARD_TASK = "featurepull.read_shard"
SCAN_TASK = "featurepull.scan_segments"
_SEPARATOR = "\x06\x16"  # kombu's, between a binding's routing key, pattern and queue
_EMBED = {"callbacks": None, "errbacks": None, "chain": None, "chord": None}
_EVENTS = "celeryev"


def _utcoffset() -> float:
    """The local offset to UTC in hours, as Celery's events carry it
    (``celery.utils.time.utcoffset``)."""
    if time.localtime().tm_isdst:
        return time.altzone / 3600
    return time.timezone / 3600


def _encoded(value: Any) -> str:
    return base64.b64encode(json.dumps(value).encode()).decode()


class RedisTaskSender:
    """Sends a job's task messages on ``queue`` with ``client`` (the broker's Redis); given
    to ``create_job`` (``Enqueue``), so each shard is queued once its keys are stored."""

    def __init__(self, client: redis.Redis, queue: str) -> None:
        self.client, self.queue = client, queue
        # Celery's names for a process that is not a worker ("gen<pid>@<host>"), and its
        # events' Lamport clock, which counts from 1 in a new process.
        self.hostname = f"gen{os.getpid()}@{socket.gethostname()}"
        self.reply_to = str(uuid.uuid4())
        self._clock = itertools.count(1)
        self._declared = False
        db = client.connection_pool.connection_kwargs.get("db", 0)
        self._event_channel = f"/{db}.{_EVENTS}/task.sent"

    def __call__(self, meta: JobMeta, shard: int) -> None:
        self.send(SHARD_TASK, [meta.job_id, shard], monitor.shard_args(meta, shard))

    def scan(self, meta: JobMeta, part: int) -> None:
        self.send(SCAN_TASK, [meta.job_id, part], monitor.scan_args(meta, part))

    def send(self, task: str, args: list[Any], argsrepr: str) -> None:
        """Queue one ``task(*args)`` message and its task-sent event."""
        task_id = str(uuid.uuid4())
        headers: dict[str, Any] = {
            "lang": "py", "task": task, "id": task_id, "shadow": None, "eta": None,
            "expires": None, "group": None, "group_index": None, "retries": 0,
            "timelimit": [None, None], "root_id": task_id, "parent_id": None,
            "argsrepr": argsrepr, "kwargsrepr": "{}", "origin": self.hostname,
            "ignore_result": None, "replaced_task_nesting": 0, "stamped_headers": None,
            "stamps": {},
        }
        properties = {
            "correlation_id": task_id, "reply_to": self.reply_to, "argsrepr": argsrepr,
            "delivery_mode": 2, "delivery_info": {"exchange": "", "routing_key": self.queue},
            "priority": 0, "body_encoding": "base64", "delivery_tag": str(uuid.uuid4()),
        }
        message = {"body": _encoded([args, {}, _EMBED]), "content-encoding": "utf-8",
                   "content-type": "application/json", "headers": headers,
                   "properties": properties}
        event = {
            "hostname": self.hostname, "utcoffset": _utcoffset(), "pid": os.getpid(),
            "clock": next(self._clock), "uuid": task_id, "root_id": task_id,
            "parent_id": None, "name": task, "args": argsrepr, "kwargs": "{}", "retries": 0,
            "eta": None, "expires": None, "queue": self.queue, "exchange": "",
            "routing_key": self.queue, "timestamp": time.time(), "type": "task-sent",
        }
        sent = {"body": _encoded(event), "content-encoding": "utf-8",
                "content-type": "application/json", "headers": {"hostname": self.hostname},
                "properties": {"delivery_mode": 1,
                               "delivery_info": {"exchange": _EVENTS,
                                                 "routing_key": "task.sent"},
                               "priority": 0, "body_encoding": "base64",
                               "delivery_tag": str(uuid.uuid4())}}
        with self.client.pipeline(transaction=False) as pipe:  # one round trip
            if not self._declared:  # as kombu declares the queue before its first message
                binding = _SEPARATOR.join([self.queue, "", self.queue])
                pipe.sadd(f"_kombu.binding.{self.queue}", binding)
                pipe.sadd(f"_kombu.binding_permanent.{self.queue}", binding)
            pipe.lpush(self.queue, json.dumps(message))
            pipe.publish(self._event_channel, json.dumps(sent))
            pipe.execute()
        self._declared = True
