"""`jaxlearn demo` end to end: the quick run once per module, then what it wrote."""

from __future__ import annotations

import contextlib
import datetime
import importlib.util
import io
import json
import math
import os
import pickle
import re
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxlearn
from jaxlearn.cli import main
from jaxlearn.demo import RULES, DemoError, new_run_dir, prepare_data, render_report

ROOT = Path(__file__).resolve().parents[1]
PNG = b"\x89PNG\r\n\x1a\n"


def _in_dir(folder: Path, argv: list[str]) -> tuple[int, str, str]:
    """Run the command line in `folder`; return (status, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    cwd = os.getcwd()
    os.chdir(folder)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            status = main(argv)
    finally:
        os.chdir(cwd)
    return status, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    """One `jaxlearn demo --quick` in a fresh folder, with the default output folder."""
    here = tmp_path_factory.mktemp("demo")
    status, out, err = _in_dir(here, ["demo", "--quick", "--no-progress"])
    assert status == 0, err
    runs = list(here.glob("jaxlearn-demo-*"))
    assert len(runs) == 1, runs
    run = runs[0]
    results = json.loads((run / "results.json").read_text())
    return run, results, out


def test_quick_run_writes_report_results_figures_and_checkpoint(quick_run):
    run, results, out = quick_run
    assert re.fullmatch(r"jaxlearn-demo-\d{8}-\d{6}", run.name)
    for name in ("report.md", "results.json", "best.npz"):
        assert (run / name).stat().st_size > 0, name
    figures = sorted(p.relative_to(run).as_posix() for p in run.rglob("*.png"))
    assert figures == [
        "figures/final_run/accuracy.png",
        "figures/final_run/loss.png",
        "figures/final_run/update_ratios.png",
        "figures/search_stage1.png",
        "figures/search_stage2.png",
        "figures/update_rules.png",
    ]
    for f in figures:
        assert (run / f).read_bytes()[:8] == PNG, f
    # One summary line per stage, in order, and where the files are.
    titles = [
        "Data",
        "Gradient check",
        "Sanity checks",
        "Update rules",
        "Search",
        "Ensemble",
        "Diagnosis",
    ]
    for i, title in enumerate(titles, start=1):
        assert f"[{i}/7] {title}: " in out
    assert out.index("[1/7]") < out.index("[4/7]") < out.index("[7/7]")
    assert f"Report:     {run / 'report.md'}" in out
    assert f"Checkpoint: {run / 'best.npz'}" in out
    # Every file the report lists exists, and every figure it links.
    report = (run / "report.md").read_text()
    for path in results["files"]:
        assert (run / path).exists(), path
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", report)
    assert sorted(links) == sorted(f for f in figures), links


def test_report_numbers_are_the_results_json_numbers(quick_run):
    run, results, _ = quick_run
    report = (run / "report.md").read_text()
    # The report is a pure rendering of results.json: rendering it again gives it exactly.
    assert render_report(results) == report
    e = results["ensemble"]
    n = e["num_members"]
    row = (
        f"| ensemble of {n} members (averaged probabilities) | {n} | "
        f"{e['ensemble_test_accuracy']:.4f} | "
        f"{e['ensemble_test_accuracy'] - e['mean_member_test_accuracy']:+.4f} | "
        f"{e['ensemble_test_loss']:.4g} |"
    )
    assert row in report
    for m in e["members"]:
        assert (
            f"| {m['member']} | {m['seed']} | {m['final_val_accuracy']:.4f} | "
            f"{m['test_accuracy']:.4f} | {m['averaged_test_accuracy']:.4f} |"
        ) in report
    g = results["gradcheck"]
    assert f"max relative error {g['max_error_data']:.1e} for the data loss" in report
    for r in results["update_rules"]["rules"]:
        assert (
            f"| {r['rule']} | {r['learning_rate']:.3g} | {r['final_train_loss']:.4g} | "
            f"{r['final_val_accuracy']:.4f} |"
        ) in report
    b = results["search"]["best"]
    assert (
        f"best configuration learning_rate = {b['learning_rate']:.3g}, l2 = "
        f"{b['l2']:.3g} (trial {b['number']}, val acc {b['val_acc']:.4f})"
    ) in report
    for name, t in results["timings"].items():
        assert f"| {name} | {t['wall_s']:.1f} | {t['cpu_s']:.1f} |" in report


def test_ensemble_beats_the_mean_member_and_the_tables_add_up(quick_run):
    _, results, _ = quick_run
    e = results["ensemble"]
    members = e["members"]
    assert len(members) == e["num_members"] == 3
    accs = [m["test_accuracy"] for m in members]
    assert math.isclose(e["mean_member_test_accuracy"], float(np.mean(accs)), abs_tol=1e-6)
    assert e["ensemble_test_accuracy"] >= e["mean_member_test_accuracy"]
    # -log of an average of probabilities is at most the average of -log (convexity).
    assert e["ensemble_test_loss"] <= e["mean_member_test_loss"] + 1e-6
    assert e["num_test"] == results["data"]["sizes"]["test"]
    assert e["accuracy_by_size"][0] == pytest.approx(accs[0], abs=1e-6)
    assert e["accuracy_by_size"][-1] == pytest.approx(e["ensemble_test_accuracy"], abs=1e-6)
    assert e["mean_averaged_test_accuracy"] == pytest.approx(
        float(np.mean([m["averaged_test_accuracy"] for m in members])), abs=1e-6
    )
    assert min(accs) > 0.9 and e["student"]["test_accuracy"] > 0.9
    ck = e["checkpoint"]
    assert ck["val_accuracy"] == max(m["best_val_accuracy"] for m in members)
    assert ck["test_accuracy"] == members[ck["member"]]["best_checkpoint_test_accuracy"]


def test_each_stage_reports_what_the_notes_ask_for(quick_run):
    _, results, _ = quick_run
    d = results["data"]
    assert d["sizes"] == {"train": 1257, "val": 270, "test": 270}
    assert d["train_range"][0] < 0 < d["train_range"][1]  # the mean image was subtracted
    g = results["gradcheck"]
    assert g["ok"] and g["dtype"] == "float64" and g["max_relative_error"] < 1e-6
    assert {r["part"] for r in g["rows"]} == {"data", "reg"}
    assert [r["leaf"] for r in g["rows"] if r["part"] == "data"] == ["W1", "W2", "b1", "b2"]
    assert isinstance(g["kinks"], int) and g["burn_in"]["steps"] == 20
    s = {(c["name"], c["loss"]): c for c in results["sanity"]["checks"]}
    assert s[("initial_loss", "softmax")]["numbers"]["expected"] == pytest.approx(math.log(10))
    assert s[("initial_loss", "svm")]["numbers"]["expected"] == 9.0
    assert s[("overfit_small", "softmax")]["numbers"]["num_examples"] == 20
    assert s[("overfit_small", "softmax")]["numbers"]["final_accuracy"] == 1.0
    assert results["sanity"]["passed"]
    u = results["update_rules"]
    assert [r["rule"] for r in u["rules"]] == list(RULES)
    assert all(len(r["val_accuracy_per_epoch"]) == u["epochs"] == 4 for r in u["rules"])
    best_rule = max(u["rules"], key=lambda r: r["final_val_accuracy"])
    assert u["best_rule"] == best_rule["rule"] == results["search"]["rule"]
    st = results["search"]["stages"]
    assert [(x["num_trials"], x["epochs"]) for x in st] == [(12, 1), (8, 5)]
    for name in ("learning_rate", "l2"):  # the fine stage searches inside the coarse one
        lo1, hi1 = st[0]["ranges"][name]
        lo2, hi2 = st[1]["ranges"][name]
        assert lo1 <= lo2 < hi2 <= hi1 and (lo2, hi2) != (lo1, hi1)
    assert results["search"]["best"] == st[1]["best"] and st[1]["best"]["val_acc"] > 0.95
    assert all(isinstance(w, str) and "edge" in w for x in st for w in x["border_warnings"])
    diag = results["diagnosis"]
    assert diag["member"] == results["ensemble"]["checkpoint"]["member"]
    assert diag["num_epochs"] == results["ensemble"]["epochs"]
    assert all(f["kind"] and f["advice"] for f in diag["findings"])


def test_best_checkpoint_reproduces_the_stated_test_accuracy(quick_run):
    run, results, _ = quick_run
    ck = jaxlearn.load_checkpoint(run / "best.npz")
    meta = ck.metadata
    assert meta["model"] == {"kind": "mlp", "input_dim": 64, "hidden": [100], "num_classes": 10}
    model = jaxlearn.mlp(64, (100,), 10)
    like = {"params": model.init(jax.random.key(0)), "mean_image": jnp.zeros(64)}
    tree = jaxlearn.load_checkpoint(run / "best.npz", like=like).tree
    data = prepare_data("digits", seed=meta["data_seed"])
    np.testing.assert_allclose(tree["mean_image"], data.mean_image, rtol=1e-6)
    x, y = data.splits.test
    acc = float(jaxlearn.accuracy(model.apply(tree["params"], jnp.asarray(x)), y))
    assert acc == pytest.approx(results["ensemble"]["checkpoint"]["test_accuracy"], abs=1e-6)
    assert ck.history.num_epochs == results["ensemble"]["epochs"]


def test_a_second_run_never_overwrites_the_first(quick_run):
    run, _, _ = quick_run
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    status, _, err = _in_dir(run.parent, ["demo", "--quick", "--out", str(run)])
    assert status == 2
    assert f"--out {run} already exists and is not empty" in err
    # The default folder of a second run started in the same second gets another name.
    stamp = datetime.datetime.strptime(run.name[len("jaxlearn-demo-") :], "%Y%m%d-%H%M%S")
    second = new_run_dir(parent=run.parent, now=stamp)
    assert second != run and second.name == run.name + "-2" and not any(second.iterdir())
    second.rmdir()
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before


def _write_cifar(folder: Path, per_batch: int = 20, skip: str = "") -> None:
    """A CIFAR-10 folder in the real format: pickled dicts of bytes keys, uint8 rows."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for b, name in enumerate(names):
        if name == skip:
            continue
        labels = [(b + i) % 10 for i in range(per_batch)]
        data = rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8)
        with open(folder / name, "wb") as f:
            pickle.dump(
                {
                    b"batch_label": name.encode(),
                    b"labels": labels,
                    b"data": data,
                    b"filenames": [f"{name}_{i}.png".encode() for i in range(per_batch)],
                },
                f,
                protocol=2,
            )


