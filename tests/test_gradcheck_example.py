"""examples/check_custom_vjp.py runs in quick mode: the right backward passes, the wrong fails."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_check_custom_vjp_example_runs_in_quick_mode():
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    out = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "check_custom_vjp.py"), "--quick"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    text = out.stdout
    assert "hand-written backward:" in text and "\nOK: max relative error" in text
    assert "\nFAILED: 9 check(s) above threshold" in text
    # forgetting 1/N multiplies dW by N = 64: relative error 1 - 1/64 (the tenth coordinate
    # reads a pixel that is 0 in every image: both gradients are exactly 0)
    assert "['W1'] fails on 9 of 10 coordinates (relative error 0.984); ['b1'] is fine." in text
