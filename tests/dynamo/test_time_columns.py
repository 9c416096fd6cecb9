"""Time columns kept as the answer held them (``TimeColumn``: ISO texts or Unix seconds
beside the datetimes) give, cast by Arrow at once, exactly the timestamps pyarrow makes of
the datetimes one by one: on generated texts of every shape ``datetime.fromisoformat``
takes (zones, naive, fractions of 1 to 9 digits, week dates, other separators, years 1 and
9999, leap days) and on generated Unix seconds (negative, years 1 and 9999); and a read's
found column keeps the raw values only while every answer's column has them, of one kind."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import Any

import pyarrow as pa
import pytest

from featurepull.arrow_columns import extend_column, has_raw_times, time_column
from featurepull.dynamo import feast_values
from featurepull.dynamo.feast_values import ValueProto, decode_values
from featurepull.dynamo.layouts import event_times, parse_event_ts
from featurepull.io._columnar import utc_timestamps

pytestmark = pytest.mark.mutation_first  # in-process and fast (scripts/mutation.sh)
SEED = 20261203
UTC_MICROS = pa.timestamp("us", tz="UTC")
FIRST, LAST = -62_135_596_800, 253_402_300_799  # Unix seconds of years 1 and 9999's ends


def _as_arrow(stamps: list[Any]) -> pa.Array:
    """What the output made of a time column before: pyarrow converting each datetime."""
    return pa.array(list(stamps), type=UTC_MICROS)


def _random_time(rng: random.Random) -> datetime:
    moment = datetime(1, 1, 1, tzinfo=UTC) + timedelta(
        seconds=rng.randrange(0, LAST - FIRST + 1), microseconds=rng.randrange(10**6))
    if rng.random() < 0.1:
        moment = moment.replace(microsecond=0)
    if rng.random() < 0.05:  # a leap day
        year = rng.choice([4, 1600, 2000, 2024, 9996])
        moment = moment.replace(year=year, month=2, day=29)
    return moment


def _random_text(rng: random.Random, moment: datetime) -> str:
    """A text ``fromisoformat`` takes for ``moment``, in one of its many shapes; mostly
    Feast's own (``str`` of an aware UTC datetime)."""
    shape = rng.random()
    if shape < 0.6:
        return str(moment)
    year, week, weekday = moment.isocalendar()
    date = moment.date().isoformat() if rng.random() < 0.8 else (
        moment.date().isoformat().replace("-", "") if rng.random() < 0.5 else
        f"{year:04d}-W{week:02d}-{weekday}")
    separator = rng.choice("T T T t_x")
    clock = moment.strftime(rng.choice(["%H:%M:%S", "%H:%M:%S", "%H%M%S", "%H:%M"]))
    if ":" in clock[2:3] and clock.count(":") == 2 and rng.random() < 0.6:
        digits = f"{moment.microsecond:06d}" + "".join(rng.choice("0123456789")
                                                       for _ in range(3))
        clock += rng.choice(".,") + digits[:rng.randint(1, 9)]
    zone = rng.choice(["+00:00", "+00:00", "Z", "-00:00", "+0000", "+00", "+00:00:00",
                       "", "+02:00", "-07:30", "+05:45"])
    return f"{date}{separator}{clock}{zone}"


def _event_items(texts: list[str]) -> list[dict[str, Any]]:
    return [{"event_ts": {"S": text}} for text in texts]


def test_event_times_cast_from_their_texts_are_the_datetimes_pyarrow_converts() -> None:
    rng = random.Random(SEED)
    kept = cast = 0
    for _ in range(600):
        feast_only = rng.random() < 0.5
        texts = [str(_random_time(rng)) if feast_only else _random_text(rng, _random_time(rng))
                 for _ in range(rng.randint(1, 12))]
        try:
            expected = [parse_event_ts(text) for text in texts]
        except (ValueError, OverflowError):
            continue
        column = event_times(_event_items(texts))
        assert list(column) == expected
        assert [stamp.tzinfo for stamp in column] == [stamp.tzinfo for stamp in expected]
        # Texts kept exactly when each names UTC (a naive one is taken as UTC row by row),
        # none in the years 1 or 9999 (each is checked for overflow).
        utc = all(datetime.fromisoformat(text).tzinfo == UTC for text in texts) and not any(
            stamp.year in (1, 9999) for stamp in expected)
        assert has_raw_times(column) == utc, texts
        if not has_raw_times(column):
            continue
        kept += 1
        assert column.raw == texts and column.kind == "iso"
        stamps = utc_timestamps(column)
        if stamps is not None:  # else Arrow cannot parse one: the datetimes are converted
            cast += 1
            assert stamps.equals(_as_arrow(expected)), texts
    assert kept > 200 and cast > 150  # Feast's texts are cast, not converted


