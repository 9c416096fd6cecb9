"""One Parquet file made of the row groups of others, their bytes copied: what a job's
finisher does with parts its shards encoded as the output's own row groups.

pyarrow can only write Arrow data, so joining Parquet files means decoding and encoding each
again (~0.2 CPU s per million rows at the end of a job, on one core). Each column chunk is
encoded on its own, so parts written by the output's writer (same schema, same slices) hold
the very row groups the output would: the output is the parts' row group bytes in order, and
a footer — the footer of an empty file of the output's schema, with their row groups' entries
moved to their new offsets. The footers are Thrift compact structs, walked here field by field
and copied as they are but for the varints of those offsets (and each row group's ordinal).

A footer this does not know how to move (page indexes, bloom filters, encryption, chunks that
do not tile the file) raises `CannotSplice`: the caller encodes that part again instead.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

MAGIC = b"PAR1"

# Thrift compact protocol's types (TCompactProtocol).
_TRUE, _FALSE, _BYTE, _I16, _I32, _I64, _DOUBLE, _BINARY, _LIST, _SET, _MAP, _STRUCT = range(
    1, 13)
# FileMetaData fields the output's footer takes from the parts (the rest from the empty file).
_NUM_ROWS, _ROW_GROUPS = 3, 4
_FILE_SCHEMA_FIELDS = (1, 2, 6, 7)  # version, schema, created_by, column_orders
# RowGroup: 1 columns, 3 num_rows, 5 file_offset, 7 ordinal. ColumnChunk: 2 file_offset,
# 3 meta_data, 4-7 page indexes, 8-9 encryption. ColumnMetaData: 7 total_compressed_size,
# 9 data_page_offset, 10 index_page_offset, 11 dictionary_page_offset, 14-15 bloom filter.
_RG_COLUMNS, _RG_NUM_ROWS, _RG_FILE_OFFSET, _RG_ORDINAL = 1, 3, 5, 7
_CC_FILE_OFFSET, _CC_META = 2, 3
_CC_UNMOVABLE = frozenset({4, 5, 6, 7, 8, 9})
_CM_COMPRESSED, _CM_DATA_PAGE, _CM_INDEX_PAGE, _CM_DICTIONARY_PAGE = 7, 9, 10, 11
_CM_UNMOVABLE = frozenset({14, 15})


class CannotSplice(ValueError):
    """A Parquet file whose row groups cannot be copied into another file as they are."""


@dataclass
class _RowGroup:
    start: int
    end: int
    rows: int = 0
    # (start, end, value) of each varint to rewrite: offsets (moved), the ordinal (renumbered).
    offsets: list[tuple[int, int, int]] = field(default_factory=list)
    ordinal: tuple[int, int] | None = None


@dataclass
class Footer:
    """A Parquet file's footer, walked: where its parts are, as slices of ``data``."""

    data: bytes | memoryview
    fields: dict[int, tuple[int, int]]  # field id -> (start, end) of the value
    row_groups: list[_RowGroup]
    num_rows: int
    body_end: int = 0  # where the footer starts in its file (the row groups end there)
    chunks: list[tuple[int, int]] = field(default_factory=list)  # (start, size) in the file
    # The positions, within their row group, of the column chunks with a dictionary page.
    dictionaries: set[int] = field(default_factory=set)

    def same_schema(self, other: Footer) -> bool:
        """Whether both describe the same columns, written by the same writer."""
        return all(self._raw(n) == other._raw(n) for n in _FILE_SCHEMA_FIELDS)

    def _raw(self, number: int) -> bytes | memoryview | None:
        span = self.fields.get(number)
        return None if span is None else self.data[span[0]:span[1]]


