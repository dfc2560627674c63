"""Normalization profiles: what a diff must not see.

A :class:`Profile` names what to ignore: ids, timestamps, volatile text, or everything but the
shape. The four built-ins live in :data:`BUILTIN_PROFILES`; operators add their own with
:func:`load_profiles` (JSONPath ignore lists, key patterns, regex substitutions, numeric
tolerance), and :func:`get_profile` resolves the name a request asks for. ``diff.normalize``
applies a profile to steps (and re-exports this module's API).

Pure data and validation: no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from types import MappingProxyType
from typing import Any

from diff.paths import PathPattern, compile_path
from otlp_receiver.errors import ConfigError, UnprocessableError

_PROFILE_NAME_RE = re.compile(r"[a-z0-9][a-z0-9_.-]{0,63}")


@dataclass(frozen=True, slots=True)
class Substitution:
    """A regex applied to every string before comparison (``re.sub`` semantics)."""

    pattern: str
    replacement: str


@dataclass(frozen=True, slots=True)
class Profile:
    """What a diff ignores. Built-ins are in :data:`BUILTIN_PROFILES`; see :func:`load_profiles`."""

    name: str
    description: str = ""
    ignore: tuple[str, ...] = ()
    """JSONPath patterns over a step's content (``$.start_ns``, ``$.payload.attributes['x']``, ``$..id``)."""
    ignore_keys: tuple[str, ...] = ()
    """Regexes; a dict key that fully matches one is dropped wherever it appears."""
    substitutions: tuple[Substitution, ...] = ()
    """Operator regexes applied to every string, after the built-in placeholders."""
    placeholders: bool = False
    """Replace UUIDs and ISO-8601 dates in text by ``<uuid>`` / ``<datetime>``."""
    redaction_by_fingerprint: bool = False
    """Compare ``[REDACTED:<rule>:<fp>]`` markers by fingerprint only."""
    ignore_case: bool = False
    ignore_whitespace: bool = False
    json_text: bool = False
    """Parse strings holding JSON objects/arrays, so key order and spacing inside them do not matter."""
    numeric_tolerance: float = 0.0
    """Relative tolerance for numbers (0 = exact)."""
    shape_only: bool = False
    """Compare only type, name, tool and model (the tree is compared by the alignment)."""
    extends: str | None = None

    def ignored(self) -> list[str]:
        """Human-readable list of everything this profile hides, for the diff's ``profile`` section."""
        out: list[str] = []
        if self.shape_only:
            out.append(
                "everything but $.type, $.name, $.tool_name, $.model_name (payload, status, tokens, cost)"
            )
        out += list(self.ignore)
        out += [f"keys matching /{pattern}/ at any depth" for pattern in self.ignore_keys]
        if self.placeholders:
            out.append("UUIDs and ISO-8601 dates in text (compared as <uuid>, <datetime>)")
        if self.redaction_by_fingerprint:
            out.append("redaction markers compared by fingerprint only")
        out += [f"text matching /{s.pattern}/ (replaced by {s.replacement!r})" for s in self.substitutions]
        out += self._loose_text()
        return out

    def _loose_text(self) -> list[str]:
        out = []
        if self.ignore_case:
            out.append("letter case in text")
        if self.ignore_whitespace:
            out.append("whitespace in text")
        if self.json_text:
            out.append("key order and spacing of JSON embedded in text")
        if self.numeric_tolerance:
            out.append(f"numeric differences within a relative {self.numeric_tolerance:g}")
        return out


