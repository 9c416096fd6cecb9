"""The per-process DynamoDB client: one per settings per process, shared by threads, sized
for the read threads, configured from the settings, and never inherited across a fork."""

from __future__ import annotations

import faulthandler
import gc
import itertools
import os
import pickle
import select
import signal
import tempfile
import threading
import time
import traceback
import weakref
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from featurepull.aws import default_session
from featurepull.config import DynamoSettings
from featurepull.dynamo import client as client_module
from featurepull.dynamo.client import CLIENTS_KEPT, client_owner_pid, process_client
from tests.conftest import REGION, moto_table

CHILD_TIMEOUT_S = 10.0
# The client cache is per process and lives for the whole test session; a read timeout no
# other settings use gives each test a cache entry of its own.
_fresh_timeouts = itertools.count(1)


def fresh_settings(endpoint_url: str, **overrides: Any) -> DynamoSettings:
    """Settings no earlier test (in this process) has built a client for."""
    values: dict[str, Any] = {"region": REGION, "endpoint_url": endpoint_url,
                              "read_timeout": 30.0 + next(_fresh_timeouts) / 1000}
    values.update(overrides)
    return DynamoSettings(**values)


@pytest.fixture(scope="module")
def table(ddb: Any) -> str:
    return moto_table(ddb, "client", [("id", "S")])


@pytest.fixture
def clients_built() -> Iterator[list[str]]:
    """Every DynamoDB client the process's shared botocore session builds while the test
    runs, counted by botocore's own client-creation event."""
    built: list[str] = []
    events = default_session().get_component("event_emitter")

    def count(**_: Any) -> None:
        built.append(threading.current_thread().name)

    events.register("creating-client-class.dynamodb", count, unique_id="test-count-clients")
    try:
        yield built
    finally:
        events.unregister("creating-client-class.dynamodb", unique_id="test-count-clients")


# ---------------------------------------------------------------------------------------
# Sharing within a process
# ---------------------------------------------------------------------------------------


def test_same_settings_give_the_same_client(endpoint_url: str) -> None:
    settings = fresh_settings(endpoint_url)
    first = process_client(settings)
    assert process_client(settings) is first
    # An equal settings object (not the same one) shares the client too.
    assert process_client(DynamoSettings(**settings.model_dump())) is first
    assert client_owner_pid(settings) == os.getpid()


def test_sixteen_threads_at_once_share_exactly_one_new_client(
    endpoint_url: str, clients_built: list[str]
) -> None:
    settings = fresh_settings(endpoint_url)
    start = threading.Barrier(16)

    def get_client(_: int) -> Any:
        start.wait()
        return process_client(settings)

    with ThreadPoolExecutor(16) as pool:
        got = list(pool.map(get_client, range(16)))
    assert len({id(c) for c in got}) == 1
    assert len(clients_built) == 1
    assert got[0] is process_client(settings)


def test_different_settings_give_different_clients(endpoint_url: str) -> None:
    base = fresh_settings(endpoint_url)
    variants = [
        base.model_copy(update={"read_timeout": base.read_timeout + 1}),
        base.model_copy(update={"connect_timeout": 1.5}),
        base.model_copy(update={"retry_mode": "adaptive"}),
        base.model_copy(update={"total_max_retry_attempts": 4}),
        base.model_copy(update={"max_pool_connections": 7, "max_read_workers": 3}),
        base.model_copy(update={"region": "eu-west-1"}),
    ]
    clients = [process_client(s) for s in [base, *variants]]
    assert len({id(c) for c in clients}) == len(clients)


def test_a_process_keeps_the_clients_of_its_latest_settings_only(
        endpoint_url: str, ddb: Any) -> None:
    # A job's dynamodb overrides are part of a client's key: a long-lived worker keeps the
    # CLIENTS_KEPT most recently used clients. One dropped is garbage (its pool with it)
    # once its holder lets go; asked for again, it is new.
    table = moto_table(ddb, "kept", [("id", "S")], [{"id": {"S": "a"}, "v": {"N": "1"}}])
    oldest = fresh_settings(endpoint_url)
    held = process_client(oldest)
    newer = [fresh_settings(endpoint_url) for _ in range(CLIENTS_KEPT)]
    for settings in newer:
        process_client(settings)
    assert len(client_module._clients) == CLIENTS_KEPT
    assert client_owner_pid(oldest) is None  # dropped: the least recently used
    dropped = weakref.ref(held)
    del held
    gc.collect()
    assert dropped() is None
    again = process_client(oldest)
    assert again.get_item(TableName=table, Key={"id": {"S": "a"}})["Item"]["v"] == {"N": "1"}
    assert client_owner_pid(newer[0]) is None  # dropped for it
    assert [client_owner_pid(s) for s in newer[1:]] == [os.getpid()] * (CLIENTS_KEPT - 1)


def test_client_for_unknown_settings_has_no_owner_yet(endpoint_url: str) -> None:
    assert client_owner_pid(fresh_settings(endpoint_url)) is None


# ---------------------------------------------------------------------------------------
# Configuration
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pool", "workers", "expected"),
    [(4, 32, 32), (10, 10, 10), (64, 8, 64), (1, 256, 256)],
)
def test_pool_is_at_least_as_large_as_the_read_threads(
    endpoint_url: str, pool: int, workers: int, expected: int
) -> None:
    settings = fresh_settings(endpoint_url, max_pool_connections=pool, max_read_workers=workers)
    assert process_client(settings).meta.config.max_pool_connections == expected


