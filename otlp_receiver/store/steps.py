"""Steps as Parquet in a Delta Lake table (deltalake), read back with Polars.

Exactly-once from the write-ahead log: every append carries a Delta *app transaction*
(``txn`` action, app id ``traceward-flusher``) whose version is the WAL position the
batch ends at. After a crash between the Delta commit and the SQLite commit, the flusher
sees that Delta already holds the batch and skips re-appending it.

Partitioned by ``(tenant_id, day)``. Readers list the files of the partitions they need
from the current snapshot and let Polars prune row groups by ``run_id``/``seq`` statistics: each
flush batch is written sorted by ``(run_id, seq)`` so those statistics stay tight. Run ids are random,
though, so a file's run_id range spans nearly all of them: a reader that knows when the steps it wants
started (the span index does) passes ``started_within`` and skips files and row groups on ``start_ns``
statistics instead. Compaction bin-packs the small files of a partition into files of up to
``COMPACT_TARGET_BYTES``, one at a time, so its memory is bounded by one output file, never by the
partition (a z-order of a whole tenant-day held it all: ~900 MiB at 500,000 steps).

A damaged data file (missing from disk while the log lists it, or not the bytes the log recorded) fails every
Delta delete of its partition. :meth:`StepTable.remove_damaged` finds such files and removes from the table,
through deltalake's own remove actions and vacuum, those the caller shows to hold nothing it must keep.
"""

from __future__ import annotations

import logging
import os
import shutil
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
from deltalake import CommitProperties, DeltaTable, Transaction, WriterProperties, write_deltalake
from deltalake.exceptions import DeltaError, TableNotFoundError
from deltalake.transaction import AddAction, RemoveAction, create_table_with_add_actions

from otlp_receiver.columns import PARTITION_COLUMNS, STEP_COLUMNS
from otlp_receiver.errors import StorageError

logger = logging.getLogger(__name__)

APP_ID = "traceward-flusher"
_ARROW_TYPES = {"string": pa.large_string(), "int64": pa.int64(), "int32": pa.int32(),
                "float64": pa.float64(), "bool": pa.bool_()}
STEP_SCHEMA = pa.schema([pa.field(n, _ARROW_TYPES[t], nullable=null) for n, t, null in STEP_COLUMNS])
_WRITER = WriterProperties(compression="ZSTD", max_row_group_size=16_384)
_APPEND_ATTEMPTS = 4
_SORT_KEYS = [("run_id", "ascending"), ("seq", "ascending")]
_PRUNING_COLUMNS = ("path", "partition.tenant_id", "partition.day", "min.start_ns", "max.start_ns")
COMPACT_TARGET_BYTES = 64 * 2**20
"""Compacted file size: files this big are left alone; smaller ones are merged up to it."""
_FILE_COLUMNS = ("path", "size_bytes", "partition.tenant_id", "partition.day", "min.run_id", "max.run_id",
                 "min.start_ns", "max.start_ns", "null_count.start_ns")


@dataclass(frozen=True, slots=True)
class StepFile:
    """A data file of the step table, as its add action in the Delta log describes it.

    The bounds are the file's Delta statistics, computed from its rows when it was written (a long string's
    bound is truncated outward), so damage to the file afterwards leaves them true; None = not recorded."""

    path: str
    """Relative to the table, as the file is named on disk (the log's path, percent-decoded once)."""
    tenant_id: str
    day: str
    size: int
    """Bytes, as the log recorded them (Delta reads the footer at this offset)."""
    run_ids: tuple[str | None, str | None]
    start_ns: tuple[int | None, int | None]


@dataclass(frozen=True, slots=True)
class DamagedFile:
    """A data file a Delta delete cannot rewrite, and what :meth:`StepTable.remove_damaged` did with it."""

    file: StepFile
    local_path: str
    problem: str
    removed: bool