def test_cifar10_from_a_folder_in_the_real_format(tmp_path):
    data_dir = tmp_path / "cifar-10-batches-py"
    _write_cifar(data_dir)
    data = prepare_data("cifar10", data_dir, seed=0)
    assert data.info["sizes"] == {"train": 90, "val": 10, "test": 20}
    assert data.splits.train[0].shape == (90, 3072) and data.info["input_dim"] == 3072
    # Pixels scaled to [0, 1], then the training mean image subtracted.
    with open(data_dir / "test_batch", "rb") as f:
        raw = pickle.load(f, encoding="bytes")
    first = raw[b"data"][0].reshape(3, 32, 32).transpose(1, 2, 0).reshape(-1) / 255.0
    np.testing.assert_allclose(data.splits.test[0][0] + data.mean_image, first, atol=1e-6)

    out = tmp_path / "run"
    status, stdout, err = _in_dir(
        tmp_path,
        [
            "demo",
            "--data",
            "cifar10",
            "--data-dir",
            str(data_dir),
            "--quick",
            "--stages",
            "3",
            "--out",
            str(out),
            "--no-progress",
        ],
    )
    assert status == 0, err
    results = json.loads((out / "results.json").read_text())
    assert results["data"]["dataset"] == "cifar10" and results["meta"]["stages"] == 3
    assert results["gradcheck"]["ok"] and results["sanity"]["passed"]
    assert [r["size"] for r in results["gradcheck"]["rows"][:2]] == [3072 * 100, 100 * 10]
    assert "update_rules" not in results and "[3/7] Sanity checks: " in stdout
    report = (out / "report.md").read_text()
    assert report.startswith("# jaxlearn demo: cifar10, quick run, stages 1-3 of 7, seed 0")
    assert "## 3. Sanity checks" in report and "## 4." not in report
    assert render_report(results) == report


