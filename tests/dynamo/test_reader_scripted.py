"""BatchReader against the scripted stand-in of tests/dynamo/test_transport.py, in this
process: what each request carries on the wire, the exact rows and counters of a read
through every kind of fault, the deadline, an item that does not decode, a feature no item
holds. No subprocess: scripts/mutation.sh runs these first for every mutant of the reader
(marked ``mutation_first``), so they must stay fast."""

from __future__ import annotations

import asyncio
import contextvars
import json
import logging
import math
import random
import re
import signal
import ssl
import threading
import time
from types import FrameType
from typing import Any

import boto3
import pytest

from featurepull.bench.endpoint import FEATURES
from featurepull.config import DynamoSettings
from featurepull.dynamo import BatchReader, FeastLayout, PlainLayout, RetryDeadlineExceeded
from featurepull.dynamo.concurrency import Aimd
from featurepull.dynamo.errors import (
    EndpointUnreachable,
    PermanentReadError,
    ReadError,
    TableError,
    UnknownFeatureError,
)
from featurepull.dynamo.features import CHECK_ITEMS, FeatureCheck
from featurepull.dynamo.pacing import BURST_S, BudgetError, Pacer, ReadCost, ReadPace, local_pacer
from featurepull.dynamo.reader import _Outcome, _ReadState, adapt
from featurepull.dynamo.stats import ReadStats
from tests.conftest import REGION, refused_port
from tests.dynamo.test_tls import _certificates
from tests.dynamo.test_transport import (  # noqa: F401
    SYNTHETIC,
    TABLE,
    ScriptedEndpoint,
    expected_row,
    scripted,
    scripted_reader,
)

pytestmark = pytest.mark.mutation_first

LAYOUT = FeastLayout({"driver_id": "int64"})
TRANSPORTS = ("fast", "botocore")
# Duplicates, absent drivers (>= 300) and present ones, out of order: 13 unique keys.
IDS = [5, 301, 5, 17, 2, 17, 400, 299, 0, 42, 8, 9, 10, 11, 12, 5]
UNIQUE = list(dict.fromkeys(IDS))
FOUND = [d for d in UNIQUE if d < 300]


def sent(server: ScriptedEndpoint) -> list[dict[str, Any]]:
    """The RequestItems of each BatchGetItem the server received, in arrival order."""
    bodies = [json.loads(body) for _, body in server.batch_gets()]
    assert all(body["ReturnConsumedCapacity"] == "TOTAL" for body in bodies)
    assert all(set(body["RequestItems"]) == {TABLE} for body in bodies)
    return [body["RequestItems"][TABLE] for body in bodies]


