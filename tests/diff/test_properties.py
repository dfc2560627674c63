"""Properties of whole-run diffs over generated agent runs (hypothesis)."""

from __future__ import annotations

from collections import Counter
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from diff.api import diff_runs
from diff.normalize import BUILTIN_PROFILES
from diff.result import StepPair, TraceDiff
from otlp_receiver.model import StepType
from tests.diff.fixtures import T0_NS, StepSpec, build_run, model_spec, root_spec, tool_spec

TEXTS = ("Where is order {uuid}?", "Placed {date}", "refund please", "Ship it", "")
SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def step_specs(draw: st.DrawFn, key: str, parents: list[str]) -> StepSpec:
    kind = draw(st.sampled_from(["model", "tool", "tool", "prompt", "span"]))
    parent = draw(st.sampled_from(parents))
    text = draw(st.sampled_from(TEXTS))
    if kind == "model":
        model = draw(st.sampled_from(["gpt-4o", "gpt-4o-mini"]))
        return model_spec(key, text, draw(st.sampled_from(TEXTS)), model=model, parent=parent)
    if kind == "tool":
        tool = draw(st.sampled_from(["search", "fetch", "notify"]))
        return tool_spec(key, tool, {"q": text}, draw(st.integers(0, 3)), parent=parent)
    if kind == "prompt":
        return StepSpec(key, StepType.PROMPT, "user prompt", parent=parent, payload={"input": {"text": text}})
    return StepSpec(key, StepType.SPAN, draw(st.sampled_from(["agent", "chain"])), parent=parent)


@st.composite
def scripts(draw: st.DrawFn, prefix: str = "k") -> list[StepSpec]:
    script, parents = [root_spec()], ["root"]
    for k in range(draw(st.integers(0, 14))):
        spec = draw(step_specs(f"{prefix}{k}", parents))
        script.append(spec)
        if spec.type is StepType.SPAN:
            parents.append(spec.key)
    return script


@st.composite
def script_pairs(draw: st.DrawFn) -> tuple[list[StepSpec], list[StepSpec]]:
    """A script and an edit of it: steps dropped, inserted, swapped or replaced."""
    a = draw(scripts())
    b = list(a)
    for n in range(draw(st.integers(0, 4))):
        at = draw(st.integers(1, len(b)))
        edit = draw(st.sampled_from(["drop", "insert", "swap", "replace"]))
        if edit == "drop" and at < len(b):
            del b[at]
        elif edit == "swap" and at + 1 < len(b):
            b[at], b[at + 1] = b[at + 1], b[at]
        elif edit in ("insert", "replace"):
            parents = ["root"] + [s.key for s in b if s.type is StepType.SPAN]
            spec = draw(step_specs(f"e{n}", parents))
            b[at : at + (edit == "replace")] = [spec]
    return a, b


def _runs(a: list[StepSpec], b: list[StepSpec], seed: int) -> tuple[Any, Any, Any, Any]:
    run_a, steps_a = build_run(a, seed=seed)
    run_b, steps_b = build_run(b, seed=seed + 1, t0_ns=T0_NS + 7 * 86_400_000_000_000)
    return run_a, steps_a, run_b, steps_b


@SETTINGS
@given(scripts(), st.integers(0, 10_000))
def test_changing_only_ids_and_times_gives_an_empty_default_diff(script: list[StepSpec], seed: int) -> None:
    run_a, steps_a, run_b, steps_b = _runs(script, script, seed)
    diff = diff_runs(run_a, steps_a, run_b, steps_b, profile=BUILTIN_PROFILES["default"])
    assert diff.is_empty, [p for p in diff.pairs if p.status != "equal"]
    assert diff.summary.similarity == 1.0


def _pair_key(pair: StepPair, *, mirror: bool) -> tuple[Any, ...]:
    a, b = (pair.b, pair.a) if mirror else (pair.a, pair.b)
    status = (
        {"added": "removed", "removed": "added"}.get(pair.status.value, pair.status.value)
        if mirror
        else pair.status.value
    )
    changes = tuple(
        (c.path, repr(c.new if mirror else c.old), repr(c.old if mirror else c.new)) for c in pair.changes
    )
    return status, a and a.step_id, b and b.step_id, changes, pair.depth


def _assert_mirrored(forward: TraceDiff, backward: TraceDiff) -> None:
    assert Counter(_pair_key(p, mirror=False) for p in forward.pairs) == Counter(
        _pair_key(p, mirror=True) for p in backward.pairs
    )
    f, b = forward.summary, backward.summary
    assert f.similarity == b.similarity
    assert (f.models_added, f.models_removed, f.tools_added, f.tools_removed) == (
        b.models_removed, b.models_added, b.tools_removed, b.tools_added,
    )  # fmt: skip
    assert f.duration_ms.delta == -(b.duration_ms.delta or 0)
    assert (f.first_divergence is None) == (b.first_divergence is None)
    if f.first_divergence and b.first_divergence:
        assert (f.first_divergence.a_seq, f.first_divergence.b_seq) == (
            b.first_divergence.b_seq,
            b.first_divergence.a_seq,
        )


@SETTINGS
@given(script_pairs(), st.integers(0, 10_000), st.sampled_from(sorted(BUILTIN_PROFILES)))
def test_swapping_the_runs_mirrors_the_diff(
    pair: tuple[list[StepSpec], list[StepSpec]], seed: int, name: str
) -> None:
    run_a, steps_a, run_b, steps_b = _runs(*pair, seed)
    profile = BUILTIN_PROFILES[name]
    forward = diff_runs(run_a, steps_a, run_b, steps_b, profile=profile)
    backward = diff_runs(run_b, steps_b, run_a, steps_a, profile=profile)
    _assert_mirrored(forward, backward)


@SETTINGS
@given(script_pairs(), st.integers(0, 10_000))
def test_every_step_appears_exactly_once(pair: tuple[list[StepSpec], list[StepSpec]], seed: int) -> None:
    run_a, steps_a, run_b, steps_b = _runs(*pair, seed)
    diff = diff_runs(run_a, steps_a, run_b, steps_b, profile=BUILTIN_PROFILES["default"])
    shown_a = Counter(p.a.step_id for p in diff.pairs if p.a)
    shown_b = Counter(p.b.step_id for p in diff.pairs if p.b)
    assert max(shown_a.values(), default=1) == 1 and max(shown_b.values(), default=1) == 1
    assert {s.step_id for s in steps_a if s.type is not StepType.SPAN} <= set(shown_a)
    assert {s.step_id for s in steps_b if s.type is not StepType.SPAN} <= set(shown_b)
    assert 0.0 <= diff.summary.similarity <= 1.0
