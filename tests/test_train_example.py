"""examples/fit_digits.py runs end to end in its quick mode, in a fresh process."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_fit_digits_example_checks_trains_diagnoses_and_plots(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "examples" / "fit_digits.py"),
            "--quick",
            "--out",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    assert "initial_loss" in out and "overfit_small" in out and "FAIL" not in out
    assert "(completed after 3 epochs, 66 steps)" in out
    assert "Diagnosis of 66 steps, 3 epochs" in out
    acc = float(out.split("test accuracy of the best parameters: ")[1].split()[0])
    assert acc > 0.85
    assert sorted(os.listdir(tmp_path / "checkpoints")) == ["best.npz", "last.npz"]
    assert sorted(os.listdir(tmp_path / "plots")) == [
        "accuracy.png",
        "loss.png",
        "update_ratios.png",
    ]