def test_a_missing_data_folder_is_a_clear_error_and_writes_nothing(tmp_path):
    missing = tmp_path / "no-such-folder"
    status, _, err = _in_dir(
        tmp_path, ["demo", "--data", "cifar10", "--data-dir", str(missing), "--quick"]
    )
    assert status == 2
    assert err.startswith(
        f"jaxlearn demo: error: --data-dir {missing}: load_cifar10: folder {missing} does not exist"
    )
    assert "Traceback" not in err and sorted(tmp_path.iterdir()) == []


def test_a_malformed_data_folder_is_a_clear_error_naming_the_file(tmp_path):
    partial = tmp_path / "partial"
    _write_cifar(partial, per_batch=4, skip="test_batch")
    status, _, err = _in_dir(tmp_path, ["demo", "--data", "cifar10", "--data-dir", str(partial)])
    assert status == 2 and f"{partial} is missing test_batch" in err

    broken = tmp_path / "broken"
    _write_cifar(broken, per_batch=4)
    (broken / "data_batch_3").write_bytes(b"not a pickle")
    status, _, err = _in_dir(tmp_path, ["demo", "--data", "cifar10", "--data-dir", str(broken)])
    assert status == 2
    assert f"{broken / 'data_batch_3'} is not a valid CIFAR-10 batch file" in err

    wrong = tmp_path / "wrong-shape"
    _write_cifar(wrong, per_batch=4)
    with open(wrong / "data_batch_1", "wb") as f:
        pickle.dump({b"data": np.zeros((4, 100), np.uint8), b"labels": [0, 1, 2, 3]}, f)
    status, _, err = _in_dir(tmp_path, ["demo", "--data", "cifar10", "--data-dir", str(wrong)])
    assert status == 2 and "'data' must be a uint8 array of shape (N, 3072)" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["broken", "partial", "wrong-shape"]


