"""Normalization: a step as a profile sees it, and a digest of that.

A :class:`Normalizer` turns one step into a plain, JSON-ready *content* dict under a
:class:`~diff.profiles.Profile` (ids and times dropped, UUIDs and dates in text replaced by
placeholders, redaction markers reduced to their fingerprint, GenAI event content that the payload's
input/output already hold left out, ...), and :func:`digest_content` hashes it so equal steps are
recognised without a deep comparison.

The profile API (:data:`BUILTIN_PROFILES`, :func:`load_profiles`, :func:`get_profile`) lives in
``diff.profiles`` and is re-exported here. Pure: no I/O, no deepdiff (only ``diff.compare``).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from functools import lru_cache
from operator import attrgetter
from typing import Any, TypeAlias

import orjson
import xxhash

from diff.paths import DROP, IDLE, PathAutomaton
from diff.profiles import (
    BUILTIN_PROFILES,
    Profile,
    Substitution,
    compile_ignore_path,
    get_profile,
    load_profiles,
)
from diff.text import Parsed, markers, text_normalizer
from otlp_receiver.content_events import drop_lifted_content
from otlp_receiver.model import RedactionMeta, Step, StepDraft, StepType

__all__ = [
    "BUILTIN_PROFILES",
    "Normalizer",
    "Profile",
    "Substitution",
    "digest_content",
    "get_profile",
    "load_profiles",
]

Signature: TypeAlias = tuple[str, str, str | None, str | None]
"""``(type, name, tool_name, model_name)`` of a normalized step: what alignment pairs steps by."""
_SHAPE_FIELDS = ("type", "name", "tool_name", "model_name")
_HEAD_FIELDS = frozenset(
    {"type", "kind", "name", "status", "tool_name", "model_name", "provider", "agent_name", "error_type",
     "error_message"}
)  # fmt: skip
_STEP_FIELDS = (
    "name", "status", "tool_name", "model_name", "provider", "agent_name", "error_type",
    "error_message", "tokens_in", "tokens_out", "tokens_total", "tokens_cache_read",
    "tokens_cache_write", "tokens_reasoning", "cost_usd", "trace_id", "span_id", "parent_span_id",
    "tool_call_id", "decision_token", "start_ns", "end_ns",
)  # fmt: skip


# --- the normalizer ------------------------------------------------------------------------------


class Normalizer:
    """A profile compiled for one diff, with caches (keys and strings repeat across both runs).

    The walk has two speeds: while an ignore pattern may still match (``state`` not ``IDLE``) every
    key is run through the path automaton; below that — almost all of a payload — only the key
    filter and the text normalization apply.
    """

    def __init__(self, profile: Profile) -> None:
        """Set up the per-diff caches over ``profile``'s compiled rules (see :func:`_compile`).

        Raises:
            ConfigError: a pattern of the profile does not compile.
        """
        self.profile = profile
        rules = _compile(profile)
        self._paths = rules.paths.copy()
        self._key_res = rules.key_res
        self._subs = rules.subs
        self._kept: set[Any] = set(rules.kept)
        self._dropped: set[Any] = set(rules.dropped)
        self._texts: dict[str, str | Parsed] = {}
        self._text = text_normalizer(profile, self._subs, self._texts)
        self._plain, self._plain_dict = _plain_walker(
            self._kept, self._is_dropped_key, self._texts, self._text, markers(profile)
        )
        self._states = dict(rules.plan)
        self._head_plan, self._read_head = rules.head, rules.read_head
        self._heads: dict[tuple[Any, ...], tuple[dict[str, Any], Signature]] = {}
        self._rest, self._read_rest = rules.rest, rules.read_rest
        self._no_rest = (None,) * len(self._rest)
        self._payload_state = self._states.get("payload")
        self._redaction_state = self._states.get("redaction")
        self._special = rules.special

    def content(self, step: Step) -> dict[str, Any]:
        """The step as the profile sees it: a JSON-ready dict (``type``, typed fields, ``payload``).

        Fields the profile ignores entirely are never read; ``None`` fields are left out.
        """
        return self.content_and_signature(step)[0]

    def content_and_signature(self, step: Step) -> tuple[dict[str, Any], Signature]:
        """:meth:`content`, and the step's ``(type, name, tool_name, model_name)`` in it (``""``/``None`` if absent)."""
        draft = step.draft
        head = self._read_head(draft)
        try:
            cached, signature = self._heads[head]
            out = cached.copy()
        except KeyError:
            out = self._head_content(head)
            signature = _signature(out)
        except TypeError:  # an unhashable value where the model says str
            out = self._head_content(head)
            signature = _signature(out)
        rest = self._read_rest(draft)
        if rest[:-1] != self._no_rest:  # tokens, cost, ids, times: all unset on most steps
            for name, value in zip(self._rest, rest, strict=False):
                if value is not None:
                    kind = type(value)
                    out[name] = (
                        value if kind is int or kind is float else self._field(value, self._states[name])
                    )
        payload, state = draft.payload, self._payload_state
        if state is not None and payload:
            if "events" in payload:
                payload = _content_once(payload)
            out["payload"] = (
                self._walk_dict(payload, state)
                if type(payload) is dict and state != IDLE
                else self._walk(payload, state)
            )
        if self._redaction_state is not None and draft.redaction_meta.paths:
            out["redaction"] = self._walk(_redaction(draft.redaction_meta), self._redaction_state)
        for name, read, convert, field_state in self._special:
            value = read(step)
            if convert is not None:
                value = convert(value)
            if value is not None:
                out[name] = self._field(value, field_state)
        return out, signature

    def _head_content(self, head: tuple[Any, ...]) -> dict[str, Any]:
        """The normalized head fields, remembered for the next step with an equal head.

        Only heads of plain strings, ints (``kind`` from storage), enums and ``None`` are remembered:
        values of other types could compare equal to these and be normalized differently. Runs
        number some names (``agent step 7``), so this path is hot too.
        """
        out = {}
        remember = True
        for (name, convert, state), value in zip(self._head_plan, head, strict=False):
            if value is None:
                continue
            kind = type(value)
            if kind is not str and kind is not int and not isinstance(value, Enum):
                remember = False
            if convert is not None:
                value = convert(value)
                if value is None:
                    continue
            if type(value) is str and state == IDLE:
                text = self._texts.get(value) or self._text(value)
                out[name] = text if type(text) is str else self._plain(text.value)  # type: ignore[union-attr]
            else:
                out[name] = self._field(value, state)
        if remember:
            self._heads[head] = (out.copy(), _signature(out))
        return out

    def _field(self, value: Any, state: int) -> Any:
        kind = type(value)
        if kind is int or kind is float:
            return value
        if kind is str and state == IDLE:
            text = self._texts.get(value) or self._text(value)
            return text if type(text) is str else self._plain(text.value)  # type: ignore[union-attr]
        return self._walk(value, state)

    def _walk(self, value: Any, state: int) -> Any:
        if state == IDLE:
            return self._plain(value)
        kind = type(value)
        if kind is str:
            text = self._text(value)
            return text if type(text) is str else self._walk(text.value, state)  # type: ignore[union-attr]
        if kind is dict or isinstance(value, Mapping):
            return self._walk_dict(value, state)
        if kind is list or kind is tuple:
            moves = [(self._paths.step(state, i), item) for i, item in enumerate(value)]
            return [self._walk(item, following) for following, item in moves if following != DROP]
        return self._plain(value)

    def _walk_dict(self, value: Mapping[Any, Any], state: int) -> dict[Any, Any]:
        out = {}
        kept, moves = self._kept, self._paths.moves(state)
        for key, item in value.items():
            if key not in kept and self._is_dropped_key(key):
                continue
            following = moves.get(key)
            if following is None:
                following = self._paths.step(state, key)
            if following == IDLE:
                out[key] = self._plain_dict(item) if type(item) is dict else self._plain(item)
            elif following != DROP:
                out[key] = self._walk(item, following)
        return out

    def _is_dropped_key(self, key: Any) -> bool:
        """Whether the profile drops ``key`` wherever it appears (remembered in ``_kept``/``_dropped``)."""
        if key in self._dropped:
            return True
        if key in self._kept:
            return False
        if isinstance(key, str) and any(r.fullmatch(key) for r in self._key_res):
            self._dropped.add(key)
            return True
        self._kept.add(key)
        return False


