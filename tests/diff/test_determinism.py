"""The same two runs give the same diff in every process (no per-process hash salt in what is reported)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

_SCRIPT = """
import json
from diff.api import diff_runs
from diff.normalize import BUILTIN_PROFILES, get_profile
from tests.diff.fixtures import PLANTED, planted_pair, synthetic_pair
out = []
for planted in PLANTED:
    run_a, steps_a, run_b, steps_b, _ = planted_pair(planted)
    out.append(diff_runs(run_a, steps_a, run_b, steps_b, profile=get_profile(BUILTIN_PROFILES, "default")).to_dict())
run_a, steps_a, run_b, steps_b = synthetic_pair(300, seed=11)
for profile in ("default", "structure", "semantic"):
    out.append(diff_runs(run_a, steps_a, run_b, steps_b, profile=get_profile(BUILTIN_PROFILES, profile)).to_dict())
print(json.dumps(out, sort_keys=True, default=str))
"""


def _diffs_with_hash_seed(seed: str) -> object:
    root = Path(__file__).resolve().parents[2]
    done = subprocess.run([sys.executable, "-c", _SCRIPT], cwd=root, capture_output=True, text=True, check=True,
                          env={**os.environ, "PYTHONHASHSEED": seed}, timeout=120)
    return json.loads(done.stdout)


def test_diffs_do_not_depend_on_the_process_hash_seed() -> None:
    first = _diffs_with_hash_seed("1")
    assert all(_diffs_with_hash_seed(seed) == first for seed in ("2", "3", "12345"))
