"""Entity sources and row sinks: .csv, .parquet and .jsonl files, local or s3://, format from the
extension; and Parquet datasets (an output path ending in /), written in parts."""

from featurepull.io._atomic import temporaries_of
from featurepull.io._formats import SUPPORTED_EXTENSIONS, is_dataset
from featurepull.io.entities import (
    EntityFileChanged,
    EntityFileError,
    EntityStream,
    EntityTable,
    read_entities,
)
from featurepull.io.parts import StagedOutput, write_dataset
from featurepull.io.rows import OutputError, write_rows
from featurepull.io.sink import TableSink, check_destination, open_sink
from featurepull.io.tables import rows_to_table, unify_schemas

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