@pytest.mark.parametrize("text", [
    "2024-05-01T12:00:00.123456789+00", "2024-05-01T12:00:00.1234567Z",
    "2024-05-01x12:00:00+00:00", "2024-W18-3T12:00:00+00:00", "2024-05-01T12:00:00,5+00:00",
    "20240501T120000.123+00:00", "2024-05-01T12:00:00.123+00:00:00"])
def test_texts_arrow_parses_otherwise_or_not_at_all_fall_back_to_the_datetimes(
        text: str) -> None:
    column = event_times(_event_items(["2024-05-01 12:00:00+00:00", text]))
    assert has_raw_times(column)
    assert utc_timestamps(column) is None  # the caller converts the datetimes


def _unix(seconds: int) -> bytes:
    return bytes(ValueProto(unix_timestamp_val=seconds).SerializeToString())


def test_unix_seconds_cast_are_the_datetimes_pyarrow_converts(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(feast_values, "MIN_JOINED", 2)  # short columns joined too
    rng = random.Random(SEED + 1)
    edges = [FIRST, LAST, 0, -1, 1, 951_782_400, -2_203_891_200, 2**31, -(2**31) - 1]
    for _ in range(300):
        count = rng.randint(2, 12)
        seconds = [rng.choice(edges) if rng.random() < 0.3 else rng.randint(FIRST, LAST)
                   for _ in range(count)]
        if rng.random() < 0.5:  # one size of varint: the one-size column path
            seconds = [rng.randint(2**28, 2**35 - 1) for _ in range(count)]
        column = decode_values([_unix(value) for value in seconds])
        assert column == [feast_values.timestamp_from_seconds(value) for value in seconds]
        assert has_raw_times(column) and column.raw == seconds and column.kind == "seconds"
        assert utc_timestamps(column).equals(_as_arrow(column)), seconds


@pytest.mark.parametrize("seconds", [FIRST - 1, LAST + 1, 10**12, -(10**12)])
def test_unix_seconds_out_of_range_are_refused_as_before(seconds: int) -> None:
    values = [_unix(0), _unix(seconds)]
    with pytest.raises(ValueError, match="outside the dates a datetime can hold"):
        decode_values(values)


def _column(kind: str, count: int, rng: random.Random) -> list[Any]:
    seconds = [rng.randint(0, 2**33) for _ in range(count)]
    stamps = [datetime.fromtimestamp(value, UTC) for value in seconds]
    if kind == "plain":
        return stamps
    raw: list[Any] = seconds if kind == "seconds" else [str(stamp) for stamp in stamps]
    return time_column(stamps, raw, "seconds" if kind == "seconds" else "iso")


def test_a_found_column_keeps_its_raw_values_while_every_part_has_them_of_one_kind() -> None:
    rng = random.Random(SEED + 2)
    for _ in range(300):
        kinds = [rng.choice(["seconds", "iso", "plain"]) for _ in range(rng.randint(1, 5))]
        parts = [_column(kind, rng.randint(0, 3), rng) for kind in kinds]
        kept: list[Any] = []
        for part in parts:
            kept = extend_column(kept, part)
        assert kept == [stamp for part in parts for stamp in part]
        assert type(extend_column(kept, [])) is type(kept)
        joined = [part for part in parts if part]  # an empty part changes nothing
        one_kind = {getattr(part, "kind", "plain") for part in joined}
        raw = bool(joined) and len(one_kind) == 1 and "plain" not in one_kind
        assert has_raw_times(kept) == raw, kinds
        if raw:
            assert kept.raw == [value for part in joined for value in part.raw]
            assert utc_timestamps(kept).equals(_as_arrow(kept))
    # No value, no type: an empty column is left to pyarrow (the null type), as a list is.
    assert utc_timestamps(event_times([])) is None
    assert utc_timestamps(time_column([], [], "seconds")) is None
    first = _column("seconds", 2, rng)
    assert extend_column([], first).raw is not first.raw  # a copy: the answer's is not grown
