"""The redaction engine: masks secrets and personal data in a span before anything is persisted.

What is walked: ``span.attributes``, ``span.resource``, every event's name and attributes, every link's
attributes, ``span.name`` and ``status_message`` (value rules only: a span name is a free-text field
that instrumentations fill with URLs and prompts; the Collector leaves names alone, we do not). Values are
searched inside lists and maps (OTLP array/kvlist values, keys of nested maps included) and inside JSON
carried as strings (``input.value``, ``gen_ai.input.messages``…: parsed, redacted inside, re-serialized).
Integers, floats and booleans are left alone unless a key rule covers them; bytes are searched when they
hold UTF-8 text.

A masked value becomes ``[REDACTED:<rule_id>:<fp>]``, ``fp`` being the first 16 hex digits of
HMAC-SHA256(tenant key, raw value): equal secrets compare equal across runs, nothing is recoverable.
Already-redacted content is recognised and never re-flagged: our own markers, the Collector redaction
processor's ``****`` masks, and (on spans whose ``redaction.masked.count`` says the Collector hashed
values) hex digests under key rules.

Speed: a clean span costs its share of one RE2 scan over the strings of its whole batch (keys are
decided once per distinct key and cached); only a span with a possible hit takes the exact, slower
rewrite. A span with nothing to redact is returned as the same object.

Pure: no I/O and no logging of values. Imports the standard library, orjson, google-re2 (through
``redact_rules``), its text helpers (``redact_text``), ``key_profile`` and the model.
"""

from __future__ import annotations

import bisect
import dataclasses
import re
from collections.abc import Mapping, Sequence
from typing import Any, Final

import orjson

from otlp_receiver.key_profile import is_small_shape
from otlp_receiver.model import RedactionMeta, RedactionRuleHit, Span
from otlp_receiver.redact_rules import (
    DEFAULT_RULES,
    UNANCHORED,
    VALIDATORS,
    RedactionPolicy,
    RedactionRule,
)
from otlp_receiver.redact_text import (
    INDEX,
    MEMBER,
    TOP,
    Path,
    decode_utf8,
    find_matches,
    fingerprint,
    fingerprint_bytes,
    is_already_masked,
    is_upstream_redacted,
    leaves_text,
    looks_like_json,
    merge_matches,
    parse_json,
    protected_regions,
    render_path,
    utf8_or_none,
)

__all__ = ["DEFAULT_RULES", "VALIDATORS", "RedactionPolicy", "RedactionRule", "Redactor", "fingerprint",
           "is_upstream_redacted"]

MAX_DEPTH: Final = 32
"""Nesting (maps, lists, JSON in strings) inspected; anything deeper is masked whole as ``limit.depth``."""
EMPTY_META: Final = RedactionMeta()
_KEY_CACHE_MAX: Final = 65_536
_CLEAN_CACHE_MAX: Final = 16_384
_CLEAN_CACHE_MAX_CHARS: Final = 64
_SHAPE_CACHE_MAX: Final = 1024
_NO_MATCH: Final = (-1, -1)
_SCALARS: Final = (int, float, bool, type(None))
_HEX_DIGEST = re.compile(r"[0-9a-f]{32}|[0-9a-f]{40}|[0-9a-f]{64}|[0-9a-f]{128}")
_DEPTH_RULE: Final = RedactionRule("limit.depth", "nested too deeply to inspect", "value", "(depth limit)")
_FINGERPRINT_KEY_MIN_BYTES: Final = 16


def _is_maskable(value: Any, depth: int = 0) -> bool:
    """Whether a key rule would mask something in ``value`` (not bool/None/empty/already masked)."""
    if value is None or isinstance(value, bool):
        return False
    if isinstance(value, str):
        return bool(value) and not is_already_masked(value)
    if depth > MAX_DEPTH:
        return True
    if isinstance(value, list | tuple):
        return any(_is_maskable(item, depth + 1) for item in value)
    if isinstance(value, Mapping):
        return any(_is_maskable(item, depth + 1) for item in value.values())
    return True