@dataclass(frozen=True, slots=True)
class _Rules:
    """A profile compiled: shared by every diff under that profile and never modified."""

    paths: PathAutomaton
    """A template: each diff steps its own copy (the transition cache grows)."""
    key_res: tuple[re.Pattern[str], ...]
    subs: tuple[tuple[re.Pattern[str], str], ...]
    plan: tuple[tuple[str, int], ...]
    """The fields the profile keeps, with their automaton states."""
    kept: frozenset[str]
    dropped: frozenset[str]
    """Field names the key patterns keep or drop."""
    head: tuple[tuple[str, Callable[[Any], Any] | None, int], ...]
    """Fields that repeat from step to step (type, name, tool, model, status, ...): name, conversion, state."""
    read_head: Callable[[Any], tuple[Any, ...]]
    rest: tuple[str, ...]
    """The other plain draft fields (tokens, cost, ids, times)."""
    read_rest: Callable[[Any], tuple[Any, ...]]
    special: tuple[tuple[str, Callable[[Any], Any], Callable[[Any], Any] | None, int], ...]
    """step_id and duration_ns: only profiles that keep ids and times read them."""


@lru_cache(maxsize=64)
def _compile(profile: Profile) -> _Rules:
    """Compile ``profile`` once (~90 µs, a few percent of a 100-step diff); profiles are few and frozen.

    Each field group is read with one C-level ``attrgetter`` call (padded with an extra attribute so
    that it returns a tuple even for a single name; the pad is never zipped).

    Raises:
        ConfigError: a pattern of the profile does not compile.
    """
    patterns = [compile_ignore_path(path, f"profiles.{profile.name}.ignore") for path in profile.ignore]
    paths = PathAutomaton(patterns)
    key_res = tuple(re.compile(p) for p in profile.ignore_keys)
    fields = _SHAPE_FIELDS if profile.shape_only else tuple(_FIELDS)
    dropped = frozenset(name for name in fields if any(r.fullmatch(name) for r in key_res))
    plan = tuple(
        (name, state)
        for name in fields
        if name not in dropped and (state := paths.step(paths.start, name)) != DROP
    )
    head = tuple((name, _FIELDS[name][1], state) for name, state in plan if name in _HEAD_FIELDS)
    rest = tuple(name for name, _ in plan if name in _STEP_FIELDS and name not in _HEAD_FIELDS)
    special = tuple(
        (name, attrgetter(_FIELDS[name][0]), _FIELDS[name][1], state)
        for name, state in plan
        if name in ("step_id", "duration_ns")
    )
    return _Rules(
        paths=paths,
        key_res=key_res,
        subs=tuple((re.compile(s.pattern), s.replacement) for s in profile.substitutions),
        plan=plan,
        kept=frozenset(fields) - dropped,
        dropped=dropped,
        head=head,
        read_head=attrgetter(*(name for name, _, _ in head), "name"),
        rest=rest,
        read_rest=attrgetter(*rest, "name"),
        special=special,
    )


