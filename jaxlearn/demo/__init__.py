"""``jaxlearn demo``: the whole craft of the notes on real data, ending in a report.

A newcomer's first command, and the project's end-to-end test. On scikit-learn's bundled
digits (or CIFAR-10 files on disk) it runs, with progress bars and a one-line summary per
stage:

1. train/val/test splits with a fixed key, the training mean image subtracted;
2. a gradient check of the MLP's data loss and regularization, separately, in float64;
3. the sanity checks: loss at init, regularization raises the loss, overfit 20 examples;
4. the six update rules side by side on one budget;
5. a coarse-to-fine random search of learning rate and L2 strength as vmapped populations;
6. the best configuration as an ensemble over seeds in one program, with parameter
   averaging and a distilled student;
7. a diagnosis of the final run.

It writes ``report.md`` (rendered from ``results.json`` alone), ``results.json``, PNG
figures and the best checkpoint to a new folder (:func:`run_demo`; the command line is
:mod:`jaxlearn.cli`).
"""

from jaxlearn.demo.config import (
    DATASETS,
    RULES,
    DemoConfig,
    DemoError,
    Settings,
    check_out,
    new_run_dir,
    settings_for,
)
from jaxlearn.demo.datasets import DemoData, prepare_data
from jaxlearn.demo.report import render_report, summary_line
from jaxlearn.demo.run import DemoResult, run_demo

__all__ = [
    "DATASETS",
    "RULES",
    "DemoConfig",
    "DemoData",
    "DemoError",
    "DemoResult",
    "Settings",
    "check_out",
    "new_run_dir",
    "prepare_data",
    "render_report",
    "run_demo",
    "settings_for",
    "summary_line",
]