def drivers(request: dict[str, Any]) -> list[int]:
    ids = {SYNTHETIC.entity_id(d): d for d in range(500)}
    return [ids[key["entity_id"]["S"]] for key in request["Keys"]]


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("consistent", [True, False])
def test_each_unique_key_is_asked_for_once_in_batches(
        scripted: ScriptedEndpoint, transport: str, consistent: bool) -> None:  # noqa: F811
    started = time.perf_counter()
    result = scripted_reader(scripted, transport, batch_size=4, max_read_workers=2,
                             consistent_reads=consistent).read(
        LAYOUT.keys_for({"driver_id": IDS}), ["city", "conv_rate"])
    took = time.perf_counter() - started
    assert result.rows == [None if row is None else (row[0], row[4], row[1])
                           for row in map(expected_row, IDS)]
    requests = sent(scripted)
    # Unique keys in first-seen order, cut into requests of at most 4 (two in flight: they
    # may arrive in either order).
    assert sorted(map(drivers, requests)) == sorted(
        [UNIQUE[i:i + 4] for i in range(0, len(UNIQUE), 4)])
    assert {request["ConsistentRead"] for request in requests} == {consistent}
    names = {request["ExpressionAttributeNames"]["#v"] for request in requests}
    assert names == {"values"}
    stats = result.stats
    assert (stats.keys, stats.unique_keys, stats.found, stats.missing) == (
        len(IDS), len(UNIQUE), sum(d < 300 for d in IDS), sum(d >= 300 for d in IDS))
    assert (stats.requests, stats.retries, stats.throttles, stats.server_errors,
            stats.connection_errors, stats.unprocessed_retries,
            stats.unprocessed_requests) == (math.ceil(len(UNIQUE) / 4), 0, 0, 0, 0, 0, 0)
    assert stats.consumed_rcu == len(FOUND) / 2  # what the answers said they cost
    assert len(stats.latencies_ms) == stats.requests
    assert 0 < min(stats.latencies_ms) <= max(stats.latencies_ms) <= stats.seconds * 1000
    assert stats.seconds <= took
    assert (stats.concurrency_min, stats.concurrency_max) == (2, 2)


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_every_kind_of_fault_is_resent_and_counted(
        scripted: ScriptedEndpoint, transport: str,  # noqa: F811
        caplog: pytest.LogCaptureFixture) -> None:
    # One request at a time: the script's faults hit the first six requests in order.
    scripted.script = ["throttle", "unprocessed", "500", "cut", "503", "unprocessed"]
    caplog.set_level(logging.INFO, logger="featurepull.dynamo.reader")
    progress: list[int] = []
    result = scripted_reader(scripted, transport, batch_size=6).read(
        LAYOUT.keys_for({"driver_id": IDS}), list(FEATURES), progress=progress.append)
    assert result.rows == [expected_row(d) for d in IDS]
    requests = [drivers(request) for request in sent(scripted)]
    # A refused or lost request is sent again whole; keys left unprocessed are asked for
    # again first, in a full batch with keys not sent yet.
    assert requests == [
        UNIQUE[0:6],  # throttled
        UNIQUE[0:6],  # the second half left unprocessed
        [*UNIQUE[3:6], *UNIQUE[6:9]],  # 500
        [*UNIQUE[3:6], *UNIQUE[6:9]],  # connection cut
        [*UNIQUE[3:6], *UNIQUE[6:9]],  # 503
        [*UNIQUE[3:6], *UNIQUE[6:9]],  # the second half left unprocessed
        [*UNIQUE[6:9], *UNIQUE[9:12]],
        UNIQUE[12:],
    ]
    stats = result.stats
    assert (stats.requests, stats.throttles, stats.server_errors, stats.connection_errors,
            stats.unprocessed_retries, stats.unprocessed_requests, stats.retries) == (
        8, 1, 2, 1, 6, 2, 4)
    assert (stats.found, stats.missing) == (sum(d < 300 for d in IDS),
                                            sum(d >= 300 for d in IDS))
    assert len(stats.latencies_ms) == 8
    assert progress == [3, 3, 6, 1]  # keys answered, as each answer is settled
    # Keys left unprocessed say DynamoDB is busy: the in-flight limit comes down.
    assert (stats.concurrency_min, stats.concurrency_max) == (1, 1)
    lines = [(r.retry, r.detail, r.getMessage()) for r in caplog.records  # type: ignore[attr-defined]
             if r.name == "featurepull.dynamo.reader"]
    assert [kind for kind, _, _ in lines] == ["throttle", "unprocessed", "server", "connection"]
    assert lines[0][1:] == ("ProvisionedThroughputExceededException",
                            f"BatchGetItem on {TABLE} throttled "
                            "(ProvisionedThroughputExceededException): backing off and "
                            "holding back new requests")
    assert lines[1][1:] == ("3 of 6 keys", f"BatchGetItem on {TABLE} left keys unprocessed "
                                           "(3 of 6 keys): asking for them again")
    assert lines[2][1:] == ("500", f"BatchGetItem on {TABLE} failed on the server (500): "
                                   "retrying")
    assert lines[3][2].startswith(f"BatchGetItem on {TABLE} lost its connection or response (")


def test_a_throttle_halves_the_requests_in_flight(
        scripted: ScriptedEndpoint) -> None:  # noqa: F811
    scripted.script = ["throttle"]  # the first request only; no key is left unprocessed
    result = scripted_reader(scripted, "fast", batch_size=4, max_read_workers=2).read(
        LAYOUT.keys_for({"driver_id": IDS}), ["city"])
    assert (result.stats.throttles, result.stats.unprocessed_requests) == (1, 0)
    assert (result.stats.concurrency_min, result.stats.concurrency_max) == (1, 2)


def test_without_adaptive_concurrency_a_throttle_keeps_the_requests_in_flight(
        scripted: ScriptedEndpoint) -> None:  # noqa: F811
    scripted.script = ["throttle"]
    result = scripted_reader(scripted, "fast", batch_size=4, max_read_workers=2,
                             adaptive_concurrency=False).read(
        LAYOUT.keys_for({"driver_id": IDS}), ["city"])
    assert (result.stats.throttles, result.stats.unprocessed_requests) == (1, 0)
    assert (result.stats.concurrency_min, result.stats.concurrency_max) == (2, 2)


