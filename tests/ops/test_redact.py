"""Secret masking (featurepull.redact) and the worker log renderer that applies it: every
stdlib or structlog line, exceptions included, in both formats."""

from __future__ import annotations

import contextvars
import io
import json
import logging
import threading
from collections.abc import Iterator
from typing import Any

import pytest
import structlog

from featurepull.config import Settings
from featurepull.redact import (
    MASK,
    Redactor,
    redact_text,
    redact_url,
    secrets_from_env,
    url_password,
)
from featurepull.worker import logging as worker_logging
from tests.ops.conftest import PLANTED_AWS, REDIS_PASSWORD, SECRETS


@pytest.mark.parametrize(("text", "expected"), [
    ("redis://:hunter2@cache:6379/0", "redis://:***@cache:6379/0"),
    ("rediss://app:p4ss@cache.internal:6380/1 down", "rediss://app:***@cache.internal:6380/1 down"),
    ("broker amqp://guest:guest@localhost//", "broker amqp://guest:***@localhost//"),
    ("kombu says redis://:**@cache:6379/0", "kombu says redis://:**@cache:6379/0"),
    ("redis://cache:6379/0 and http://host:80/path", "redis://cache:6379/0 and http://host:80/path"),
    ("AWS_SECRET_ACCESS_KEY=abc/def+ghi", "AWS_SECRET_ACCESS_KEY=***"),
    ("{'aws_session_token': 'tok-123', 'region': 'eu-west-1'}",
     "{'aws_session_token': '***', 'region': 'eu-west-1'}"),
    ("X-Amz-Security-Token: FQoGZXIvYXdz", "X-Amz-Security-Token: ***"),
    ("redis://cache/0?password=pw1&db=2", "redis://cache/0?password=***&db=2"),
    ("Credential=AKIAEXAMPLE/20260101/us-east-1/dynamodb/aws4_request, Signature=abc123",
     "Credential=***, Signature=***"),
    ("shard 3: 120 keys unanswered after 30.0s", "shard 3: 120 keys unanswered after 30.0s"),
])
def test_redact_text(text: str, expected: str) -> None:
    assert redact_text(text) == expected


@pytest.mark.parametrize(("url", "shown", "bare"), [
    ("redis://:hunter2@cache:6379/0", "redis://:***@cache:6379/0", "redis://cache:6379/0"),
    ("rediss://app:p%40ss@Cache.internal:6380/1", "rediss://app:***@cache.internal:6380/1",
     "rediss://cache.internal:6380/1"),
    ("redis://cache/0?password=pw1&db=2", "redis://cache/0?password=***&db=2", "redis://cache/0"),
    ("s3://bucket/drivers.parquet", "s3://bucket/drivers.parquet", "s3://bucket/drivers.parquet"),
    ("https://user@host/x?X-Amz-Signature=ab1#frag", "https://user@host/x?X-Amz-Signature=***",
     "https://host/x"),
])
def test_redact_url(url: str, shown: str, bare: str) -> None:
    # The one URL redactor: Redis URLs in messages, references in monitors (bare).
    assert redact_url(url) == shown
    assert redact_url(url, bare=True) == bare


def test_known_secrets_are_masked_wherever_they_appear() -> None:
    redactor = Redactor([*SECRETS, "short"])
    text = (f"boom {PLANTED_AWS['AWS_SECRET_ACCESS_KEY']} in {PLANTED_AWS['AWS_SESSION_TOKEN']}"
            f"({REDIS_PASSWORD}) by {PLANTED_AWS['AWS_ACCESS_KEY_ID']}; a short word stays")
    assert redactor.text(text) == f"boom {MASK} in {MASK}({MASK}) by {MASK}; a short word stays"


def test_nested_values_and_secret_named_keys() -> None:
    redactor = Redactor([REDIS_PASSWORD])
    event: dict[str, Any] = {
        "event": "connect",
        "url": f"redis://:{REDIS_PASSWORD}@h:1/0",
        "password": "anything",
        "session_token": None,
        "attempts": 3,
        "nested": {"urls": [f"x {REDIS_PASSWORD}", ("rediss://u:p@h",)], "ok": True},
        "raw": REDIS_PASSWORD.encode(),
    }
    assert redactor.value(event) == {
        "event": "connect", "url": "redis://:***@h:1/0", "password": MASK,
        "session_token": None, "attempts": 3,
        "nested": {"urls": [f"x {MASK}", ["rediss://u:***@h"]], "ok": True}, "raw": MASK,
    }