class _Reader:
    """Thrift compact protocol, read without building values (positions and integers)."""

    def __init__(self, data: bytes | memoryview) -> None:
        self.data = data
        self.pos = 0

    def varint(self) -> int:
        data, pos, shift, value = self.data, self.pos, 0, 0
        while True:
            byte = data[pos]
            pos += 1
            value |= (byte & 0x7F) << shift
            if byte < 0x80:
                self.pos = pos
                return value
            shift += 7

    def integer(self) -> int:
        value = self.varint()
        return (value >> 1) ^ -(value & 1)

    def fields(self) -> Iterator[tuple[int, int]]:
        """(field id, type) of each field of the struct at pos; the caller reads or skips
        each value before asking for the next."""
        last = 0
        while True:
            head = self.data[self.pos]
            self.pos += 1
            if head == 0:
                return
            kind, delta = head & 0x0F, head >> 4
            last = last + delta if delta else self.integer()
            yield last, kind

    def list_head(self) -> tuple[int, int]:
        head = self.data[self.pos]
        self.pos += 1
        size = head >> 4
        return (self.varint() if size == 15 else size), head & 0x0F

    def skip(self, kind: int) -> None:
        if kind in (_TRUE, _FALSE):
            return
        if kind == _BYTE:
            self.pos += 1
        elif kind in (_I16, _I32, _I64):
            self.varint()
        elif kind == _DOUBLE:
            self.pos += 8
        elif kind == _BINARY:
            size = self.varint()
            self.pos += size
        elif kind in (_LIST, _SET):
            size, element = self.list_head()
            for _ in range(size):
                self.skip_element(element)
        elif kind == _MAP:
            size = self.varint()
            if size:
                types = self.data[self.pos]
                self.pos += 1
                for _ in range(size):
                    self.skip_element(types >> 4)
                    self.skip_element(types & 0x0F)
        elif kind == _STRUCT:
            for _, inner in self.fields():
                self.skip(inner)
        else:
            raise CannotSplice(f"unknown Thrift type {kind}")

    def skip_element(self, kind: int) -> None:
        if kind in (_TRUE, _FALSE):  # a bool in a container is a byte
            self.pos += 1
        else:
            self.skip(kind)

    def spanned_varint(self) -> tuple[int, int, int]:
        start = self.pos
        value = self.integer()
        return start, self.pos, value


def read_footer(data: bytes | memoryview) -> Footer:
    """The footer of the Parquet file ``data``; CannotSplice if it is not one whose row
    groups can be moved (or not a Parquet file: a torn one)."""
    if len(data) < 12 or data[:4] != MAGIC or data[-4:] != MAGIC:
        raise CannotSplice("not a Parquet file")
    size = struct.unpack("<i", data[-8:-4])[0]
    begin = len(data) - 8 - size
    if size <= 0 or begin < 4:
        raise CannotSplice("not a Parquet file")
    try:
        footer = _walk(data, begin)
    except (IndexError, KeyError) as exc:
        raise CannotSplice(f"an unreadable footer ({exc})") from None
    footer.body_end = begin
    _check_tiling(footer, begin)
    return footer


def _walk(data: bytes | memoryview, begin: int) -> Footer:
    reader = _Reader(data)
    reader.pos = begin
    fields: dict[int, tuple[int, int]] = {}
    row_groups: list[_RowGroup] = []
    chunks: list[tuple[int, int]] = []
    dictionaries: set[int] = set()
    num_rows = 0
    for number, kind in reader.fields():
        start = reader.pos
        if number == _NUM_ROWS:
            num_rows = reader.integer()
        elif number == _ROW_GROUPS:
            count, _ = reader.list_head()
            for _ in range(count):
                row_groups.append(_row_group(reader, chunks, dictionaries))
        else:
            reader.skip(kind)
        fields[number] = (start, reader.pos)
    if reader.pos != len(data) - 8:
        raise CannotSplice("the footer's length does not match its contents")
    return Footer(data, fields, row_groups, num_rows, chunks=chunks, dictionaries=dictionaries)


def _row_group(reader: _Reader, chunks: list[tuple[int, int]], dictionaries: set[int]
               ) -> _RowGroup:
    group = _RowGroup(reader.pos, 0)
    for number, kind in reader.fields():
        if number == _RG_COLUMNS:
            count, _ = reader.list_head()
            for position in range(count):
                if _column_chunk(reader, group, chunks):
                    dictionaries.add(position)
        elif number == _RG_NUM_ROWS:
            group.rows = reader.integer()
        elif number == _RG_FILE_OFFSET:
            group.offsets.append(reader.spanned_varint())
        elif number == _RG_ORDINAL:
            start, end, _ = reader.spanned_varint()
            group.ordinal = (start, end)
        else:
            reader.skip(kind)
    group.end = reader.pos
    return group


