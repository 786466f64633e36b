"""examples/search_coarse_to_fine.py runs its three stages in quick mode."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_coarse_to_fine_example_runs_three_stages_and_reports_test_accuracy():
    env = dict(os.environ, PYTHONPATH=str(ROOT), JAX_PLATFORMS="cpu")
    proc = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "search_coarse_to_fine.py"), "--quick"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    assert "stage 1: 12 trials, 1 epochs, lr in [1e-06, 10], l2 in [1e-06, 10]" in out
    assert "stage 2: 8 trials, 2 epochs" in out and "stage 3: 4 trials, 4 epochs" in out
    assert out.count("border:") >= 3
    acc = float(re.search(r"test accuracy (\d\.\d+)", out).group(1))
    assert acc > 0.85, out