def _read_report_module():
    spec = importlib.util.spec_from_file_location(
        "read_report_example", ROOT / "examples" / "read_report.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_read_report_example_reads_the_run_and_reclassifies_the_test_set(quick_run, capsys):
    run, results, _ = quick_run
    example = _read_report_module()
    quick = example.main([str(run), "--quick"])
    out = capsys.readouterr().out
    assert quick["report_matches"] and "report.md matches results.json" in out
    assert "reclassified_test_accuracy" not in quick
    assert "  6. ensemble: test accuracy: mean member " in out
    e = results["ensemble"]
    assert quick["test_accuracy"][f"ensemble of {e['num_members']}"] == e["ensemble_test_accuracy"]
    full = example.main([str(run)])
    out = capsys.readouterr().out
    assert full["reclassified_test_accuracy"] == pytest.approx(
        e["checkpoint"]["test_accuracy"], abs=1e-6
    )
    assert "best.npz reclassifies the test set" in out
    with pytest.raises(SystemExit, match="holds no results.json"):
        example.main([str(run / "figures")])


def test_a_training_set_smaller_than_one_minibatch_is_refused_up_front(tmp_path):
    # 90 training examples pass the floor of 40 but not a minimum of 100 (the run's batch).
    data_dir = tmp_path / "cifar-10-batches-py"
    _write_cifar(data_dir)
    with pytest.raises(DemoError, match=r"sizes \[90, 10, 20\]; it needs at least 100 training"):
        prepare_data("cifar10", data_dir, seed=0, min_train=100)
    assert prepare_data("cifar10", data_dir, seed=0, min_train=64).info["sizes"]["train"] == 90
