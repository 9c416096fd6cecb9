"""Entity sources and row sinks: .csv, .parquet and .jsonl files, format from the extension."""

from featurepull.io._formats import SUPPORTED_EXTENSIONS
from featurepull.io.entities import EntityFileError, EntityTable, read_entities
from featurepull.io.rows import OutputError, write_rows

__all__ = [
    "SUPPORTED_EXTENSIONS",
    "EntityFileError",
    "EntityTable",
    "OutputError",
    "read_entities",
    "write_rows",
]
