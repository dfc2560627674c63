"""A worker's progress: beats, and busy regions that count as progress for a bounded time."""

from __future__ import annotations

import time

from otlp_receiver.progress import Progress


def test_a_busy_region_is_progress_until_it_is_older_than_the_limit() -> None:
    progress = Progress()
    with progress.busy("compaction"):
        begun = time.monotonic()
        assert progress.busy_op() == ("compaction", progress.busy_op()[1])  # type: ignore[index]
        assert progress.alive_at(begun + 5, max_busy_s=60) == begun + 5
        assert abs(progress.alive_at(begun + 600, max_busy_s=60) - (begun + 60)) < 0.1
    assert progress.busy_op() is None
    assert progress.last_beat_s >= begun  # leaving a region is a beat


def test_without_a_region_progress_is_the_last_beat() -> None:
    progress = Progress()
    progress.beat()
    beat = progress.last_beat_s
    assert progress.alive_at(beat + 3_600, max_busy_s=60) == beat


def test_overlapping_regions_report_the_oldest() -> None:
    progress = Progress()
    with progress.busy("retention delete"), progress.busy("compaction"):
        op = progress.busy_op()
        assert op is not None and op[0] == "retention delete"
    assert progress.busy_op() is None