class Redactor:
    """Applies one tenant's :class:`RedactionPolicy` to spans. Thread-safe; keeps a per-key decision cache."""

    def __init__(self, policy: RedactionPolicy, *, fingerprint_key: bytes) -> None:
        """Bind a policy to the tenant's fingerprint secret (at least 16 bytes).

        Raises:
            ValueError: the fingerprint key is too short.
        """
        if not isinstance(fingerprint_key, bytes) or len(fingerprint_key) < _FINGERPRINT_KEY_MIN_BYTES:
            raise ValueError(f"fingerprint_key must be at least {_FINGERPRINT_KEY_MIN_BYTES} bytes")
        self.policy = policy
        self._fingerprint_key = fingerprint_key
        self._key_rules: dict[Any, RedactionRule | None] = {}
        self._ruled: dict[tuple[Any, ...], tuple[Any, ...]] = {}
        self.clean_strings: dict[str, None] = {}
        """Short strings already found clean (roles, model names, JSON keys…): bounded, never secrets."""

    def redact_span(self, span: Span) -> tuple[Span, RedactionMeta]:
        """The span with secrets masked, and where/why; the same object and an empty meta if clean."""
        return self.redact_spans((span,))[0]

    def redact_spans(self, spans: Sequence[Span]) -> list[tuple[Span, RedactionMeta]]:
        """:meth:`redact_span` of each span, with ONE scan over the strings of all of them.

        google-re2 releases the GIL for every match call, and under load each release is a wait for the
        GIL to come back; a call per span cost more than the scan. A hit only sends its span to the
        exact pass, so a scan across two spans' strings can cost time but never miss a secret."""
        out: list[tuple[Span, RedactionMeta]] = [(span, EMPTY_META) for span in spans]
        if not self.policy.batchable:
            suspects: list[int] = list(range(len(spans)))
        else:
            suspects, texts, owners = [], [], []
            for i, span in enumerate(spans):
                parts = self._span_parts(span)
                if parts is None:
                    suspects.append(i)
                else:
                    texts.append("\n".join(parts))
                    owners.append(i)
            suspects.extend(owners[k] for k in self.dirty_texts(texts))
        for i in suspects:
            span = spans[i]
            out[i] = _Rewrite(self, is_upstream_redacted(span)).span(span)
        return out

    def redact_payload(self, payload: Mapping[str, Any]) -> tuple[Mapping[str, Any], RedactionMeta]:
        """Redact a JSON-compatible step payload (REST ingest); paths are rooted at ``$`` (``$.input…``).

        Returns the same object and an empty meta when nothing matched.
        """
        parts: list[str] = []
        if self.policy.batchable and not self._collect_map(payload, parts, 0) \
                and not self.is_text_dirty("\n".join(parts)):
            return payload, EMPTY_META
        rewrite = _Rewrite(self, upstream=False)
        new = rewrite.mapping(payload, "$", 0)
        if not rewrite.paths:
            return payload, EMPTY_META
        return new, rewrite.meta()

    # -- fast path: is there anything at all? ------------------------------------------------------------
    def _span_parts(self, span: Span) -> list[str] | None:
        """The span's strings for the value scan; None if a key rule already decides it needs the exact pass."""
        parts = [span.name, span.status_message]
        if self._collect_map(span.attributes, parts, 0) or self._collect_map(span.resource, parts, 0):
            return None
        for event in span.events:
            parts.append(event.name)
            if self._collect_map(event.attributes, parts, 0):
                return None
        if any(self._collect_map(link.attributes, parts, 0) for link in span.links):
            return None
        return parts

    def _collect_map(self, mapping: Mapping[Any, Any], parts: list[str], depth: int) -> bool:
        """Gather a map's strings into ``parts``; True as soon as a key rule would mask something."""
        if depth == 0:
            return self._collect_top_map(mapping, parts)
        key_rule = self.key_rule
        for key, value in mapping.items():
            if key_rule(key) is not None and _is_maskable(value):
                return True
            if type(value) is str:
                if self._collect_str(value, parts, depth):
                    return True
            elif type(value) not in _SCALARS and self._collect_value(value, parts, depth + 1):
                return True
        return False

    def _collect_top_map(self, mapping: Mapping[Any, Any], parts: list[str]) -> bool:
        """:meth:`_collect_map` of attributes (top level): keys are judged once per key shape, since usually
        no key has a rule at all, and strings are gathered without a call each."""
        ruled = self._ruled_keys(mapping)
        if ruled and any(_is_maskable(mapping[key]) for key in ruled):
            return True
        raw_ok = self.policy.raw_json_ok
        for value in mapping.values():
            kind = type(value)
            if kind is str:
                if raw_ok:
                    parts.append(value)  # what _collect_str does when raw JSON may be scanned as is
                elif self._collect_str(value, parts, 0):
                    return True
            elif kind not in _SCALARS and self._collect_value(value, parts, 1):
                return True
        return False

    def _ruled_keys(self, mapping: Mapping[Any, Any]) -> tuple[Any, ...]:
        """The keys of ``mapping`` a key rule covers, cached per tuple of keys (small shapes only)."""
        keys = tuple(mapping)
        found = self._ruled.get(keys)
        if found is None:
            found = tuple(key for key in keys if self.key_rule(key) is not None)
            if is_small_shape(keys):
                if len(self._ruled) >= _SHAPE_CACHE_MAX:
                    self._ruled.clear()
                self._ruled[keys] = found
        return found

    def _collect_str(self, text: str, parts: list[str], depth: int) -> bool:
        """Add a string (raw JSON is scanned as is when the policy allows, else parsed first)."""
        if not self.policy.raw_json_ok and looks_like_json(text):
            parsed = parse_json(text)
            if parsed is not None:
                return self._collect_value(parsed, parts, depth + 1)
        parts.append(text)
        return False

    def _collect_value(self, value: Any, parts: list[str], depth: int) -> bool:
        """Gather strings of a nested value; True if it needs the exact pass (key hit, too deep)."""
        if depth > MAX_DEPTH:
            return True
        if isinstance(value, str):
            return self._collect_str(value, parts, depth)
        if isinstance(value, Mapping):
            parts.extend(str(key) for key in value)
            return self._collect_map(value, parts, depth)
        if isinstance(value, list | tuple):
            return any(self._collect_value(item, parts, depth + 1) for item in value)
        if isinstance(value, bytes | bytearray):
            text = utf8_or_none(value)
            if text is not None:
                parts.append(text)
        return False

    def is_text_dirty(self, text: str) -> bool:
        """True if ``text`` (plain or raw JSON) may hold a value-rule hit or a sensitive JSON key."""
        return bool(self.dirty_texts([text]))

    def dirty_texts(self, texts: Sequence[str]) -> list[int]:
        """Indexes of the texts that may hold a value-rule hit or a sensitive JSON key, in order.

        The texts are scanned as one buffer (one RE2 call when all are clean); after a hit the scan
        resumes at the next text."""
        detect = self.policy.detect
        if detect is None or not texts:
            return []
        encoded = [text.encode("utf-8", "surrogatepass") for text in texts]
        data = b"\n".join(encoded)
        starts, offset = [], 0
        for chunk in encoded:
            starts.append(offset)
            offset += len(chunk) + 1
        dirty: list[int] = []
        pos, end = 0, len(data)
        while pos <= end:
            spans = detect.Match(UNANCHORED, data, pos, end)
            if spans[0] == _NO_MATCH:
                break
            owner = bisect.bisect_right(starts, spans[0][0]) - 1
            value_hit = len(spans) == 1 or spans[1] == _NO_MATCH  # keycand is the last branch, group 1
            if value_hit or self._is_raw_key_sensitive(data[spans[1][0]:spans[1][1]]):
                dirty.append(owner)
                if owner + 1 == len(starts):
                    break
                pos = starts[owner + 1]
            else:
                pos = spans[0][0] + 1
        return dirty

    def _is_raw_key_sensitive(self, raw: bytes) -> bool:
        """A JSON key as written (escapes undecoded) is covered by a key rule; escaped keys count as yes."""
        if b"\\" in raw:
            return True
        return self.key_rule(decode_utf8(raw)) is not None

    def key_rule(self, key: Any) -> RedactionRule | None:
        """The key rule covering ``key`` (cached per distinct key)."""
        try:
            return self._key_rules[key]
        except KeyError:
            pass
        rule = self.policy.key_rule(key if isinstance(key, str) else str(key))
        if len(self._key_rules) >= _KEY_CACHE_MAX:
            self._key_rules.clear()
        self._key_rules[key] = rule
        return rule

    def remember_clean(self, text: str) -> None:
        """Cache a short string no value rule matches (bounded; only clean strings are kept)."""
        if len(self.clean_strings) >= _CLEAN_CACHE_MAX:
            self.clean_strings.clear()
        self.clean_strings[text] = None

    def marker(self, rule: RedactionRule, raw: bytes) -> str:
        """``[REDACTED:<rule_id>:<fingerprint>]`` for a raw value."""
        return f"[REDACTED:{rule.rule_id}:{fingerprint_bytes(self._fingerprint_key, raw)}]"


