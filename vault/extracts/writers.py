"""Streaming extract writers: NDJSON, CSV and Parquet, hashed as they are written.

``open_writer`` returns an ``ExtractWriter`` for one format; rows arrive in
batches (tuples in column order) through ``write`` and ``close`` returns
``Written``: the row count and the size and SHA-256 of exactly the bytes handed
to ``out``, for the manifest. Every byte goes through a hashing tee, so the
figures hold whatever ``out`` is: a file, a pipe or an encrypting sink that can
neither seek nor tell. ``close`` finishes the format (Parquet's footer) but never
flushes or closes ``out``; that stays the caller's.

Cells: a plain column holds a ``str`` or ``None``; a list column (``is_list``)
holds a ``tuple`` of ``str`` or ``None``. Byte formats, all UTF-8 without a BOM:

* NDJSON: one compact JSON object per row (``{"a":"x","b":["y"],"c":null}``),
  keys in column order, non-ASCII text as is, each line ending in ``"\\n"``.
  No rows: an empty file.
* CSV (RFC 4180 as the ``csv`` module writes it, CRLF line ends, quotes only
  where needed): a header of column names, then one record per row. A list is
  its compact JSON array text, ``None`` an empty cell (so ``None`` and ``""``
  read back alike). A cell starting with ``=``, ``+``, ``-``, ``@``, a tab or a
  carriage return gets a leading ``'`` so a spreadsheet never runs it as a
  formula. No rows: the header alone.
* Parquet: one nullable column per ``Column`` (``string`` or ``list<string>``),
  zstd-compressed, in row groups of exactly ``row_group_rows`` (default
  50,000) rows, the last one smaller: batches are buffered as Arrow record
  batches and each row group is written from one contiguous table, so the
  bytes depend on the rows alone, never on how they were batched. pyarrow's
  many small writes (page headers) reach ``out`` through a 256 KiB buffer.
  No rows: a valid file with the schema and no row group.

Encoding and writing are apart: ``encoder(fmt, columns)`` checks and encodes a
batch with no I/O (an ``Encoded``: the NDJSON or CSV bytes, or an Arrow record
batch; both pickle, so an extract worker process can encode and the writer's
process only appends), and ``ExtractWriter.write_encoded`` appends it. ``write``
is the two in one.

Invariants: memory is bounded by one row group plus one batch, never by the
row count (NDJSON and CSV encode each distinct value of a column once per
batch, since generalized labels repeat; the memo lives for that batch only).
A batch is checked whole (row width, cell types, encodable text) before any of
its bytes reach ``out``, so a rejected batch leaves the output as it was and
the writer usable. Error messages name columns, row positions within the batch
and counts, never a value.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from functools import partial
from itertools import chain
from types import NoneType
from typing import Protocol

import pyarrow as pa
import pyarrow.parquet as pq

ROW_GROUP_ROWS = 50_000
_PARQUET_BUFFER = 256 * 1024  # coalesces pyarrow's small writes (page headers) into fewer, larger ones

Cell = str | tuple[str, ...] | None
Row = Sequence[Cell]

_JSON = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


class ExtractFormat(StrEnum):
    ndjson = "ndjson"
    csv = "csv"
    parquet = "parquet"


@dataclass(frozen=True, slots=True)
class Column:
    name: str  # an ASCII identifier
    is_list: bool = False  # a tuple of strings (else a string); either may be None

    def __post_init__(self) -> None:
        if not (self.name.isascii() and self.name.isidentifier()):
            raise ValueError("a column name must be an ASCII identifier")


@dataclass(frozen=True, slots=True)
class Written:
    rows: int
    size: int  # bytes written to ``out``
    sha256: str  # hex, over exactly those bytes


class ByteSink(Protocol):
    """Where an extract's bytes go; ``write`` must take all of ``data`` (as a buffered file does)."""

    def write(self, data: bytes, /) -> object: ...


