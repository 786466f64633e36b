"""History: recording, JSON and array round trips, truncation."""

from __future__ import annotations

import json

import numpy as np
import pytest

import jaxlearn


def _history():
    h = jaxlearn.History(
        {"batch_size": 32, "hparams": {"learning_rate": 0.1}, "best_value": float("nan")}
    )
    for e in range(3):
        n = 4
        h.append_steps(
            loss=np.linspace(2, 1, n) / (e + 1),
            batch_accuracy=np.full(n, 0.5),
            learning_rate=np.full(n, 0.1 / (e + 1)),
            finite=[True, True, e != 1, True],
            update_ratio={"W1": np.full(n, 1e-3), "b1": [np.nan, 1.0, 2.0, np.inf]},
        )
        h.append_epoch(
            epoch_step=4 * (e + 1),
            train_loss=1.0 / (e + 1),
            train_accuracy=0.5 + 0.1 * e,
            val_loss=1.2 / (e + 1),
            val_accuracy=0.45 + 0.1 * e,
            activations={"layer1": {"mean": 0.3 * e, "dead_units": 0.0}},
        )
    return h


def test_records_concatenate_per_step_and_per_epoch():
    h = _history()
    assert h.num_steps == 12 and h.num_epochs == 3
    np.testing.assert_allclose(h.loss[4:8], np.linspace(2, 1, 4) / 2)
    assert h.finite.dtype == bool and h.finite.tolist().count(False) == 1
    assert h.epoch_step.tolist() == [4, 8, 12] and h.epoch_step.dtype == np.int64
    np.testing.assert_allclose(h.val_accuracy, [0.45, 0.55, 0.65])
    assert sorted(h.update_ratio) == ["W1", "b1"] and h.update_ratio["b1"].shape == (12,)
    np.testing.assert_allclose(h.activations["layer1"]["mean"], [0.0, 0.3, 0.6])
    assert repr(h) == "History(12 steps, 3 epochs, last train_accuracy=0.7000, val_accuracy=0.6500)"


def test_json_round_trip_is_exact_and_strict(tmp_path):
    h = _history()
    text = h.to_json(tmp_path / "h.json")
    # Strict JSON: NaN and infinities are spelled as strings, never bare tokens.
    json.loads(text, parse_constant=lambda c: pytest.fail(f"bare {c} in JSON"))
    assert jaxlearn.History.from_json(tmp_path / "h.json") == h
    assert jaxlearn.History.from_json(text) == h
    back = jaxlearn.History.from_json(text)
    assert np.isnan(back.update_ratio["b1"][0]) and np.isinf(back.update_ratio["b1"][3])
    assert np.isnan(back.meta["best_value"])


def test_json_round_trip_keeps_strings_numpy_scalars_and_reads_the_first_format(tmp_path):
    meta = {"note": "nan", "lr": np.float64("nan"), "n": np.int64(3), "ok": np.bool_(True)}
    back = jaxlearn.History.from_json(jaxlearn.History(meta).to_json())
    assert back.meta["note"] == "nan"  # a string stays a string
    assert np.isnan(back.meta["lr"]) and isinstance(back.meta["lr"], float)
    assert back.meta["n"] == 3 and back.meta["ok"] is True
    # The first format (no "format" key) spelled non-finite floats as bare strings.
    first = {"meta": {"best_value": "nan"}, "records": {"loss": ["inf", 1.0]}}
    old = jaxlearn.History.from_dict(first)
    assert np.isnan(old.meta["best_value"]) and old.loss.tolist() == [np.inf, 1.0]
    # So did checkpoints of format 1; they still load.
    p = tmp_path / "c.npz"
    jaxlearn.save_checkpoint(p, {"w": np.ones(2)}, metadata={"v": float("nan"), "s": "nan"})
    ck = jaxlearn.load_checkpoint(p)
    assert np.isnan(ck.metadata["v"]) and ck.metadata["s"] == "nan"
    name = "__jaxlearn_checkpoint__"
    with np.load(p) as z:
        arrays = dict(z)
    header = json.loads(arrays[name].tobytes())
    header.update(format=1, metadata={"v": "nan"})
    arrays[name] = np.frombuffer(json.dumps(header).encode(), np.uint8)
    np.savez(tmp_path / "old.npz", **arrays)
    assert np.isnan(jaxlearn.load_checkpoint(tmp_path / "old.npz").metadata["v"])


def test_array_round_trip_and_inequality():
    h = _history()
    assert jaxlearn.History.from_arrays(h.arrays(), h.meta) == h
    other = jaxlearn.History.from_arrays(h.arrays(), {**h.meta, "batch_size": 64})
    assert other != h


def test_truncate_keeps_the_first_epochs_and_their_steps():
    h = _history()
    h.truncate(2)
    assert h.num_epochs == 2 and h.num_steps == 8
    assert h.update_ratio["W1"].shape == (8,) and h.activations["layer1"]["mean"].shape == (2,)


@pytest.mark.parametrize("n", [4, -1, 1.0, True])
def test_truncate_beyond_the_epochs_recorded_is_an_error(n):
    h = _history()
    with pytest.raises(ValueError, match=r"`num_epochs` must be an int in \[0, 3\]"):
        h.truncate(n)
    assert h.num_epochs == 3 and h.num_steps == 12


def test_mismatched_lengths_are_clear_errors():
    h = jaxlearn.History()
    with pytest.raises(ValueError, match=r"`finite` has 1 values, `loss` has 2"):
        h.append_steps(loss=[1, 2], batch_accuracy=[0, 0], learning_rate=[0, 0], finite=[1])
    with pytest.raises(ValueError, match=r"update_ratio\['W1'\] has 3 values, `loss` has 2"):
        h.append_steps(
            loss=[1, 2],
            batch_accuracy=[0, 0],
            learning_rate=[0, 0],
            finite=[1, 1],
            update_ratio={"W1": [1, 2, 3]},
        )
    with pytest.raises(ValueError, match=r"expected a dict with 'meta' and 'records'"):
        jaxlearn.History.from_dict({"loss": [1.0]})