_ID_TIME_FIELDS = (
    "$.step_id", "$.trace_id", "$.span_id", "$.parent_span_id", "$.tool_call_id", "$.decision_token",
    "$.start_ns", "$.end_ns", "$.duration_ns",
)  # fmt: skip
_VOLATILE_RESOURCE = tuple(
    f"$.payload.resource['{key}']"
    for key in ("process.pid", "process.parent_pid", "host.name", "k8s.pod.name", "k8s.pod.uid")
)
_DEFAULT_IGNORE_KEYS = (
    r"(?:.*[._])?(?:id|ids)",
    r".*[._](?:ns|ms|nanos|millis)",
    r"(?:.*[._])?(?:time|timestamp|created|created_at|updated_at|duration|latency|elapsed)",
)
DEFAULT_PROFILE = Profile(
    name="default",
    description="ignores ids, timestamps, durations, UUIDs/dates in text; redactions by fingerprint",
    ignore=_ID_TIME_FIELDS + _VOLATILE_RESOURCE,
    ignore_keys=_DEFAULT_IGNORE_KEYS,
    placeholders=True,
    redaction_by_fingerprint=True,
)
BUILTIN_PROFILES: Mapping[str, Profile] = MappingProxyType({
    "default": DEFAULT_PROFILE,
    "strict": Profile(name="strict", description="ignores nothing (except seq, run identity and hashes)"),
    "structure": replace(
        DEFAULT_PROFILE, name="structure", shape_only=True,
        description="compares only the shape: types, names, tools, models and the span tree",
    ),
    "semantic": replace(
        DEFAULT_PROFILE, name="semantic", ignore_case=True, ignore_whitespace=True, json_text=True,
        numeric_tolerance=1e-6,
        description="default + case/whitespace-insensitive text, JSON key order, numeric tolerance 1e-6",
    ),
})  # fmt: skip
"""The built-in profiles, by name. Operators cannot redefine them."""


def compile_ignore_path(path: str, where: str) -> PathPattern:
    """Compile one ignore-list path.

    Raises:
        ConfigError: naming ``where`` and what is wrong with the path.
    """
    try:
        return compile_path(path)
    except ValueError as exc:
        raise ConfigError(f"{where}: bad JSONPath {path!r}: {exc}", details={"path": where}) from exc


# --- operator profiles -------------------------------------------------------------------------

_SPEC_KEYS = frozenset(
    {"extends", "description", "ignore", "ignore_keys", "substitutions", "numeric_tolerance",
     "ignore_case", "ignore_whitespace", "json_text"}
)  # fmt: skip


def load_profiles(doc: Mapping[str, Any] | None) -> dict[str, Profile]:
    """The built-in profiles plus those an operator defines in ``doc``.

    ``doc`` is the diff section of the configuration::

        profiles:
          ci:
            extends: default            # a built-in; default "default"
            ignore: ["$.payload.attributes['gen_ai.response.model']"]
            ignore_keys: ["request_.*"]
            substitutions: [{pattern: "req_[0-9a-z]+", replacement: "<req>"}]
            numeric_tolerance: 0.01     # relative
            ignore_case: true           # also ignore_whitespace, json_text

    Raises:
        ConfigError: naming the offending setting (e.g. ``profiles.ci.ignore[0]``) and the problem.
    """
    profiles = dict(BUILTIN_PROFILES)
    if doc is None:
        return profiles
    _expect(isinstance(doc, Mapping), "diff", "must be a mapping")
    _expect(set(doc) <= {"profiles"}, "diff", f"unknown keys {sorted(set(doc) - {'profiles'})}")
    specs = doc.get("profiles") or {}
    _expect(isinstance(specs, Mapping), "profiles", "must be a mapping of name → profile")
    for name, spec in specs.items():
        where = f"profiles.{name}"
        _expect(isinstance(name, str) and bool(_PROFILE_NAME_RE.fullmatch(name)), where, "bad profile name")
        _expect(name not in BUILTIN_PROFILES, where, "built-in profiles cannot be redefined")
        profiles[name] = _build_profile(name, spec, where)
    return profiles