def _plain_walker(
    kept: set[Any],
    is_dropped_key: Callable[[Any], bool],
    texts: dict[str, str | Parsed],
    normalize_text: Callable[[str], str | Parsed],
    markers: tuple[str, str] | None,
) -> tuple[Callable[[Any], Any], Callable[[Mapping[Any, Any]], dict[Any, Any]]]:
    """The walk below the last ignore pattern: drops keys, normalizes text, copies the rest.

    Returns the walk of any value, and the walk of a dict (for callers that know they hold one).

    This is where a diff spends most of its time, so it is a closure (locals, not attribute
    lookups) handling leaves inline: about twice as fast as the same walk written as methods. A
    string holding neither of the profile's ``markers`` is kept as it is without a cache lookup
    (most long texts are unique, so caching them would only cost).
    """
    quick = markers is not None
    mark_a, mark_b = markers or ("", "")

    def text(value: str) -> Any:
        normalized = texts.get(value)
        if normalized is None:
            normalized = normalize_text(value)
        return normalized if type(normalized) is str else plain(normalized.value)  # type: ignore[union-attr]

    def plain_dict(value: Mapping[Any, Any]) -> dict[Any, Any]:
        out = {}
        for key, item in value.items():
            if key not in kept and is_dropped_key(key):
                continue
            kind = type(item)
            if kind is str:
                if quick and mark_a not in item and mark_b not in item:
                    out[key] = item
                else:
                    normalized = texts.get(item)
                    out[key] = normalized if type(normalized) is str else text(item)
            elif kind is dict:
                out[key] = plain_dict(item)
            elif kind is list:
                out[key] = plain_list(item)
            elif kind is int or kind is float or kind is bool or item is None:
                out[key] = item
            else:
                out[key] = plain(item)
        return out

    def plain_list(value: Sequence[Any]) -> list[Any]:
        items = []
        for item in value:
            kind = type(item)
            if kind is str:
                items.append(item if quick and mark_a not in item and mark_b not in item else text(item))
            elif kind is dict:
                items.append(plain_dict(item))
            elif kind is int or kind is float or kind is bool or item is None:
                items.append(item)
            else:
                items.append(plain(item))
        return items

    def plain(value: Any) -> Any:
        kind = type(value)
        if kind is dict or (kind is not str and kind is not list and isinstance(value, Mapping)):
            return plain_dict(value)
        if kind is list or kind is tuple:
            return plain_list(value)
        if kind is str:
            return value if quick and mark_a not in value and mark_b not in value else text(value)
        return value.hex() if kind is bytes else value

    return plain, plain_dict


