"""Terminal rendering of a :class:`~diff.result.TraceDiff`: a header, then runs A and B side by side.

One row per aligned pair, the two columns aligned, each changed field on its own line beneath
(old → new). With ``color=True`` the rows and changed values are highlighted with ANSI escapes;
without, the status markers (``=``, ``~``, ``+``, ``-``, ``>``) carry the same information.
"""

from __future__ import annotations

from typing import Any

import orjson

from diff.result import Delta, FieldChange, PairStatus, StepPair, StepRef, TraceDiff

_MARK = {
    PairStatus.EQUAL: "=", PairStatus.CHANGED: "~", PairStatus.ADDED: "+",
    PairStatus.REMOVED: "-", PairStatus.MOVED: ">",
}  # fmt: skip
_COLOR = {
    PairStatus.EQUAL: "2", PairStatus.CHANGED: "33", PairStatus.ADDED: "32",
    PairStatus.REMOVED: "31", PairStatus.MOVED: "36",
}  # fmt: skip
_MAX_DEPTH_INDENT = 6
_VALUE_CHARS = 72


class _Painter:
    """Wraps text in ANSI SGR codes, or leaves it alone."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled

    def __call__(self, text: str, code: str) -> str:
        return f"\x1b[{code}m{text}\x1b[0m" if self.enabled and text else text


def render_text(diff: TraceDiff, *, color: bool, width: int = 120) -> str:
    """The diff as terminal text.

    Args:
        diff: the diff to render.
        color: highlight with ANSI escapes (for a TTY); plain text otherwise.
        width: total line width; each run gets half (minus the markers).
    """
    paint = _Painter(color)
    column = max(24, (width - 5) // 2)
    lines = _header(diff, paint)
    lines.append("")
    lines.append(paint(f"  {'A':<{column}}   B", "1"))
    for pair in diff.pairs:
        lines.append(_row(pair, column, paint))
        lines += [_change_line(change, pair.depth, paint) for change in pair.changes]
    if not diff.pairs:
        lines.append("  (no steps)")
    return "\n".join(lines) + "\n"


def _header(diff: TraceDiff, paint: _Painter) -> list[str]:
    s = diff.summary
    a_id, b_id = (_short(run_id) for run_id in s.run_ids)
    duration = _delta(s.duration_ms, " ms")
    lines = [
        paint(f"run A {a_id} ({s.status[0]})  →  run B {b_id} ({s.status[1]})", "1"),
        f"profile {diff.profile.name}: {diff.profile.description}",
        f"duration {duration} · tokens in {_delta(s.tokens['in'])}, out {_delta(s.tokens['out'])}"
        f" · cost {_delta(s.cost_usd, prefix='$')}",
        "steps " + ", ".join(_type_counts(s.step_counts)),
    ]
    lines += _added_removed("models", s.models_added, s.models_removed, paint)
    lines += _added_removed("tools", s.tools_added, s.tools_removed, paint)
    counts = ", ".join(f"{n} {status}" for status, n in s.pair_counts.items() if n)
    divergence = "none"
    if s.first_divergence is not None:
        d = s.first_divergence
        divergence = f"A #{_seq(d.a_seq)} / B #{_seq(d.b_seq)}"
    lines.append(f"similarity {s.similarity:.2f} · first divergence {divergence} · {counts or 'no steps'}")
    return lines


def _short(run_id: str) -> str:
    return run_id if len(run_id) <= 12 else run_id[:12] + "…"


def _seq(seq: int | None) -> str:
    return "–" if seq is None else str(seq)


def _delta(delta: Delta, unit: str = "", *, prefix: str = "") -> str:
    def show(value: int | float | None) -> str:
        if value is None:
            return "?"
        return f"{prefix}{value:.6g}{unit}" if isinstance(value, float) else f"{prefix}{value}{unit}"

    change = delta.delta
    sign = "" if change is None or change < 0 else "+"
    suffix = "" if not change else f" ({sign}{show(change)})"
    return f"{show(delta.a)} → {show(delta.b)}{suffix}"


def _type_counts(counts: tuple[dict[str, int], dict[str, int]]) -> list[str]:
    a, b = counts
    return [f"{kind} {a[kind]}→{b[kind]}" for kind in a if a[kind] or b.get(kind)] or ["none"]


def _added_removed(
    label: str, added: tuple[str, ...], removed: tuple[str, ...], paint: _Painter
) -> list[str]:
    if not added and not removed:
        return []
    parts = [paint(f"+{name}", "32") for name in added] + [paint(f"-{name}", "31") for name in removed]
    return [f"{label} " + " ".join(parts)]


def _row(pair: StepPair, column: int, paint: _Painter) -> str:
    indent = "  " * min(pair.depth, _MAX_DEPTH_INDENT)
    left = _fit(indent + _cell(pair.a), column) if pair.a else " " * column
    right = _fit(indent + _cell(pair.b), column).rstrip() if pair.b else ""
    mark = _MARK[pair.status]
    return paint(f"{mark} {left} {mark} {right}".rstrip(), _COLOR[pair.status])


def _cell(ref: StepRef | None) -> str:
    if ref is None:
        return ""
    label = ref.tool_name or ref.model_name or ref.name
    if label != ref.name and ref.type not in ("tool", "model"):
        label = f"{ref.name} ({label})"
    failed = " [error]" if ref.status == "error" else ""
    return f"#{ref.seq} {ref.type} {label}{failed}"


def _fit(text: str, width: int) -> str:
    return text[: width - 1] + "…" if len(text) > width else text.ljust(width)


def _change_line(change: FieldChange, depth: int, paint: _Painter) -> str:
    indent = "      " + "  " * min(depth, _MAX_DEPTH_INDENT)
    old, new = paint(_show(change.old), "31"), paint(_show(change.new), "32")
    return f"{indent}{paint(change.path, '1')}: {old} → {new}"


def _show(value: Any) -> str:
    """A compact, one-line, truncated JSON rendering of a changed value."""
    if value is None:
        return "∅"
    text = orjson.dumps(value, default=repr).decode()
    return text if len(text) <= _VALUE_CHARS else text[: _VALUE_CHARS - 1] + "…"
