"""Seeded synthetic runs and steps for benchmarks (and anyone else who needs volume).

``make_dataset(SyntheticSpec(steps=10_000_000))`` builds ~30 days of agent traffic in memory:
runs of 20-80 steps (50 on average) spread over ``agents`` agents, with model and tool steps,
errors, gated tool bindings, policy steps, redactions and the usage double-count case (a model
step wrapping a child model step that reports the same tokens). The run rows are derived from
the steps with the deduplicated totals the store produces, so run and step figures agree.

Only the columns analytics read are materialised; :func:`steps_lazy` and :func:`runs_lazy`
add the remaining ``STEP_COLUMNS`` / ``RUN_COLUMNS`` as lazy constants, which projection
pushdown drops from any query that does not read them (about 350 bytes per step in memory:
3.5 GB for 10M steps).

``make_scan_dataset(runs)`` builds smaller, complete runs (every column, ~1 KB JSON payloads with
chat histories and tool arguments) for the failure scan.

Randomness is a seeded hash of the row number (polars only, no numpy): the same seed gives the
same data with the same polars version.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson
import polars as pl

from analysis.frames import RUN_SCHEMA, STEP_SCHEMA

DAY_NS = 86_400 * 10**9
END_NS = 1_790_000_000 * 10**9
"""Fixed end of the synthetic window (2026-09-21 UTC), so every build of a seed is identical."""

MODELS = ("gpt-4o", "gpt-4o-mini", "claude-sonnet-4", "claude-haiku-4", "gemini-2.5-pro", "llama-3.3-70b")
MODEL_PRICE_PER_TOKEN = (2.5e-6, 0.15e-6, 3e-6, 0.8e-6, 1.25e-6, 0.6e-6)
TOOLS = tuple(f"tool_{i:02d}" for i in range(20))
BAD_BINDINGS = ("missing", "invalid", "expired", "args_mismatch", "replayed")
# Step types after the root (seq 0 is always the structural "span" root of the run).
STEP_TYPES = ("model", "tool", "span", "prompt", "policy", "approval", "error", "artifact")
STEP_TYPE_WEIGHTS = (0.34, 0.34, 0.10, 0.04, 0.06, 0.02, 0.03, 0.07)
RUN_STATUSES = ("succeeded", "failed", "canceled", "running")
RUN_STATUS_WEIGHTS = (0.90, 0.06, 0.01, 0.03)


@dataclass(frozen=True)
class SyntheticSpec:
    """Size and shape of a synthetic data set."""

    steps: int = 10_000_000
    """Approximate number of steps; runs = steps // 50."""
    days: int = 30
    agents: int = 50
    seed: int = 7
    end_ns: int = END_NS


CHUNK_RUNS = 20_000
"""Runs built per chunk: bounds the working memory of the build (fixed, so data never depends on it)."""