class _HashingTee:
    """Passes bytes on to the sink, counting and hashing them; the file object pyarrow writes to."""

    def __init__(self, out: ByteSink) -> None:
        self._out = out
        self._hash = hashlib.sha256()
        self.size = 0
        self.closed = False

    def write(self, data: bytes) -> int:
        if not data:
            return 0
        self._out.write(data)
        self._hash.update(data)
        self.size += len(data)
        return len(data)

    def tell(self) -> int:
        return self.size

    def writable(self) -> bool:
        return True

    def flush(self) -> None:
        return None

    def close(self) -> None:
        self.closed = True  # marks the tee only: ``out`` belongs to the caller

    def hexdigest(self) -> str:
        return self._hash.hexdigest()


@dataclass(frozen=True, slots=True)
class Encoded:
    """A checked, encoded batch of ``rows`` rows: the NDJSON or CSV bytes, or an Arrow record batch for Parquet."""

    rows: int
    data: bytes | pa.RecordBatch


class BatchEncoder(ABC):
    """Checks and encodes batches of rows of one format and columns, with no I/O (pickles: built where the rows are)."""

    def __init__(self, columns: Sequence[Column]) -> None:
        if not columns:
            raise ValueError("an extract needs at least one column")
        if len({c.name for c in columns}) != len(columns):
            raise ValueError("column names must be unique")
        self.columns = tuple(columns)

    def __call__(self, rows: Sequence[Row]) -> Encoded:
        """A batch encoded; a batch with a bad row is refused whole (``ValueError``)."""
        return Encoded(len(rows), self._encode(_columns(self.columns, rows)) if rows else b"")

    @abstractmethod
    def _encode(self, cells: Sequence[Sequence[Cell]]) -> bytes | pa.RecordBatch:
        """A checked, non-empty batch given by column, encoded."""


class NdjsonEncoder(BatchEncoder):
    """One compact JSON object per row, keys in column order."""

    def __init__(self, columns: Sequence[Column]) -> None:
        super().__init__(columns)
        self._keys = tuple(_JSON(c.name) + ":" for c in self.columns)

    def _encode(self, cells: Sequence[Sequence[Cell]]) -> bytes:
        members = [_mapped(values, partial(_json_member, key)) for key, values in zip(self._keys, cells, strict=True)]
        text = "".join(["{" + ",".join(row) + "}\n" for row in zip(*members, strict=True)])
        return _utf8(text, self.columns, cells)


class CsvEncoder(BatchEncoder):
    """CRLF-ended records; lists as JSON text, formula-like cells prefixed with ``'`` (the header is the writer's)."""

    def _encode(self, cells: Sequence[Sequence[Cell]]) -> bytes:
        buffer = io.StringIO(newline="")
        csv.writer(buffer).writerows(zip(*[_mapped(values, _csv_cell) for values in cells], strict=True))
        return _utf8(buffer.getvalue(), self.columns, cells)


class ParquetEncoder(BatchEncoder):
    """An Arrow record batch of the extract's schema."""

    def __init__(self, columns: Sequence[Column]) -> None:
        super().__init__(columns)
        self.schema = pa.schema([pa.field(c.name, pa.list_(pa.string()) if c.is_list else pa.string()) for c in self.columns])

    def _encode(self, cells: Sequence[Sequence[Cell]]) -> pa.RecordBatch:
        try:
            arrays = [pa.array(values, type=field.type) for values, field in zip(cells, self.schema, strict=True)]
        except UnicodeEncodeError:
            raise _unencodable(self.columns, cells) from None
        return pa.RecordBatch.from_arrays(arrays, schema=self.schema)


class ExtractWriter(ABC):
    """Writes batches of rows in one format; ``close`` finishes the format and returns what was written."""

    def __init__(self, encode: BatchEncoder, out: ByteSink) -> None:
        self.encode = encode
        self.columns = encode.columns
        self._tee = _HashingTee(out)
        self._rows = 0
        self._written: Written | None = None

    def write(self, rows: Sequence[Row]) -> None:
        """Append a batch; a batch with a bad row is refused whole (``ValueError``) and writes nothing."""
        self._open()
        self.write_encoded(self.encode(rows))

    def write_encoded(self, batch: Encoded) -> None:
        """Append a batch this writer's ``encode`` (or an encoder of the same format and columns) encoded."""
        self._open()
        if batch.rows:
            self._append(batch)
            self._rows += batch.rows

    def close(self) -> Written:
        """Finish the format (idempotent); ``out`` is neither flushed nor closed."""
        if self._written is None:
            self._finish()
            self._written = Written(rows=self._rows, size=self._tee.size, sha256=self._tee.hexdigest())
        return self._written

    def _open(self) -> None:
        if self._written is not None:
            raise ValueError("the extract writer is closed")

    @abstractmethod
    def _append(self, batch: Encoded) -> None:
        """Take an encoded, non-empty batch."""

    def _finish(self) -> None:
        return None


