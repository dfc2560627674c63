"""The value a diff returns: a summary, aligned step pairs with field-level changes, the profile used.

Frozen dataclasses with ``to_dict()`` giving the JSON shape the API, the CLI (``--format json``) and
the UI share. No deepdiff types ever appear here (``diff.compare`` converts them).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, NamedTuple

from otlp_receiver.model import Step, StepType

_TYPE_NAMES = {kind: kind.value for kind in StepType}
_new_tuple = tuple.__new__
"""Builds a NamedTuple without the Python-level ``__new__`` (a diff builds a few per step)."""


class PairStatus(StrEnum):
    """How two aligned steps relate."""

    EQUAL = "equal"
    CHANGED = "changed"
    ADDED = "added"  # only in run B
    REMOVED = "removed"  # only in run A
    MOVED = "moved"  # in both runs, at another place among its siblings (may also carry changes)


class StepRef(NamedTuple):
    """Enough of a step for the UI to render its row and link to it.

    A NamedTuple rather than a frozen dataclass: a diff builds one per step, and this is ~5x cheaper.
    """

    seq: int
    step_id: str
    type: str
    name: str
    status: str
    tool_name: str | None
    model_name: str | None
    span_id: str

    @classmethod
    def from_step(cls, step: Step) -> StepRef:
        """The reference for ``step``."""
        draft = step.draft
        return _new_tuple(cls, (
            step.seq, step.step_id, _TYPE_NAMES.get(draft.type) or str(draft.type), draft.name, draft.status,
            draft.tool_name, draft.model_name, draft.span_id,
        ))  # fmt: skip

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return self._asdict()


@dataclass(frozen=True, slots=True)
class FieldChange:
    """One changed field of a normalized step; ``None`` stands for "absent" on the side that lacks it."""

    path: str
    """JSONPath-like: ``$.payload.input.messages[0].content``, ``$.payload.attributes['gen_ai.request.model']``."""
    old: Any
    new: Any

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return {"path": self.path, "old": self.old, "new": self.new}


class StepPair(NamedTuple):
    """Two aligned steps (either side may be missing) and what changed between them (a NamedTuple,
    like :class:`StepRef`, because a diff builds one per step)."""

    status: PairStatus
    a: StepRef | None
    b: StepRef | None
    changes: tuple[FieldChange, ...] = ()
    depth: int = 0
    """Depth in the span tree (0 = a root of the run)."""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return {
            "status": self.status.value,
            "a": None if self.a is None else self.a._asdict(),
            "b": None if self.b is None else self.b._asdict(),
            "changes": [change.to_dict() for change in self.changes],
            "depth": self.depth,
        }


@dataclass(frozen=True, slots=True)
class Delta:
    """A number in each run and B − A (``None`` when either side is unknown)."""

    a: int | float | None
    b: int | float | None

    @property
    def delta(self) -> int | float | None:
        """B − A, or ``None``."""
        if self.a is None or self.b is None:
            return None
        delta = self.b - self.a
        return round(delta, 12) if isinstance(delta, float) else delta

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return {"a": self.a, "b": self.b, "delta": self.delta}


@dataclass(frozen=True, slots=True)
class Divergence:
    """Where the runs first differ: in each run, the lowest seq of a step not paired as equal.

    ``None`` on a side where every step is equal (e.g. run B only inserted steps).
    """

    a_seq: int | None
    b_seq: int | None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return {"a_seq": self.a_seq, "b_seq": self.b_seq}


@dataclass(frozen=True, slots=True)
class DiffSummary:
    """The headline numbers of a diff."""

    run_ids: tuple[str, str]
    status: tuple[str, str]
    duration_ms: Delta
    tokens: dict[str, Delta]
    """``in``, ``out``, ``cache_read``, ``cache_write``, ``reasoning``."""
    cost_usd: Delta
    step_counts: tuple[dict[str, int], dict[str, int]]
    models_added: tuple[str, ...]
    models_removed: tuple[str, ...]
    tools_added: tuple[str, ...]
    tools_removed: tuple[str, ...]
    first_divergence: Divergence | None
    similarity: float
    """In [0, 1]: 1 when every step pairs up equal, 0 when nothing pairs up."""
    pair_counts: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return {
            "runs": {"a": self.run_ids[0], "b": self.run_ids[1]},
            "status": {"a": self.status[0], "b": self.status[1]},
            "duration_ms": self.duration_ms.to_dict(),
            "tokens": {name: delta.to_dict() for name, delta in self.tokens.items()},
            "cost_usd": self.cost_usd.to_dict(),
            "step_counts": {"a": dict(self.step_counts[0]), "b": dict(self.step_counts[1])},
            "models": {"added": list(self.models_added), "removed": list(self.models_removed)},
            "tools": {"added": list(self.tools_added), "removed": list(self.tools_removed)},
            "first_divergence": None if self.first_divergence is None else self.first_divergence.to_dict(),
            "similarity": self.similarity,
            "pair_counts": dict(self.pair_counts),
        }


@dataclass(frozen=True, slots=True)
class ProfileInfo:
    """Which normalization profile a diff applied, and what it ignored."""

    name: str
    description: str
    ignored: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return {"name": self.name, "description": self.description, "ignored": list(self.ignored)}


@dataclass(frozen=True, slots=True)
class TraceDiff:
    """The diff of run A against run B.

    ``pairs`` are in aligned tree order (pre-order; siblings by start time). Structural ``span``
    steps that are equal are left out; their children are not.
    """

    summary: DiffSummary
    pairs: tuple[StepPair, ...]
    profile: ProfileInfo

    @property
    def is_empty(self) -> bool:
        """True when the profile sees no difference at all."""
        return all(pair.status is PairStatus.EQUAL for pair in self.pairs)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: ``{"summary": {...}, "pairs": [...], "profile": {"name", "description", "ignored"}}``."""
        return {
            "summary": self.summary.to_dict(),
            "pairs": [pair.to_dict() for pair in self.pairs],
            "profile": self.profile.to_dict(),
        }
