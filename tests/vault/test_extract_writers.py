"""Streaming extract writers: round trips through independent readers, exact bytes, hashes, refusals, memory.

Read-back goes through the standard readers (``json.loads`` per line,
``csv.reader``, ``pyarrow.parquet``), never through the writers' code; the CSV
expectation applies the formula-prefix rule as the brief words it, and the
Parquet row-group sizes come from a plain running sum over the batches.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import multiprocessing
import os
import threading
import tracemalloc
from collections.abc import Sequence
from enum import StrEnum

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vault.extracts.writers import (
    Cell,
    Column,
    ExtractFormat,
    ParquetExtractWriter,
    Written,
    encoder,
    open_writer,
)

FAST = settings(max_examples=60, deadline=None)
PERSONAL = "张伟-13800138000"
SPECIALS = list(",;\"'\n\r\t=+-@ <>[]{}\\:中文张伟上海瑜伽")
TEXT = st.text(alphabet=st.characters(codec="utf-8") | st.sampled_from(SPECIALS), max_size=10)
MiB = 1024 * 1024


class WriteOnlySink:
    """An unseekable sink: it has ``write`` and nothing else, like a pipe or an encrypting stream."""

    __slots__ = ("chunks",)

    def __init__(self) -> None:
        self.chunks: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.chunks.append(bytes(data))

    @property
    def data(self) -> bytes:
        return b"".join(self.chunks)


class DiscardingSink:
    __slots__ = ()

    def write(self, data: bytes) -> int:
        return len(data)


class Label(StrEnum):
    young = "<18"


def cells(column: Column) -> st.SearchStrategy[Cell]:
    if column.is_list:
        return st.none() | st.lists(TEXT, max_size=4).map(tuple)
    return st.none() | TEXT


@st.composite
def extracts(draw: st.DrawFn) -> tuple[tuple[Column, ...], list[list[tuple[Cell, ...]]]]:
    kinds = draw(st.lists(st.booleans(), min_size=1, max_size=4))
    columns = tuple(Column(f"c{i}_{'list' if is_list else 'text'}", is_list=is_list) for i, is_list in enumerate(kinds))
    row = st.tuples(*(cells(c) for c in columns))
    return columns, draw(st.lists(st.lists(row, max_size=6), max_size=4))


def write_all(
    fmt: ExtractFormat, columns: Sequence[Column], batches: Sequence[Sequence[tuple[Cell, ...]]], *, row_group_rows: int | None = None
) -> tuple[bytes, Written]:
    sink = WriteOnlySink()
    writer = open_writer(fmt, columns, sink) if row_group_rows is None else ParquetExtractWriter(columns, sink, row_group_rows=row_group_rows)
    for batch in batches:
        writer.write(batch)
    written = writer.close()
    return sink.data, written


def check_written(data: bytes, written: Written, rows: int) -> None:
    assert written == Written(rows=rows, size=len(data), sha256=hashlib.sha256(data).hexdigest())


def as_json(value: Cell) -> object:
    return list(value) if isinstance(value, tuple) else value


def csv_cell(value: Cell) -> str:
    if value is None:
        return ""
    if isinstance(value, tuple):
        return json.dumps(list(value), ensure_ascii=False, separators=(",", ":"))
    return "'" + value if value[:1] in {"=", "+", "-", "@", "\t", "\r"} else value


def read_csv(data: bytes) -> list[list[str]]:
    assert not data.startswith(b"\xef\xbb\xbf")
    return list(csv.reader(io.StringIO(data.decode("utf-8"), newline="")))


def read_parquet(data: bytes) -> pa.Table:
    return pq.read_table(io.BytesIO(data))


def schema_of(columns: Sequence[Column]) -> pa.Schema:
    return pa.schema([(c.name, pa.list_(pa.string()) if c.is_list else pa.string()) for c in columns])


@FAST
@given(extracts())
def test_ndjson_reads_back_as_one_object_per_row_in_column_order(extract: tuple[tuple[Column, ...], list[list[tuple[Cell, ...]]]]) -> None:
    columns, batches = extract
    rows = [row for batch in batches for row in batch]
    data, written = write_all(ExtractFormat.ndjson, columns, batches)
    check_written(data, written, len(rows))
    assert data == b"" or data.endswith(b"\n")
    lines = data.decode("utf-8").split("\n")[:-1]
    objects = [json.loads(line) for line in lines]
    assert [list(o.items()) for o in objects] == [[(c.name, as_json(v)) for c, v in zip(columns, row, strict=True)] for row in rows]


@FAST
@given(extracts())
def test_csv_reads_back_with_a_header_and_formula_like_cells_prefixed(extract: tuple[tuple[Column, ...], list[list[tuple[Cell, ...]]]]) -> None:
    columns, batches = extract
    rows = [row for batch in batches for row in batch]
    data, written = write_all(ExtractFormat.csv, columns, batches)
    check_written(data, written, len(rows))
    assert data.endswith(b"\r\n")
    assert read_csv(data) == [[c.name for c in columns]] + [[csv_cell(v) for v in row] for row in rows]


@FAST
@given(extracts(), st.integers(min_value=1, max_value=8))
def test_parquet_reads_back_with_its_schema_in_row_groups_of_exactly_row_group_rows(
    extract: tuple[tuple[Column, ...], list[list[tuple[Cell, ...]]]], row_group_rows: int
) -> None:
    columns, batches = extract
    rows = [row for batch in batches for row in batch]
    sink = WriteOnlySink()
    writer = ParquetExtractWriter(columns, sink, row_group_rows=row_group_rows)
    for batch in batches:
        writer.write(batch)
    written = writer.close()
    check_written(sink.data, written, len(rows))
    table = read_parquet(sink.data)
    assert table.schema.equals(schema_of(columns))
    assert table.to_pylist() == [{c.name: as_json(v) for c, v in zip(columns, row, strict=True)} for row in rows]
    whole, rest = divmod(len(rows), row_group_rows)
    metadata = pq.ParquetFile(io.BytesIO(sink.data)).metadata
    assert [metadata.row_group(i).num_rows for i in range(metadata.num_row_groups)] == [row_group_rows] * whole + ([rest] if rest else [])


@FAST
@given(extracts(), st.data())
def test_the_bytes_depend_on_the_rows_only_never_on_how_they_were_batched(
    extract: tuple[tuple[Column, ...], list[list[tuple[Cell, ...]]]], data: st.DataObject
) -> None:
    """Worker processes hand over batches cut at their own boundaries: the file must be the one a single batching writes."""
    columns, batches = extract
    rows = [row for batch in batches for row in batch]
    cuts = sorted(data.draw(st.sets(st.integers(min_value=0, max_value=len(rows)))))
    rebatched = [rows[lo:hi] for lo, hi in zip([0, *cuts], [*cuts, len(rows)], strict=True)]
    for fmt in ExtractFormat:
        groups = 3 if fmt is ExtractFormat.parquet else None
        assert write_all(fmt, columns, rebatched, row_group_rows=groups) == write_all(fmt, columns, [rows], row_group_rows=groups)


def test_a_batch_encoded_elsewhere_is_appended_as_written_and_its_format_is_checked() -> None:
    """``encoder`` is what an extract worker runs; its batch crosses a pipe and ``write_encoded`` appends it to the writer of the same format."""
    here, there = multiprocessing.Pipe()
    for fmt in ExtractFormat:
        there.send(encoder(fmt, EXAMPLE_COLUMNS)(EXAMPLE_ROWS))
        batch = here.recv()
        sink = WriteOnlySink()
        writer = open_writer(fmt, EXAMPLE_COLUMNS, sink)
        writer.write_encoded(batch)
        written = writer.close()
        assert (sink.data, written) == write_all(fmt, EXAMPLE_COLUMNS, [EXAMPLE_ROWS])
    with pytest.raises(ValueError, match=r"^not a batch of this extract's Parquet schema$"):
        open_writer(ExtractFormat.parquet, EXAMPLE_COLUMNS, WriteOnlySink()).write_encoded(encoder(ExtractFormat.ndjson, EXAMPLE_COLUMNS)(EXAMPLE_ROWS))
    with pytest.raises(ValueError, match=r"^not a batch of this extract's text format$"):
        open_writer(ExtractFormat.csv, EXAMPLE_COLUMNS, WriteOnlySink()).write_encoded(encoder(ExtractFormat.parquet, EXAMPLE_COLUMNS)(EXAMPLE_ROWS))


EXAMPLE_COLUMNS = (Column("pseudonym"), Column("age_band"), Column("interests", is_list=True), Column("region"))
EXAMPLE_ROWS = [("p1", "<18", ("瑜伽", "tea"), None), ("p2", "=1+1", (), "上海"), ("p3", "-", None, "")]


def test_ndjson_bytes_are_compact_utf8_with_null_and_arrays() -> None:
    data, written = write_all(ExtractFormat.ndjson, EXAMPLE_COLUMNS, [EXAMPLE_ROWS])
    assert (
        data
        == (
            '{"pseudonym":"p1","age_band":"<18","interests":["瑜伽","tea"],"region":null}\n'
            '{"pseudonym":"p2","age_band":"=1+1","interests":[],"region":"上海"}\n'
            '{"pseudonym":"p3","age_band":"-","interests":null,"region":""}\n'
        ).encode()
    )
    check_written(data, written, 3)


def test_csv_bytes_have_crlf_quoted_json_lists_and_prefixed_formulas() -> None:
    data, written = write_all(ExtractFormat.csv, EXAMPLE_COLUMNS, [EXAMPLE_ROWS])
    assert data == ('pseudonym,age_band,interests,region\r\np1,<18,"[""瑜伽"",""tea""]",\r\np2,\'=1+1,[],上海\r\np3,\'-,,\r\n').encode()
    check_written(data, written, 3)


def test_parquet_is_zstd_compressed_and_keeps_none_apart_from_empty() -> None:
    data, written = write_all(ExtractFormat.parquet, EXAMPLE_COLUMNS, [EXAMPLE_ROWS[:1], EXAMPLE_ROWS[1:]])
    check_written(data, written, 3)
    assert data[:4] == data[-4:] == b"PAR1"
    metadata = pq.ParquetFile(io.BytesIO(data)).metadata
    assert metadata.num_row_groups == 1
    assert {metadata.row_group(0).column(i).compression for i in range(4)} == {"ZSTD"}
    assert read_parquet(data).to_pydict() == {
        "pseudonym": ["p1", "p2", "p3"],
        "age_band": ["<18", "=1+1", "-"],
        "interests": [["瑜伽", "tea"], [], None],
        "region": [None, "上海", ""],
    }


@pytest.mark.parametrize("fmt", list(ExtractFormat))
def test_zero_rows_still_give_a_valid_file(fmt: ExtractFormat) -> None:
    data, written = write_all(fmt, EXAMPLE_COLUMNS, [[], []])
    check_written(data, written, 0)
    if fmt is ExtractFormat.ndjson:
        assert data == b""
    elif fmt is ExtractFormat.csv:
        assert data == b"pseudonym,age_band,interests,region\r\n"
    else:
        table = read_parquet(data)
        assert table.num_rows == 0
        assert table.schema.equals(schema_of(EXAMPLE_COLUMNS))


@pytest.mark.parametrize("fmt", list(ExtractFormat))
def test_a_string_enum_label_is_written_as_its_value(fmt: ExtractFormat) -> None:
    data, _ = write_all(fmt, (Column("age_band"), Column("tags", is_list=True)), [[(Label.young, (Label.young,))]])
    plain, _ = write_all(fmt, (Column("age_band"), Column("tags", is_list=True)), [[("<18", ("<18",))]])
    assert data == plain


@pytest.mark.parametrize("fmt", list(ExtractFormat))
def test_writes_through_a_pipe_that_cannot_seek(fmt: ExtractFormat) -> None:
    read_fd, write_fd = os.pipe()
    received: list[bytes] = []

    def drain() -> None:
        with os.fdopen(read_fd, "rb") as pipe:
            received.append(pipe.read())

    reader = threading.Thread(target=drain)
    reader.start()
    with os.fdopen(write_fd, "wb") as pipe:
        assert not pipe.seekable()
        writer = open_writer(fmt, EXAMPLE_COLUMNS, pipe)
        writer.write(EXAMPLE_ROWS)
        written = writer.close()
        assert not pipe.closed
    reader.join(timeout=10)
    check_written(received[0], written, 3)
    expected, _ = write_all(fmt, EXAMPLE_COLUMNS, [EXAMPLE_ROWS])
    assert received[0] == expected


@pytest.mark.parametrize("fmt", list(ExtractFormat))
def test_close_leaves_out_open_and_returns_the_same_figures_again(fmt: ExtractFormat) -> None:
    out = io.BytesIO()
    writer = open_writer(fmt, EXAMPLE_COLUMNS, out)
    writer.write(EXAMPLE_ROWS)
    written = writer.close()
    assert not out.closed
    assert writer.close() == written
    check_written(out.getvalue(), written, 3)
    with pytest.raises(ValueError, match="closed"):
        writer.write(EXAMPLE_ROWS)


def refused(fmt: ExtractFormat, columns: Sequence[Column], batch: Sequence[Sequence[object]]) -> str:
    """Write a good batch, a refused one and a good one; the refused batch must leave no trace. Returns the message."""
    sink = WriteOnlySink()
    writer = open_writer(fmt, columns, sink)
    good = [tuple(("x",) if c.is_list else "x" for c in columns)]
    writer.write(good)
    with pytest.raises(ValueError, match="of the batch") as caught:
        writer.write(batch)  # type: ignore[arg-type]  # the point is a badly typed batch
    writer.write(good)
    written = writer.close()
    expected, _ = write_all(fmt, columns, [good, good])
    assert sink.data == expected
    check_written(sink.data, written, 2)
    message = str(caught.value)
    assert PERSONAL not in message
    assert "13800138000" not in message
    return message


@pytest.mark.parametrize("fmt", list(ExtractFormat))
def test_wrong_row_width_is_refused_with_counts_only(fmt: ExtractFormat) -> None:
    columns = (Column("a"), Column("b"))
    assert refused(fmt, columns, [("x", "y"), (PERSONAL,)]) == "row 1 of the batch has 1 values, expected 2"
    assert refused(fmt, columns, [(PERSONAL, "x", "y")]) == "row 0 of the batch has 3 values, expected 2"


@pytest.mark.parametrize("fmt", list(ExtractFormat))
@pytest.mark.parametrize("bad", [13800138000, (PERSONAL,), [PERSONAL], PERSONAL.encode()])
def test_a_text_column_refuses_anything_but_a_string_or_none(fmt: ExtractFormat, bad: object) -> None:
    message = refused(fmt, (Column("name_band"), Column("b")), [("x", None), (bad, "y")])
    assert message.startswith("column name_band: row 1 of the batch holds a ")


@pytest.mark.parametrize("fmt", list(ExtractFormat))
@pytest.mark.parametrize("bad", [PERSONAL, [PERSONAL], (PERSONAL, 13800138000), (PERSONAL.encode(),)])
def test_a_list_column_refuses_anything_but_a_tuple_of_strings_or_none(fmt: ExtractFormat, bad: object) -> None:
    message = refused(fmt, (Column("b"), Column("tags", is_list=True)), [("x", None), ("y", bad)])
    assert message == "column tags: row 1 of the batch is not a tuple of strings or None"


@pytest.mark.parametrize("fmt", list(ExtractFormat))
@pytest.mark.parametrize("bad_row", [(PERSONAL + "\ud800", ()), ("x", (PERSONAL, "\udfff"))])
def test_text_that_is_not_utf8_encodable_is_refused_by_column(fmt: ExtractFormat, bad_row: tuple[object, ...]) -> None:
    """A lone surrogate cannot be encoded; the refusal names the column, never the text around it."""
    message = refused(fmt, (Column("a"), Column("tags", is_list=True)), [("x", ()), bad_row])
    column = "a" if isinstance(bad_row[0], str) and "\ud800" in bad_row[0] else "tags"
    assert message == f"column {column}: row 1 of the batch is not encodable as UTF-8"


@pytest.mark.parametrize("name", ["名字", "a b", "1a", "", "a-b"])
def test_a_column_name_must_be_an_ascii_identifier(name: str) -> None:
    with pytest.raises(ValueError, match="ASCII identifier"):
        Column(name)


@pytest.mark.parametrize("fmt", list(ExtractFormat))
def test_columns_must_be_unique_and_not_empty(fmt: ExtractFormat) -> None:
    with pytest.raises(ValueError, match="unique"):
        open_writer(fmt, (Column("a"), Column("a", is_list=True)), WriteOnlySink())
    with pytest.raises(ValueError, match="at least one column"):
        open_writer(fmt, (), WriteOnlySink())


def test_an_unknown_format_is_refused() -> None:
    with pytest.raises(ValueError, match="xml"):
        open_writer("xml", EXAMPLE_COLUMNS, WriteOnlySink())  # type: ignore[arg-type]  # a caller that skipped the enum
    with pytest.raises(ValueError, match="row_group_rows"):
        ParquetExtractWriter(EXAMPLE_COLUMNS, WriteOnlySink(), row_group_rows=0)


@pytest.mark.parametrize("fmt", list(ExtractFormat))
def test_memory_stays_bounded_while_200k_rows_stream(fmt: ExtractFormat) -> None:
    """200,000 rows in 2,000-row batches: Python's traced peak and Arrow's allocations stay far below 64 MiB."""
    columns = (Column("pseudonym"), *(Column(f"q{i}") for i in range(12)), Column("tags", is_list=True), Column("categories", is_list=True))
    labels = ["<18", "20-29", "30-39", "华东", "上海", "female", "gold", "1k-5k", "R5F4M3", "never", None]
    batch = [
        (f"p{j:016x}", *(labels[(j * 7 + i) % len(labels)] for i in range(12)), ("瑜伽", "tea")[: j % 3], None if j % 5 else ("facial",)) for j in range(2_000)
    ]
    arrow_before = pa.total_allocated_bytes()
    arrow_peak = 0
    tracemalloc.start()
    try:
        writer = open_writer(fmt, columns, DiscardingSink())
        for _ in range(100):
            writer.write(batch)
            arrow_peak = max(arrow_peak, pa.total_allocated_bytes() - arrow_before)
        written = writer.close()
        _, traced_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert written.rows == 200_000
    assert traced_peak < 64 * MiB
    assert arrow_peak < 64 * MiB
