"""``traceward export``: a tenant's steps (or runs) in a time range, to Parquet or JSON Lines.

Steps are read one day partition at a time, in record batches (``collect_batches``), so memory stays
bounded by a batch, not by the range (rows come in storage order, not sorted); a rich progress bar counts days and rows (on stderr, only on a
terminal). The file is written next to ``--out`` and renamed into place when complete.

- Parquet: one file, the ``STEP_COLUMNS`` (or run) columns with plain Arrow types (``string``, not
  ``large_string``), ZSTD-compressed: readable by pyarrow, polars, DuckDB, Spark, parquet-tools …
- JSON Lines: one object per row; ``payload`` and ``redaction_meta`` are embedded as JSON objects
  (in Parquet they stay JSON text, as stored).

Times: RFC 3339, integer ns, or a duration back from now (``90m``, ``24h``, ``7d``). Steps are
selected by their ``start_ns``, runs by ``started_ns``, both as [since, until).
"""

from __future__ import annotations

import re
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Final, Literal

import orjson
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from otlp_receiver.errors import InvalidInputError
from otlp_receiver.store.frames import RunScope, load_runs, step_days
from otlp_receiver.store.index import RunIndex
from otlp_receiver.store.steps import StepTable
from server.schemas import parse_time

Format = Literal["parquet", "jsonl"]
_DURATION: Final = re.compile(r"^(\d+)\s*(s|m|h|d)$")
_UNIT_NS: Final = {"s": 10**9, "m": 60 * 10**9, "h": 3_600 * 10**9, "d": 86_400 * 10**9}
_JSON_COLUMNS: Final = ("payload", "redaction_meta")
_BATCH_ROWS: Final = 50_000


@dataclass(frozen=True, slots=True)
class ExportRequest:
    """What to export."""

    tenant_id: str
    since_ns: int
    until_ns: int
    format: Format
    out: Path
    table: Literal["steps", "runs"] = "steps"


def parse_when(text: str, *, field: str, now_ns: int | None = None) -> int:
    """RFC 3339, integer ns, or ``<n>s|m|h|d`` before now → ns."""
    match = _DURATION.match(text.strip())
    if match:
        now = time.time_ns() if now_ns is None else now_ns
        return now - int(match.group(1)) * _UNIT_NS[match.group(2)]
    return parse_time(text, field=field)


def export(index: RunIndex, steps: StepTable, request: ExportRequest, *, progress: bool | None = None) -> int:
    """Write the export file; returns the number of rows written.

    Raises:
        InvalidInputError: an empty or inverted time range.
    """
    if request.until_ns <= request.since_ns:
        raise InvalidInputError("--until must be after --since", details={"until": "not after since"})
    tmp = request.out.with_name(request.out.name + ".partial")
    request.out.parent.mkdir(parents=True, exist_ok=True)
    console = Console(stderr=True)
    show = console.is_terminal if progress is None else progress
    with _Writer(tmp, request.format) as writer, Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[rows]:,} rows"),
            TimeElapsedColumn(), console=console, disable=not show, transient=False) as bar:
        for frame in _frames(index, steps, request, bar):
            writer.write(frame)
    tmp.replace(request.out)
    return writer.rows


def _frames(index: RunIndex, steps: StepTable, request: ExportRequest, bar: Progress) -> Iterator[pl.DataFrame]:
    if request.table == "runs":
        task = bar.add_task("runs", total=1, rows=0)
        runs = load_runs(index, request.tenant_id, RunScope(started_after_ns=request.since_ns,
                                                            started_before_ns=request.until_ns))
        yield runs
        bar.update(task, advance=1, rows=runs.height)
        return
    days = step_days(request.since_ns, request.until_ns, now_ns=request.until_ns) or []
    task = bar.add_task(f"steps of {request.tenant_id}", total=len(days), rows=0)
    rows = 0
    in_range = (pl.col("start_ns") >= request.since_ns) & (pl.col("start_ns") < request.until_ns)
    for day in days:
        for batch in steps.scan(request.tenant_id, [day]).filter(in_range).collect_batches(chunk_size=_BATCH_ROWS):
            rows += batch.height
            yield batch
            bar.update(task, rows=rows)
        bar.update(task, advance=1)
    if rows == 0:
        yield steps.scan(request.tenant_id, []).collect()  # an empty file still carries the columns


class _Writer:
    """Parquet (one file, a row group per batch) or JSON Lines."""

    def __init__(self, path: Path, fmt: Format) -> None:
        self.path, self.format = path, fmt
        self.rows = 0
        self._parquet: pq.ParquetWriter | None = None
        self._schema: pa.Schema | None = None
        self._file: IO[bytes] | None = None

    def __enter__(self) -> _Writer:
        if self.format == "jsonl":
            self._file = open(self.path, "wb")  # noqa: SIM115 - closed in __exit__
        return self

    def write(self, frame: pl.DataFrame) -> None:
        """Append one batch."""
        if frame.height == 0 and self._schema is not None:
            return
        self.rows += frame.height
        if self.format == "jsonl":
            assert self._file is not None
            for row in frame.iter_rows(named=True):
                for name in _JSON_COLUMNS:
                    if isinstance(row.get(name), str):
                        row[name] = orjson.loads(row[name])
                self._file.write(orjson.dumps(row) + b"\n")
            return
        table = _plain(frame.to_arrow())
        if self._parquet is None:
            self._schema = table.schema
            self._parquet = pq.ParquetWriter(self.path, self._schema, compression="zstd")
        self._parquet.write_table(table.cast(self._schema))

    def __exit__(self, *exc: object) -> None:
        if self._file is not None:
            self._file.close()
        if self._parquet is not None:
            self._parquet.close()


def _plain(table: pa.Table) -> pa.Table:
    """Large/view string types → ``string`` (what every Parquet reader expects)."""
    fields = []
    for f in table.schema:
        kind = f.type
        if pa.types.is_large_string(kind) or pa.types.is_string_view(kind):
            kind = pa.string()
        elif pa.types.is_large_list(kind) or pa.types.is_list_view(kind):
            kind = pa.list_(pa.string())
        fields.append(pa.field(f.name, kind, f.nullable))
    return table.cast(pa.schema(fields))


def main_export(index: RunIndex, steps: StepTable, request: ExportRequest) -> int:
    """The CLI entry: export, then say what was written (stderr)."""
    written = export(index, steps, request)
    print(f"exported {written:,} {request.table} of tenant {request.tenant_id} to {request.out} "
          f"({request.format})", file=sys.stderr)
    return 0
