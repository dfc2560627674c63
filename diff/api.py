"""The diff entry point: :func:`diff_runs` compares two runs and their steps under a profile.

Steps are normalized and hashed (the contents are not kept); the two span forests are aligned
(``diff.align``); only the pairs whose digests differ are normalized again and compared field by
field (``diff.compare``). To make the result
antisymmetric (diff(B, A) mirrors diff(A, B)), the alignment of every sibling group and every
comparison run in a canonical orientation and are mirrored back when the caller's order is the
other one.
"""

from __future__ import annotations

import gc
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from operator import attrgetter
from typing import Any

from diff.align import Aligned, Node, align_forests, build_forest
from diff.compare import diff_contents
from diff.normalize import Normalizer, Profile, digest_content
from diff.result import (
    Delta,
    DiffSummary,
    Divergence,
    FieldChange,
    PairStatus,
    ProfileInfo,
    StepPair,
    StepRef,
    TraceDiff,
)
from otlp_receiver.errors import NotFoundError, UnprocessableError
from otlp_receiver.model import Run, Step, StepType

_new_tuple = tuple.__new__
"""Builds a :class:`StepPair` without its Python-level ``__new__`` (one per aligned row)."""
_PAIR_WEIGHT = {PairStatus.EQUAL: 1.0, PairStatus.MOVED: 0.75, PairStatus.CHANGED: 0.5}
"""How much a pair counts towards the similarity score (a moved pair with changes counts 0.5)."""


@dataclass(slots=True)
class _Side:
    """One run's steps and the roots of their span forest (nodes carry digests, not contents)."""

    steps: Sequence[Step]
    roots: list[Node]

    @classmethod
    def build(cls, steps: Sequence[Step], normalizer: Normalizer) -> _Side:
        """Normalize, hash and let go of each step's content in turn.

        Keeping every content until the end measured 15-20% slower at 1,000 steps (a cold mass deallocation, and
        no memory reuse); the few pairs whose digests differ are normalized again by :func:`_pair`.
        """
        content_of = normalizer.content_and_signature
        nodes = []
        for index, step in enumerate(steps):
            content, signature = content_of(step)
            draft = step.draft
            order = (draft.start_ns, step.seq)
            nodes.append(
                Node(index, digest_content(content), signature, order, draft.span_id, draft.parent_span_id)
            )
        return cls(steps, build_forest(nodes))


def diff_runs(
    run_a: Run, steps_a: Sequence[Step], run_b: Run, steps_b: Sequence[Step], *, profile: Profile
) -> TraceDiff:
    """Compare run A (the baseline) with run B.

    Args:
        run_a: the baseline run.
        steps_a: all of run A's steps (any order).
        run_b: the run compared against the baseline.
        steps_b: all of run B's steps.
        profile: what to ignore (see ``diff.normalize``).

    Returns:
        The diff; when the profile sees no difference every pair is ``equal`` (``TraceDiff.is_empty``).

    Raises:
        NotFoundError: the runs belong to different tenants (the caller must not learn of the other).
        UnprocessableError: a step does not belong to the run it was passed with.
    """
    _check_runs(run_a, steps_a, run_b, steps_b)
    with _gc_paused():
        visible, matched = _aligned_pairs(steps_a, steps_b, profile)
        summary = _summarize(run_a, steps_a, run_b, steps_b, visible, matched)
    return TraceDiff(
        summary, tuple(visible), ProfileInfo(profile.name, profile.description, tuple(profile.ignored()))
    )


def _aligned_pairs(
    steps_a: Sequence[Step], steps_b: Sequence[Step], profile: Profile
) -> tuple[list[StepPair], float]:
    """The visible pairs in tree order, and the weighted count of matched pairs (see :func:`_similarity`).

    An equal structural span is only counted (a quarter of the rows of a typical agent run). The
    normalized contents, nodes and rows built on the way die when this returns, still inside
    :func:`_gc_paused`: the collector then only ever sees the (much smaller) result.
    """
    normalizer = Normalizer(profile)
    side_a, side_b = _Side.build(steps_a, normalizer), _Side.build(steps_b, normalizer)
    visible, matched = [], 0.0
    for row in align_forests(side_a.roots, side_b.roots):
        a, b = row.a, row.b
        if a is None or b is None:
            visible.append(_pair(row, side_a, side_b, normalizer))
            continue
        if not row.moved and a.digest == b.digest and side_a.steps[a.index].draft.type is StepType.SPAN:
            matched += _PAIR_WEIGHT[PairStatus.EQUAL]
            continue
        pair = _pair(row, side_a, side_b, normalizer)
        matched += _pair_weight(pair)
        if not _is_hidden(pair):
            visible.append(pair)
    return visible, matched


