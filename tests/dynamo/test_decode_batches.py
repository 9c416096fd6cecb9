"""Found items decoded in batches across answers (``BatchReader.decode_batch``) read exactly
as when each answer is decoded alone (``decode_batch = 1``): values, types, nulls, order,
and the error naming the item at fault with its entity row. Generated Feast tables, seeded:
answers of 0, 1 or many items, features missing from some items, values of several kinds,
base64 texts damaged or odd, items in another layout, a value that does not decode in the
middle of a batch of several answers. In-process, against the scripted endpoint."""

from __future__ import annotations

import base64
import random
import re
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from types import FrameType
from typing import Any

import pytest

from featurepull.dynamo import FeastLayout
from featurepull.dynamo.errors import ReadError
from tests.conftest import REGION
from tests.dynamo.test_feast_value_columns import KINDS, _damaged_text, _encode, _random_value
from tests.dynamo.test_feast_values_fast import _same
from tests.dynamo.test_transport import (  # noqa: F401
    SYNTHETIC,
    TABLE,
    ScriptedEndpoint,
    scripted,
    scripted_reader,
    serving,
)

pytestmark = pytest.mark.mutation_first  # in-process and fast (scripts/mutation.sh)

LAYOUT = FeastLayout({"driver_id": "int64"})
SEED = 20261219
NAMES = ("alpha", "beta", "gamma")
FIRST = 20_000  # generated drivers: none of them in the scripted endpoint's own table
_BASE = datetime(2026, 1, 1, tzinfo=UTC)


def _event_ts(rng: random.Random) -> dict[str, Any] | None:
    when = _BASE + timedelta(seconds=rng.randrange(10**7), microseconds=rng.randrange(10**6))
    pick = rng.random()
    if pick < 0.05:
        return None  # no event_ts attribute
    if pick < 0.1:
        return {"S": str(when.replace(tzinfo=None))}  # naive: taken as UTC
    return {"S": str(when)}


def _item(rng: random.Random, driver: int, kinds: dict[str, str], damage: float
          ) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for name in NAMES:
        if rng.random() < 0.1:
            continue  # this item lacks the feature
        kind = kinds[name] if rng.random() < 0.95 else rng.choice(KINDS)
        text = base64.b64encode(_encode(kind, _random_value(rng, kind, rng.choice([7, 35]))))
        shown = text.decode()
        values[name] = {"B": _damaged_text(rng, shown) if rng.random() < damage else shown}
    item: dict[str, Any] = {"entity_id": {"S": SYNTHETIC.entity_id(driver)},
                            "values": {"M": values}}
    if (ts := _event_ts(rng)) is not None:
        item["event_ts"] = ts
    pick = rng.random()
    if pick < damage / 4:
        item["values"] = {"S": "x"}  # another layout's attribute named "values"
    elif pick < damage / 2:
        del item["values"]  # another layout: features as top-level attributes
        item["city"] = {"S": "Montréal"}
    return item


def _table(rng: random.Random, drivers: int, damage: float) -> dict[str, dict[str, Any]]:
    """Items of some of ``drivers`` drivers (a share drawn per table: few to all)."""
    kinds = {name: rng.choice(KINDS) for name in NAMES}
    share = rng.choice([0.0, 0.05, 0.3, 1.0])
    return {SYNTHETIC.entity_id(d): _item(rng, d, kinds, damage)
            for d in range(FIRST, FIRST + drivers) if rng.random() < share}


def _read(server: ScriptedEndpoint, ids: list[int], decode_batch: int, transport: str = "fast",
          script: tuple[str, ...] = (), **read: Any) -> tuple[str, Any]:
    """The rows of one read, or the message of the ReadError it ends with."""
    server.script = list(script)
    read = dict(read)
    reader = scripted_reader(server, transport, batch_size=read.pop("batch_size"))
    reader.decode_batch = decode_batch
    try:
        return "rows", list(reader.read(LAYOUT.keys_for({"driver_id": ids}), list(NAMES),
                                        **read).rows)
    except ReadError as exc:
        return "error", str(exc)


def _cases() -> Iterator[tuple[dict[str, dict[str, Any]], list[int], dict[str, Any]]]:
    rng = random.Random(SEED)
    for case in range(40):
        drivers = rng.choice([1, 5, 40, 200])
        damage = 0.0 if case % 3 == 0 else rng.choice([0.02, 0.1, 0.4])
        table = _table(rng, drivers, damage)
        ids = [FIRST + rng.randrange(drivers) for _ in range(rng.choice([1, 7, 60, 200]))]
        read = {"batch_size": rng.choice([2, 5, 10, 100]),
                "allow_missing_features": rng.random() < 0.7,
                "row_offset": rng.choice([0, 1000])}
        yield table, ids, read


def test_batches_across_answers_read_as_each_answer_alone(
        scripted: ScriptedEndpoint) -> None:  # noqa: F811
    rng = random.Random(SEED + 1)
    outcomes = {"rows": 0, "error": 0}
    for table, ids, read in _cases():
        scripted.items = table
        alone = _read(scripted, ids, 1, **read)
        for decode_batch in (rng.choice([2, 5, 17]), 1_000):
            batched = _read(scripted, ids, decode_batch, **read)
            assert batched[0] == alone[0], (batched, alone)
            if alone[0] == "error":
                assert batched[1] == alone[1]
            else:
                assert _same(batched[1], alone[1]), (read, decode_batch)
        outcomes[alone[0]] += 1
    assert min(outcomes.values()) >= 8, outcomes  # both kinds of outcome were compared