class StepTable:
    """The Delta table of steps."""

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        self._lock = threading.RLock()
        self._dt: DeltaTable | None = None
        self._stale = False
        self._spans_cache: tuple[int, list[tuple[str, str, str, int | None, int | None]]] | None = None
        try:
            self._dt = DeltaTable(self.path)
        except TableNotFoundError:
            self._dt = None
        except (DeltaError, OSError) as exc:
            raise StorageError(f"cannot open the step table at {self.path}: {exc}") from exc

    # -- writing ---------------------------------------------------------------------------------------------

    def append(self, rows: pa.Table, *, wal_end: int) -> None:
        """Append one flush batch, recording ``wal_end`` as the table's app-transaction version."""
        props = CommitProperties(app_transactions=[Transaction(app_id=APP_ID, version=wal_end)])
        data = rows.cast(STEP_SCHEMA).sort_by(_SORT_KEYS)
        with self._lock:
            for attempt in range(1, _APPEND_ATTEMPTS + 1):
                try:
                    target: DeltaTable | str = self._dt if self._dt is not None else self.path
                    write_deltalake(target, data, mode="append", partition_by=list(PARTITION_COLUMNS),
                                    writer_properties=_WRITER, commit_properties=props)
                    self._refresh()
                    return
                except (DeltaError, OSError) as exc:
                    # Another process (a CLI retention run, say) committed since our snapshot: look again.
                    logger.warning("step table append attempt %d failed (%s); refreshing", attempt, type(exc).__name__)
                    self._refresh_or_reopen()
                    if self.committed_wal_end() >= wal_end:
                        return  # the batch did commit before the error surfaced
                    if attempt == _APPEND_ATTEMPTS:
                        raise StorageError(f"step table append failed: {exc}") from exc
                except pa.ArrowException as exc:
                    raise StorageError(f"step table append failed: {exc}") from exc

    def committed_wal_end(self) -> int:
        """The WAL position the last committed batch ended at (0 for a new table)."""
        with self._lock:
            dt = self._snapshot()
            if dt is None:
                return 0
            return dt.transaction_version(APP_ID) or 0

    def compact(self, *, min_files: int = 8) -> dict[str, Any]:
        """Merge the small files of partitions holding ``min_files`` or more of them, then vacuum."""
        with self._lock:
            if self._dt is None:
                return {}
            metrics: dict[str, Any] = {}
            for tenant_id, day in self.crowded_partitions(min_files):
                predicate = [("tenant_id", "=", tenant_id), ("day", "=", day)]
                metrics = self._dt.optimize.compact(partition_filters=predicate, target_size=COMPACT_TARGET_BYTES,
                                                    max_concurrent_tasks=1, writer_properties=_WRITER)
            self._dt.vacuum(retention_hours=0, enforce_retention_duration=False, dry_run=False)
            self._refresh()
            return metrics

    def delete(self, predicate: str) -> None:
        """Delete rows matching a SQL predicate, then vacuum so the bytes are really gone.

        Raises:
            StorageError: Delta could not rewrite a file of the matching partitions (a damaged one, say:
                :meth:`remove_damaged`) or write the result; nothing was deleted then.
        """
        with self._lock:
            if self._dt is None:
                return
            shutil.rmtree(self._scratch(), ignore_errors=True)  # a probe's, left by a crash: it links old bytes
            try:
                self._dt.delete(predicate)
                self._vacuum()
            except (DeltaError, OSError) as exc:
                self._refresh_or_reopen()
                raise StorageError(f"step table delete failed: {exc}") from exc

    def remove_damaged(self, tenant_id: str, days: Sequence[str], *, removable: Callable[[StepFile], bool],
                       replay: str | None = None) -> list[DamagedFile]:
        """Find the damaged data files of the tenant's ``days`` and remove those ``removable`` accepts.

        Damaged: missing from disk, a size other than the log recorded (truncated, extended, rewritten), or
        a Parquet footer that does not parse. With ``replay`` (a delete predicate that failed), a file that
        passes those checks is also damaged if that delete fails on it alone (:meth:`_replay`): Delta's
        reader can fail where others do not (a damaged page index, say). The accepted files go in one commit
        of remove actions (deltalake's ``create_write_transaction``), then a vacuum deletes their bytes from
        disk. The lock is held throughout, so no compaction or append changes the files meanwhile.
        """
        wanted = set(days)
        with self._lock:
            dt = self._snapshot()
            if dt is None:
                return []
            found = []
            for file in self._step_files(dt):
                if file.tenant_id != tenant_id or file.day not in wanted:
                    continue
                local = os.path.join(self.path, file.path)
                problem = file_problem(local, file.size)
                if problem is None and replay is not None:
                    problem = self._replay(dt, file, local, replay)
                if problem is not None:  # the audit log shows the problem to the tenant: no server paths
                    found.append(DamagedFile(file, local, problem.replace(local, file.path),
                                             removed=removable(file)))
            self._remove([d.file for d in found if d.removed])
            return found

    def _replay(self, dt: DeltaTable, file: StepFile, local: str, predicate: str) -> str | None:
        """Run the delete on a scratch table of this one file (hard-linked, never written): why it fails, or
        None. The scratch table is deleted afterwards; the file itself is only read."""
        scratch = self._scratch()
        shutil.rmtree(scratch, ignore_errors=True)
        try:
            linked = scratch / file.path
            linked.parent.mkdir(parents=True)
            try:
                os.link(local, linked)
            except OSError:  # another file system, say
                shutil.copyfile(local, linked)
            add = AddAction(path=file.path, size=file.size, partition_values={"tenant_id": file.tenant_id,
                                                                              "day": file.day},
                            modification_time=int(time.time() * 1000), data_change=True, stats="{}")
            create_table_with_add_actions(str(scratch), dt.schema(), [add], mode="error",
                                          partition_by=list(PARTITION_COLUMNS))
            DeltaTable(str(scratch)).delete(predicate)
            return None
        except (DeltaError, OSError) as exc:
            return f"a Delta delete fails on it: {exc}".replace(str(linked), local)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)

    def _remove(self, files: Sequence[StepFile]) -> None:
        if not files or self._dt is None:
            return
        now_ms = int(time.time() * 1000)
        actions: list[AddAction | RemoveAction] = [
            RemoveAction(path=f.path, data_change=True, deletion_timestamp=now_ms, size=f.size,
                         partition_values={"tenant_id": f.tenant_id, "day": f.day}) for f in files]
        props = CommitProperties(custom_metadata={"traceward": "retention: damaged files past retention"})
        try:
            self._dt.create_write_transaction(actions, mode="append", schema=self._dt.schema(),
                                              partition_by=list(PARTITION_COLUMNS), commit_properties=props)
            self._refresh()
            left = {f.path for f in self._step_files(self._dt)} & {f.path for f in files}
            if left:  # a path that matched no add action commits as a no-op: say so rather than claim it gone
                raise StorageError(f"step files still listed after their removal: {sorted(left)}")
            self._vacuum()
        except (DeltaError, OSError) as exc:
            self._refresh_or_reopen()
            raise StorageError(f"removing damaged step files failed: {exc}") from exc

    def _scratch(self) -> Path:
        """Where :meth:`_replay` builds its one-file tables: beside the table, on the same file system."""
        return Path(self.path).with_name(Path(self.path).name + ".probe")

    def _vacuum(self) -> None:
        """Delete from disk every file no longer in the table (call under ``_lock`` with a table)."""
        assert self._dt is not None
        self._dt.vacuum(retention_hours=0, enforce_retention_duration=False, dry_run=False)
        self._refresh()

    @staticmethod
    def _step_files(dt: DeltaTable) -> list[StepFile]:
        """Every data file of the snapshot with its partition and statistics."""
        actions = pa.table(dt.get_add_actions(flatten=True))
        columns = [actions[c].to_pylist() if c in actions.column_names else [None] * actions.num_rows
                   for c in _FILE_COLUMNS]
        return [StepFile(unquote(path), tenant, day, size, (run_lo, run_hi),
                         (start_lo, start_hi) if not start_nulls else (None, None))
                for path, size, tenant, day, run_lo, run_hi, start_lo, start_hi, start_nulls
                in zip(*columns, strict=True)]

    def refresh(self) -> None:
        """Load what another process (the flusher process) committed or vacuumed into this snapshot."""
        with self._lock:
            self._stale = False
            self._refresh_or_reopen()

    def mark_stale(self) -> None:
        """Another process committed: the next read loads the new snapshot first (:meth:`refresh`).

        The flusher process commits several times a second under load; loading each commit as it is
        announced cost the server ~7 µs of CPU per ingested span, most of it for snapshots no read used."""
        self._stale = True

    def _snapshot(self) -> DeltaTable | None:
        """The table at its latest snapshot if another process committed since (call under ``_lock``)."""
        if self._stale:
            self._stale = False  # before loading: a commit announced meanwhile marks it stale again
            self._refresh_or_reopen()
        return self._dt

    def _refresh_or_reopen(self) -> None:
        try:
            self._refresh()
        except (DeltaError, OSError):
            self._dt = None
            try:
                self._dt = DeltaTable(self.path)
            except TableNotFoundError:
                self._dt = None

    def _refresh(self) -> None:
        if self._dt is None:
            try:
                self._dt = DeltaTable(self.path)
            except TableNotFoundError:
                return  # the flusher process has not written the first batch yet
        else:
            self._dt.update_incremental()

    def crowded_partitions(self, min_files: int) -> list[tuple[str, str]]:
        """Partitions (tenant_id, day) with at least ``min_files`` files under the compaction target size."""
        with self._lock:
            if self._dt is None:
                return []
            files = pa.table(self._dt.get_add_actions(flatten=True))
            counts: dict[tuple[str, str], int] = {}
            for size, tenant_id, day in zip(*(files[c].to_pylist() for c in
                                              ("size_bytes", "partition.tenant_id", "partition.day")), strict=True):
                if size < COMPACT_TARGET_BYTES:
                    counts[(tenant_id, day)] = counts.get((tenant_id, day), 0) + 1
            return sorted(k for k, n in counts.items() if n >= min_files)

    # -- reading ---------------------------------------------------------------------------------------------

    def files(self, tenant_id: str, days: Sequence[str] | None = None, *,
              started_within: Mapping[str, tuple[int, int]] | None = None) -> list[str]:
        """Data files of one tenant (optionally only some days) in the current snapshot.

        With ``started_within`` (day → (first, last) ns; it replaces ``days``), only the files of those days
        that can hold a step of that day starting between those times (inclusive): a file whose
        ``start_ns`` range, in its Delta statistics, ends before ``first`` or begins after ``last`` cannot,
        and is left out (a file without statistics is kept). The statistics are the file's own data, so
        compaction and rewrites keep them right: no clock is read.
        """
        if started_within is not None:
            return self._files_started_within(tenant_id, started_within)
        with self._lock:
            dt = self._snapshot()
            if dt is None:
                return []
            filters: list[tuple[str, str, Any]] = [("tenant_id", "=", tenant_id)]
            if days is not None:
                filters.append(("day", "in", list(days)))
            return dt.file_uris(file_pruning_predicate=filters)

    def _files_started_within(self, tenant_id: str, started_within: Mapping[str, tuple[int, int]]) -> list[str]:
        if not started_within:
            return []
        with self._lock:
            dt = self._snapshot()
            if dt is None:
                return []
            spans = self._file_spans(dt)
            uris = dt.file_uris(file_pruning_predicate=[("tenant_id", "=", tenant_id),
                                                        ("day", "in", list(started_within))])
        keep = set()
        for tenant, day, name, begins, ends in spans:
            window = started_within.get(day) if tenant == tenant_id else None
            if window is not None and (ends is None or ends >= window[0]) and (begins is None or begins <= window[1]):
                keep.add((day, name))
        return [uri for uri in uris if _day_and_name(uri) in keep or _day_and_name(uri)[0] is None]

    def _file_spans(self, dt: DeltaTable) -> list[tuple[str, str, str, int | None, int | None]]:
        """(tenant_id, day, file name, min start_ns, max start_ns) of every data file, from the add actions'
        statistics; kept per table version, so reads between two commits do not rebuild it (call under ``_lock``).

        Add-action paths are percent-encoded (twice over), URIs are not: files are matched on (day, file name)."""
        version = dt.version()
        if self._spans_cache is not None and self._spans_cache[0] == version:
            return self._spans_cache[1]
        actions = pa.table(dt.get_add_actions(flatten=True))
        columns = [actions[c].to_pylist() if c in actions.column_names else [None] * actions.num_rows
                   for c in _PRUNING_COLUMNS]
        spans = [(tenant, day, path.rpartition("/")[2], begins, ends)
                 for path, tenant, day, begins, ends in zip(*columns, strict=True)]
        self._spans_cache = (version, spans)
        return spans

    def scan(self, tenant_id: str, days: Sequence[str] | None = None, *,
             started_within: Mapping[str, tuple[int, int]] | None = None) -> pl.LazyFrame:
        """A lazy frame over one tenant's steps (all STEP_COLUMNS, partition columns included).

        With ``started_within`` (day → (first, last) ns), only steps of those days that started between the
        earliest first and the latest last, read from the files that can hold them (see :meth:`files`); the
        Parquet row groups outside that range are skipped on their ``start_ns`` statistics, so a compacted
        file holding the whole day costs only the rows of that time. (A caller wanting some runs' steps
        passes, per day, the first and last start of their steps: it then reads the data of the time those
        runs were active, not the whole day.)
        """
        files = self.files(tenant_id, days, started_within=started_within)
        if not files:
            return pl.LazyFrame(schema=pl.Schema(STEP_SCHEMA))
        lf = pl.scan_parquet(files, hive_partitioning=True, missing_columns="insert",
                             extra_columns="ignore", schema=pl.Schema(STEP_SCHEMA))
        if started_within:
            first = min(lo for lo, _ in started_within.values())
            last = max(hi for _, hi in started_within.values())
            lf = lf.filter(pl.col("start_ns").is_between(first, last))
        return lf

    def run_frame(self, tenant_id: str, run_id: str, days: Sequence[str] | None = None, *, after_seq: int = -1,
                  limit: int | None = None, types: Sequence[str] | None = None, max_seq: int | None = None,
                  started_within: Mapping[str, tuple[int, int]] | None = None) -> pl.LazyFrame:
        """A lazy frame of one run's steps in seq order, after ``after_seq`` (and up to ``max_seq``, which
        lets the scan skip the row groups past a page), at most ``limit`` rows. ``started_within`` (the span
        index's ``step_start_ranges`` of those steps) replaces ``days`` and reads only the files and row
        groups of the time they started in, not every file of their days."""
        in_range = pl.col("seq") > after_seq
        if max_seq is not None:
            in_range &= pl.col("seq") <= max_seq
        lf = self.scan(tenant_id, days, started_within=started_within).filter((pl.col("run_id") == run_id) & in_range)
        if types:
            lf = lf.filter(pl.col("type").is_in(list(types)))
        lf = lf.sort("seq")
        if limit is not None:
            lf = lf.head(limit)
        return lf

    def read_run(self, tenant_id: str, run_id: str, days: Sequence[str] | None = None, *, after_seq: int = -1,
                 limit: int | None = None, types: Sequence[str] | None = None, max_seq: int | None = None,
                 started_within: Mapping[str, tuple[int, int]] | None = None) -> pl.DataFrame:
        """Steps of one run in seq order, after ``after_seq`` and up to ``max_seq``, at most ``limit`` rows
        (``started_within``: see :meth:`run_frame`)."""
        for attempt in (1, 2):
            try:
                return self.run_frame(tenant_id, run_id, days, after_seq=after_seq, limit=limit, types=types,
                                      max_seq=max_seq, started_within=started_within).collect()
            except FileNotFoundError:
                # A compaction vacuumed a file of the snapshot we listed (in the flusher process, perhaps
                # before it told us): load the table's current snapshot and list the files again, once.
                if attempt == 2:
                    raise StorageError("step files changed during the read; retry") from None
                self.refresh()
            except pl.exceptions.PolarsError as exc:
                raise StorageError(f"step table read failed: {exc}") from exc
        raise AssertionError("unreachable")


def file_problem(local_path: str, logged_size: int) -> str | None:
    """Why Delta cannot read this data file, as far as its size and footer tell, or None."""
    try:
        size = os.stat(local_path).st_size
    except FileNotFoundError:
        return "missing: listed in the Delta log but not on disk"
    except OSError as exc:
        return f"cannot be opened: {exc.strerror}"
    if size != logged_size:
        return f"{size} bytes on disk, {logged_size} in the Delta log (truncated, extended or rewritten)"
    try:
        pq.ParquetFile(local_path).close()
    except (OSError, pa.ArrowException) as exc:
        return f"not readable Parquet: {exc}"
    return None


def _day_and_name(uri: str) -> tuple[str | None, str]:
    """The day partition and the file name of a data file's URI (day None if the path is not ``…/day=…/name``)."""
    folder, _, name = uri.rpartition("/")
    day = folder.rpartition("/")[2]
    return (day[4:] if day.startswith("day=") else None), name


def _partition_of(path: str) -> tuple[str, str]:
    parts = dict(p.split("=", 1) for p in Path(path).parts if "=" in p)
    return parts.get("tenant_id", ""), parts.get("day", "")
