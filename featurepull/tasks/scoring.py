"""Scoring in the worker: a registered function applied to each shard's feature rows.

Scorers are registered in the worker's own settings (``[[scorers]]``: a ``name`` and a
``package.module:function`` ``path``). A job only names one: the broker is not a trust
boundary, and a job that could carry an import path would let anyone who can write to the
queue make every worker import and run code of their choosing.

The interface, shared by the workers (``run_shard``) and ``featurepull pull --scorer``
through :func:`apply_scorer`: the function receives one shard's rows as a ``pyarrow.Table``
— the entity key columns, ``event_timestamp``, the requested features, and a boolean
``_found`` (False: the entity has no item, so its timestamp and features are null) — and
returns a ``pyarrow.Table``, or a dict of column name → array or list, holding one or more
score columns of exactly ``num_rows`` values in the input's row order. The rows stored for
the shard are the key columns and the score columns, with ``event_timestamp`` and the
features before the scores when the job asks ``with_features``.
"""

from __future__ import annotations

import importlib
import traceback
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa

from featurepull.config import ConfigError, ScorerSettings, Settings
from featurepull.errors import InputError, RunFailed

FOUND_COLUMN = "_found"
_RESULT_SHAPE = ("a scorer returns a pyarrow.Table, or a dict of column name → array or "
                 "list, with one value per input row (from pandas: "
                 "pyarrow.Table.from_pandas(df, preserve_index=False))")


class UnknownScorer(InputError, ValueError):
    """A job or pull names a scorer that the settings do not register."""


class ScorerUsageError(InputError, ValueError):
    """A request asks for something only a scorer gives (``with_features``) without one."""


def check_with_features(scorer: str | None, with_features: bool,
                        flags: tuple[str, str] = ("with_features", "scorer=NAME")) -> None:
    """Refuse ``with_features`` without a scorer: it keeps the features beside a scorer's
    scores, and means nothing alone. ``flags`` spells both the way the caller's user does
    (``("--with-features", "--scorer NAME")`` on the command line)."""
    if with_features and not scorer:
        flag, fix = flags
        raise ScorerUsageError(f"{flag} keeps the features beside a scorer's scores; add "
                               f"{fix}, or leave {flag} out (without a scorer the features "
                               "are the output)")


class ScorerImportError(ConfigError):
    """A registered scorer's module cannot be imported, or does not hold the function."""


class ScorerError(RunFailed, RuntimeError):
    """A scorer raised, or returned something that is not one score per input row."""


@dataclass(frozen=True)
class LoadedScorer:
    """A registered scorer with its function imported."""

    name: str
    path: str
    function: Callable[[pa.Table], Any]


def registered_names(settings: Settings) -> list[str]:
    """The names jobs may use, in the order the settings list them."""
    return [entry.name for entry in settings.scorers]


def check_registered(name: str, settings: Settings) -> ScorerSettings:
    """The registry entry called ``name``, without importing anything (for submitting)."""
    for entry in settings.scorers:
        if entry.name == name:
            return entry
    known = ", ".join(registered_names(settings)) or "none"
    raise UnknownScorer(
        f"scorer {name!r} is not registered (registered scorers: {known}); register it in "
        "[[scorers]] of the config file (or FEATUREPULL_SCORERS) that the workers and the "
        "submitting process read — a job can only name a registered scorer"
    )


def load_scorer(entry: ScorerSettings) -> LoadedScorer:
    """Import the function a registry entry names; ScorerImportError says why it cannot."""
    module_name, _, attribute = entry.path.partition(":")
    where = f"scorer {entry.name!r} (path {entry.path!r})"
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # ImportError, or whatever the module raised while importing
        raise ScorerImportError(
            f"{where} cannot be imported: {type(exc).__name__}: {exc}; install its package "
            "where the workers run, or fix its path in [[scorers]]"
        ) from exc
    function = getattr(module, attribute, None)
    if function is None:
        raise ScorerImportError(f"{where}: module {module_name!r} has no attribute "
                                f"{attribute!r}; fix its path in [[scorers]]")
    if not callable(function):
        raise ScorerImportError(f"{where}: {attribute!r} is a {type(function).__name__}, not "
                                "a function")
    return LoadedScorer(entry.name, entry.path, function)


def load_scorers(settings: Settings) -> list[LoadedScorer]:
    """Import every registered scorer (a worker does this at start, to fail early)."""
    return [load_scorer(entry) for entry in settings.scorers]