def test_secret_sources() -> None:
    env = {**PLANTED_AWS, "AWS_REGION": "eu-west-1", "AWS_SECURITY_TOKEN": ""}
    assert secrets_from_env(env) == list(PLANTED_AWS.values())
    assert url_password(f"redis://:{REDIS_PASSWORD}@h:1/0") == REDIS_PASSWORD
    assert url_password("rediss://user:p%40ss@h/0") == "p@ss"
    assert url_password("redis://h:1/0") is None


@pytest.fixture
def restored_logging() -> Iterator[None]:
    root = logging.getLogger()
    names = (worker_logging.MULTIPROCESSING_LOGGER, *worker_logging.QUIET_LIBRARIES)
    saved = {name: (list(logging.getLogger(name).handlers), logging.getLogger(name).level)
             for name in names}
    handlers, level = list(root.handlers), root.level
    try:
        yield
    finally:
        structlog.contextvars.clear_contextvars()
        structlog.reset_defaults()
        logging.captureWarnings(False)
        root.handlers, root.level = handlers, level
        for name, (kept, kept_level) in saved.items():
            logging.getLogger(name).handlers = kept
            logging.getLogger(name).setLevel(kept_level)


def emit_everything() -> None:
    """A structlog event, a Celery-style stdlib record, an exception, and a thread's line."""
    secret = PLANTED_AWS["AWS_SECRET_ACCESS_KEY"]
    structlog.get_logger("featurepull.test").info("connecting",
                                                  url=f"redis://:{REDIS_PASSWORD}@h:1/0")
    logging.getLogger("celery.worker").info("Connected to %s", f"redis://:{REDIS_PASSWORD}@h:1/0",
                                            extra={"data": {"args": secret}})
    try:
        raise RuntimeError(f"request failed with AWS_SECRET_ACCESS_KEY={secret}")
    except RuntimeError:
        logging.getLogger("featurepull.test").exception("read failed")

    def in_thread() -> None:
        logging.getLogger("featurepull.dynamo.reader").info(
            "throttled", extra={"detail": PLANTED_AWS["AWS_SESSION_TOKEN"]})

    thread = threading.Thread(target=contextvars.copy_context().run, args=(in_thread,))
    thread.start()
    thread.join()
    logging.getLogger("botocore.endpoint").info("chatter nobody asked for")


def test_json_lines_carry_context_and_no_secret(restored_logging: None) -> None:
    stream = io.StringIO()
    assert worker_logging.configure_logging("json", logging.INFO, stream=stream,
                                            secrets=SECRETS) == "json"

    class Task:
        name = "featurepull.read_shard"

        def run(self, job_id: str, shard: int) -> None: ...

    worker_logging.bind_task("t-1", Task(), ["job-1", 2], {})
    emit_everything()
    worker_logging.unbind_task()
    logging.getLogger("celery").info("after the task")
    text = stream.getvalue()
    records = [json.loads(line) for line in text.splitlines()]
    assert [r["event"] for r in records] == [
        "connecting", "Connected to redis://:***@h:1/0", "read failed", "throttled",
        "after the task"]
    assert all(r["job_id"] == "job-1" and r["shard"] == 2 and r["task_id"] == "t-1"
               and r["task"] == "featurepull.read_shard" for r in records[:4])
    assert "task_id" not in records[4]
    assert list(records[0])[:7] == ["timestamp", "level", "event", "job_id", "shard", "task",
                                    "task_id"]
    assert "data" not in records[1]
    assert "RuntimeError: request failed with AWS_SECRET_ACCESS_KEY=***" in records[2]["exception"]
    assert records[3]["thread_name"] != "MainThread" and records[3]["detail"] == MASK
    assert [s for s in SECRETS if s in text] == []


def test_console_format_masks_exceptions_too(restored_logging: None) -> None:
    stream = io.StringIO()
    assert worker_logging.configure_logging("console", "INFO", stream=stream,
                                            secrets=SECRETS) == "console"
    emit_everything()
    text = stream.getvalue()
    assert "[info" in text and "Traceback (most recent call last)" in text
    assert not text.lstrip().startswith("{")
    assert [s for s in SECRETS if s in text] == []


def test_auto_format_follows_the_terminal() -> None:
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    assert worker_logging.resolve_format("auto", Terminal()) == "console"
    assert worker_logging.resolve_format("auto", io.StringIO()) == "json"
    assert worker_logging.resolve_format("json", Terminal()) == "json"
    with pytest.raises(ValueError, match="auto, json or console"):
        worker_logging.resolve_format("xml", None)


def test_worker_secrets_come_from_the_environment_and_the_redis_url(
        monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in PLANTED_AWS.items():
        monkeypatch.setenv(name, value)
    settings = Settings(redis_url=f"redis://:{REDIS_PASSWORD}@127.0.0.1:6379/0")
    assert sorted(worker_logging.known_secrets(settings)) == sorted(SECRETS)