@pytest.mark.parametrize(("transport", "fault", "counted", "logged", "explained"), [
    ("fast", "500", "server_errors", "500",
     "DynamoDB kept failing on its side ({n} requests answered with a server error; most "
     "often: 500)."),
    ("fast", "hang-up", "connection_errors", "connection closed before the response was complete",
     "the endpoint could not be reached or its answers were lost ({n} requests failed on the "
     "connection; most often: connection closed before the response was complete)."),
    # botocore's exception: its class in the log line, its text in the message.
    ("botocore", "hang-up", "connection_errors", "ConnectionClosedError",
     "the endpoint could not be reached or its answers were lost ({n} requests failed on the "
     "connection; most often: Connection was closed before we received a valid response from "
     'endpoint URL: "{url}/".).'),
])
def test_a_read_that_runs_out_of_time_names_what_kept_its_keys(
        scripted: ScriptedEndpoint, transport: str, fault: str, counted: str,  # noqa: F811
        logged: str, explained: str, caplog: pytest.LogCaptureFixture) -> None:
    # The first request is answered, then every request fails.
    scripted.script = ["", *[fault] * 10_000]
    caplog.set_level(logging.INFO, logger="featurepull.dynamo.reader")
    reader = scripted_reader(scripted, transport, batch_size=5, retry_deadline_s=0.3)
    with pytest.raises(RetryDeadlineExceeded) as caught:
        reader.read(LAYOUT.keys_for({"driver_id": list(range(12))}), ["city"])
    error, failed = caught.value, len(scripted.batch_gets()) - 1
    assert failed > 1
    assert error.keys_left == 7  # 12 keys, the first 5 answered
    assert error.stats is not None
    assert (error.stats.requests, getattr(error.stats, counted), error.stats.retries) == (
        failed + 1, failed, failed)
    match = re.fullmatch(
        rf"7 of 12 keys of table {re.escape(TABLE)} \(region {REGION}, endpoint "
        rf"{re.escape(scripted.url)}\) were still unanswered after retrying for (\d+\.\d)s "
        rf"\(retry_deadline_s=0\.3\): (.*) No rows were written\.", str(error), flags=re.S)
    assert match, str(error)
    assert float(match.group(1)) >= 0.3
    assert match.group(2).startswith(explained.format(n=failed, url=scripted.url)), match.group(2)
    details = [r.detail for r in caplog.records  # type: ignore[attr-defined]
               if r.name == "featurepull.dynamo.reader"]
    assert details == [logged]  # one line for the burst


@pytest.mark.parametrize(("transport", "unique", "offset"), [
    ("fast", False, 100), ("fast", True, 100), ("botocore", False, 100),
    ("botocore", True, 100), ("fast", False, None)])
def test_an_item_that_does_not_decode_names_its_key_and_entity_row(
        scripted: ScriptedEndpoint, transport: str, unique: bool,  # noqa: F811
        offset: int | None) -> None:
    scripted.script = ["", "bad-item"]
    # The second request asks for 7 first: entity row 6 of the shard (its first row).
    ids = {"driver_id": [3, 3, 4, 5, 6, 7, 7]}
    # Keys as the reader de-duplicates them, or as pull gives them (distinct, with each
    # row's index in an Arrow array).
    keys, positions = LAYOUT.unique_keys_for(ids) if unique else (LAYOUT.keys_for(ids), None)
    assert unique == (positions is not None)
    with pytest.raises(ReadError) as caught:
        scripted_reader(scripted, transport, batch_size=4).read(
            keys, ["city"], positions=positions,
            **({"row_offset": offset} if offset is not None else {}))
    assert str(caught.value) == (
        f"table {TABLE} (region {REGION}, endpoint {scripted.url}): the item of key "
        f"{SYNTHETIC.entity_id(7)} (entity row {(offset or 0) + 6}): attribute 'event_ts' holds "
        "'yesterday', which is not a date-time as Feast writes it (e.g. '2024-05-01 "
        "12:00:00+00:00')")


def test_the_items_before_the_one_that_does_not_decode_decode_as_usual(
        scripted: ScriptedEndpoint) -> None:  # noqa: F811
    # The answer's items are decoded one by one to find the one at fault: the first two
    # decode (their values arrive as base64 text), the third is named.
    scripted.script = ["bad-last-item"]
    with pytest.raises(ReadError) as caught:
        scripted_reader(scripted, "fast", batch_size=10).read(
            LAYOUT.keys_for({"driver_id": [1, 2, 3]}), ["city"])
    assert str(caught.value) == (
        f"table {TABLE} (region {REGION}, endpoint {scripted.url}): the item of key "
        f"{SYNTHETIC.entity_id(3)} (entity row 3): attribute 'event_ts' holds 'yesterday', "
        "which is not a date-time as Feast writes it (e.g. '2024-05-01 12:00:00+00:00')")


def test_an_item_in_another_layout_is_named_with_the_layout(
        scripted: ScriptedEndpoint) -> None:  # noqa: F811
    scripted.script = ["not-feast"]
    with pytest.raises(ReadError) as caught:
        scripted_reader(scripted, "fast").read(LAYOUT.keys_for({"driver_id": [9, 8]}),
                                               ["city"])
    assert str(caught.value) == (
        f"table {TABLE} (region {REGION}, endpoint {scripted.url}): the item of key "
        f"{SYNTHETIC.entity_id(9)!r} cannot be decoded (KeyError: 'M'); is it in the feast "
        "layout?")


