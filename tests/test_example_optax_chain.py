"""examples/optax_chain.py runs and learns the spiral in its quick mode."""

from __future__ import annotations

import importlib.util
from pathlib import Path

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "optax_chain.py"


def test_optax_chain_example_learns_the_spiral_in_quick_mode(capsys):
    spec = importlib.util.spec_from_file_location("optax_chain_example", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    acc = module.main(["--quick"])
    out = capsys.readouterr().out
    assert "step    0  loss 1.2" in out
    assert acc > 0.85
