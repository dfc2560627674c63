"""Argument conditions: JSONPaths, JSON scalar operands and the compiled form of each operator.

``match.args`` maps a JSONPath to ``{operator: operand}``; each pair becomes one ``Condition`` whose
``compiled`` field holds what ``governance.evaluate`` compares against (a scalar key, a set of them, or
an RE2 regex). Imports only the standard library, google-re2 and the package's errors and model.
"""

from __future__ import annotations

import math
import re
from typing import Any

import re2

from governance.policy.errors import _error, _fail, _type_name
from governance.policy.model import (
    MAX_CONDITIONS_PER_RULE,
    MAX_LIST_ITEMS,
    MAX_PATH_STEPS,
    MAX_PATTERN_CHARS,
    OPERATORS,
    Condition,
)

_PATH_STEP_RE = re.compile(
    r"""\.([A-Za-z_][A-Za-z0-9_\-]*)|\[(-?\d{1,9})\]|\['((?:[^'\\]|\\.)*)'\]|\["((?:[^"\\]|\\.)*)"\]"""
)


def parse_conditions(value: Any, hint: str) -> tuple[Condition, ...]:
    """Compile a rule's ``match.args`` mapping (JSONPath -> {operator: operand}) into conditions."""
    if not isinstance(value, dict):
        _fail(hint, f"expected a mapping of JSONPath to {{operator: operand}}, got {_type_name(value)}")
    conditions: list[Condition] = []
    for path, ops in value.items():
        steps = parse_jsonpath(path, hint)
        if not isinstance(ops, dict) or not ops:
            _fail(hint, f"{path!r}: expected a mapping of operator to operand")
        conditions += [_compile_condition(path, steps, op, operand, hint) for op, operand in ops.items()]
    if len(conditions) > MAX_CONDITIONS_PER_RULE:
        _fail(hint, f"{len(conditions)} conditions, over the limit of {MAX_CONDITIONS_PER_RULE}")
    return tuple(conditions)


def parse_jsonpath(path: Any, hint: str = "path") -> tuple[str | int, ...]:
    """Parse ``$``, ``.name``, ``['name']`` and ``[index]`` steps; no wildcards or filters."""
    if not isinstance(path, str) or not path.startswith("$"):
        _fail(hint, f"invalid JSONPath {path!r}: must start with '$'")
    steps: list[str | int] = []
    pos = 1
    while pos < len(path):
        m = _PATH_STEP_RE.match(path, pos)
        if m is None:
            _fail(hint, f"invalid JSONPath {path!r} at position {pos}")
        name, index, single, double = m.groups()
        quoted = single if single is not None else double
        steps.append(int(index) if index is not None else name or re.sub(r"\\(.)", r"\1", quoted or ""))
        pos = m.end()
    if len(steps) > MAX_PATH_STEPS:
        _fail(hint, f"JSONPath {path!r} is deeper than {MAX_PATH_STEPS} steps")
    return tuple(steps)


def scalar_key(value: Any) -> tuple[str, Any] | None:
    """A hashable key under which equal JSON scalars collide (1 == 1.0, but True != 1)."""
    if isinstance(value, bool):
        return ("b", value)
    if isinstance(value, int | float):
        return ("n", value)
    if isinstance(value, str):
        return ("s", value)
    return ("z", None) if value is None else None


def is_scalar(value: Any) -> bool:
    """JSON scalars allowed as operands: str, finite numbers, booleans and null."""
    if isinstance(value, float):
        return math.isfinite(value)
    return value is None or isinstance(value, str | int | bool)


def _compile_condition(
    path: str, steps: tuple[str | int, ...], op: Any, operand: Any, hint: str
) -> Condition:
    if op not in OPERATORS:
        _fail(hint, f"unknown operator {op!r}")
    where = f"{op!r} on {path!r}"
    if op == "exists":
        if not isinstance(operand, bool):
            _fail(hint, f"{where} needs true or false")
        return Condition(path, op, operand, steps, operand)
    if op in ("in", "not_in"):
        if not isinstance(operand, list) or len(operand) > MAX_LIST_ITEMS or not all(map(is_scalar, operand)):
            _fail(hint, f"{where} needs a list of at most {MAX_LIST_ITEMS} scalars")
        return Condition(path, op, tuple(operand), steps, frozenset(map(scalar_key, operand)))
    if not is_scalar(operand):
        _fail(hint, f"{where} needs a scalar operand, got {_type_name(operand)}")
    if op in ("gt", "gte", "lt", "lte") and (operand is None or isinstance(operand, bool)):
        _fail(hint, f"{where} needs a number or a string")
    if op == "matches":
        return Condition(path, op, operand, steps, _compile_regex(operand, hint, where))
    return Condition(path, op, operand, steps, scalar_key(operand))


def _compile_regex(pattern: Any, hint: str, where: str) -> Any:
    if not isinstance(pattern, str) or len(pattern) > MAX_PATTERN_CHARS:
        _fail(hint, f"{where} needs a regex string of at most {MAX_PATTERN_CHARS} characters")
    options = re2.Options()
    options.log_errors = False
    options.max_mem = 8 << 20
    try:
        return re2.compile(pattern, options)
    except re2.error as exc:
        message = exc.args[0].decode(errors="replace") if exc.args and isinstance(exc.args[0], bytes) else exc
        raise _error(hint, f"{where}: invalid RE2 regex: {message}") from exc