def test_an_item_for_a_key_not_asked_for_ends_the_read(
        scripted: ScriptedEndpoint) -> None:  # noqa: F811
    scripted.script = ["stranger"]
    with pytest.raises(ReadError) as caught:
        scripted_reader(scripted, "fast").read(LAYOUT.keys_for({"driver_id": [1, 2]}), ["city"])
    assert str(caught.value) == (
        f"table {TABLE} (region {REGION}, endpoint {scripted.url}) returned an item for a key "
        f"that was not requested: {SYNTHETIC.entity_id(299)!r}")


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("fault", ["twice", "also-unprocessed"])
def test_a_key_answered_twice_ends_the_read(scripted: ScriptedEndpoint,  # noqa: F811
                                            transport: str, fault: str) -> None:
    """DynamoDB answers each key at most once. An endpoint that answers one twice (two
    items in one answer; or an item, the same key left unprocessed, and its retry answered
    again) would leave two rows of one key that the count, the Arrow output and the rows
    tell apart — and here count driver 1 twice where driver 301 is missing."""
    scripted.script = [fault]
    keys = LAYOUT.keys_for({"driver_id": [1, 2, 301]})
    with pytest.raises(ReadError) as caught:
        scripted_reader(scripted, transport).read(keys, ["city"])
    assert str(caught.value) == (
        f"table {TABLE} (region {REGION}, endpoint {scripted.url}) answered key "
        f"{SYNTHETIC.entity_id(1)!r} with two items; DynamoDB answers each key of a "
        "BatchGetItem at most once, so the endpoint (a proxy or an emulator?) is not "
        "answering as DynamoDB does and the read is not used")


def test_a_composite_key_is_named_by_its_parts() -> None:
    # decode_item as a Scan calls it: no entity row to name.
    layout = PlainLayout([("id", "N"), ("sort", "S")])
    reader = BatchReader("plain", layout, DynamoSettings(region=REGION,
                                                        endpoint_url="http://127.0.0.1:9"))
    item = {"id": {"N": "12"}, "sort": {"S": "b c"}, "event_ts": {"S": "never"},
            "x": {"N": "1"}}
    with pytest.raises(ReadError) as caught:
        reader.decode_item(layout.row_decoder(["x"], base64_values=False), item)
    assert str(caught.value) == (
        f"table plain (region {REGION}, endpoint http://127.0.0.1:9): the item of key 12, "
        "b c: attribute 'event_ts' holds 'never', which is not a date-time (ISO 8601 text or Unix seconds); name the attribute that holds the event time with --event-ts-attribute, or pass --event-ts-attribute '' to read without one")


@pytest.mark.parametrize("consistent", [True, False])
def test_a_feature_no_item_holds_is_refused_naming_what_they_hold(
        scripted: ScriptedEndpoint, consistent: bool) -> None:  # noqa: F811
    ids = list(range(40))
    with pytest.raises(UnknownFeatureError) as caught:
        scripted_reader(scripted, "fast", batch_size=10, consistent_reads=consistent).read(
            LAYOUT.keys_for({"driver_id": ids}), ["city", "no_such_feature"])
    assert caught.value.missing == ["no_such_feature"]
    assert caught.value.held == sorted(FEATURES)
    requests = sent(scripted)
    # The reads, then one request for whole items (no projection) to say what they hold.
    assert all("ProjectionExpression" in request for request in requests[:-1])
    assert "ProjectionExpression" not in requests[-1]
    assert {request["ConsistentRead"] for request in requests} == {consistent}
    assert set(drivers(requests[-1])) <= set(ids)


def test_a_feature_no_item_holds_stops_the_read_once_enough_items_were_found(
        scripted: ScriptedEndpoint) -> None:  # noqa: F811
    ids = list(range(10_000, 10_000 + CHECK_ITEMS + 500))
    with pytest.raises(UnknownFeatureError) as caught:
        scripted_reader(scripted, "fast", batch_size=100, consistent_reads=True).read(
            LAYOUT.keys_for({"driver_id": ids}), ["city", "no_such_feature"])
    assert "(the read stopped there)" in str(caught.value)
    assert (caught.value.missing, caught.value.held) == (["no_such_feature"], sorted(FEATURES))
    whole = [request for request in sent(scripted) if "ProjectionExpression" not in request]
    assert len(whole) == 1 and whole[0]["ConsistentRead"] is True
    assert {key["entity_id"]["S"] for key in whole[0]["Keys"]} <= {
        SYNTHETIC.entity_id(d) for d in ids}
    # Stopped after the request that found the CHECK_ITEMS-th item and the one in flight:
    # the rest of the keys were never asked for.
    assert len(sent(scripted)) - 1 <= CHECK_ITEMS // 100 + 1 < len(ids) // 100


def test_what_dynamodb_charged_is_settled_with_the_read_budget(
        scripted: ScriptedEndpoint) -> None:  # noqa: F811
    # The answer says it cost 1,000 RCU (its items are large), not the 5 RCU estimated for
    # 10 keys: at 40 RCU/s the reader's next request waits for 25 s of budget.
    scripted.script = ["costly"]
    reader = scripted_reader(scripted, "fast", batch_size=10, max_rcu_per_s=40)
    result = reader.read(LAYOUT.keys_for({"driver_id": list(range(10))}), ["city"])
    assert result.stats.consumed_rcu == 1000.0
    assert reader.pacer is not None and reader.pacer.reserve(1.0) > 10


