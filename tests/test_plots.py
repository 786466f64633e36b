"""Plots of a run: loss (log option, smoothed), accuracy per epoch, update ratios per leaf."""

from __future__ import annotations

import sys

import numpy as np
import pytest

import jaxlearn
from jaxlearn import plots

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def history():
    n, spe = 60, 20
    h = jaxlearn.History({"steps_per_epoch": spe, "best_epoch": 2})
    loss = 2.3 * np.exp(-np.arange(n) / 20) + 0.05
    loss[55] = np.nan
    h.append_steps(
        loss=loss,
        batch_accuracy=np.zeros(n),
        learning_rate=np.full(n, 0.1),
        finite=np.isfinite(loss),
        update_ratio={"W1": np.full(n, 1e-3), "b1": np.r_[np.nan, np.full(n - 1, 1e-2)]},
    )
    for e in range(3):
        h.append_epoch(
            epoch_step=spe * (e + 1),
            train_loss=1.0,
            train_accuracy=0.6 + 0.1 * e,
            val_loss=1.1,
            val_accuracy=0.55 + 0.1 * e,
        )
    return h


def test_plot_history_writes_three_pngs(history, tmp_path):
    out = plots.plot_history(history, tmp_path / "figs", log=True)
    assert sorted(out) == ["accuracy", "loss", "update_ratios"]
    for path in out.values():
        with open(path, "rb") as f:
            head = f.read(8)
        assert head == PNG


def test_loss_plot_has_raw_smoothed_and_nonfinite_marker(history):
    fig = plots.plot_loss(history, log=True, smooth=0.8)
    ax = fig.axes[0]
    labels = [line.get_label() for line in ax.lines]
    assert labels == ["loss per step", "smoothed (EMA 0.8)", "non-finite from step 55"]
    assert ax.get_yscale() == "log"
    smoothed = ax.lines[1].get_ydata()
    assert np.isfinite(smoothed).all() and smoothed[-1] < smoothed[0]
    assert plots.plot_loss(history).axes[0].get_yscale() == "linear"


def test_log_loss_plot_of_a_run_with_no_finite_loss_is_still_written(tmp_path):
    h = jaxlearn.History.from_arrays({"loss": [np.nan] * 3})
    fig = plots.plot_loss(h, tmp_path / "q.png", log=True)
    assert fig.axes[0].get_yscale() == "linear"
    assert (tmp_path / "q.png").read_bytes()[:8] == PNG


def test_accuracy_plot_per_epoch_marks_the_best_epoch(history):
    ax = plots.plot_accuracy(history).axes[0]
    assert [line.get_label() for line in ax.lines] == ["train", "val", "best epoch 2"]
    np.testing.assert_allclose(ax.lines[0].get_ydata(), [0.6, 0.7, 0.8])
    assert list(ax.lines[0].get_xdata()) == [1, 2, 3]


def test_update_ratio_plot_is_log_scale_per_leaf(history):
    ax = plots.plot_update_ratios(history, smooth=0).axes[0]
    assert ax.get_yscale() == "log"
    assert [line.get_label() for line in ax.lines] == ["W1", "b1", "1e-3"]


def test_smooth_ema_skips_nonfinite_values():
    out = plots.smooth_ema([1.0, np.nan, 1.0, 3.0], weight=0.5)
    assert out[1] == 1.0 and out[3] == pytest.approx((0.5 * 0.75 + 1.5) / 0.875)
    with pytest.raises(ValueError, match=r"`weight` must be a number in \[0, 1\), got 1.0"):
        plots.smooth_ema([1.0], weight=1.0)


def test_missing_matplotlib_names_the_extra(history, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    monkeypatch.setitem(sys.modules, "matplotlib.backends.backend_agg", None)
    with pytest.raises(ImportError, match=r"pip install 'jaxlearn\[plot\]'"):
        plots.plot_loss(history)


def test_bad_input_is_a_clear_error():
    with pytest.raises(ValueError, match=r"plot_loss: `history` must be a History, got list"):
        plots.plot_loss([1.0, 2.0])
    with pytest.raises(ValueError, match=r"the history has no update ratios"):
        plots.plot_update_ratios(jaxlearn.History.from_arrays({"loss": [1.0]}))


def test_the_loss_plot_marks_the_first_step_flagged_non_finite():
    h = jaxlearn.History({"steps_per_epoch": 5})
    loss = np.linspace(2.0, 1.0, 10)  # finite throughout...
    finite = np.ones(10, bool)
    finite[6:] = False  # ...while the updates from step 6 overflowed
    h.append_steps(
        loss=loss, batch_accuracy=np.zeros(10), learning_rate=np.full(10, 1e4), finite=finite
    )
    fig = plots.plot_loss(h)
    labels = [line.get_label() for line in fig.axes[0].get_lines()]
    assert "non-finite from step 6" in labels


def test_the_loss_plot_marks_the_step_diagnose_names():
    # One test of a bad step for both: here the flag goes off at 4, the loss at 7.
    from jaxlearn.train.diagnose import bad_steps

    loss = np.r_[np.linspace(2.0, 1.0, 7), np.nan, np.nan, np.nan]
    finite = np.arange(10) < 4
    h = jaxlearn.History.from_arrays({"loss": loss, "finite": finite}, {"steps_per_epoch": 5})
    assert int(np.argmax(bad_steps(h))) == 4 == jaxlearn.diagnose(h)[0].step
    labels = [line.get_label() for line in plots.plot_loss(h).axes[0].get_lines()]
    assert "non-finite from step 4" in labels