def test_bytes_values_batched_read_as_each_answer_alone(
        scripted: ScriptedEndpoint) -> None:  # noqa: F811
    # botocore hands B values over as bytes (it refuses damaged base64 itself).
    rng = random.Random(SEED + 2)
    scripted.items = _table(rng, 300, 0.0)
    ids = list(range(FIRST, FIRST + 300))
    read = {"batch_size": 10, "allow_missing_features": True}
    alone = _read(scripted, ids, 1, "botocore", **read)
    assert alone[0] == "rows" and any(row is not None for row in alone[1])
    assert _same(_read(scripted, ids, 1_000, "botocore", **read)[1], alone[1])


def _with_bad_item(rng: random.Random) -> tuple[dict[str, dict[str, Any]], int]:
    """Every driver of 40 found, each with every feature; one, in the middle, not decodable
    (its ``event_ts`` is no time)."""
    kinds = {name: rng.choice(KINDS) for name in NAMES}
    table = {SYNTHETIC.entity_id(d): _item(rng, d, kinds, 0.0) for d in range(FIRST, FIRST + 40)}
    for item in table.values():
        item["event_ts"] = {"S": str(_BASE)}
        for name in NAMES:
            item["values"]["M"].setdefault(name, {"B": base64.b64encode(
                _encode(kinds[name], _random_value(rng, kinds[name], 7))).decode()})
    bad = FIRST + 13
    table[SYNTHETIC.entity_id(bad)]["event_ts"] = {"S": "yesterday"}
    return table, bad


@pytest.mark.parametrize("script", [(), ("", "", "", "stranger"), ("", "", "", "denied")],
                         ids=["read-ends", "a-stray-key-after", "a-refusal-after"])
def test_an_item_that_does_not_decode_is_named_before_what_came_after_it(
        scripted: ScriptedEndpoint, script: tuple[str, ...]) -> None:  # noqa: F811
    # Answers of 5 items; the bad item is the 4th of the 3rd answer, in a batch of 1,000
    # that is still waiting when a later answer brings a stray key or a refusal.
    scripted.items, bad = _with_bad_item(random.Random(SEED + 3))
    ids = [*range(FIRST, FIRST + 40), FIRST]
    read = {"batch_size": 5, "row_offset": 100, "script": script}
    alone = _read(scripted, ids, 1, **read)
    assert alone == ("error", (
        f"table {TABLE} (region {REGION}, endpoint {scripted.url}): the item of "
        f"key {SYNTHETIC.entity_id(bad)} (entity row {100 + 13 + 1}): attribute 'event_ts' "
        "holds 'yesterday', which is not a date-time as Feast writes it (e.g. '2024-05-01 "
        "12:00:00+00:00')"))
    # Another endpoint: the read that failed had already written its next request, which
    # could reach this one late and take a fault off the next read's script.
    with serving() as fresh:
        fresh.items = scripted.items
        assert _read(fresh, ids, 1_000, **read) == ("error", alone[1].replace(scripted.url,
                                                                              fresh.url))


class TimeLimit(Exception):
    """Stands for celery.exceptions.SoftTimeLimitExceeded: an Exception, not a BaseException."""


def test_an_exception_raised_while_an_answer_is_matched_to_its_keys_ends_the_read(
        scripted: ScriptedEndpoint) -> None:  # noqa: F811
    # A signal handler raises wherever the thread is (Celery's soft time limit): here while
    # the items of the first answer to wait are matched to their keys. Raised from a trace
    # function at that call, as the handler would: no part of the reader replaced.
    ids = list(range(40))  # the scripted endpoint's own drivers: all found
    raised: list[str] = []

    def trace(frame: FrameType, event: str, arg: object) -> None:
        # Called by _store_rows' comprehension. Under mutmut a mutated module's function
        # runs as xǁClassǁname__mutmut_orig (or __mutmut_N), called by a trampoline: the
        # reader's _store_rows so, and key_of so when the layouts are mutated.
        name = re.sub(r"__mutmut_\w+$", "", frame.f_code.co_name).rpartition("ǁ")[2]
        callers, caller = [], frame.f_back
        while caller is not None and len(callers) < 4:  # a trampoline and its wrapper
            callers.append(caller)
            caller = caller.f_back
        if event == "call" and name == "key_of" and any(
                "_store_rows" in caller.f_code.co_name for caller in callers):
            raised.append(name)
            raise TimeLimit("soft time limit")

    reader = scripted_reader(scripted, "fast", batch_size=10)
    previous = sys.gettrace()
    sys.settrace(trace)  # type: ignore[arg-type]
    try:
        with pytest.raises(TimeLimit, match="soft time limit"):
            reader.read(LAYOUT.keys_for({"driver_id": ids}), list(NAMES),
                        allow_missing_features=True)
    finally:
        sys.settrace(previous)
    assert raised == ["key_of"]
    assert len(scripted.batch_gets()) < 4  # ended at its first answer, not read to the end
