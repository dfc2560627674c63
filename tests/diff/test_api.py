"""diff_runs end to end: the planted-difference fixture set, the summary and the JSON shape."""

from __future__ import annotations

import dataclasses

import orjson
import pytest

from diff.api import diff_runs
from diff.normalize import BUILTIN_PROFILES
from diff.result import PairStatus, TraceDiff
from otlp_receiver.errors import NotFoundError, UnprocessableError
from otlp_receiver.model import RunStatus, TenantId
from tests.diff.fixtures import PLANTED, Planted, base_script, build_run, planted_pair

DEFAULT = BUILTIN_PROFILES["default"]


def _reported(
    diff: TraceDiff, keys: dict[str, str]
) -> list[tuple[str, str | None, str | None, tuple[str, ...]]]:
    return [
        (pair.status.value, pair.a and keys[pair.a.span_id], pair.b and keys[pair.b.span_id],
         tuple(sorted(change.path for change in pair.changes)))
        for pair in diff.pairs
        if pair.status is not PairStatus.EQUAL
    ]  # fmt: skip


def _matches(actual: tuple[str, str | None, str | None, tuple[str, ...]], expected: tuple) -> bool:
    status, a_key, b_key, paths = expected
    return (
        actual[0] == status
        and (a_key is None) == (actual[1] is None)
        and (b_key is None) == (actual[2] is None)
        and (a_key is None or actual[1] in a_key.split("|"))
        and (b_key is None or actual[2] in b_key.split("|"))
        and actual[3] == tuple(sorted(paths))
    )


@pytest.mark.parametrize("planted", PLANTED, ids=[p.name for p in PLANTED])
def test_default_profile_reports_exactly_the_planted_difference(planted: Planted) -> None:
    run_a, steps_a, run_b, steps_b, keys = planted_pair(planted)
    diff = diff_runs(run_a, steps_a, run_b, steps_b, profile=DEFAULT)
    reported = _reported(diff, keys)
    assert len(reported) == len(planted.expected), reported
    for actual, expected in zip(reported, planted.expected, strict=True):
        assert _matches(actual, expected), (actual, expected)


@pytest.mark.parametrize("planted", PLANTED, ids=[p.name for p in PLANTED])
def test_planted_difference_is_mirrored_when_runs_are_swapped(planted: Planted) -> None:
    run_a, steps_a, run_b, steps_b, keys = planted_pair(planted)
    forward = diff_runs(run_a, steps_a, run_b, steps_b, profile=DEFAULT)
    backward = diff_runs(run_b, steps_b, run_a, steps_a, profile=DEFAULT)
    swap = {"added": "removed", "removed": "added"}
    mirrored = sorted((swap.get(s, s), b, a, paths) for s, a, b, paths in _reported(backward, keys))
    assert sorted(_reported(forward, keys)) == mirrored


def test_matched_steps_of_a_planted_pair_are_all_equal_but_the_planted_ones() -> None:
    run_a, steps_a, run_b, steps_b, keys = planted_pair(PLANTED[3])  # changed model
    diff = diff_runs(run_a, steps_a, run_b, steps_b, profile=DEFAULT)
    statuses = [(keys[p.a.span_id], p.status.value) for p in diff.pairs if p.a]
    assert statuses == [
        ("prompt", "equal"), ("plan", "equal"), ("search", "equal"), ("fetch", "equal"),
        ("weather", "equal"), ("eta", "equal"), ("answer", "changed"),
    ]  # fmt: skip


def test_equal_structural_spans_are_left_out_but_their_children_stay() -> None:
    run_a, steps_a, run_b, steps_b, _ = planted_pair(PLANTED[-1])
    diff = diff_runs(run_a, steps_a, run_b, steps_b, profile=DEFAULT)
    assert len(diff.pairs) == len(steps_a) - 1
    assert all(pair.a is not None and pair.a.type != "span" for pair in diff.pairs)
    assert {pair.depth for pair in diff.pairs} == {1}


def test_a_differing_structural_span_is_reported() -> None:
    script = base_script()
    renamed = [dataclasses.replace(script[0], name="invoke_agent billing-bot")] + script[1:]
    run_a, steps_a = build_run(script, seed=1)
    run_b, steps_b = build_run(renamed, seed=2)
    diff = diff_runs(run_a, steps_a, run_b, steps_b, profile=DEFAULT)
    assert diff.pairs[0].status is PairStatus.CHANGED
    assert [c.path for c in diff.pairs[0].changes] == ["$.name"]
    assert diff.pairs[0].depth == 0


def test_identical_runs_give_an_empty_diff_and_full_similarity() -> None:
    run_a, steps_a, run_b, steps_b, _ = planted_pair(PLANTED[-1])
    diff = diff_runs(run_a, steps_a, run_b, steps_b, profile=DEFAULT)
    assert diff.is_empty
    assert diff.summary.similarity == 1.0
    assert diff.summary.first_divergence is None


def test_strict_profile_sees_the_ids_and_times_default_ignores() -> None:
    run_a, steps_a, run_b, steps_b, _ = planted_pair(PLANTED[-1])
    diff = diff_runs(run_a, steps_a, run_b, steps_b, profile=BUILTIN_PROFILES["strict"])
    changed = [p for p in diff.pairs if p.status is PairStatus.CHANGED]
    assert len(changed) == len(steps_a)  # every step, the root span included
    paths = {c.path for p in changed for c in p.changes}
    assert {"$.step_id", "$.span_id", "$.start_ns", "$.duration_ns"} <= paths


