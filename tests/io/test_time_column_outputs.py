"""Outputs of found columns whose times kept their ISO texts or Unix seconds (cast by Arrow
at once) are byte for byte the outputs of the same rows as tuples of datetimes (converted
value by value), in Parquet, CSV and JSONL: on generated answers with edge times (zones,
one zone that is not UTC, naive, microseconds, years 1 and 9999, leap days, negative Unix
seconds), most rows missing or repeated."""

from __future__ import annotations

import random
from datetime import timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from featurepull.arrow_columns import extend_column, has_raw_times
from featurepull.dynamo.feast_values import ValueProto, decode_values
from featurepull.dynamo.found import FoundRows
from featurepull.dynamo.layouts import event_times
from featurepull.io.rows import write_rows
from tests.dynamo.test_time_columns import FIRST, LAST, _random_text, _random_time

SEED = 20261204
FORMATS = ("parquet", "csv", "jsonl")


def _answer(rng: random.Random, count: int, odd: bool, zone: timezone | None
            ) -> list[list[Any]]:
    """One answer's decoded columns: event times, a Unix-timestamp feature, an int."""
    moments = [_random_time(rng) for _ in range(count)]
    texts = [_random_text(rng, moment) if odd else str(moment) for moment in moments]
    if zone is not None:  # the read's one zone, not UTC: written with it, as the datetimes say
        texts = [str(moment.replace(year=2000).astimezone(zone)) for moment in moments]
    try:
        times = event_times([{"event_ts": {"S": text}} for text in texts])
    except (ValueError, OverflowError):
        times = event_times([{"event_ts": {"S": str(moment)}} for moment in moments])
    seconds = [rng.choice([FIRST, LAST, -1, 0, rng.randint(FIRST, LAST)])
               if odd else rng.randint(0, 2**33) for _ in range(count)]
    stamps = decode_values([bytes(ValueProto(unix_timestamp_val=value).SerializeToString())
                            for value in seconds])
    return [times, stamps, list(range(count))]


def _found_rows(rng: random.Random) -> tuple[FoundRows, int]:
    unique = rng.randint(1, 60)
    columns: list[list[Any]] = [[], [], []]
    found = rng.sample(range(unique), rng.randint(0, unique))
    slots: list[int] = []
    zone = rng.choice([None, None, None, timezone(timedelta(hours=2)),
                       timezone(timedelta(hours=-7, minutes=-30))])
    while len(slots) < len(found):
        count = min(rng.randint(1, 8), len(found) - len(slots))
        answer = _answer(rng, count, odd=rng.random() < 0.3, zone=zone)
        columns = [extend_column(kept, values)
                   for kept, values in zip(columns, answer, strict=True)]
        slots += found[len(slots):len(slots) + count]
    # Every found item is some row's (a read finds only keys it was asked for).
    positions = found + [rng.randrange(unique) for _ in range(rng.randint(0, 2 * unique))]
    rng.shuffle(positions)
    return FoundRows(positions, unique, slots, columns), len(positions)


@pytest.mark.parametrize("fmt", FORMATS)
def test_time_columns_cast_write_the_bytes_of_their_datetimes(tmp_path: Path,
                                                              fmt: str) -> None:
    rng = random.Random(SEED + FORMATS.index(fmt))
    raw_seen = 0
    for case in range(40):
        rows, total = _found_rows(rng)
        raw_seen += has_raw_times(rows.columns[0]) + has_raw_times(rows.columns[1])
        keys = {"driver_id": list(range(total))}
        cast, converted = tmp_path / f"cast{case}.{fmt}", tmp_path / f"each{case}.{fmt}"
        write_rows(str(cast), keys, rows, ["last_trip_at", "n"])
        write_rows(str(converted), keys, list(rows), ["last_trip_at", "n"])  # tuples
        assert cast.read_bytes() == converted.read_bytes(), case
    assert raw_seen > 15  # the cast was taken, not only the conversion