def _build_profile(name: str, spec: Any, where: str) -> Profile:
    _expect(isinstance(spec, Mapping), where, "must be a mapping")
    _expect(set(spec) <= _SPEC_KEYS, where, f"unknown keys {sorted(set(spec) - _SPEC_KEYS)}")
    base_name = spec.get("extends", "default")
    _expect(base_name in BUILTIN_PROFILES, f"{where}.extends", f"must be one of {sorted(BUILTIN_PROFILES)}")
    base = BUILTIN_PROFILES[base_name]
    profile = replace(
        base,
        name=name,
        extends=base_name,
        description=str(spec.get("description", f"{base_name} + operator settings")),
        ignore=base.ignore + _paths(spec.get("ignore", []), f"{where}.ignore"),
        ignore_keys=base.ignore_keys + _regexes(spec.get("ignore_keys", []), f"{where}.ignore_keys"),
        substitutions=base.substitutions + _substitutions(spec.get("substitutions", []), f"{where}.substitutions"),
        numeric_tolerance=_tolerance(spec.get("numeric_tolerance", base.numeric_tolerance), where),
        **{flag: _flag(spec, flag, getattr(base, flag), where) for flag in ("ignore_case", "ignore_whitespace", "json_text")},
    )  # fmt: skip
    return profile


def _paths(items: Any, where: str) -> tuple[str, ...]:
    for i, path in enumerate(_list(items, where)):
        _expect(isinstance(path, str), f"{where}[{i}]", "must be a string")
        compile_ignore_path(path, f"{where}[{i}]")
    return tuple(items)


def _regexes(items: Any, where: str) -> tuple[str, ...]:
    for i, pattern in enumerate(_list(items, where)):
        _check_regex(pattern, f"{where}[{i}]")
    return tuple(items)


def _substitutions(items: Any, where: str) -> tuple[Substitution, ...]:
    out = []
    for i, item in enumerate(_list(items, where)):
        at = f"{where}[{i}]"
        _expect(isinstance(item, Mapping) and set(item) == {"pattern", "replacement"}, at,
                "must be a mapping with exactly 'pattern' and 'replacement'")  # fmt: skip
        regex = _check_regex(item["pattern"], f"{at}.pattern")
        _expect(isinstance(item["replacement"], str), f"{at}.replacement", "must be a string")
        try:
            regex.sub(item["replacement"], "")
        except re.error as exc:
            raise ConfigError(f"{at}.replacement: {exc}", details={"path": f"{at}.replacement"}) from exc
        out.append(Substitution(item["pattern"], item["replacement"]))
    return tuple(out)


def _check_regex(pattern: Any, where: str) -> re.Pattern[str]:
    _expect(isinstance(pattern, str), where, "must be a string")
    try:
        return re.compile(pattern)
    except re.error as exc:
        raise ConfigError(f"{where}: bad regex {pattern!r}: {exc}", details={"path": where}) from exc


def _tolerance(value: Any, where: str) -> float:
    ok = isinstance(value, int | float) and not isinstance(value, bool) and 0 <= value < 1
    _expect(ok, f"{where}.numeric_tolerance", "must be a number in [0, 1)")
    return float(value)


def _flag(spec: Mapping[str, Any], flag: str, default: bool, where: str) -> bool:
    value = spec.get(flag, default)
    _expect(isinstance(value, bool), f"{where}.{flag}", "must be true or false")
    return bool(value)


def _list(items: Any, where: str) -> list[Any]:
    _expect(isinstance(items, list | tuple), where, "must be a list")
    return list(items)


def _expect(ok: bool, where: str, problem: str) -> None:
    if not ok:
        raise ConfigError(f"{where}: {problem}", details={"path": where})


def get_profile(profiles: Mapping[str, Profile], name: str) -> Profile:
    """The profile called ``name``.

    Raises:
        UnprocessableError: no such profile; the message and ``details`` list the known names.
    """
    profile = profiles.get(name)
    if profile is None:
        known = ", ".join(sorted(profiles))
        raise UnprocessableError(
            f"unknown normalize_profile {name!r}; known profiles: {known}",
            details={"normalize_profile": f"unknown profile {name!r}", "known_profiles": known},
        )
    return profile