def test_structure_profile_ignores_content_but_not_models() -> None:
    for planted, expected in ((PLANTED[4], []), (PLANTED[7], []), (PLANTED[3], ["changed"])):
        run_a, steps_a, run_b, steps_b, _ = planted_pair(planted)
        diff = diff_runs(run_a, steps_a, run_b, steps_b, profile=BUILTIN_PROFILES["structure"])
        assert [p.status.value for p in diff.pairs if p.status is not PairStatus.EQUAL] == expected


def test_summary_reports_status_tokens_cost_models_tools_and_divergence() -> None:
    script = base_script()
    script_b = PLANTED[3].edit(PLANTED[1].edit(script))  # no search tool, answer on gpt-4o-mini
    run_a, steps_a = build_run(script, seed=1)
    run_b, steps_b = build_run(script_b, seed=2, run_status=RunStatus.FAILED)
    summary = diff_runs(run_a, steps_a, run_b, steps_b, profile=DEFAULT).summary
    assert summary.status == ("succeeded", "failed")
    assert summary.models_added == ("gpt-4o-mini",)
    assert summary.models_removed == ()
    assert summary.tools_removed == ("search_orders",)
    assert summary.step_counts[0]["tool"] == 4 and summary.step_counts[1]["tool"] == 3
    assert summary.tokens["in"].delta == 0
    assert summary.cost_usd.delta == 0
    assert summary.first_divergence is not None
    assert (summary.first_divergence.a_seq, summary.first_divergence.b_seq) == (3, 6)
    assert summary.pair_counts == {"equal": 5, "changed": 1, "added": 0, "removed": 1, "moved": 0}
    assert 0 < summary.similarity < 1


def test_to_dict_is_json_ready_and_has_the_documented_shape() -> None:
    run_a, steps_a, run_b, steps_b, _ = planted_pair(PLANTED[5])
    doc = diff_runs(run_a, steps_a, run_b, steps_b, profile=DEFAULT).to_dict()
    assert orjson.loads(orjson.dumps(doc)) == doc
    assert set(doc) == {"summary", "pairs", "profile"}
    assert set(doc["profile"]) == {"name", "description", "ignored"} and doc["profile"]["name"] == "default"
    assert {"status", "duration_ms", "tokens", "cost_usd", "step_counts", "models", "tools",
            "first_divergence", "similarity", "runs", "pair_counts"} == set(doc["summary"])  # fmt: skip
    changed = next(p for p in doc["pairs"] if p["status"] == "changed")
    assert set(changed) == {"status", "a", "b", "changes", "depth"}
    assert set(changed["a"]) == {
        "seq",
        "step_id",
        "type",
        "name",
        "status",
        "tool_name",
        "model_name",
        "span_id",
    }
    assert changed["changes"] == [{"path": "$.payload.input.order", "old": "o-1", "new": "o-2"}]


def test_runs_of_different_tenants_are_not_found() -> None:
    run_a, steps_a, run_b, steps_b, _ = planted_pair(PLANTED[-1])
    other = dataclasses.replace(run_b, tenant_id=TenantId("tenant-2"))
    with pytest.raises(NotFoundError):
        diff_runs(run_a, steps_a, other, steps_b, profile=DEFAULT)


def test_steps_of_another_run_are_refused() -> None:
    run_a, steps_a, run_b, steps_b, _ = planted_pair(PLANTED[-1])
    with pytest.raises(UnprocessableError):
        diff_runs(run_a, steps_b, run_b, steps_b, profile=DEFAULT)


def test_empty_runs_compare_equal() -> None:
    run_a, _, run_b, _, _ = planted_pair(PLANTED[-1])
    diff = diff_runs(run_a, [], run_b, [], profile=DEFAULT)
    assert diff.pairs == () and diff.summary.similarity == 1.0 and diff.summary.first_divergence is None


def test_steps_may_come_in_any_order() -> None:
    run_a, steps_a, run_b, steps_b, _ = planted_pair(PLANTED[6])
    forward = diff_runs(run_a, steps_a, run_b, steps_b, profile=DEFAULT)
    shuffled = diff_runs(run_a, steps_a[::-1], run_b, steps_b[::-1], profile=DEFAULT)
    assert shuffled.to_dict() == forward.to_dict()


def test_redacted_values_compare_by_fingerprint() -> None:
    def with_secret(marker: str) -> list:
        script = base_script()
        fetch = next(k for k, spec in enumerate(script) if spec.key == "fetch")
        headers = {"authorization": marker}
        script[fetch] = dataclasses.replace(
            script[fetch], payload={**script[fetch].payload, "headers": headers}
        )
        return script

    same_a = with_secret("[REDACTED:denylist.auth:0123456789abcdef]")
    same_b = with_secret("[REDACTED:secret.bearer:0123456789abcdef]")
    other = with_secret("[REDACTED:denylist.auth:fedcba9876543210]")
    run_a, steps_a = build_run(same_a, seed=1)
    for script, expected in ((same_b, []), (other, ["$.payload.headers.authorization"])):
        run_b, steps_b = build_run(script, seed=2)
        diff = diff_runs(run_a, steps_a, run_b, steps_b, profile=DEFAULT)
        assert [c.path for p in diff.pairs for c in p.changes] == expected