class NdjsonExtractWriter(ExtractWriter):
    """One compact JSON object per row, keys in column order."""

    def __init__(self, columns: Sequence[Column], out: ByteSink) -> None:
        super().__init__(NdjsonEncoder(columns), out)

    def _append(self, batch: Encoded) -> None:
        self._tee.write(_encoded_bytes(batch))


class CsvExtractWriter(ExtractWriter):
    """A header, then one CRLF-ended record per row; lists as JSON text, formula-like cells prefixed with ``'``."""

    def __init__(self, columns: Sequence[Column], out: ByteSink) -> None:
        super().__init__(CsvEncoder(columns), out)
        buffer = io.StringIO(newline="")
        csv.writer(buffer).writerow([c.name for c in self.columns])
        self._tee.write(buffer.getvalue().encode())

    def _append(self, batch: Encoded) -> None:
        self._tee.write(_encoded_bytes(batch))


class ParquetExtractWriter(ExtractWriter):
    """zstd Parquet in row groups of exactly ``row_group_rows`` rows (the last one smaller), whatever the batches."""

    def __init__(self, columns: Sequence[Column], out: ByteSink, *, row_group_rows: int = ROW_GROUP_ROWS) -> None:
        encode = ParquetEncoder(columns)
        super().__init__(encode, out)
        if row_group_rows < 1:
            raise ValueError("row_group_rows must be at least 1")
        self._row_group_rows = row_group_rows
        self._schema = encode.schema
        self._file = pa.output_stream(pa.PythonFile(self._tee, mode="w"), buffer_size=_PARQUET_BUFFER)
        self._writer = pq.ParquetWriter(self._file, self._schema, compression="zstd")
        self._pending: list[pa.RecordBatch] = []
        self._pending_rows = 0

    def _append(self, batch: Encoded) -> None:
        if not isinstance(batch.data, pa.RecordBatch) or not batch.data.schema.equals(self._schema):
            raise ValueError("not a batch of this extract's Parquet schema")
        self._pending.append(batch.data)
        self._pending_rows += batch.rows
        if self._pending_rows >= self._row_group_rows:
            self._flush(whole_groups_only=True)

    def _flush(self, *, whole_groups_only: bool) -> None:
        """Write the pending rows as row groups of ``row_group_rows`` from one contiguous table; keep a partial group unless at the end."""
        if not self._pending_rows:
            return
        table = pa.Table.from_batches(self._pending, schema=self._schema).combine_chunks()
        size, start = self._row_group_rows, 0
        while table.num_rows - start >= size or (not whole_groups_only and start < table.num_rows):
            group = table.slice(start, size)
            self._writer.write_table(group, row_group_size=group.num_rows)
            start += group.num_rows
        rest = table.slice(start)
        self._pending = rest.to_batches() if rest.num_rows else []
        self._pending_rows = rest.num_rows

    def _finish(self) -> None:
        self._flush(whole_groups_only=False)
        self._writer.close()
        self._file.close()


_WRITERS: dict[ExtractFormat, Callable[[Sequence[Column], ByteSink], ExtractWriter]] = {
    ExtractFormat.ndjson: NdjsonExtractWriter,
    ExtractFormat.csv: CsvExtractWriter,
    ExtractFormat.parquet: ParquetExtractWriter,
}


_ENCODERS: dict[ExtractFormat, type[BatchEncoder]] = {
    ExtractFormat.ndjson: NdjsonEncoder,
    ExtractFormat.csv: CsvEncoder,
    ExtractFormat.parquet: ParquetEncoder,
}