@pytest.mark.parametrize("sample", ["costly", "500"])
def test_the_request_for_what_items_hold_is_paid_from_the_read_budget(
        scripted: ScriptedEndpoint, sample: str) -> None:  # noqa: F811
    # One read of 10 keys (5 RCU at 40 RCU/s: an eighth of a second of budget), then the
    # request for what the items hold waits for the budget, and what DynamoDB charged for
    # it is settled with the budget (1,000 RCU: 25 s of it); or it fails (a 5xx), is
    # charged nothing, and the refusal names no held features.
    scripted.script = ["", sample]
    reader = scripted_reader(scripted, "fast", batch_size=10, max_rcu_per_s=40)
    with pytest.raises(UnknownFeatureError) as caught:
        reader.read(LAYOUT.keys_for({"driver_id": list(range(10))}), ["city", "nope"])
    assert caught.value.missing == ["nope"]
    failed = sample == "500"
    assert caught.value.held == (None if failed else sorted(FEATURES))
    requests = sent(scripted)
    assert len(requests) == 2 and "ProjectionExpression" not in requests[1]
    assert ("they hold in their values map" in str(caught.value)) != failed
    # The next request of this reader waits for what the budget paid: seconds of it after
    # the costly answer, at most the 0.125 s of the first read's otherwise.
    assert reader.pacer is not None
    wait = reader.pacer.reserve(1.0)
    assert wait > 10 if not failed else wait < 1


def test_only_a_throttle_of_a_request_sent_after_the_last_cut_halves_again(
        scripted: ScriptedEndpoint) -> None:  # noqa: F811
    # Four requests in flight are throttled: they were all sent before the first cut, so
    # the limit is halved once (4 -> 2). The next two requests, sent after that cut, are
    # throttled too: the limit is halved again (2 -> 1).
    scripted.script = ["throttle"] * 6
    result = scripted_reader(scripted, "fast", batch_size=1, max_read_workers=4).read(
        LAYOUT.keys_for({"driver_id": list(range(12))}), ["city"])
    assert result.rows == [(row[0], row[4]) for row in map(expected_row, range(12))
                           if row is not None]
    assert (result.stats.throttles, result.stats.requests) == (6, 18)
    assert (result.stats.concurrency_min, result.stats.concurrency_max) == (1, 4)


def test_an_answer_that_cost_less_than_reserved_gives_the_rest_back(
        scripted: ScriptedEndpoint) -> None:  # noqa: F811
    # 10 absent keys: 5 RCU reserved (1.25 s of a 4 RCU/s budget), 0 charged. The budget
    # gets the 5 RCU back: it is full again, and its whole burst can be taken at once.
    reader = scripted_reader(scripted, "fast", batch_size=10, max_rcu_per_s=4)
    result = reader.read(LAYOUT.keys_for({"driver_id": list(range(300, 310))}), ["city"])
    assert (result.stats.consumed_rcu, result.stats.missing) == (0.0, 10)
    assert reader.pacer is not None and reader.pacer.reserve(4 * BURST_S) == 0.0


def test_retried_keys_due_together_fill_one_batch_and_the_rest_waits_its_turn() -> None:
    # Two groups due at once (2 keys left unprocessed, then a refused request of 4): a
    # batch of 4 takes the first group and half of the second; the other half goes first
    # in the next batch, before keys never sent. Nothing is due before its time.
    state = _ReadState(list(range(10)), 4, FeatureCheck((), LAYOUT))
    assert state.next_batch(0.0) == [0, 1, 2, 3]
    assert state.next_batch(0.0) == [4, 5, 6, 7]
    state.schedule([1, 3], 5.0)
    state.schedule([4, 5, 6, 7], 5.0)
    assert state.next_batch(4.0) == [8, 9]
    assert state.next_batch(5.0) == [1, 3, 4, 5]
    assert state.next_batch(5.0) == [6, 7]
    assert not state.pending() and state.next_batch(9.0) == []


def test_the_dispatcher_sleeps_until_something_can_be_sent_and_not_longer() -> None:
    # The hint is the time to the first moment next_batch gives keys: 0 while fresh keys
    # can go, the end of a budget's hold, the first retry due; retries due together go in
    # the order they were scheduled. Times are given, not read from a clock.
    state = _ReadState(list(range(6)), 2, FeatureCheck((), LAYOUT))
    assert state.wait_hint(0.0) == 0.0
    state.hold(state.next_batch(0.0), 1.0, 0.5)  # the budget cannot pay until 1.5
    assert state.wait_hint(1.25) == 0.25
    assert state.next_batch(1.25) == []
    assert state.next_batch(1.5) == [0, 1]  # the held batch first, at the end of the hold
    assert state.next_batch(1.5) == [2, 3] and state.next_batch(1.5) == [4, 5]
    state.schedule([4, 5], 3.0)
    state.schedule([2, 3], 3.0)
    assert state.wait_hint(2.75) == 0.25 and state.next_batch(2.75) == []
    assert state.next_batch(3.0) == [4, 5]
    assert state.next_batch(3.0) == [2, 3]
    assert state.wait_hint(3.0) is None and not state.pending()


