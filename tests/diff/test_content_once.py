"""GenAI content events in a diff: a changed message is reported once, in ``input``/``output``.

Model input/output are rebuilt from the older generation's content events (``content_events``); the
events stay in the payload for the timeline but without that content, and payloads stored before
that rule are compared as if it had applied (``diff.normalize._content_once``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

import pytest

from diff.api import diff_runs
from diff.normalize import BUILTIN_PROFILES
from diff.result import PairStatus, TraceDiff
from otlp_receiver.mapping import map_span
from otlp_receiver.model import Run, Step, StepDraft
from tests.diff.fixtures import run_from_drafts
from tests.factories import make_child, make_event, make_span


def _chat_run(question: str, *, stored_whole: bool = False) -> tuple[Run, list[Step]]:
    """An agent span and one chat span whose content came as v1.28-style span events."""
    root = make_span(name="invoke_agent travel", attributes={"gen_ai.operation.name": "invoke_agent"})
    events = (
        make_event(name="gen_ai.system.message", attributes={"gen_ai.system": "openai", "content": "be brief"}),
        make_event(name="gen_ai.user.message", attributes={"gen_ai.system": "openai", "content": question}),
        make_event(name="gen_ai.choice", attributes={"gen_ai.system": "openai", "index": 0,
                                                     "finish_reason": "stop", "message": '{"content": "sunny"}'}),
    )
    chat = make_child(root, name="chat gpt-4o", events=events,
                      attributes={"gen_ai.operation.name": "chat", "gen_ai.request.model": "gpt-4o"})
    drafts = [map_span(root), map_span(chat)]
    if stored_whole:  # as stored before events lost their lifted content
        drafts[1] = replace(drafts[1], payload=_with_whole_events(drafts[1].payload, chat.events))
    return run_from_drafts(drafts)


def _with_whole_events(payload: Mapping[str, Any], events: Any) -> dict[str, Any]:
    whole = [{"name": e.name, "time_ns": e.time_ns, "attributes": dict(e.attributes)} for e in events]
    return {**payload, "events": whole}


def _changes(diff: TraceDiff) -> list[str]:
    return [change.path for pair in diff.pairs if pair.status is not PairStatus.EQUAL for change in pair.changes]


@pytest.mark.parametrize("profile", ["default", "strict", "semantic"])
@pytest.mark.parametrize("stored_whole", [False, True], ids=["new", "stored-before"])
def test_one_changed_user_message_is_reported_exactly_once(profile: str, stored_whole: bool) -> None:
    run_a, steps_a = _chat_run("weather in Paris?", stored_whole=stored_whole)
    run_b, steps_b = _chat_run("weather in Rome?", stored_whole=stored_whole)
    diff = diff_runs(run_a, steps_a, run_b, steps_b, profile=BUILTIN_PROFILES[profile])
    content_changes = [path for path in _changes(diff) if path.startswith("$.payload")]
    assert content_changes == ["$.payload.input[1].parts[0].content"]


def test_same_conversation_stored_before_and_after_diffs_equal() -> None:
    run_a, steps_a = _chat_run("weather?", stored_whole=True)
    run_b, steps_b = _chat_run("weather?")
    diff = diff_runs(run_a, steps_a, run_b, steps_b, profile=BUILTIN_PROFILES["default"])
    assert diff.is_empty, _changes(diff)


def test_events_stay_visible_for_the_timeline() -> None:
    _, steps = _chat_run("weather?")
    draft: StepDraft = steps[1].draft
    events = draft.payload["events"]
    assert [(e["name"], e["content_in"]) for e in events] == [
        ("gen_ai.system.message", ["input"]), ("gen_ai.user.message", ["input"]), ("gen_ai.choice", ["output"])]
    assert all(e["time_ns"] and e["attributes"] == {"gen_ai.system": "openai"} for e in events)
    assert draft.payload["input"][1]["parts"][0]["content"] == "weather?"
