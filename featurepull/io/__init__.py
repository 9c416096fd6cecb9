"""Entity sources and row sinks: .csv, .parquet and .jsonl files, local or s3://, format from the
extension; and Parquet datasets (an output path ending in /), written in parts.

Names are imported on first use: a submit reads entities and stages keys files, and never
loads the output's encoders, sinks and row tables (nor, through them, `pyarrow.compute`)."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from featurepull.io._atomic import temporaries_of
from featurepull.io._formats import SUPPORTED_EXTENSIONS, is_dataset

if TYPE_CHECKING:
    from featurepull.io._destinations import check_destination
    from featurepull.io.entities import (
        EntityFileChanged,
        EntityFileError,
        EntityStream,
        EntityTable,
        read_entities,
    )
    from featurepull.io.parts import StagedOutput, write_dataset
    from featurepull.io.rows import OutputError, write_rows
    from featurepull.io.sink import TableSink, open_sink
    from featurepull.io.tables import rows_to_table, unify_schemas

_LAZY = {
    **dict.fromkeys(("EntityFileChanged", "EntityFileError", "EntityStream", "EntityTable",
                     "read_entities"), "featurepull.io.entities"),
    **dict.fromkeys(("StagedOutput", "write_dataset"), "featurepull.io.parts"),
    **dict.fromkeys(("OutputError", "write_rows"), "featurepull.io.rows"),
    "check_destination": "featurepull.io._destinations",
    **dict.fromkeys(("TableSink", "open_sink"), "featurepull.io.sink"),
    **dict.fromkeys(("rows_to_table", "unify_schemas"), "featurepull.io.tables"),
}

__all__ = [
    "SUPPORTED_EXTENSIONS",
    "EntityFileChanged",
    "EntityFileError",
    "EntityStream",
    "EntityTable",
    "OutputError",
    "StagedOutput",
    "TableSink",
    "check_destination",
    "is_dataset",
    "open_sink",
    "read_entities",
    "rows_to_table",
    "temporaries_of",
    "unify_schemas",
    "write_dataset",
    "write_rows",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'featurepull.io' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