def _column_chunk(reader: _Reader, group: _RowGroup, chunks: list[tuple[int, int]]) -> bool:
    """Walks one column chunk; whether it has a dictionary page."""
    dictionary = False
    for number, kind in reader.fields():
        if number in _CC_UNMOVABLE:
            raise CannotSplice(f"a column chunk with field {number} (page index, encryption)")
        if number == _CC_FILE_OFFSET:
            group.offsets.append(reader.spanned_varint())
        elif number == _CC_META:
            first, size = -1, -1
            for inner, inner_kind in reader.fields():
                if inner in _CM_UNMOVABLE:
                    raise CannotSplice("a column chunk with a bloom filter")
                if inner in (_CM_DATA_PAGE, _CM_INDEX_PAGE, _CM_DICTIONARY_PAGE):
                    span = reader.spanned_varint()
                    group.offsets.append(span)
                    if inner != _CM_INDEX_PAGE:
                        first = span[2] if first < 0 else min(first, span[2])
                    dictionary = dictionary or inner == _CM_DICTIONARY_PAGE
                elif inner == _CM_COMPRESSED:
                    size = reader.integer()
                else:
                    reader.skip(inner_kind)
            chunks.append((first, size))
        else:
            reader.skip(kind)
    return dictionary


def _check_tiling(footer: Footer, body_end: int) -> None:
    """The column chunks, in order, must cover the file from its magic to its footer
    exactly: then every byte moved is a chunk whose offsets are moved with it."""
    at = len(MAGIC)
    for start, size in footer.chunks:
        if start != at or size < 0:
            raise CannotSplice("column chunks that do not follow one another")
        at += size
    if at != body_end:
        raise CannotSplice("bytes between the column chunks and the footer")


def _varint(value: int) -> bytes:
    """A zigzag varint (i16, i32 and i64 alike: the values here are never negative)."""
    return _unsigned(value << 1)


def _list_head(count: int) -> bytes:
    """The head of a list of ``count`` structs."""
    return bytes([(count << 4) | _STRUCT]) if count < 15 else (
        bytes([0xF0 | _STRUCT]) + _unsigned(count))


def _unsigned(value: int) -> bytes:
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _moved(footer: Footer, group: _RowGroup, shift: int, ordinal: int) -> bytes:
    """Row group ``group`` of ``footer`` with its offsets moved by ``shift`` bytes."""
    # An offset of 0 is one the writer left unset (ColumnChunk.file_offset, deprecated).
    edits = [(start, end, _varint(value + shift if value else 0))
             for start, end, value in group.offsets]
    if group.ordinal is not None:
        edits.append((*group.ordinal, _varint(ordinal)))
    edits.sort()
    out, at = bytearray(), group.start
    for start, end, value in edits:
        out += footer.data[at:start]
        out += value
        at = end
    out += footer.data[at:group.end]
    return bytes(out)


def spliced_footer(empty: Footer, parts: Sequence[Footer]) -> bytes:
    """The footer of the file whose body is the bodies of ``parts`` in order (each
    ``data[4:body_end]``), written as ``empty`` (an empty file of the output's schema)
    would be with their row groups: the footer, its length and the magic."""
    groups: list[bytes] = []
    shift = rows = 0
    for part in parts:
        for group in part.row_groups:
            groups.append(_moved(part, group, shift, len(groups)))
            rows += group.rows
        shift += part.body_end - len(MAGIC)
    rows_start, rows_end = empty.fields[_NUM_ROWS]
    groups_start, groups_end = empty.fields[_ROW_GROUPS]
    if not rows_end <= groups_start:
        raise CannotSplice("an empty file's footer in an unexpected order")
    data = empty.data
    footer = b"".join([data[empty.body_end:rows_start], _varint(rows),
                       data[rows_end:groups_start], _list_head(len(groups)), *groups,
                       data[groups_end:len(data) - 8]])
    return footer + struct.pack("<i", len(footer)) + MAGIC
