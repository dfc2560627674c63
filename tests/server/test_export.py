"""``traceward export``: steps or runs of a time range to Parquet (read back with pyarrow) or JSON Lines."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from otlp_receiver.columns import STEP_COLUMN_NAMES
from otlp_receiver.model import StatusCode
from otlp_receiver.service import IngestIdentity
from otlp_receiver.store.frames import RUN_FRAME_COLUMNS
from server.cli import main
from server.export import parse_when
from server.runtime import Runtime
from server.settings import Settings
from tests.factories import make_child, make_span

pytestmark = pytest.mark.e2e
DAY = 86_400 * 10**9
DAY1 = 1_767_225_600 * 10**9  # 2026-01-01T00:00:00Z


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two tenants; tenant ``default`` has a run on 2026-01-01 (3 steps) and one on 01-02 (2 steps)."""
    path = tmp_path_factory.mktemp("export") / "data"
    runtime = Runtime(Settings(data_dir=path, wal_fsync=False, flusher_process=False))  # flushed in-process
    try:
        for tenant, day, children in (("default", DAY1, 2), ("default", DAY1 + DAY, 1), ("other", DAY1, 4)):
            root = make_span(name="invoke_agent", start_ns=day + 3_600 * 10**9, end_ns=day + 3_601 * 10**9,
                             status_code=StatusCode.OK, attributes={"output.value": "done \u2713"})
            spans = [root, *(make_child(root, name=f"step {n}", start_ns=root.start_ns + n) for n in range(children))]
            runtime.ingest_spans(IngestIdentity(tenant, "p"), spans)
        runtime.flusher.drain()
    finally:
        runtime.stop()
    return path


def export(data_dir: Path, out: Path, *args: str) -> int:
    return main(["export", "--data-dir", str(data_dir), "--out", str(out), *args])


def test_parquet_export_reads_back_with_pyarrow(data_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "steps.parquet"
    assert export(data_dir, out, "--since", "2026-01-01T00:00:00Z", "--until", "2026-01-03T00:00:00Z") == 0
    table = pq.read_table(out)
    assert table.num_rows == 5
    assert table.column_names == list(STEP_COLUMN_NAMES)
    assert table.schema.field("payload").type == pa.string()
    assert set(table.column("tenant_id").to_pylist()) == {"default"}
    assert sorted(set(table.column("day").to_pylist())) == ["2026-01-01", "2026-01-02"]
    assert not (tmp_path / "steps.parquet.partial").exists()


def test_time_range_is_half_open(data_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "day1.parquet"
    assert export(data_dir, out, "--since", str(DAY1), "--until", str(DAY1 + DAY)) == 0
    assert pq.read_table(out).num_rows == 3
    assert export(data_dir, out, "--since", str(DAY1), "--until", str(DAY1 + DAY), "--tenant", "other") == 0
    assert pq.read_table(out).num_rows == 5


def test_empty_range_still_writes_a_valid_file_with_the_columns(data_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "empty.parquet"
    assert export(data_dir, out, "--since", "2020-01-01T00:00:00Z", "--until", "2020-01-02T00:00:00Z") == 0
    table = pq.read_table(out)
    assert table.num_rows == 0 and table.column_names == list(STEP_COLUMN_NAMES)


def test_jsonl_embeds_payloads_as_objects(data_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "steps.jsonl"
    assert export(data_dir, out, "--since", str(DAY1), "--until", str(DAY1 + 2 * DAY), "--format", "jsonl") == 0
    rows = [orjson.loads(line) for line in out.read_bytes().splitlines()]
    assert len(rows) == 5
    roots = [r for r in rows if r["name"] == "invoke_agent"]
    assert roots[0]["payload"]["output"] == "done \u2713"


def test_runs_table_export(data_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "runs.parquet"
    assert export(data_dir, out, "--since", str(DAY1), "--until", str(DAY1 + 2 * DAY), "--table", "runs") == 0
    table = pq.read_table(out)
    assert table.num_rows == 2
    assert table.column_names == [name for name, _, _ in RUN_FRAME_COLUMNS]


def test_bad_ranges_are_refused(data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert export(data_dir, tmp_path / "x.parquet", "--since", "1d", "--until", "2d") == 2
    assert "--until must be after --since" in capsys.readouterr().err
    assert export(data_dir, tmp_path / "x.parquet", "--since", "last tuesday") == 2


def test_relative_times() -> None:
    now = 10 * DAY
    assert parse_when("24h", field="since", now_ns=now) == 9 * DAY
    assert parse_when("7d", field="since", now_ns=now) == 3 * DAY
    assert parse_when("90m", field="since", now_ns=now) == now - 90 * 60 * 10**9
    assert parse_when("2026-01-01T00:00:00Z", field="since") == DAY1


def test_the_installed_command_exports(data_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "cli.parquet"
    done = subprocess.run([sys.executable, "-m", "server", "export", "--data-dir", str(data_dir), "--since",
                           "2026-01-01T00:00:00Z", "--until", "2026-01-03T00:00:00Z", "--out", str(out)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "exported 5 steps of tenant default" in done.stderr
    assert pq.ParquetFile(out).metadata.num_rows == 5