def make_dataset(spec: SyntheticSpec) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Build ``(runs, steps)`` DataFrames holding the analysed columns only."""
    plan = _plan_runs(spec)
    runs, steps, first_row = [], [], 0
    for start in range(0, plan.height, CHUNK_RUNS):
        chunk = plan.slice(start, CHUNK_RUNS)
        chunk_steps = _make_steps(chunk, spec.seed, first_row)
        runs.append(_derive_runs(chunk, chunk_steps))
        steps.append(chunk_steps)
        first_row += chunk_steps.height
    return pl.concat(runs, rechunk=True), pl.concat(steps, rechunk=False)


def steps_lazy(steps: pl.DataFrame) -> pl.LazyFrame:
    """The steps as a LazyFrame with every ``STEP_COLUMNS`` column (missing ones as constants)."""
    return _complete(steps, STEP_SCHEMA)


def runs_lazy(runs: pl.DataFrame) -> pl.LazyFrame:
    """The runs as a LazyFrame with exactly ``RUN_COLUMNS``."""
    return _complete(runs, RUN_SCHEMA)


def _complete(frame: pl.DataFrame, schema: pl.Schema) -> pl.LazyFrame:
    exprs = [
        pl.col(name).cast(dtype) if name in frame.columns else _constant(name, dtype).alias(name)
        for name, dtype in schema.items()
    ]
    return frame.lazy().select(exprs)


def _constant(name: str, dtype: pl.DataType) -> pl.Expr:
    if dtype == pl.String:
        return pl.lit("{}" if name in ("payload", "redaction_meta") else "x", dtype=pl.String)
    if isinstance(dtype, pl.List):
        return pl.lit([], dtype=dtype)
    return pl.lit(0, dtype=dtype) if dtype.is_numeric() else pl.lit(None, dtype=dtype)


def _uniform(salt: int, row: pl.Expr | None = None) -> pl.Expr:
    """Pseudo-random floats in [0, 1), one per row: a seeded hash of the row number."""
    row = pl.int_range(pl.len()) if row is None else row
    return (row.hash(seed=salt) // 2048).cast(pl.Float64) / float(2**53)


def _integers(salt: int, low: int, high: int, row: pl.Expr | None = None) -> pl.Expr:
    """Pseudo-random integers in [low, high)."""
    return (pl.lit(low) + (_uniform(salt, row) * (high - low)).floor()).cast(pl.Int64)


def _pick(u: pl.Expr, values: Sequence[str], weights: Sequence[float]) -> pl.Expr:
    """Map uniform draws onto ``values`` with the given probabilities."""
    expr, edge = pl.when(pl.lit(False)).then(pl.lit(values[-1])), 0.0
    for value, weight in zip(values[:-1], weights[:-1], strict=True):
        edge += weight
        expr = expr.when(u < edge).then(pl.lit(value))
    return expr.otherwise(pl.lit(values[-1]))


def _digits(salt: int, width: int) -> pl.Expr:
    return (pl.int_range(pl.len()).hash(seed=salt) % 10**width).cast(pl.String).str.zfill(width)


def _plan_runs(spec: SyntheticSpec) -> pl.DataFrame:
    salt = spec.seed * 1000
    agent = _integers(salt + 1, 0, spec.agents)
    age = _uniform(salt + 2)
    return pl.select(pl.repeat(0, max(1, spec.steps // 50)).alias("row")).select(
        run_id=_digits(salt + 3, 16) + _digits(salt + 4, 16),  # digits are valid lower-case hex
        agent=pl.format("agent-{}", agent.cast(pl.String).str.zfill(2)),
        service=pl.format("svc-{}", (agent % 10).cast(pl.String)),
        service_version=pl.when(age < 0.3).then(pl.lit("1.2.0")).when(age < 0.7).then(pl.lit("1.1.0"))
        .otherwise(pl.lit("1.0.0")),
        environment=pl.when(_uniform(salt + 5) < 0.8).then(pl.lit("prod")).otherwise(pl.lit("staging")),
        status=_pick(_uniform(salt + 6), RUN_STATUSES, RUN_STATUS_WEIGHTS),
        started_ns=pl.lit(spec.end_ns) - (age * (spec.days * DAY_NS)).cast(pl.Int64),
        n_steps=_integers(salt + 7, 20, 81),
    )  # fmt: skip


def _make_steps(plan: pl.DataFrame, seed: int, first_row: int) -> pl.DataFrame:
    salt, row = seed * 1000 + 100, pl.col("row")
    run_cols = ("run_id", "started_ns", "agent", "service", "service_version", "environment")
    frame = (
        plan.lazy()
        .select(*run_cols, seq=pl.int_ranges(0, "n_steps"))
        .explode("seq")
        .with_row_index("row", offset=first_row)
        .with_columns(
            type=pl.when(pl.col("seq") == 0).then(pl.lit("span"))
            .otherwise(_pick(_uniform(salt + 1, row), STEP_TYPES, STEP_TYPE_WEIGHTS)),
            offset_ns=pl.col("seq") * 200_000_000 + _integers(salt + 2, 0, 100_000_000, row),
            # log-uniform between ~20 ms and ~3 s
            duration_ns=(_uniform(salt + 3, row) * 5.0 + 16.8).exp().cast(pl.Int64),
            model_idx=_integers(salt + 4, 0, len(MODELS), row),
            tool_idx=_integers(salt + 5, 0, len(TOOLS), row),
            tokens_in=_integers(salt + 6, 200, 6000, row),
            tokens_out=_integers(salt + 7, 20, 900, row),
            roll=_uniform(salt + 8, row),
            redaction_count=(_uniform(salt + 9, row) < 0.05).cast(pl.Int32),
        )
    )  # fmt: skip
    return _shape_steps(frame).collect()


def _shape_steps(frame: pl.LazyFrame) -> pl.LazyFrame:
    is_model, is_tool, roll = pl.col("type") == "model", pl.col("type") == "tool", pl.col("roll")
    # A model step right after another model step nests under it 1 time in 4: the parent is a
    # wrapper that repeats its child's usage, which the double-count rule must drop.
    nested = is_model & (pl.col("type").shift(1) == "model") & (pl.col("seq") > 1) & (roll < 0.25)
    frame = frame.with_columns(
        nested=nested.fill_null(False),
        tokens_in=pl.when(is_model).then(pl.col("tokens_in")),
        tokens_out=pl.when(is_model).then(pl.col("tokens_out")),
    ).with_columns(
        pl.when(pl.col("nested").shift(-1)).then(pl.col(c).shift(-1)).otherwise(pl.col(c)).alias(c)
        for c in ("tokens_in", "tokens_out", "model_idx")
    )
    return frame.select(
        "run_id", "seq", "type",
        status=pl.when((pl.col("type") == "error") | (is_tool & (roll > 0.96)) | (is_model & (roll > 0.99)))
        .then(pl.lit("error"))
        .when((pl.col("type") == "policy") & (roll > 0.9)).then(pl.lit("error"))
        .otherwise(pl.lit("ok")),
        span_id=_span_id(pl.col("row")),
        parent_span_id=pl.when(pl.col("seq") == 0).then(None)
        .when(pl.col("nested")).then(_span_id(pl.col("row") - 1))
        .otherwise(_span_id(pl.col("row") - pl.col("seq"))),
        start_ns=pl.col("started_ns") + pl.col("offset_ns"),
        end_ns=pl.col("started_ns") + pl.col("offset_ns") + pl.col("duration_ns"),
        duration_ns="duration_ns",
        tool_name=pl.when(is_tool).then(pl.lit(pl.Series(TOOLS)).gather(pl.col("tool_idx"))),
        model_name=pl.when(is_model).then(pl.lit(pl.Series(MODELS)).gather(pl.col("model_idx"))),
        tokens_in="tokens_in",
        tokens_out="tokens_out",
        tokens_cache_read=pl.col("tokens_in") // 4,
        tokens_cache_write=pl.col("tokens_in") // 20,
        tokens_reasoning=pl.when(pl.col("model_idx") == 0).then(pl.col("tokens_out") // 3).otherwise(0),
        cost_usd=(pl.col("tokens_in") + 4 * pl.col("tokens_out"))
        * pl.lit(pl.Series(MODEL_PRICE_PER_TOKEN)).gather(pl.col("model_idx")),
        error_message=pl.when(pl.col("type") == "error").then(pl.lit("boom")),
        binding=pl.when(is_tool & (roll < 0.15)).then(pl.lit("bound"))
        .when(is_tool & (roll < 0.16)).then(pl.lit(pl.Series(BAD_BINDINGS)).gather(pl.col("tool_idx") % 5)),
        redaction_count="redaction_count",
        service="service", service_version="service_version", environment="environment",
    )  # fmt: skip


def _span_id(row: pl.Expr) -> pl.Expr:
    """A 16-character span id unique across the data set (the global row number, zero-padded)."""
    return row.cast(pl.String).str.zfill(16)


def _derive_runs(plan: pl.DataFrame, steps: pl.DataFrame) -> pl.DataFrame:
    wrapped = steps.filter(pl.col("type") == "model")["parent_span_id"].drop_nulls().implode()
    leaf = pl.col("leaf")
    token_cols = ("tokens_in", "tokens_out", "tokens_cache_read", "tokens_cache_write", "tokens_reasoning")
    flagged = steps.with_columns(leaf=(pl.col("type") == "model") & ~pl.col("span_id").is_in(wrapped))
    totals = flagged.group_by("run_id").agg(
        *[pl.col(c).filter(leaf).sum() for c in token_cols],
        cost_usd=pl.col("cost_usd").filter(leaf).sum(),
        last_end_ns=pl.col("end_ns").max(),
        tool_count=(pl.col("type") == "tool").sum().cast(pl.Int64),
        step_count=pl.len().cast(pl.Int64),
        error_count=(pl.col("status") == "error").sum().cast(pl.Int64),
        model_names=pl.col("model_name").drop_nulls().unique().sort(),
        tool_names=pl.col("tool_name").drop_nulls().unique().sort(),
    )
    running = pl.col("status") == "running"
    return (
        plan.join(totals, on="run_id", how="left")
        .with_columns(
            tenant_id=pl.lit("t1"),
            project_id=pl.lit("p1"),
            name=pl.col("agent"),
            finished_ns=pl.when(~running).then(pl.col("last_end_ns")),
            cost_source=pl.lit("computed"),
        )
        .with_columns(duration_ns=pl.col("finished_ns") - pl.col("started_ns"))
        .select(list(RUN_SCHEMA))
    )


def make_scan_dataset(
    runs: int, *, steps_per_run: int = 50, seed: int = 7
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """``runs`` finished runs of ``steps_per_run`` steps with realistic ~1 KB JSON payloads (chat
    histories on model steps, arguments on tool steps) for the failure scan; about one run in
    ten has something to find (a failed tool, a loop, a rejection, an unbound execution)."""
    rng = random.Random(seed)
    run_rows, step_rows = [], []
    for r in range(runs):
        run_id = f"{rng.getrandbits(128):032x}"
        started = END_NS - (runs - r) * 60 * 10**9
        trouble = rng.choice(("tool_error", "loop", "rejection", "unbound") + ("none",) * 36)
        rows = [_scan_step(run_id, seq, started, trouble, rng) for seq in range(steps_per_run)]
        step_rows += rows
        end = max(row["end_ns"] for row in rows)
        run_rows.append(
            {"run_id": run_id, "agent": f"agent-{r % 50:02d}", "status": "succeeded", "started_ns": started,
             "finished_ns": end, "duration_ns": end - started, "cost_usd": rng.random() / 10}
        )  # fmt: skip
    steps = pl.DataFrame(step_rows, infer_schema_length=None)  # the first rows may all lack a binding
    return runs_lazy(pl.DataFrame(run_rows)).collect(), steps_lazy(steps).collect()


def _scan_step(run_id: str, seq: int, started: int, trouble: str, rng: random.Random) -> dict[str, Any]:
    kind = "span" if seq == 0 else ("model" if seq % 2 else "tool")
    start = started + seq * 300_000_000
    row: dict[str, Any] = {
        "run_id": run_id, "seq": seq, "type": kind, "name": f"{kind} {seq}", "status": "ok",
        "span_id": f"{seq:016x}", "parent_span_id": None if seq == 0 else f"{0:016x}",
        "start_ns": start, "end_ns": start + 250_000_000, "duration_ns": 250_000_000, "binding": None,
    }  # fmt: skip
    turns = [{"role": "user", "parts": [{"type": "text", "content": "Plan a trip to Lisbon " * 8}]}]
    turns += [
        {"role": "assistant", "parts": [{"type": "text", "content": f"Here is option {i} " * 6}]}
        for i in range(3)
    ]
    if kind == "model":
        if trouble == "rejection" and seq > 20:
            turns.append({"role": "user", "parts": [{"type": "text", "content": "no, that's wrong"}]})
        payload = {
            "input": turns,
            "output": [{"role": "assistant", "parts": [{"type": "text", "content": "ok " * 40}]}],
        }
        row.update(model_name="gpt-4o", tokens_in=1200, tokens_out=300, cost_usd=0.004)
    elif kind == "tool":
        same_args = trouble == "loop" and 10 <= seq <= 16
        payload = {
            "input": {"query": "lisbon hotels" if same_args else f"query {seq} {rng.random()}"},
            "output": "x" * 600,
        }
        row["tool_name"] = "search" if same_args else f"tool_{seq % 7}"
        if trouble == "tool_error" and seq == 12:
            row.update(status="error", error_message="upstream timeout")
        if trouble == "unbound" and seq == 14:
            row["binding"] = "expired"
    else:
        payload = {"input": "Plan a trip to Lisbon", "output": "Booked."}
    row["payload"] = orjson.dumps(payload).decode()
    return row