def test_only_clean_answers_grow_the_requests_in_flight_back() -> None:
    # After a throttle halves the limit (4 to 2), it grows by one after as many clean
    # answers as the limit; a request refused by a server error or lost on the connection
    # is not a clean answer.
    window, stats, pace = Aimd(4), ReadStats(), ReadPace(None, ReadCost(consistent=False))

    def answer(failure: str | None) -> None:
        outcome = _Outcome([0], failure=failure, rcu=0.5, rcu_known=failure is None,
                           sent_at=time.monotonic())
        adapt(outcome, 0 if failure else 1, pace, window, stats)

    answer("throttle")
    assert window.limit == 2
    answer("server")
    answer("connection")
    answer(None)
    assert window.limit == 2
    answer(None)
    assert window.limit == 3
    assert (stats.concurrency_min, stats.concurrency_max) == (2, 4)


class _TopJitter(random.Random):
    """Full jitter at its top: each backoff delay is the bound for its attempt."""

    def uniform(self, a: float, b: float) -> float:
        return b


def test_a_keys_backoff_doubles_with_its_own_retries_and_its_deadline_is_its_own() -> None:
    # retry_base_delay_s doubles per attempt of a key, up to retry_max_delay_s; a batch
    # waits as long as its most retried key; retry_deadline_s counts from each key's first
    # failure. The failures are given times, not read from a clock.
    reader = BatchReader(TABLE, LAYOUT, DynamoSettings(
        region=REGION, endpoint_url="http://127.0.0.1:9", retry_base_delay_s=1.0,
        retry_max_delay_s=5.0, retry_deadline_s=60.0))
    reader._rng = _TopJitter()
    state = _ReadState(list(range(4)), 4, FeatureCheck((), LAYOUT))
    assert state.next_batch(0.0) == [0, 1, 2, 3]  # every key sent once

    def fail(keys: list[int], now: float, waits: float) -> None:
        reader._retry_later(keys, state, now, pause=False)
        assert state.wait_hint(now) == waits
        assert state.next_batch(now + waits) == keys

    fail([0, 1], 10.0, 1.0)
    fail([0, 1], 11.0, 2.0)
    fail([1, 2], 13.0, 4.0)  # key 1's third failure, key 2's first
    fail([1], 17.0, 5.0)  # 8 s, capped
    fail([2], 72.0, 2.0)  # its second failure, 59 s after its first: within its deadline
    with pytest.raises(RetryDeadlineExceeded, match=r"^4 of 4 keys .* after retrying for "
                       r"62\.0s \(retry_deadline_s=60\)"):
        fail([0], 72.0, 5.0)  # 62 s after key 0's first


@pytest.mark.parametrize(("describe", "message"), [
    ("missing", "{where} does not exist; check --table, --project, the table name template "
                "and the region"),
    ("denied", "cannot describe {where}: AccessDeniedException: An error occurred "
               "(AccessDeniedException) when calling the DescribeTable operation (reached "
               "max retries: 0): User: "
               "tester may not describe it"),
    # An error without a code is named by its HTTP status, as a BatchGetItem's is.
    ("no-code", "cannot describe {where}: HTTP 400: An error occurred () when calling "
                "the DescribeTable operation (reached max retries: 0): no code given"),
    ("hang-up", "cannot reach DynamoDB for {where}: Connection was closed before we received a "
            'valid response from endpoint URL: "{url}/".'),
])
def test_a_table_that_cannot_be_described_is_named_before_any_read(
        scripted: ScriptedEndpoint, describe: str, message: str) -> None:  # noqa: F811
    scripted.describe = describe
    reader = scripted_reader(scripted, "fast")
    with pytest.raises(TableError) as caught:
        reader.read(LAYOUT.keys_for({"driver_id": [1]}), ["city"])
    where = f"table {TABLE} (region {REGION}, endpoint {scripted.url})"
    assert str(caught.value) == message.format(where=where, url=scripted.url)
    assert scripted.batch_gets() == []


def test_an_endpoint_that_refuses_connections_is_named() -> None:
    with refused_port() as port:
        url = f"http://127.0.0.1:{port}"
        reader = BatchReader(TABLE, LAYOUT, DynamoSettings(region=REGION, endpoint_url=url))
        with pytest.raises(EndpointUnreachable) as caught:
            reader.read(LAYOUT.keys_for({"driver_id": [1]}), ["city"])
    assert str(caught.value) == (f'Could not connect to the endpoint URL: "{url}/"; check '
                                 "--endpoint-url, --region and the network")