def open_writer(fmt: ExtractFormat, columns: Sequence[Column], out: ByteSink) -> ExtractWriter:
    """A writer of ``fmt`` with ``columns`` onto ``out`` (which needs only ``write``)."""
    return _WRITERS[ExtractFormat(fmt)](columns, out)


def encoder(fmt: ExtractFormat, columns: Sequence[Column]) -> BatchEncoder:
    """The encoder of ``fmt`` with ``columns``: what ``open_writer(fmt, columns, …).write_encoded`` appends."""
    return _ENCODERS[ExtractFormat(fmt)](columns)


def _encoded_bytes(batch: Encoded) -> bytes:
    if not isinstance(batch.data, bytes):
        raise ValueError("not a batch of this extract's text format")
    return batch.data


def _columns(columns: tuple[Column, ...], rows: Sequence[Row]) -> list[tuple[Cell, ...]]:
    """The batch by column, after checking every row's width and every cell's type (fast path by exact types)."""
    width = len(columns)
    if set(map(len, rows)) != {width}:
        for index, row in enumerate(rows):
            if len(row) != width:
                raise ValueError(f"row {index} of the batch has {len(row)} values, expected {width}")
    cells: list[tuple[Cell, ...]] = list(zip(*rows, strict=True))
    for column, values in zip(columns, cells, strict=True):
        if column.is_list:
            _check_lists(column, values)
        elif not set(map(type, values)) <= {str, NoneType}:
            _check_texts(column, values)
    return cells


def _check_texts(column: Column, values: Sequence[Cell]) -> None:
    for index, value in enumerate(values):
        if value is not None and not isinstance(value, str):
            raise ValueError(f"column {column.name}: row {index} of the batch holds a {type(value).__name__}, expected a string or None")


def _check_lists(column: Column, values: Sequence[Cell]) -> None:
    present = [value for value in values if value is not None]
    if set(map(type, present)) <= {tuple} and set(map(type, chain.from_iterable(present))) <= {str}:
        return
    for index, value in enumerate(values):
        if value is None:
            continue
        if not isinstance(value, tuple) or not all(isinstance(item, str) for item in value):
            raise ValueError(f"column {column.name}: row {index} of the batch is not a tuple of strings or None")


def _mapped(values: Sequence[Cell], encode: Callable[[Cell], str]) -> list[str]:
    """``encode`` over a column of one batch, once per distinct value (labels repeat; the memo lives one batch)."""
    memo = {value: encode(value) for value in set(values)}
    return list(map(memo.__getitem__, values))


def _json_member(key: str, value: Cell) -> str:
    return key + _JSON(value)


def _csv_cell(value: Cell) -> str:
    if value is None:
        return ""
    if isinstance(value, tuple):
        return _JSON(value)
    return "'" + value if value.startswith(_FORMULA_STARTS) else value


def _utf8(text: str, columns: tuple[Column, ...], cells: Sequence[Sequence[Cell]]) -> bytes:
    try:
        return text.encode()
    except UnicodeEncodeError:
        raise _unencodable(columns, cells) from None


def _unencodable(columns: tuple[Column, ...], cells: Sequence[Sequence[Cell]]) -> ValueError:
    for column, values in zip(columns, cells, strict=True):
        for index, value in enumerate(values):
            texts = (value,) if isinstance(value, str) else value or ()
            for text in texts:
                try:
                    text.encode()
                except UnicodeEncodeError:
                    return ValueError(f"column {column.name}: row {index} of the batch is not encodable as UTF-8")
    return ValueError("the batch is not encodable as UTF-8")


__all__ = [
    "ROW_GROUP_ROWS",
    "BatchEncoder",
    "ByteSink",
    "Cell",
    "Column",
    "CsvEncoder",
    "CsvExtractWriter",
    "Encoded",
    "ExtractFormat",
    "ExtractWriter",
    "NdjsonEncoder",
    "NdjsonExtractWriter",
    "ParquetEncoder",
    "ParquetExtractWriter",
    "Row",
    "Written",
    "encoder",
    "open_writer",
]
