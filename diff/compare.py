"""Field-level changes between two normalized steps, computed with deepdiff.

The only module that imports deepdiff; its types never leave it. DeepDiff costs tens of
microseconds per node it visits, so both sides are first pruned to the branches that actually
differ (a plain ``!=`` per branch, done in C), and deepdiff only walks that skeleton. Lists of equal
length are pruned index by index; lists whose length changed are handed over whole, so deepdiff
can report inserted and removed items.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from deepdiff import DeepDiff
from deepdiff.helper import NotPresent

from diff.paths import format_path
from diff.result import FieldChange
from otlp_receiver.errors import UnprocessableError

_REPORTS = (
    "values_changed", "type_changes", "dictionary_item_added", "dictionary_item_removed",
    "iterable_item_added", "iterable_item_removed", "attribute_added", "attribute_removed",
)  # fmt: skip


class _IndexMap(dict[int, Any]):
    """A pruned list: the differing items by index (so deepdiff reports ``[i]``, not a dict key)."""


def diff_contents(
    old: Mapping[str, Any], new: Mapping[str, Any], *, numeric_tolerance: float = 0.0
) -> tuple[FieldChange, ...]:
    """The changes from ``old`` to ``new``, sorted by path; empty when they are equal.

    Args:
        old: normalized content of the step in run A.
        new: normalized content of the step in run B.
        numeric_tolerance: relative tolerance under which two numbers count as equal.

    Raises:
        UnprocessableError: deepdiff failed on these values.
    """
    if old == new:
        return ()
    pruned_old, pruned_new = _prune(old, new)
    try:
        tree = DeepDiff(pruned_old, pruned_new, view="tree", threshold_to_diff_deeper=0)
    except Exception as exc:  # deepdiff's own errors have no common base class
        raise UnprocessableError(
            "cannot compare the two steps' contents", details={"diff": str(exc)}
        ) from exc
    changes = [_change(level) for report in _REPORTS for level in tree.get(report, ())]
    changes = [c for c in changes if not _within_tolerance(c, numeric_tolerance)]
    changes.sort(key=lambda change: _sort_key(change[0]))
    return tuple(
        FieldChange(format_path(parts), old_value, new_value) for parts, old_value, new_value in changes
    )


def _sort_key(parts: list[Any]) -> tuple[tuple[int, Any], ...]:
    return tuple((0, p) if isinstance(p, int) else (1, str(p)) for p in parts)


def _prune(old: Any, new: Any) -> tuple[Any, Any]:
    """Both values reduced to the branches where they differ (equal branches dropped)."""
    if isinstance(old, Mapping) and isinstance(new, Mapping):
        pruned_old, pruned_new = {}, {}
        for key, value in old.items():
            if key not in new:
                pruned_old[key] = value
            elif value != new[key]:
                pruned_old[key], pruned_new[key] = _prune(value, new[key])
        pruned_new.update((key, value) for key, value in new.items() if key not in old)
        return pruned_old, pruned_new
    if isinstance(old, list) and isinstance(new, list) and len(old) == len(new):
        pairs = [(i, x, y) for i, (x, y) in enumerate(zip(old, new, strict=True)) if x != y]
        pruned = [(i, *_prune(x, y)) for i, x, y in pairs]
        return _IndexMap((i, x) for i, x, _ in pruned), _IndexMap((i, y) for i, _, y in pruned)
    return old, new


def _change(level: Any) -> tuple[list[Any], Any, Any]:
    """(path parts, old, new) from a deepdiff tree-view level."""
    old = None if isinstance(level.t1, NotPresent) else level.t1
    new = None if isinstance(level.t2, NotPresent) else level.t2
    return level.path(output_format="list"), _plain(old), _plain(new)


def _plain(value: Any) -> Any:
    """Undo pruning wrappers so only JSON-ready values leave this module."""
    if isinstance(value, _IndexMap):
        return {str(k): _plain(v) for k, v in value.items()}
    return value


def _within_tolerance(change: tuple[Any, Any, Any], tolerance: float) -> bool:
    _, old, new = change
    if not tolerance or not _is_number(old) or not _is_number(new):
        return False
    return math.isclose(old, new, rel_tol=tolerance)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)