def test_retry_mode_attempts_timeouts_region_and_endpoint_reach_the_client(
    endpoint_url: str,
) -> None:
    settings = fresh_settings(endpoint_url, retry_mode="adaptive", total_max_retry_attempts=3,
                              connect_timeout=1.25, read_timeout=7.5)
    client = process_client(settings)
    config = client.meta.config
    assert config.retries == {"mode": "adaptive", "total_max_attempts": 3}
    assert (config.connect_timeout, config.read_timeout) == (1.25, 7.5)
    assert client.meta.region_name == REGION
    assert client.meta.endpoint_url == endpoint_url


def test_default_settings_leave_retries_to_featurepull(endpoint_url: str) -> None:
    config = process_client(fresh_settings(endpoint_url)).meta.config
    assert config.retries == {"mode": "standard", "total_max_attempts": 1}


# ---------------------------------------------------------------------------------------
# Fork safety
# ---------------------------------------------------------------------------------------


def run_in_fork(body: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """Run ``body`` in a forked child and return what it reported (or fail with its
    traceback). The child inherits this process's memory, including the client cache.

    A bare ``os.fork``, not multiprocessing: its child closes ``sys.stdin`` first, which
    deadlocks when another thread of this process is blocked reading stdin (pytest-xdist's
    worker channel does) — a hang of the harness, not of the code under test."""
    receive, send = os.pipe()
    stacks = tempfile.TemporaryFile()  # noqa: SIM115 (closed below; the child writes to it)
    pid = os.fork()
    if pid == 0:  # the child: report through the pipe, leave without any exit handler
        try:
            os.close(receive)
            faulthandler.dump_traceback_later(CHILD_TIMEOUT_S * 0.8, file=stacks)
            try:
                report = {"ok": True, **body()}
            except BaseException:
                report = {"ok": False, "error": traceback.format_exc()}
            faulthandler.cancel_dump_traceback_later()
            with os.fdopen(send, "wb") as out:
                pickle.dump(report, out)
        finally:
            os._exit(0)
    os.close(send)
    try:
        ready, _, _ = select.select([receive], [], [], CHILD_TIMEOUT_S)
        if not ready:
            stacks.seek(0)
            pytest.fail(f"forked child did not answer within {CHILD_TIMEOUT_S}s (deadlock?); "
                        f"its threads then:\n{stacks.read().decode(errors='replace')}")
        with os.fdopen(receive, "rb", closefd=False) as answer:
            report: dict[str, Any] = pickle.load(answer)
    finally:
        deadline = time.monotonic() + CHILD_TIMEOUT_S
        while os.waitpid(pid, os.WNOHANG) == (0, 0):
            if time.monotonic() > deadline:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                break
            time.sleep(0.01)
        os.close(receive)
        stacks.close()
    assert report.pop("ok"), report["error"]
    return report


def test_forked_child_builds_its_own_working_client(endpoint_url: str, table: str) -> None:
    settings = fresh_settings(endpoint_url)
    parent_client = process_client(settings)
    # A real call, so the parent's client holds a pooled connection the child would inherit.
    assert parent_client.describe_table(TableName=table)["Table"]["TableName"] == table
    parent_pid = os.getpid()

    def in_child() -> dict[str, Any]:
        inherited_owner = client_owner_pid(settings)
        child_client = process_client(settings)
        return {
            "pid": os.getpid(),
            "inherited_owner": inherited_owner,
            "owner_is_child": client_owner_pid(settings) == os.getpid(),
            "not_parent_client": child_client is not parent_client,
            "same_client_again": process_client(settings) is child_client,
            "described": child_client.describe_table(TableName=table)["Table"]["TableName"],
        }

    report = run_in_fork(in_child)
    assert report["pid"] != parent_pid
    assert report["inherited_owner"] == parent_pid  # the child did see the parent's entry
    assert report["owner_is_child"]
    assert report["not_parent_client"]
    assert report["same_client_again"]
    assert report["described"] == table
    # The parent's cache and client are untouched by the child.
    assert client_owner_pid(settings) == parent_pid
    assert process_client(settings) is parent_client
    assert parent_client.describe_table(TableName=table)["Table"]["TableName"] == table


def test_fork_while_another_thread_holds_the_client_lock_does_not_deadlock_the_child(
    endpoint_url: str,
) -> None:
    settings = fresh_settings(endpoint_url)
    locked, release = threading.Event(), threading.Event()

    def hold_lock() -> None:
        with client_module._clients._lock:  # the cache's lock
            locked.set()
            release.wait(CHILD_TIMEOUT_S)

    holder = threading.Thread(target=hold_lock)
    holder.start()
    try:
        assert locked.wait(CHILD_TIMEOUT_S)
        report = run_in_fork(lambda: {"owner": client_owner_pid(settings)
                                      if process_client(settings) else None})
    finally:
        release.set()
        holder.join()
    assert report["owner"] not in (None, os.getpid())


def test_forks_during_a_thread_busy_building_clients_never_deadlock_the_child(
    endpoint_url: str, table: str,
) -> None:
    settings = fresh_settings(endpoint_url)
    stop = threading.Event()
    built = 0

    def keep_building() -> None:
        # Fresh settings on every call: each one builds a client while holding the lock,
        # so a fork is likely to land inside process_client (and inside botocore).
        nonlocal built
        while not stop.is_set():
            process_client(fresh_settings(endpoint_url))
            built += 1

    busy = threading.Thread(target=keep_building)
    busy.start()
    try:
        reports = []
        for _ in range(5):
            reports.append(run_in_fork(lambda: {
                "owner_is_child": process_client(settings) is not None
                and client_owner_pid(settings) == os.getpid(),
                "described": process_client(settings).describe_table(
                    TableName=table)["Table"]["TableName"],
            }))
    finally:
        stop.set()
        busy.join()
    assert built > 0
    assert reports == [{"owner_is_child": True, "described": table}] * 5