class _Rewrite:
    """The exact pass over one span: builds redacted copies and records paths and rules."""

    def __init__(self, redactor: Redactor, upstream: bool) -> None:
        self.redactor = redactor
        self.policy = redactor.policy
        self.upstream = upstream
        self.paths: list[str] = []
        self.hits: dict[str, RedactionRuleHit] = {}

    def span(self, span: Span) -> tuple[Span, RedactionMeta]:
        """The redacted span and its meta (the original span when nothing was masked)."""
        changes: dict[str, Any] = {
            "name": self.text(span.name, "$.name", 0),
            "status_message": self.text(span.status_message, "$.status.message", 0),
            "attributes": self.mapping(span.attributes, "$.attributes", 0, top=True),
            "resource": self.mapping(span.resource, "$.resource", 0, top=True),
            "events": self.events(span),
            "links": self.links(span),
        }
        if not self.paths:
            return span, EMPTY_META
        changed = {k: v for k, v in changes.items() if v is not getattr(span, k)}
        return dataclasses.replace(span, **changed), self.meta()

    def meta(self) -> RedactionMeta:
        """What was redacted: distinct paths in order, distinct rules in firing order."""
        return RedactionMeta(paths=tuple(dict.fromkeys(self.paths)), rules=tuple(self.hits.values()))

    def events(self, span: Span) -> Any:
        """Events with names and attributes redacted (the same tuple if unchanged)."""
        new = []
        for i, event in enumerate(span.events):
            name = self.text(event.name, f"$.events[{i}].name", 0)
            attributes = self.mapping(event.attributes, f"$.events[{i}].attributes", 0, top=True)
            changed = name is not event.name or attributes is not event.attributes
            new.append(dataclasses.replace(event, name=name, attributes=attributes) if changed else event)
        return span.events if all(a is b for a, b in zip(new, span.events, strict=True)) else tuple(new)

    def links(self, span: Span) -> Any:
        """Links with attributes redacted (the same tuple if unchanged)."""
        new = []
        for i, link in enumerate(span.links):
            attributes = self.mapping(link.attributes, f"$.links[{i}].attributes", 0, top=True)
            new.append(link if attributes is link.attributes else dataclasses.replace(link, attributes=attributes))
        return span.links if all(a is b for a, b in zip(new, span.links, strict=True)) else tuple(new)

    # -- values ------------------------------------------------------------------------------------------
    def record(self, path: Path, rules: list[RedactionRule]) -> None:
        """Note a redacted path and the rules that fired there."""
        self.paths.append(render_path(path))
        for rule in rules:
            self.hits.setdefault(rule.rule_id, RedactionRuleHit(rule.rule_id, rule.reason))

    def mapping(self, mapping: Mapping[Any, Any], base: Path, depth: int, *, top: bool = False) -> Any:
        """A map with key rules applied to its members and value rules inside (same object if unchanged)."""
        items: list[tuple[Any, Any]] = []
        changed = False
        kind = TOP if top else MEMBER
        clean, key_rule = self.redactor.clean_strings, self.redactor.key_rule
        for key, value in mapping.items():
            path: tuple[Any, Any, int] = (base, key, kind)
            new_key = key
            if not top and isinstance(key, str) and key not in clean:
                new_key = self.key(key, path, depth)
                path = (base, new_key, kind)
            rule = key_rule(key)
            if rule is not None and _is_maskable(value):
                new = self.mask_whole(value, rule)
                if new is not value:
                    self.record(path, [rule])
            elif type(value) in _SCALARS or (type(value) is str and value in clean):
                new = value
            else:
                new = self.value(value, path, depth)
            changed = changed or new is not value or new_key is not key
            items.append((new_key, new))
        return dict(items) if changed else mapping

    def key(self, key: str, path: tuple[Any, Any, int], depth: int) -> str:
        """A nested map key with value rules applied; its path is recorded with the redacted key."""
        mark = len(self.paths)
        new_key = self.text(key, path, depth)
        if new_key is not key:
            parent, _, kind = path
            self.paths[mark:] = [render_path((parent, new_key, kind))]
        return new_key

    def value(self, value: Any, path: Path, depth: int) -> Any:
        """Any attribute value, redacted (same object if unchanged)."""
        kind = type(value)
        if kind in _SCALARS:
            return value
        if depth > MAX_DEPTH:
            return self.too_deep(value, path)
        if kind is str or (kind is not dict and isinstance(value, str)):
            return self.text(value, path, depth)
        if kind is dict or isinstance(value, Mapping):
            return self.mapping(value, path, depth + 1)
        if kind is list or kind is tuple or isinstance(value, list | tuple):
            return self.sequence(value, path, depth + 1)
        if isinstance(value, bytes | bytearray):
            text = utf8_or_none(value)
            if text is not None:
                redacted = self.text(text, path, depth)
                return value if redacted is text else redacted.encode("utf-8")
        return value

    def sequence(self, items: list[Any] | tuple[Any, ...], path: Path, depth: int) -> Any:
        """A list or tuple, redacted item by item (same object, and type, if unchanged)."""
        copy = None
        clean = self.redactor.clean_strings
        for i, item in enumerate(items):
            if type(item) in _SCALARS or (type(item) is str and item in clean):
                continue
            new = self.value(item, (path, i, INDEX), depth)
            if new is not item:
                if copy is None:
                    copy = list(items)
                copy[i] = new
        if copy is None:
            return items
        return tuple(copy) if isinstance(items, tuple) else copy

    def too_deep(self, value: Any, path: Path) -> Any:
        """A value nested past MAX_DEPTH: masked whole (it cannot be inspected safely)."""
        if isinstance(value, Mapping | list | tuple):
            raw = leaves_text(value)
        elif isinstance(value, str):
            raw = value.encode("utf-8", "surrogatepass")
        else:
            return value
        self.record(path, [_DEPTH_RULE])
        return self.redactor.marker(_DEPTH_RULE, raw)

    def mask_whole(self, value: Any, rule: RedactionRule, depth: int = 0) -> Any:
        """Everything maskable in ``value`` replaced by markers (key rules); same object if nothing was."""
        if value is None or isinstance(value, bool):
            return value
        if isinstance(value, str):
            if not value or self.is_masked(value):
                return value
            return self.redactor.marker(rule, value.encode("utf-8", "surrogatepass"))
        if depth > MAX_DEPTH:
            return self.redactor.marker(rule, leaves_text(value))
        if isinstance(value, list | tuple):
            new = [self.mask_whole(item, rule, depth + 1) for item in value]
            if all(a is b for a, b in zip(new, value, strict=True)):
                return value
            return tuple(new) if isinstance(value, tuple) else new
        if isinstance(value, Mapping):
            masked = [(k, self.mask_whole(v, rule, depth + 1)) for k, v in value.items()]
            return value if all(new is old for (_, new), old in zip(masked, value.values(), strict=True)) \
                else dict(masked)
        raw = bytes(value) if isinstance(value, bytes | bytearray) else str(value).encode("utf-8", "surrogatepass")
        return self.redactor.marker(rule, raw)

    def is_masked(self, text: str) -> bool:
        """Already redacted: our marker, a ``****`` mask, or an upstream hex digest (on hashed spans)."""
        return is_already_masked(text) or (self.upstream and _HEX_DIGEST.fullmatch(text) is not None)

    # -- text --------------------------------------------------------------------------------------------
    def text(self, text: str, path: Path, depth: int) -> str:
        """A string with value rules applied (inside it, when it holds JSON)."""
        if not text:
            return text
        if looks_like_json(text):
            if self.policy.raw_json_ok and not self.redactor.is_text_dirty(text):
                return text
            parsed = parse_json(text)
            if parsed is not None:
                new = self.value(parsed, path, depth + 1)
                return text if new is parsed else orjson.dumps(new).decode("utf-8")
            return self.plain(text, path, raw=True)  # unparseable (e.g. truncated) JSON: raw-aware patterns
        return self.plain(text, path, raw=False)

    def plain(self, text: str, path: Path, *, raw: bool) -> str:
        """Mask value-rule matches in plain text."""
        cacheable = not raw and len(text) <= _CLEAN_CACHE_MAX_CHARS
        if cacheable and text in self.redactor.clean_strings:
            return text
        data = text.encode("utf-8", "surrogatepass")
        quick = self.policy.detect if raw else self.policy.leaf
        found = None
        if quick is not None and quick.Match(UNANCHORED, data, 0, len(data))[0] != _NO_MATCH:
            found = merge_matches(self.find(data, raw=raw))
        if not found:
            if cacheable:
                self.redactor.remember_clean(text)
            return text
        pieces: list[bytes] = []
        last = 0
        for start, end, rules in found:
            pieces += [data[last:start], self.redactor.marker(rules[0], data[start:end]).encode("ascii")]
            last = end
        pieces.append(data[last:])
        self.record(path, [rule for _, _, rules in found for rule in rules])
        return decode_utf8(b"".join(pieces))

    def find(self, data: bytes, *, raw: bool) -> list[tuple[int, int, int, RedactionRule]]:
        """Every validated match of every value rule: (start, end, rule order, rule)."""
        protected = protected_regions(data)
        found: list[tuple[int, int, int, RedactionRule]] = []
        matchers = self.policy.value_matchers
        rule_set = self.policy.raw_value_set if raw else self.policy.value_set
        orders = (rule_set.Match(data) if rule_set is not None else None) or range(len(matchers))
        for order in orders:
            matcher = matchers[order]
            for start, end in find_matches(matcher, data, raw=raw):
                if not any(start < p_end and p_start < end for p_start, p_end in protected):
                    found.append((start, end, order, matcher.rule))
        return found