def _content_once(payload: Mapping[str, Any]) -> Mapping[str, Any]:
    """The payload without event content its ``input``/``output`` hold (the ingest rule, ``drop_lifted_content``).

    Payloads stored since that rule already are (the call finds nothing to do); older ones kept GenAI content
    events whole, so a changed message would otherwise be reported twice, once in ``input`` and once in
    ``events``. Stored bytes are never changed: only what the diff compares.
    """
    events = payload["events"]
    if type(events) is not list:
        return payload
    kept = drop_lifted_content(events, payload.get("input"), payload.get("output"))
    return payload if kept is events else {**payload, "events": kept}


def _signature(content: Mapping[str, Any]) -> Signature:
    return (
        content.get("type", ""),
        content.get("name", ""),
        content.get("tool_name"),
        content.get("model_name"),
    )


_TYPE_NAMES = {kind: kind.value for kind in StepType}


def _type_name(kind: StepType) -> str:
    return _TYPE_NAMES.get(kind) or str(kind)


def _duration(draft: StepDraft) -> int:
    return draft.end_ns - draft.start_ns


def _non_empty(payload: Mapping[str, Any]) -> Mapping[str, Any] | None:
    return payload or None


def _redaction(meta: RedactionMeta) -> dict[str, Any] | None:
    if not meta.paths:
        return None
    return {"paths": list(meta.paths), "rules": [[rule.rule_id, rule.reason] for rule in meta.rules]}


_FIELDS: dict[str, tuple[str, Callable[[Any], Any] | None]] = {
    "type": ("draft.type", _type_name),
    "step_id": ("step_id", None),
    **{name: (f"draft.{name}", None) for name in _STEP_FIELDS},
    "kind": ("draft.kind", int),
    "duration_ns": ("draft", _duration),
    "payload": ("draft.payload", _non_empty),
    "redaction": ("draft.redaction_meta", _redaction),
}
"""Each field of a step's content: the attribute it is read from, and a conversion. ``seq``, the
run's identity and the chain hashes are never compared: they differ by construction."""


def digest_content(content: Mapping[str, Any]) -> int:
    """A 64-bit hash of the canonical JSON of ``content`` (sorted keys): equal digests ⇔ equal content.

    XXH3 rather than the built-in ``hash()``: digests also order the alignment (which side is "moved"), and
    ``hash()`` is salted per process, so the same two runs would diff differently after a restart."""
    try:
        data = orjson.dumps(content, option=orjson.OPT_SORT_KEYS, default=repr)
    except orjson.JSONEncodeError:  # e.g. non-str keys or an int over 64 bits: a slower, total encoding
        data = repr(_sorted_repr(content)).encode()
    return xxhash.xxh3_64_intdigest(data)


def _sorted_repr(value: Any) -> Any:
    if isinstance(value, Mapping):
        return sorted((repr(k), _sorted_repr(v)) for k, v in value.items())
    if isinstance(value, list | tuple):
        return [_sorted_repr(v) for v in value]
    return repr(value)
