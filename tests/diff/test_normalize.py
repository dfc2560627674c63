"""Profiles: built-ins, operator profiles (and their errors), and what each one makes of a step."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from diff.normalize import (
    BUILTIN_PROFILES,
    Normalizer,
    Profile,
    digest_content,
    get_profile,
    load_profiles,
)
from diff.text import PLACEHOLDER_RE, placeholder, replace_placeholders
from otlp_receiver.errors import ConfigError, UnprocessableError
from otlp_receiver.model import RedactionMeta, RedactionRuleHit, Step, StepType
from tests.diff.fixtures import base_script, build_run


def _step(payload: dict[str, Any] | None = None, **draft: Any) -> Step:
    _, steps = build_run(base_script()[:4], seed=3)
    step = steps[3]  # a tool step
    changes = {"payload": payload} if payload is not None else {}
    return dataclasses.replace(step, draft=dataclasses.replace(step.draft, **changes, **draft))


def _content(profile: str | Profile, step: Step) -> dict[str, Any]:
    chosen = BUILTIN_PROFILES[profile] if isinstance(profile, str) else profile
    return Normalizer(chosen).content(step)


def test_builtin_profiles_are_the_four_documented_ones() -> None:
    assert set(BUILTIN_PROFILES) == {"default", "strict", "structure", "semantic"}
    assert all(profile.description for profile in BUILTIN_PROFILES.values())
    assert BUILTIN_PROFILES["strict"].ignored() == []
    assert "$.step_id" in BUILTIN_PROFILES["default"].ignored()


def test_default_drops_ids_times_and_durations_everywhere() -> None:
    step = _step({"attributes": {"gen_ai.tool.call.id": "call_1", "gen_ai.response.id": "r"},
                  "events": [{"name": "exception", "time_ns": 5}], "output": {"id": 1, "created_at": "x"}})  # fmt: skip
    content = _content("default", step)
    for key in ("step_id", "trace_id", "span_id", "parent_span_id", "tool_call_id", "start_ns", "end_ns",
                "duration_ns"):  # fmt: skip
        assert key not in content
    assert content["payload"] == {"attributes": {}, "events": [{"name": "exception"}], "output": {}}


def test_default_keeps_what_matters() -> None:
    content = _content("default", _step(tokens_in=10, cost_usd=0.5, error_type="E"))
    assert {"type", "name", "status", "tool_name", "tokens_in", "cost_usd", "error_type", "payload"} <= set(
        content
    )
    assert content["type"] == "tool" and type(content["type"]) is str


def test_default_replaces_uuids_and_iso_dates_in_text() -> None:
    text = "ticket 1b4e28ba-2fa1-11d2-883f-0016d3cca427 at 2025-03-01T10:20:30.5+02:00, due 2025-03-04"
    content = _content("default", _step({"output": {"text": text}}))
    assert content["payload"]["output"]["text"] == "ticket <uuid> at <datetime>, due <datetime>"


def test_default_drops_volatile_resource_attributes() -> None:
    resource = {"process.pid": 4242, "host.name": "pod-a", "service.version": "1.2.0"}
    content = _content("default", _step({"resource": resource}))
    assert content["payload"]["resource"] == {"service.version": "1.2.0"}


def test_redaction_markers_keep_only_their_fingerprint() -> None:
    content = _content(
        "default", _step({"input": {"key": "Bearer [REDACTED:denylist.auth:00ff00ff00ff00ff]"}})
    )
    assert content["payload"]["input"]["key"] == "Bearer [REDACTED:00ff00ff00ff00ff]"
    strict = _content("strict", _step({"input": {"key": "[REDACTED:denylist.auth:00ff00ff00ff00ff]"}}))
    assert strict["payload"]["input"]["key"] == "[REDACTED:denylist.auth:00ff00ff00ff00ff]"


def test_redaction_meta_is_part_of_the_content() -> None:
    meta = RedactionMeta(paths=("$.input.key",), rules=(RedactionRuleHit("denylist.auth", "secret"),))
    content = _content("default", _step(redaction_meta=meta))
    assert content["redaction"] == {"paths": ["$.input.key"], "rules": [["denylist.auth", "secret"]]}


def test_strict_keeps_everything() -> None:
    step = _step({"output": {"id": "1b4e28ba-2fa1-11d2-883f-0016d3cca427"}})
    content = _content("strict", step)
    assert content["step_id"] == step.step_id and content["start_ns"] == step.draft.start_ns
    assert content["payload"] == {"output": {"id": "1b4e28ba-2fa1-11d2-883f-0016d3cca427"}}


def test_structure_keeps_only_the_shape() -> None:
    assert _content("structure", _step(tokens_in=3, status="error")) == {
        "type": "tool", "name": "execute_tool search_orders", "tool_name": "search_orders",
    }  # fmt: skip


def test_semantic_folds_case_whitespace_and_json_key_order() -> None:
    one = _step({"input": {"q": "Hello   World\n", "args": '{"b": 1, "a": [1, 2]}'}})
    two = _step({"input": {"q": "hello world", "args": '{"a":[1,2],"b":1}'}})
    semantic = BUILTIN_PROFILES["semantic"]
    assert _content(semantic, one) == _content(semantic, two)
    assert digest_content(_content(semantic, one)) == digest_content(_content(semantic, two))
    assert _content("default", one) != _content("default", two)


def test_digest_ignores_key_order_and_sees_values() -> None:
    assert digest_content({"a": 1, "b": [1, {"x": 2, "y": 3}]}) == digest_content(
        {"b": [1, {"y": 3, "x": 2}], "a": 1}
    )
    assert digest_content({"a": 1}) != digest_content({"a": 2})
    assert digest_content({"big": 2**70}) != digest_content({"big": 2**70 + 1})  # past orjson's range


def test_bytes_and_tuples_become_json_values() -> None:
    content = _content("default", _step({"input": {"raw": b"\x01\x02", "pair": (1, 2)}}))
    assert content["payload"]["input"] == {"raw": "0102", "pair": [1, 2]}


def test_operator_profile_extends_a_builtin() -> None:
    doc = {"profiles": {"ci": {
        "extends": "default",
        "ignore": ["$.payload.input.limit", "$..['score']", "$.payload.output.result[*].name"],
        "ignore_keys": ["customer"],
        "substitutions": [{"pattern": r"o-\d+", "replacement": "<order>"}],
        "numeric_tolerance": 0.01,
        "ignore_case": True,
    }}}  # fmt: skip
    profile = load_profiles(doc)["ci"]
    assert profile.extends == "default" and profile.placeholders and profile.ignore_case
    assert profile.numeric_tolerance == 0.01
    payload = {"input": {"customer": "c-1", "limit": 5, "q": "o-17"},
               "output": {"score": 1, "result": [{"name": "x", "v": 1}], "deep": {"score": 2}}}  # fmt: skip
    assert _content(profile, _step(payload))["payload"] == {
        "input": {"q": "<order>"}, "output": {"result": [{"v": 1}], "deep": {}},
    }  # fmt: skip
    assert any("o-\\d+" in line for line in profile.ignored())


def test_operator_profile_can_ignore_a_list_item_by_index() -> None:
    profile = load_profiles({"profiles": {"p": {"ignore": ["$.payload.output.items[1]"]}}})["p"]
    assert _content(profile, _step({"output": {"items": ["a", "b", "c"]}}))["payload"] == {
        "output": {"items": ["a", "c"]}
    }


def test_no_config_gives_the_builtins() -> None:
    assert load_profiles(None) == dict(BUILTIN_PROFILES)
    assert load_profiles({}) == dict(BUILTIN_PROFILES)


@pytest.mark.parametrize(
    ("doc", "where"),
    [
        ({"profiles": {"x": {"ignore": ["payload.input"]}}}, "profiles.x.ignore[0]"),
        ({"profiles": {"x": {"ignore": ["$.a..", "$.b"]}}}, "profiles.x.ignore[0]"),
        ({"profiles": {"x": {"ignore": "$.a"}}}, "profiles.x.ignore"),
        ({"profiles": {"x": {"ignore_keys": ["("]}}}, "profiles.x.ignore_keys[0]"),
        ({"profiles": {"x": {"substitutions": [{"pattern": "a("}]}}}, "profiles.x.substitutions[0]"),
        ({"profiles": {"x": {"substitutions": [{"pattern": "(", "replacement": ""}]}}}, "profiles.x.substitutions[0].pattern"),
        ({"profiles": {"x": {"substitutions": [{"pattern": "a", "replacement": r"\2"}]}}},
         "profiles.x.substitutions[0].replacement"),
        ({"profiles": {"x": {"numeric_tolerance": 2}}}, "profiles.x.numeric_tolerance"),
        ({"profiles": {"x": {"numeric_tolerance": True}}}, "profiles.x.numeric_tolerance"),
        ({"profiles": {"x": {"ignore_case": "yes"}}}, "profiles.x.ignore_case"),
        ({"profiles": {"x": {"extends": "mine"}}}, "profiles.x.extends"),
        ({"profiles": {"x": {"colour": True}}}, "profiles.x"),
        ({"profiles": {"default": {}}}, "profiles.default"),
        ({"profiles": {"Bad Name": {}}}, "profiles.Bad Name"),
        ({"profiles": ["x"]}, "profiles"),
        ({"profile": {}}, "diff"),
        ("nope", "diff"),
    ],
)  # fmt: skip
def test_bad_profile_config_names_the_setting(doc: Any, where: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_profiles(doc)
    assert caught.value.details["path"] == where
    assert caught.value.message.startswith(where)


def test_get_profile_lists_the_known_names_when_unknown() -> None:
    profiles = load_profiles({"profiles": {"ci": {}}})
    assert get_profile(profiles, "ci").name == "ci"
    with pytest.raises(UnprocessableError) as caught:
        get_profile(profiles, "fuzzy")
    assert "ci, default, semantic, strict, structure" in caught.value.message
    assert caught.value.details["known_profiles"] == "ci, default, semantic, strict, structure"


def test_normalizer_reads_span_type_as_plain_string() -> None:
    content = _content("structure", _step(type=StepType.SPAN))
    assert content["type"] == "span" and type(content["type"]) is str


_PLACEHOLDER_TEXT = st.lists(
    st.one_of(
        st.sampled_from(["-", "T", ":", ".", "Z", "+", " ", "a", "x", "٣"]),
        st.from_regex(r"\d{1,4}", fullmatch=True),
        st.uuids().map(str),
        st.datetimes().map(lambda moment: moment.isoformat()),
    ),
    max_size=12,
).map("".join)


@settings(max_examples=500, deadline=None)
@given(_PLACEHOLDER_TEXT)
def test_placeholder_fast_path_equals_the_plain_substitution(text: str) -> None:
    assert replace_placeholders(text) == PLACEHOLDER_RE.sub(placeholder, text)


def test_a_step_head_is_normalized_the_same_whether_remembered_or_not() -> None:
    normalizer = Normalizer(BUILTIN_PROFILES["default"])
    stored = _step(kind=1)  # storage hands back the span kind as a plain int
    first, again = normalizer.content(_step()), normalizer.content(stored)
    assert first == again == Normalizer(BUILTIN_PROFILES["default"]).content(stored)
    assert type(again["kind"]) is int and type(again["type"]) is str