def test_no_credentials_are_named_with_the_credential_chain(
        scripted: ScriptedEndpoint, monkeypatch: pytest.MonkeyPatch,  # noqa: F811
        tmp_path: Any) -> None:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
                 "AWS_PROFILE", "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
                 "AWS_CONTAINER_CREDENTIALS_FULL_URI", "AWS_WEB_IDENTITY_TOKEN_FILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    client = boto3.session.Session().client("dynamodb", region_name=REGION,
                                            endpoint_url=scripted.url)
    with pytest.raises(TableError) as caught:
        scripted_reader(scripted, "fast", client).read(LAYOUT.keys_for({"driver_id": [1]}),
                                                       ["city"])
    assert str(caught.value) == (
        f"no AWS credentials found to read table {TABLE} (region {REGION}, endpoint "
        f"{scripted.url}): configure the credential chain (AWS_PROFILE, AWS_ACCESS_KEY_ID, ...)")
    assert scripted.requests == []


CALLER = contextvars.ContextVar("CALLER", default="not bound")


def test_a_read_inside_a_running_event_loop_runs_on_a_thread_in_the_callers_context(
        scripted: ScriptedEndpoint) -> None:  # noqa: F811
    # A notebook cell or an async app: the read cannot run its loop in this thread, so it
    # runs it on a thread of its own, with what the caller bound (log bindings).
    seen: list[tuple[str, str]] = []

    def progress(count: int) -> None:
        seen.append((CALLER.get(), threading.current_thread().name))

    async def notebook_cell() -> Any:
        CALLER.set("the caller's")
        return scripted_reader(scripted, "fast", batch_size=2).read(
            LAYOUT.keys_for({"driver_id": [5, 6, 301]}), ["city"], progress=progress).rows

    rows = asyncio.run(notebook_cell())
    assert rows == [(row[0], row[4]) if row else None for row in map(expected_row, [5, 6, 301])]
    assert len(seen) == 2
    assert all(value == "the caller's" and thread.startswith("featurepull-loop_")
               for value, thread in seen), seen


class TimeLimit(Exception):
    """Stands for celery.exceptions.SoftTimeLimitExceeded: an Exception, not a BaseException."""


def test_an_exception_a_signal_handler_raises_in_a_loop_callback_ends_the_read(
        scripted: ScriptedEndpoint) -> None:  # noqa: F811
    # Celery's soft time limit is raised by a signal handler wherever the thread is; here,
    # for certain, inside a callback of the read's event loop (asyncio would log it and go
    # on reading).
    def alarm(signum: int, frame: FrameType | None) -> None:
        raise TimeLimit("soft time limit")

    def progress(count: int) -> None:
        asyncio.get_running_loop().call_soon(signal.raise_signal, signal.SIGALRM)

    previous = signal.signal(signal.SIGALRM, alarm)
    try:
        with pytest.raises(TimeLimit, match="soft time limit"):
            scripted_reader(scripted, "fast", batch_size=1).read(
                LAYOUT.keys_for({"driver_id": list(range(20))}), ["city"], progress=progress)
    finally:
        signal.signal(signal.SIGALRM, previous)
    assert len(scripted.batch_gets()) < 20


def test_what_the_loop_reports_without_an_exception_is_logged_and_the_read_goes_on(
        scripted: ScriptedEndpoint, caplog: pytest.LogCaptureFixture) -> None:  # noqa: F811
    def progress(count: int) -> None:
        asyncio.get_running_loop().call_exception_handler({"message": "a note from the loop"})

    caplog.set_level(logging.ERROR, logger="asyncio")
    result = scripted_reader(scripted, "fast", batch_size=2).read(
        LAYOUT.keys_for({"driver_id": [1, 2, 3]}), ["city"], progress=progress)
    assert result.rows == [(row[0], row[4]) for row in map(expected_row, [1, 2, 3])
                           if row is not None]
    assert [r.getMessage() for r in caplog.records if r.name == "asyncio"] == [
        "a note from the loop"] * 2


def test_a_refused_request_ends_the_read_with_another_still_in_flight(
        scripted: ScriptedEndpoint) -> None:  # noqa: F811
    # Two requests in flight: one is refused while the other waits for its answer. The read
    # ends with the refusal (the other request cancelled), not with the cancellation.
    scripted.script = ["held", "denied"]
    with pytest.raises(PermanentReadError, match="AccessDeniedException: User: tester is not "
                                                 "authorized"):
        scripted_reader(scripted, "fast", batch_size=1, max_read_workers=2).read(
            LAYOUT.keys_for({"driver_id": [1, 2, 3]}), ["city"])
    assert len(scripted.batch_gets()) == 2


