"""An output written in parts: one Parquet part per shard, staged beside the output by
whichever process reads the shard, then published all at once by one process.

    staged = StagedOutput(output, owner=job_id, parts=shards, s3=settings.s3)
    staged.write_keys(n, keys)                       # the submitter: part n's entity keys
    staged.write_part(n, table)                      # any process, any order, idempotent
    rows = staged.publish(schema, schemas, part_rows, overwrite=False)   # once, at the end
    staged.discard()                                 # after publishing, or after a failure

Two kinds of output:

- a file (``.parquet``, ``.csv``, ``.jsonl``): parts are staged in ``.{name}.parts-{owner}/``
  beside it; `publish` streams them, in order and one at a time, through `open_sink`. A local
  ``.parquet`` file's parts are encoded by `write_part` as the output's own row groups, and
  `publish` copies their bytes (``_parquet_splice``): the same file, without decoding and
  encoding every part again at the end of the job.
- a dataset (a path or ``s3://`` prefix ending in ``/``): parts are staged in
  ``_temporary/{owner}/`` under it; `publish` puts them in place as ``part-00000.parquet``, ...
  (hard links locally, server-side copies on S3, eight at a time; a part whose schema is
  narrower than the unified one is rewritten, cast), then writes ``_manifest.json`` (row
  counts, in order), then ``_SUCCESS`` (the owner) last. ``pyarrow.dataset`` skips
  ``_``-prefixed names and lists the equal-width part names in order, so it reads the rows in
  input order.

`published` answers a publisher that died after making the output visible, before it could
record that: a dataset's ``_SUCCESS`` names its owner; an s3:// file carries its owner in its
metadata; a local file is hard-linked into the staging area just before its rename (until the
caller has recorded its `identity` and passes it back as ``recorded``: then the staging area
can be discarded before the caller marks the output published, and nothing is left after).
"""

from __future__ import annotations

import io
import json
import mmap
import os
import shutil
import zlib
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Executor, ThreadPoolExecutor
from contextlib import contextmanager, suppress
from typing import TYPE_CHECKING, BinaryIO, TypeVar, cast

import pyarrow as pa
import pyarrow.parquet as pq

from featurepull.config import S3Settings
from featurepull.io import _s3
from featurepull.io._atomic import atomic_file, file_identity, link_over, start_writeback
from featurepull.io._destinations import (
    STAGING_DIR,
    OwnerMark,
    check_destination,
    marked_by,
    open_output,
    output_format,
    reporting_write_errors,
)
from featurepull.io._formats import is_dataset, s3_location
from featurepull.io._parquet_options import key_leaves, parquet_options
from featurepull.io._row_view import OutputError

if TYPE_CHECKING:
    from featurepull.io._encoders import ParquetEncoder
    from featurepull.io._parquet_splice import Footer
    from featurepull.io.sink import TableSink

__all__ = ["MANIFEST", "SUCCESS", "StagedOutput", "is_dataset"]

MANIFEST = "_manifest.json"
SUCCESS = "_SUCCESS"
_WITNESS = "_published"
# Parts copied into place at once on S3 (botocore's default pool holds 10 connections).
_S3_COPIES_AT_ONCE = 8
# pq.write_table's row groups (a plain part's): a part read back is one chunk a column up to
# this, and an output's row groups encoded from other chunks could differ (page boundaries).
_PLAIN_ROW_GROUP = 1024 * 1024
_T = TypeVar("_T")


