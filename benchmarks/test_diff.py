"""Run diff benchmarks: 100 / 1,000 / 10,000-step pairs, and the naive deepdiff reference.

Seeded synthetic agent runs (``tests.diff.fixtures.synthetic_pair``): a root span, iteration spans,
model calls and tool calls with ~1 KB payloads; run B is the same script with six planted
differences (a retry, a removed call, a swap, a changed model, argument and output) and its own
ids and timestamps. Targets (issue 5): ≤ 5 ms, ≤ 20 ms, ≤ 300 ms; memory linear in steps.

    pytest benchmarks/test_diff.py --benchmark-only --benchmark-columns=min,median,mean,max,rounds
"""

from __future__ import annotations

import dataclasses
import gc
import tracemalloc
from functools import cache
from typing import Any

import pytest
from deepdiff import DeepDiff

from diff.api import diff_runs
from diff.normalize import BUILTIN_PROFILES
from otlp_receiver.model import Run, Step
from tests.diff.fixtures import synthetic_pair

PLANTED_COUNTS = {"changed": 3, "added": 1, "removed": 1, "moved": 1}


@cache
def _pair(steps: int) -> tuple[Run, list[Step], Run, list[Step]]:
    return synthetic_pair(steps)


@pytest.mark.parametrize("steps", [100, 1_000, 10_000])
@pytest.mark.parametrize("profile", ["default", "semantic", "structure"])
def test_diff_runs(benchmark: Any, steps: int, profile: str) -> None:
    run_a, steps_a, run_b, steps_b = _pair(steps)
    benchmark.group = f"diff {steps} steps"
    diff = benchmark(diff_runs, run_a, steps_a, run_b, steps_b, profile=BUILTIN_PROFILES[profile])
    counts = {status: n for status, n in diff.summary.pair_counts.items() if n and status != "equal"}
    if profile == "structure":  # argument and output changes are invisible to the shape
        assert counts == {**PLANTED_COUNTS, "changed": 1}
    else:
        assert counts == PLANTED_COUNTS


def _as_dicts(steps: list[Step]) -> list[dict[str, Any]]:
    return [dataclasses.asdict(step) for step in steps]


def test_naive_deepdiff_reference(benchmark: Any) -> None:
    """The baseline the issue quotes (~1.8 s): deepdiff of two whole 1,000-step runs, unaligned."""
    _, steps_a, _, steps_b = _pair(1_000)
    a, b = _as_dicts(steps_a), _as_dicts(steps_b)
    benchmark.group = "diff 1000 steps"
    result = benchmark.pedantic(DeepDiff, args=(a, b), rounds=3, iterations=1)
    assert result  # it reports (mis)changes all over the place


def _peak_bytes(steps: int) -> int:
    run_a, steps_a, run_b, steps_b = _pair(steps)
    gc.collect()
    tracemalloc.start()
    try:
        diff_runs(run_a, steps_a, run_b, steps_b, profile=BUILTIN_PROFILES["default"])
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_memory_is_linear_in_steps() -> None:
    small, large = _peak_bytes(1_000), _peak_bytes(10_000)
    assert large < 13 * small, (small, large)