def test_a_feature_no_item_holds_reads_as_null_when_missing_features_are_allowed(
        scripted: ScriptedEndpoint) -> None:  # noqa: F811
    result = scripted_reader(scripted, "fast", batch_size=10).read(
        LAYOUT.keys_for({"driver_id": [1, 2, 301]}), ["city", "no_such_feature"],
        allow_missing_features=True)
    assert result.rows == [(row[0], row[4], None) if row else None
                           for row in map(expected_row, [1, 2, 301])]
    assert len(scripted.batch_gets()) == 1  # no request for what the items hold


def test_the_table_is_described_once_and_its_description_kept(
        scripted: ScriptedEndpoint) -> None:  # noqa: F811
    reader = scripted_reader(scripted, "fast")
    progress: list[Any] = []
    assert reader.reading is None
    for ids in ([1, 2], [3]):
        result = reader.read(LAYOUT.keys_for({"driver_id": ids}), ["city"],
                             progress=lambda n: progress.append(reader.reading))
        # While reading, the read's own counters are there for progress reports.
        assert progress[-1] is result.stats and reader.reading is None
    assert [h["X-Amz-Target"] for h, _ in scripted.requests] == [
        "DynamoDB_20120810.DescribeTable", *["DynamoDB_20120810.BatchGetItem"] * 2]
    assert reader.description is not None
    assert (reader.description["TableName"], reader.description["KeySchema"]) == (
        TABLE, [{"AttributeName": "entity_id", "KeyType": "HASH"}])


def test_a_table_keyed_otherwise_is_refused_naming_it(
        scripted: ScriptedEndpoint) -> None:  # noqa: F811
    scripted.describe = "keyed-by-user"
    with pytest.raises(TableError, match=rf"^table {re.escape(TABLE)} is keyed by user_id "
                                         r"HASH \(S\), but the feast layout needs"):
        scripted_reader(scripted, "fast").read(LAYOUT.keys_for({"driver_id": [1]}), ["city"])
    assert scripted.batch_gets() == []


@pytest.mark.parametrize(("describe", "job", "ceiling", "budget"), [
    ("provisioned", "50%", None, 40.0),  # of the 80 RCU/s provisioned
    ("provisioned", None, "25%", 20.0),  # the operator's ceiling for the table alone
    ("provisioned", "50%", "25%", 20.0),  # the smaller of the two
    ("", 10.0, 30.0, 10.0),
    ("", None, None, None),
])
def test_the_read_budget_is_the_smaller_of_the_jobs_and_the_tables(
        scripted: ScriptedEndpoint, describe: str, job: float | str | None,  # noqa: F811
        ceiling: float | str | None, budget: float | None) -> None:
    scripted.describe = describe
    made: list[tuple[str, float]] = []

    def pacers(table: str, rate: float) -> Pacer:
        made.append((table, rate))
        return local_pacer(table, rate)

    reader = BatchReader(TABLE, LAYOUT, DynamoSettings(
        region=REGION, endpoint_url=scripted.url, max_rcu_per_s=job,
        table_budgets={TABLE: ceiling} if ceiling is not None else {}), pacers=pacers)
    result = reader.read(LAYOUT.keys_for({"driver_id": [1, 2]}), ["city"])
    assert result.stats.budget_rcu_per_s == (budget or 0.0)
    assert made == ([] if budget is None else [(TABLE, budget)])
    assert (reader.pacer is None) == (budget is None)


def test_a_percentage_budget_of_an_on_demand_table_names_the_table(
        scripted: ScriptedEndpoint) -> None:  # noqa: F811
    with pytest.raises(BudgetError, match=rf"^dynamodb.max_rcu_per_s=50%: table "
                                          rf"{re.escape(TABLE)} is on-demand with no maximum"):
        scripted_reader(scripted, "fast", max_rcu_per_s="50%").read(
            LAYOUT.keys_for({"driver_id": [1]}), ["city"])
    assert scripted.batch_gets() == []


def test_a_certificate_that_does_not_verify_fails_the_read_at_once(tmp_path: Any) -> None:
    # The stand-in behind TLS, its certificate signed by a CA the client does not know.
    _, cert, key = _certificates(tmp_path)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server = ScriptedEndpoint()
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    url = f"https://127.0.0.1:{server.server_address[1]}"
    try:
        reader = BatchReader(TABLE, LAYOUT, DynamoSettings(region=REGION, endpoint_url=url))
        # Past the table check (boto3 refuses the certificate with its own error): this is
        # about the read's own connections.
        reader._checked = True
        with pytest.raises(PermanentReadError) as caught:
            reader.read(LAYOUT.keys_for({"driver_id": [1, 2]}), ["city"])
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
    assert str(caught.value) == (
        f"table {TABLE} (region {REGION}, endpoint {url}): the endpoint's TLS certificate does "
        "not verify (unable to get local issuer certificate); check --endpoint-url and "
        "AWS_CA_BUNDLE")
