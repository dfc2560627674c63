"""Traceward analytics: pure polars over LazyFrames of runs and steps.

- ``frames``: ``RUN_COLUMNS`` (the runs frame the store hands in) and empty frames;
- ``aggregate``: ``summarize`` and ``timeseries`` with filters and group keys;
- ``compare``: two ``service.version`` values side by side (the regression view);
- ``health``: the health pulse (green/yellow/red fields and one sentence);
- ``findings``: the deterministic failure scan and per-agent baselines.

No module here opens a file, a socket or a database: ``server/`` scans storage and passes frames in.
"""