def registered_scorer(name: str, settings: Settings) -> LoadedScorer:
    """The registered scorer ``name``, imported (at its first use in this process)."""
    return load_scorer(check_registered(name, settings))


def apply_scorer(rows: pa.Table, found: Sequence[bool], scorer: LoadedScorer,
                 key_columns: Sequence[str], *, with_features: bool = False) -> pa.Table:
    """Score ``rows`` (keys, event_timestamp, features): the key columns, then the features
    when ``with_features``, then the scorer's columns; one row per input row, in order.

    ``found[i]`` is whether row i's entity has an item. Raises ScorerError when the scorer
    raises or returns anything but one value per row in new, distinct columns.
    """
    if FOUND_COLUMN in rows.column_names:
        raise ScorerUsageError(f"a column is named {FOUND_COLUMN!r}, which scoring adds to a "
                         "scorer's input; rename it in the entity file")
    if len(found) != rows.num_rows:
        raise ValueError(f"{len(found)} found flags for {rows.num_rows} rows")
    inputs = rows.append_column(FOUND_COLUMN, pa.array(found, pa.bool_()))
    try:
        result = scorer.function(inputs)
    except Exception as exc:
        raise ScorerError(f"scorer {scorer.name!r} raised {_summary(exc)}") from exc
    scores = _score_columns(scorer.name, result, inputs.num_rows, inputs.column_names)
    scored = rows if with_features else rows.select(list(key_columns))
    for name, column in scores.items():
        scored = scored.append_column(name, column)
    return scored


def _summary(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    frames = traceback.extract_tb(exc.__traceback__)
    if frames:
        last = frames[-1]
        text += f" (at {Path(last.filename).name}:{last.lineno} in {last.name})"
    return text


def _score_columns(name: str, result: Any, num_rows: int,
                   reserved: Sequence[str]) -> dict[str, pa.Array | pa.ChunkedArray]:
    if isinstance(result, pa.RecordBatch):
        result = pa.Table.from_batches([result])
    if isinstance(result, pa.Table):
        pairs = list(zip(result.column_names, result.columns, strict=True))
    elif isinstance(result, Mapping):
        pairs = list(result.items())
    else:
        raise ScorerError(f"scorer {name!r} returned {_kind(result)}; {_RESULT_SHAPE}")
    if not pairs:
        raise ScorerError(f"scorer {name!r} returned no columns; {_RESULT_SHAPE}")
    columns: dict[str, pa.Array | pa.ChunkedArray] = {}
    for column, values in pairs:
        if not isinstance(column, str) or not column:
            raise ScorerError(f"scorer {name!r} returned a column named {column!r}; column "
                              "names are non-empty strings")
        if column in columns:
            raise ScorerError(f"scorer {name!r} returned the column {column!r} twice")
        if column in reserved:
            raise ScorerError(
                f"scorer {name!r} returned a column {column!r}, which its input already has "
                f"({', '.join(reserved)}); return only the score columns, named apart from "
                "the entity keys, event_timestamp, the features and _found"
            )
        array = _as_array(name, column, values)
        if len(array) != num_rows:
            raise ScorerError(
                f"scorer {name!r} returned {len(array):,} values in column {column!r} for "
                f"{num_rows:,} input rows; a scorer returns exactly one value per input row, "
                "in input order"
            )
        columns[column] = array
    return columns


def _as_array(name: str, column: str, values: Any) -> pa.Array | pa.ChunkedArray:
    # (Imported here: a submit checks its scorer's name with this module, never its rows.)
    from featurepull.io.tables import ARROW_VALUE_ERRORS

    if isinstance(values, pa.Array | pa.ChunkedArray):
        return values
    sized = hasattr(values, "__len__") and hasattr(values, "__iter__")
    if not sized or isinstance(values, str | bytes | Mapping):
        raise ScorerError(f"scorer {name!r} returned {_kind(values)} as column {column!r}; "
                          "each column is an array or list with one value per input row")
    try:
        return pa.array(values)
    except ARROW_VALUE_ERRORS as exc:
        raise ScorerError(f"scorer {name!r}: column {column!r} cannot be an Arrow array "
                          f"({exc}); its values must share one type") from exc


def _kind(value: Any) -> str:
    if value is None:
        return "None"
    if isinstance(value, list | tuple):
        inner = f" ({type(value[0]).__name__} first)" if value else ""
        return f"a {type(value).__name__} of {len(value)} items{inner}"
    shown = repr(value)
    shown = shown if len(shown) <= 40 else shown[:37] + "..."
    return f"a {type(value).__name__} ({shown})"