class StagedOutput:
    """One output's staging area and how to publish it (see the module docstring)."""

    def __init__(self, output: str, owner: str, parts: int, s3: S3Settings | None = None,
                 recorded: str | None = None, rows_per_write: int | None = None,
                 keys: Sequence[str] = ()) -> None:
        self.output = output
        # The entity key columns: a Parquet file output writes them without dictionaries
        # (`ParquetEncoder`), its parts too.
        self.keys = tuple(keys)
        # A file output is written in slices of this many rows (None: a part at a time): a
        # Parquet file's row groups end where the writes do, so parts of several slices
        # make the file that parts of one slice each would have made.
        self.rows_per_write = rows_per_write
        self.owner = owner
        self.parts = parts
        self.s3 = s3 or S3Settings()
        self.dataset = is_dataset(output)
        if self.dataset:
            self.staging = f"{output}{STAGING_DIR}/{owner}/"
        else:
            output_format(output)
            head, _, name = output.rpartition("/")
            if s3_location(output) is None:
                head = os.path.dirname(os.path.abspath(output))
            self.staging = f"{head}/.{name}.parts-{owner}/"
        self._local = s3_location(output) is None
        # Parts only staged (read once, then discarded), not the output's own files.
        self._staged_only = self._local and not self.dataset
        # A local Parquet file is made of its parts' row groups as they are (_parquet_splice).
        self._spliced = self._staged_only and output_format(output) == "parquet"
        self.mark = OwnerMark(owner, self.staging + _WITNESS, recorded)

    def part_name(self, n: int) -> str:
        """``part-00000.parquet``: equal widths, so names sort in part order."""
        width = max(5, len(str(max(self.parts - 1, 0))))
        return f"part-{n:0{width}d}.parquet"

    def write_part(self, n: int, table: pa.Table) -> int | None:
        """Stage part `n` (replacing an earlier copy: a shard that runs twice writes twice).
        A local Parquet file's part is encoded as the output's own row groups: returns the
        CRC-32 of its bytes, for `publish` to tell a torn part (else None)."""
        if self._spliced and table.num_rows <= _PLAIN_ROW_GROUP:
            # The output's writer, slices and chunks (one a column, as a part read back):
            # its row groups are then the output's, byte for byte, and `publish` copies them.
            from featurepull.io._encoders import ParquetEncoder

            path = self.staging + self.part_name(n)
            with reporting_write_errors(path):
                os.makedirs(self.staging, exist_ok=True)
                with atomic_file(path, durable=False) as stream:
                    summed = _Summed(stream)
                    encoder = ParquetEncoder(cast(BinaryIO, summed), table.schema, self.output,
                                             self.keys)
                    self._encode(table.combine_chunks(), encoder)
            return summed.crc
        # A dataset's parts are its files, and S3 is paid by the byte: compressed (and a
        # dataset's durable). A local file output's parts (and keys) are read once, before
        # the job ends: plain pages cost half the CPU (a tenth for a keys file), and the
        # table read back is the same; not fsynced (an fsync held each shard ~15-45 ms
        # here): a crash of the machine that loses or tears one fails the job in
        # `read_part`, never a wrong output. The output itself is fsynced.
        self._write_table(self.part_name(n), table, durable=not self._staged_only,
                          plain=self._staged_only)
        return None

    def read_part(self, n: int) -> pa.Table:
        """Part `n` as staged; OutputError if it is not there, or torn (page checksums)."""
        try:
            table = self._read_table(self.part_name(n))
        except (pa.ArrowException, OSError) as exc:
            if not (self._staged_only and _torn(exc, self.staging + self.part_name(n))):
                raise
            raise OutputError(
                f"{self.staging}{self.part_name(n)}: part {n} of {self.output} cannot be read "
                f"({exc}): a crash of the machine holding it can tear it (staged parts are "
                "not fsynced); submit the job again") from None
        if table is None:
            raise self._missing(n)
        return table

    def keys_name(self, n: int) -> str:
        """``keys-00000.parquet``: the entity keys of part `n`, staged before it is read."""
        return "keys-" + self.part_name(n)[len("part-"):]

    def write_keys(self, n: int, table: pa.Table) -> None:
        """Stage the entity keys part `n` will be made from (the submitter, once per part).
        Not fsynced: they matter only while the job runs, and a crash that loses or tears
        them fails it (`read_keys` finds them missing or unreadable): submitted again."""
        self._write_table(self.keys_name(n), table, durable=False, plain=self._local)

    def read_keys(self, n: int) -> pa.Table | None:
        """The entity keys staged for part `n`; None if they are not there (a torn file
        raises: its pages' checksums do not match)."""
        return self._read_table(self.keys_name(n))

    def _write_table(self, name: str, table: pa.Table, durable: bool = True,
                     plain: bool = False) -> None:
        # Else as the output's writer: no dictionaries for the key columns (ParquetEncoder).
        options = ({"compression": "none", "use_dictionary": False} if plain
                   else parquet_options(table.schema, self.keys))
        if self._local:
            # Straight into the file: an in-memory copy (and a bytes copy of it) cost a pool
            # process page faults on fresh memory for each part, as much CPU as the encoding.
            path = self.staging + name
            with reporting_write_errors(path):
                os.makedirs(self.staging, exist_ok=True)
                with atomic_file(path, durable=durable) as stream:
                    pq.write_table(table, stream, write_page_checksum=True, **options)
            return
        sink = pa.BufferOutputStream()
        pq.write_table(table, sink, write_page_checksum=True, **options)
        self._put(self.staging + name, sink.getvalue().to_pybytes(), durable)

    def _read_table(self, name: str) -> pa.Table | None:
        path = self.staging + name
        if self._local:
            try:
                return _read_parquet(path)
            except FileNotFoundError:
                return None
        data = self._get(path)
        return None if data is None else _read_parquet(pa.BufferReader(data))

    def _missing(self, n: int) -> OutputError:
        return OutputError(f"{self.staging}{self.part_name(n)}: part {n} of {self.output} is "
                           "missing from its staging area (removed while the job ran?)")

    def published(self) -> bool:
        """Whether the output in place is this owner's, complete (an earlier `publish`)."""
        if self.dataset:
            marker = self._get(self.output + SUCCESS)
            return marker is not None and marker.decode(errors="replace") == self.owner
        return marked_by(self.output, self.mark, self.s3)

    def identity(self) -> str | None:
        """The published local file's identity, for the caller to record (else None)."""
        return None if self.dataset or not self._local else file_identity(self.output)

    def publish(self, schema: pa.Schema, schemas: Sequence[pa.Schema],
                part_rows: Sequence[int], *, overwrite: bool = False,
                checks: Sequence[int | None] | None = None) -> int:
        """Make the output from the staged parts (`schemas` and `part_rows`: each part's;
        `checks`: what `write_part` returned for each); returns the rows written."""
        if self.dataset:
            self._publish_dataset(schema, schemas, part_rows, overwrite)
        elif self._spliced:
            self._publish_spliced(schema, schemas, checks or [None] * self.parts, overwrite)
        else:
            from featurepull.io.sink import open_sink

            with open_sink(self.output, schema, overwrite=overwrite, s3=self.s3,
                           mark=self.mark, keys=self.keys
                           ) as sink, ThreadPoolExecutor(max_workers=1) as ahead:
                # The next part is read (its checksums verified, decoded) while this one is
                # written: the publisher runs after the last shard, when the fleet's other
                # cores are idle.
                for table in _one_ahead(ahead, self.read_part, self.parts):
                    self._encode(table, sink)
        return sum(part_rows)

    def _encode(self, table: pa.Table, sink: TableSink | ParquetEncoder) -> None:
        """Write `table` to the output's `sink` in slices of `rows_per_write`; a Parquet
        encoder of its own (a part encoded as the output's row groups) is finished."""
        from featurepull.io._encoders import ParquetEncoder
        from featurepull.io.sink import TableSink

        step = self.rows_per_write or table.num_rows
        try:
            for start in range(0, max(table.num_rows, 1), max(step, 1)):
                piece = table.slice(start, step)
                if isinstance(sink, TableSink):
                    sink.write(piece)
                elif piece.num_rows:  # as TableSink.write: an empty piece adds no row group
                    sink.write_table(piece, start + 1)
        except BaseException:
            if isinstance(sink, ParquetEncoder):
                sink.abandon()
            raise
        if isinstance(sink, ParquetEncoder):
            sink.finish()

    def _publish_spliced(self, schema: pa.Schema, schemas: Sequence[pa.Schema],
                         checks: Sequence[int | None], overwrite: bool) -> None:
        """The output as its parts' row groups, copied, and one footer: ~0.02 s per million
        rows where decoding and encoding them again took ~0.2. A part that cannot be copied
        (its columns widened by another part's, staged by an older worker) is encoded again,
        as the output's writer would have: the same bytes."""
        from featurepull.io._parquet_splice import MAGIC, read_footer, spliced_footer

        empty = read_footer(self._encoded(schema, schema.empty_table()))
        plain = key_leaves(schema, self.keys)

        def prepared(n: int) -> tuple[bytes | memoryview, Footer]:
            """Part `n`'s bytes as the output takes them, and their footer."""
            check = checks[n]
            data = None if check is None else self._checked_part(n, check)
            footer = _spliceable(data, empty, plain) if (
                data is not None and schemas[n].equals(schema)) else None
            if data is None or footer is None:
                table = (self.read_part(n) if data is None
                         else _read_parquet(pa.BufferReader(data)))
                data = self._encoded(schema, table)
                footer = read_footer(data)
            return data, footer

        footers: list[Footer] = []
        # The next part is read, checked and its footer walked on a thread while this one's
        # bytes are written (reads, CRCs and writes let go of the GIL): the finisher runs
        # after the last shard, when the fleet's other cores are idle. The first is read
        # while the output is opened.
        with ThreadPoolExecutor(max_workers=1) as ahead:
            parts = _one_ahead(ahead, prepared, len(checks))
            with open_output(self.output, overwrite=overwrite, s3=self.s3, mark=self.mark
                             ) as stream:
                self._write_out(stream, MAGIC)
                for data, footer in parts:
                    # Each part's pages sent to disk as it is written: the output's fsync,
                    # at its end, then waits for ~1 ms of them where it waited ~5.
                    self._write_out(stream, memoryview(data)[len(MAGIC):footer.body_end],
                                    writeback=True)
                    footers.append(footer)
                self._write_out(stream, spliced_footer(empty, footers))

    def _write_out(self, stream: BinaryIO, data: bytes | memoryview,
                   writeback: bool = False) -> None:
        with reporting_write_errors(self.output):
            stream.write(data)
            if writeback:
                start_writeback(stream)

    def _encoded(self, schema: pa.Schema, table: pa.Table) -> bytes:
        """A Parquet file of `table` cast to the output's `schema`, as the output's writer
        writes it (in the same slices)."""
        from featurepull.io._encoders import ParquetEncoder
        from featurepull.io.sink import TableSink

        buffer = io.BytesIO()
        encoder = ParquetEncoder(buffer, schema, self.output, self.keys)
        self._encode(table, TableSink(self.output, schema, encoder))
        encoder.finish()
        return buffer.getvalue()

    def _checked_part(self, n: int, check: int) -> bytes | memoryview:
        """Part `n`'s bytes; OutputError if missing, or if they are not those its shard
        wrote (`check`: their CRC-32)."""
        path = self.staging + self.part_name(n)
        try:
            with open(path, "rb") as stream:
                data = _mapped(stream)
        except FileNotFoundError:
            raise self._missing(n) from None
        if zlib.crc32(data) != check:
            raise OutputError(
                f"{path}: part {n} of {self.output} is not what its shard wrote (its CRC-32 "
                "differs): a crash of the machine holding it can tear it (staged parts are "
                "not fsynced), or a second run of the shard wrote it again; submit the job "
                "again")
        return data

    def discard(self) -> None:
        """Remove the staging area and everything in it (nothing if there is none)."""
        location = s3_location(self.staging)
        if location is None:
            shutil.rmtree(self.staging, ignore_errors=True)
            with suppress(OSError):  # the dataset's _temporary/, once no job stages there
                if self.dataset:
                    os.rmdir(self.output + STAGING_DIR)
            return
        with _reporting_s3_errors():
            _s3.delete_keys(location, _s3.list_keys(location, self.s3), self.s3)

    def _publish_dataset(self, schema: pa.Schema, schemas: Sequence[pa.Schema],
                         part_rows: Sequence[int], overwrite: bool) -> None:
        started = self.staging + "_publishing"
        # A publisher that died midway left parts of its own in place: this run redoes all.
        if self._get(started) is None:
            check_destination(self.output, overwrite, self.s3)  # again: time has passed
            self._put(started, self.owner.encode())
        self._remove_old_dataset()

        def place(n: int) -> None:
            name = self.part_name(n)
            if schemas[n].equals(schema):
                self._place(n, self.output + name)
            else:  # a part whose column types unify_schemas widened: rewritten, cast
                from featurepull.io.sink import open_sink

                with open_sink(self.output + name, schema, overwrite=True, s3=self.s3,
                               keys=self.keys) as sink:
                    sink.write(self.read_part(n))

        if self._local:  # a hard link each: nothing to wait for
            for n in range(self.parts):
                place(n)
        else:  # a server-side copy each, ~30-50 ms of waiting: several at once
            with ThreadPoolExecutor(max_workers=_S3_COPIES_AT_ONCE) as pool:
                list(pool.map(place, range(self.parts)))
        manifest = {"owner": self.owner, "rows": sum(part_rows), "columns": schema.names,
                    "parts": [{"path": self.part_name(n), "rows": rows}
                              for n, rows in enumerate(part_rows)]}
        self._put(self.output + MANIFEST, (json.dumps(manifest, indent=1) + "\n").encode())
        self._put(self.output + SUCCESS, self.owner.encode())

    def _remove_old_dataset(self) -> None:
        """An earlier dataset's marker first, then its manifest and parts (none other)."""
        def old(name: str) -> bool:
            return name in (SUCCESS, MANIFEST) or (name.startswith("part-")
                                                    and name.endswith(".parquet"))

        location = s3_location(self.output)
        if location is None:
            os.makedirs(self.output, exist_ok=True)
            names = sorted(os.listdir(self.output), key=lambda name: name != SUCCESS)
            for name in filter(old, names):
                with suppress(FileNotFoundError), reporting_write_errors(self.output):
                    os.unlink(self.output + name)
            return
        with _reporting_s3_errors():
            keys = [key for key in _s3.list_keys(location, self.s3)
                    if "/" not in key[len(location.key):] and old(key[len(location.key):])]
            keys.sort(key=lambda key: not key.endswith(SUCCESS))
            _s3.delete_keys(location, keys, self.s3)

    def _place(self, n: int, final: str) -> None:
        staged = self.staging + self.part_name(n)
        source, target = s3_location(staged), s3_location(final)
        if source is None or target is None:
            if not os.path.exists(staged):
                raise self._missing(n)
            with reporting_write_errors(final):
                link_over(staged, final)
            return
        try:
            _s3.copy(source, target, self.s3)
        except _s3.S3Error as exc:
            raise self._missing(n) if "no such object" in str(exc) else OutputError(
                str(exc)) from None

    def _put(self, path: str, data: bytes, durable: bool = True) -> None:
        location = s3_location(path)
        if location is None:
            with reporting_write_errors(path):
                os.makedirs(os.path.dirname(path), exist_ok=True)
                with atomic_file(path, durable=durable) as stream:
                    stream.write(data)
            return
        with _reporting_s3_errors():
            _s3.put_bytes(location, data, self.s3)

    def _get(self, path: str) -> bytes | None:
        location = s3_location(path)
        if location is None:
            try:
                with open(path, "rb") as stream:
                    return stream.read()
            except FileNotFoundError:
                return None
        with _reporting_s3_errors():
            return _s3.get_bytes(location, self.s3)


