"""Terminal rendering: two aligned columns, markers, highlighted changes, optional ANSI colour."""

from __future__ import annotations

import re

from diff.api import diff_runs
from diff.normalize import BUILTIN_PROFILES
from diff.render import render_text
from diff.result import TraceDiff
from otlp_receiver.model import Run, Step
from tests.diff.fixtures import PLANTED, StepSpec, base_script, build_run

ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _runs(script_b: list[StepSpec]) -> tuple[Run, list[Step], Run, list[Step]]:
    run_a, steps_a = build_run(base_script(), seed=1)
    run_b, steps_b = build_run(script_b, seed=2)
    return run_a, steps_a, run_b, steps_b


def _diff_with_everything() -> TraceDiff:
    script_b = base_script()
    for planted in PLANTED[1:8]:  # all but the retry, which makes the fetch pairing ambiguous
        script_b = planted.edit(script_b)
    return diff_runs(*_runs(script_b), profile=BUILTIN_PROFILES["default"])


def test_plain_text_has_no_escapes_and_one_row_per_pair() -> None:
    diff = _diff_with_everything()
    text = render_text(diff, color=False)
    assert not ANSI.search(text)
    rows = [line for line in text.splitlines() if line[:2] in ("= ", "~ ", "+ ", "- ", "> ")]
    assert len(rows) == len(diff.pairs)
    assert {row[0] for row in rows} == {"=", "~", "-", ">"}
    retry = render_text(
        diff_runs(*_runs(PLANTED[0].edit(base_script())), profile=BUILTIN_PROFILES["default"]), color=False
    )
    assert any(line.startswith("+ ") and "[error]" in line for line in retry.splitlines())


def test_columns_are_aligned() -> None:
    text = render_text(_diff_with_everything(), color=False, width=100)
    rows = [line for line in text.splitlines() if line[:2] in ("= ", "~ ", "> ") and "#" in line[50:]]
    assert rows and len({line.index("#", 50) for line in rows}) == 1


def test_changed_fields_are_listed_under_their_row() -> None:
    text = render_text(_diff_with_everything(), color=False)
    assert '$.payload.input.order: "o-1" → "o-2"' in text
    assert '$.model_name: "gpt-4o" → "gpt-4o-mini"' in text
    assert '$.error_type: ∅ → "HTTPError"' in text


def test_header_summarises_the_runs() -> None:
    text = render_text(_diff_with_everything(), color=False)
    header = text.split("\n\n")[0]
    assert "run A" in header and "run B" in header and "profile default" in header
    assert "models +gpt-4o-mini" in header and "tools -search_orders" in header
    assert "similarity" in header and "first divergence A #" in header


def test_color_highlights_rows_and_values() -> None:
    diff = _diff_with_everything()
    colored = render_text(diff, color=True)
    assert "\x1b[31m" in colored and "\x1b[32m" in colored and "\x1b[33m" in colored
    assert ANSI.sub("", colored) == render_text(diff, color=False)


def test_long_values_are_truncated() -> None:
    script_b = base_script()
    script_b[1] = script_b[1].__class__(**{**vars(script_b[1]), "payload": {"input": {"text": "x" * 500}}})
    run_a, steps_a = build_run(base_script(), seed=1)
    run_b, steps_b = build_run(script_b, seed=2)
    text = render_text(
        diff_runs(run_a, steps_a, run_b, steps_b, profile=BUILTIN_PROFILES["default"]), color=False
    )
    assert "x" * 500 not in text and "…" in text


def test_identical_runs_render_without_changes() -> None:
    run_a, steps_a = build_run(base_script(), seed=1)
    run_b, steps_b = build_run(base_script(), seed=2)
    text = render_text(
        diff_runs(run_a, steps_a, run_b, steps_b, profile=BUILTIN_PROFILES["default"]), color=False
    )
    assert "first divergence none" in text
    assert "→" not in text.split("\n\n")[1]