MAX_GC_PAUSE_S = 1.0
"""Longest continuous pause of the collector by overlapping diffs (a 10,000-step diff takes ~0.2-0.3 s)."""


class _GcPause:
    """The process-wide pause of the cyclic garbage collector, shared by the diffs that overlap.

    ``gc.disable()`` is process-wide, so two diffs in two threads must not each save and restore it: the first
    to finish would re-enable it under the second, or the second, finding it off, would never turn it back on.
    Instead a count under a lock: the first diff in saves ``gc.isenabled()`` and turns the collector off, the
    last one out restores that saved state. So the collector is off while diffs run (for every thread, ingest
    included: the price of the pause, see :func:`_gc_paused`) and, once none runs, is as the first one found
    it. Diffs that keep overlapping would keep it off indefinitely, so a diff that arrives when the pause has
    lasted ``max_pause_s`` lifts it instead of joining it: the collector runs until the overlap ends, and the
    next diff after that starts a new pause. Code that toggles the collector while diffs run is overridden when
    they end.
    """

    def __init__(self, *, max_pause_s: float = MAX_GC_PAUSE_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._lock = threading.Lock()
        self._holders = 0
        self._was_enabled = False
        self._since = 0.0
        self._max_pause_s = max_pause_s
        self._clock = clock

    @property
    def holders(self) -> int:
        """Diffs running under the pause (or its lifted tail) now."""
        return self._holders

    def enter(self) -> None:
        """Join the pause: the first diff turns the collector off, one arriving after ``max_pause_s`` back on."""
        with self._lock:
            if self._holders == 0:
                self._was_enabled, self._since = gc.isenabled(), self._clock()
                gc.disable()
            elif self._was_enabled and self._clock() - self._since > self._max_pause_s:
                gc.enable()
            self._holders += 1

    def leave(self) -> None:
        """Leave the pause (the last to leave restores the collector as the first found it)."""
        with self._lock:
            self._holders -= 1
            if self._holders == 0 and self._was_enabled:
                gc.enable()


_GC_PAUSE = _GcPause()


@contextmanager
def _gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector for the duration of one diff (shared with overlapping diffs).

    A diff allocates some twenty acyclic containers per step; at the default collector thresholds the
    collections this triggers rescan the heap and cost 2.5-3.5x the diff itself at 10,000 steps (A/B with
    and without the pause, ``benchmarks/test_diff.py``). At the thresholds ``traceward serve`` sets (young
    collections every 50,000 allocations) the gain shrinks to 1.0-1.7x at 10,000 steps and noise below
    that; the CLI's ``traceward diff`` keeps the defaults. Nothing here creates cycles, so reference counting
    frees it all. See :class:`_GcPause` for how overlapping diffs share the pause.
    """
    _GC_PAUSE.enter()
    try:
        yield
    finally:
        _GC_PAUSE.leave()


def _check_runs(run_a: Run, steps_a: Sequence[Step], run_b: Run, steps_b: Sequence[Step]) -> None:
    if run_a.tenant_id != run_b.tenant_id:
        raise NotFoundError("run not found", details={"runB": "no such run"})
    for run, steps in ((run_a, steps_a), (run_b, steps_b)):
        if any(step.run_id != run.run_id or step.tenant_id != run.tenant_id for step in steps):
            raise UnprocessableError(f"steps passed with run {run.run_id} belong to another run")


def _pair(row: Aligned, side_a: _Side, side_b: _Side, normalizer: Normalizer) -> StepPair:
    a, b = row.a, row.b
    ref_a = StepRef.from_step(side_a.steps[a.index]) if a else None
    ref_b = StepRef.from_step(side_b.steps[b.index]) if b else None
    if a is None or b is None:
        status = PairStatus.REMOVED if b is None else PairStatus.ADDED
        return _new_tuple(StepPair, (status, ref_a, ref_b, (), row.depth))
    changes: tuple[FieldChange, ...] = ()
    if a.digest != b.digest:
        old, new = normalizer.content(side_a.steps[a.index]), normalizer.content(side_b.steps[b.index])
        changes = _changes(old, new, a.digest < b.digest, normalizer.profile)
    status = PairStatus.MOVED if row.moved else PairStatus.CHANGED if changes else PairStatus.EQUAL
    return _new_tuple(StepPair, (status, ref_a, ref_b, changes, row.depth))


def _changes(
    old: dict[str, Any], new: dict[str, Any], forward: bool, profile: Profile
) -> tuple[FieldChange, ...]:
    """Field changes, computed old → new when ``forward`` else new → old and mirrored (antisymmetry)."""
    tolerance = profile.numeric_tolerance
    if forward:
        return diff_contents(old, new, numeric_tolerance=tolerance)
    mirrored = diff_contents(new, old, numeric_tolerance=tolerance)
    return tuple(FieldChange(change.path, change.new, change.old) for change in mirrored)


_SPAN = StepType.SPAN.value


def _is_hidden(pair: StepPair) -> bool:
    """Structural spans are reported only when they differ."""
    ref = pair.a or pair.b
    return pair.status is PairStatus.EQUAL and ref is not None and ref.type == _SPAN


# --- summary ---------------------------------------------------------------------------------


def _summarize(
    run_a: Run, steps_a: Sequence[Step], run_b: Run, steps_b: Sequence[Step], visible: Sequence[StepPair],
    matched: float,
) -> DiffSummary:  # fmt: skip
    models = (
        _names(run_a.model_names, steps_a, "model_name"),
        _names(run_b.model_names, steps_b, "model_name"),
    )
    tools = _names(run_a.tool_names, steps_a, "tool_name"), _names(run_b.tool_names, steps_b, "tool_name")
    return DiffSummary(
        run_ids=(run_a.run_id, run_b.run_id),
        status=(run_a.status.value, run_b.status.value),
        duration_ms=Delta(run_a.duration_ms, run_b.duration_ms),
        tokens=_token_deltas(run_a, run_b),
        cost_usd=Delta(run_a.cost_usd, run_b.cost_usd),
        step_counts=(_count_types(steps_a), _count_types(steps_b)),
        models_added=tuple(sorted(models[1] - models[0])),
        models_removed=tuple(sorted(models[0] - models[1])),
        tools_added=tuple(sorted(tools[1] - tools[0])),
        tools_removed=tuple(sorted(tools[0] - tools[1])),
        first_divergence=_first_divergence(visible),
        similarity=_similarity(matched, len(steps_a) + len(steps_b)),
        pair_counts={status.value: 0 for status in PairStatus} | Counter(p.status for p in visible),
    )


def _token_deltas(run_a: Run, run_b: Run) -> dict[str, Delta]:
    fields = {"in": "tokens_in", "out": "tokens_out", "cache_read": "tokens_cache_read",
              "cache_write": "tokens_cache_write", "reasoning": "tokens_reasoning"}  # fmt: skip
    return {name: Delta(getattr(run_a, attr), getattr(run_b, attr)) for name, attr in fields.items()}


def _names(from_run: Sequence[str], steps: Sequence[Step], attr: str) -> set[str]:
    read = attrgetter(f"draft.{attr}")
    return set(from_run) | {name for name in map(read, steps) if name}


def _count_types(steps: Sequence[Step]) -> dict[str, int]:
    counts = Counter(map(_DRAFT_TYPE, steps))  # by member: StepType hashes as its str value
    return {kind.value: counts.get(kind, 0) for kind in StepType}


_DRAFT_TYPE = attrgetter("draft.type")


def _first_divergence(pairs: Sequence[StepPair]) -> Divergence | None:
    """The first seq, in each run on its own, of a step that is not in an equal pair."""
    differing = [pair for pair in pairs if pair.status is not PairStatus.EQUAL]
    if not differing:
        return None
    a_seqs = [pair.a.seq for pair in differing if pair.a is not None]
    b_seqs = [pair.b.seq for pair in differing if pair.b is not None]
    return Divergence(min(a_seqs, default=None), min(b_seqs, default=None))


def _pair_weight(pair: StepPair) -> float:
    """How much a matched pair counts towards the similarity (a moved pair with changes: 0.5)."""
    return 0.5 if pair.status is PairStatus.MOVED and pair.changes else _PAIR_WEIGHT[pair.status]


def _similarity(matched: float, total_steps: int) -> float:
    """2 × (weighted matched pairs) / (steps in A + steps in B), in [0, 1]."""
    if total_steps == 0:
        return 1.0
    return round(2 * matched / total_steps, 4)