class _Summed:
    """A binary stream that keeps the CRC-32 of what is written through it."""

    def __init__(self, stream: BinaryIO) -> None:
        self.stream = stream
        self.crc = 0
        self.closed = False

    def write(self, data: bytes) -> int:
        self.crc = zlib.crc32(data, self.crc)
        return self.stream.write(data)

    def tell(self) -> int:
        return self.stream.tell()

    def flush(self) -> None:
        self.stream.flush()


def _mapped(stream: BinaryIO) -> bytes | memoryview:
    """The bytes of the open file, mapped: no copy of a part, whose pages the shard that
    wrote it has just left in the page cache (reading it into fresh memory cost the
    finisher ~0.4 ms a part). A staged part is replaced by a rename, never written in place,
    so the file mapped does not change under the finisher."""
    if os.fstat(stream.fileno()).st_size == 0:
        return b""  # (an emptied part: nothing to map)
    return memoryview(mmap.mmap(stream.fileno(), 0, access=mmap.ACCESS_READ))


def _one_ahead(pool: Executor, function: Callable[[int], _T], count: int) -> Iterator[_T]:
    """``function(0)``, ..., ``function(count - 1)`` in order, each computed on `pool` while
    the caller works on the one before it (two in memory at most; the first is started
    now); one that raised raises here, in its turn, and none after it is started."""
    pending = [pool.submit(function, 0)] if count > 0 else []

    def in_turn() -> Iterator[_T]:
        for n in range(1, count + 1):
            done = pending.pop().result()
            if n < count:
                pending.append(pool.submit(function, n))
            yield done

    return in_turn()


def _spliceable(data: bytes | memoryview, empty: Footer, plain: frozenset[int]
                ) -> Footer | None:
    """The footer of a part whose row groups can be copied into the output (its columns as
    the output's, written by the same writer, none of the `plain` ones with a dictionary
    page: a key column's, written by a worker of a version that gave keys dictionaries);
    else None."""
    from featurepull.io._parquet_splice import CannotSplice, read_footer

    try:
        footer = read_footer(data)
    except CannotSplice:
        return None
    return footer if footer.same_schema(empty) and not footer.dictionaries & plain else None


def _read_parquet(source: str | pa.BufferReader) -> pa.Table:
    """One staged file, its pages' checksums verified. Through ``ParquetFile``, not
    ``pq.read_table``: that builds a dataset, and importing ``pyarrow.dataset`` (with pandas)
    costs a pool process ~0.4 s of CPU at its first shard."""
    with pq.ParquetFile(source, page_checksum_verification=True) as file:
        return file.read()


def _torn(exc: Exception, path: str) -> bool:
    """Whether reading the file at `path` failed on its bytes (what a crash that tears or
    empties it makes Arrow raise: ArrowInvalid, or an OSError of Arrow's own, without an
    errno, such as a page checksum) rather than on the file system (the OS's errors carry
    an errno; Arrow's "is a directory" has none, hence the regular-file check)."""
    return getattr(exc, "errno", None) is None and os.path.isfile(path)


@contextmanager
def _reporting_s3_errors() -> Iterator[None]:
    """Turn an S3Error into an OutputError (its message already names the object)."""
    try:
        yield
    except _s3.S3Error as exc:
        raise OutputError(str(exc)) from None


def write_dataset(output: str, table: pa.Table, rows_per_part: int, owner: str, *,
                  overwrite: bool = False, s3: S3Settings | None = None,
                  keys: Sequence[str] = ()) -> int:
    """Write `table` as a dataset of parts of `rows_per_part` rows (in-process pulls)."""
    parts = max(1, -(-table.num_rows // rows_per_part))
    staged = StagedOutput(output, owner, parts, s3, keys=keys)
    try:
        for n in range(parts):
            staged.write_part(n, table.slice(n * rows_per_part, rows_per_part))
        rows = [min(rows_per_part, table.num_rows - n * rows_per_part) for n in range(parts)]
        return staged.publish(table.schema, [table.schema] * parts, rows, overwrite=overwrite)
    finally:
        staged.discard()

