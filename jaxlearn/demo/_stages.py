"""The seven stages of the demo. Each calls the library and returns JSON-ready results.

Every stage takes the :class:`Run` (the data on device, the model, the settings, the
folders) and returns the dict that becomes its section of ``results.json``; the report is
rendered from those dicts only (:mod:`jaxlearn.demo.report`), so every number in it is in
``results.json``. Warnings the library issues during a stage (border warnings, non-finite
losses, a dominating regularization gradient) are collected into the stage's results.
"""

from __future__ import annotations

import dataclasses
import math
import os
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

import jaxlearn
from jaxlearn import ensemble, sanity, search
from jaxlearn.demo.config import RULES, DemoConfig, Settings
from jaxlearn.demo.figures import plot_rule_comparison
from jaxlearn.models import Model

__all__ = ["Run", "STAGES"]

Batch = tuple[jax.Array, jax.Array]


@dataclasses.dataclass
class Run:
    """Everything the stages share: options, sizes, data, model, folders, results so far."""

    config: DemoConfig
    settings: Settings
    train: Batch
    val: Batch
    test: Batch
    mean_image: np.ndarray | None
    model: Model
    out: Path
    results: dict[str, Any]
    progress: bool = True
    final_history: Any = None
    final_params: Any = None

    @property
    def figures(self) -> Path:
        """The folder of the PNG figures."""
        return self.out / "figures"

    def key(self, stage: int) -> jax.Array:
        """The key of a stage: ``fold_in(key(seed), stage)``."""
        return jax.random.fold_in(jax.random.key(self.config.seed), stage)

    def bar(self, total: int, desc: str, unit: str = "step") -> Any:
        """A progress bar (disabled when the run has no progress output)."""
        from tqdm.auto import tqdm

        return tqdm(
            total=total,
            desc=desc,
            unit=unit,
            disable=not self.progress,
            dynamic_ncols=True,
            leave=False,
        )

    def rel(self, path: str | os.PathLike) -> str:
        """A path inside the output folder as the report links it (forward slashes)."""
        return Path(os.path.relpath(path, self.out)).as_posix()


@contextmanager
def _collect_warnings(into: list[str]) -> Iterator[None]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield
    for w in caught:
        msg = f"{w.category.__name__}: {w.message}"
        if msg not in into:
            into.append(msg)


def _num(v: Any) -> float | None:
    """A float for JSON (None for NaN and infinities)."""
    if v is None:
        return None
    f = float(v)
    return f if math.isfinite(f) else None


def _leaf(path: str) -> str:
    return path.strip("[]'\"") if path.count("[") == 1 else path


# --------------------------------------------------------------------------- 1. data


def stage_data(run: Run) -> dict[str, Any]:
    """Stage 1: the splits and their normalization (already prepared: record them)."""
    return dict(run.results.get("data", {}))


# --------------------------------------------------------------------------- 2. gradcheck


def stage_gradcheck(run: Run) -> dict[str, Any]:
    """Stage 2: the MLP's data loss and its L2 regularization checked separately in float64.

    A short burn-in of SGD steps moves the weights away from their initialization first
    (at init a check can pass by accident: zero biases, symmetric units), then
    :func:`jaxlearn.check_grad` compares ``jax.grad`` with centered differences on a few
    examples, kinks recorded.
    """
    s = run.settings
    model = run.model
    x, y = run.train
    notes: list[str] = []
    bar = run.bar(s.burn_in_steps + 1, "gradient check")
    tr = jaxlearn.trainer(
        model,
        optimizer="sgd",
        batch_size=s.batch_size,
        hparams={"learning_rate": s.burn_in_learning_rate},
        update_ratios=False,
    )
    state = tr.init(jax.random.fold_in(run.key(2), 0))
    idx = jaxlearn.batch_indices(jax.random.fold_in(run.key(2), 1), int(x.shape[0]), s.batch_size)
    step_losses: list[jax.Array] = []
    for i in range(s.burn_in_steps):
        b = idx[i % idx.shape[0]]
        state, m = tr.jit_step(state, (x[b], y[b]))
        step_losses.append(m.loss)  # read back once, after the loop
        bar.update(1)
    losses = [float(v) for v in jax.device_get(step_losses)]
    params = state.params
    k = min(s.gradcheck_examples, int(x.shape[0]))
    xs, ys = x[:k], y[:k]
    l2 = s.gradcheck_l2

    def data_loss(p: Any, xb: jax.Array, yb: jax.Array) -> jax.Array:
        return jaxlearn.softmax_cross_entropy(model.apply(p, xb), yb)

    def regularization(p: Any) -> jax.Array:
        return l2 * jaxlearn.l2_penalty(p)

    with _collect_warnings(notes):
        report = jaxlearn.check_grad(
            data_loss,
            params,
            xs,
            ys,
            regularization=regularization,
            num_checks=s.gradcheck_checks,
            seed=run.config.seed,
            retry_kinks=1,
        )
    bar.update(1)
    bar.close()
    rows: list[dict[str, Any]] = []
    for r in report.rows:
        rows.append(
            {
                "part": r.part,
                "leaf": _leaf(r.path),
                "checked": r.checked,
                "size": r.size,
                "max_error": _num(r.max_error),
                "median_error": _num(r.median_error),
                "kinks": r.kinks,
                "noise": r.below_noise,
                "forward_error": _num(r.forward_error),
                "failures": r.failures + r.forward_failures,
                "verdict": r.verdict,
            }
        )

    def part_max(part: str) -> float | None:
        errs = [
            row["max_error"] for row in rows if row["part"] == part and row["max_error"] is not None
        ]
        return max(errs) if errs else None

    return {
        "num_examples": k,
        "burn_in": {
            "steps": s.burn_in_steps,
            "rule": "sgd",
            "learning_rate": s.burn_in_learning_rate,
            "loss_first": _num(losses[0]) if losses else None,
            "loss_last": _num(losses[-1]) if losses else None,
        },
        "l2": l2,
        "h": report.h,
        "threshold": report.threshold,
        "dtype": report.dtype,
        "forward": report.forward,
        "loss_value": _num(report.value),
        "ok": bool(report.ok),
        "max_relative_error": _num(report.max_relative_error),
        "max_error_data": part_max("data"),
        "max_error_reg": part_max("reg"),
        "failures": int(report.failures),
        "kinks": int(report.kinks),
        "kink_sites": [[site, int(n)] for site, n in report.kink_sites],
        "verdict": report.verdict,
        "rows": rows,
        "notes": [
            *report.notes,
            *[n for n in notes if not any(n.endswith(m) for m in report.notes)],
        ],
    }


# --------------------------------------------------------------------------- 3. sanity


def _check_dict(c: sanity.Check, loss: str) -> dict[str, Any]:
    d = c.details
    numbers: dict[str, Any] = {}
    if c.name == "initial_loss":
        numbers = {
            "loss": _num(d["loss"]),
            "expected": _num(d["expected"]),
            "rtol": _num(d["rtol"]),
            "score_std": _num(d["score_std"]),
        }
    elif c.name == "regularization_raises_loss":
        numbers = {"regs": [float(v) for v in d["regs"]], "losses": [_num(v) for v in d["losses"]]}
    elif c.name == "overfit_small":
        numbers = {
            "num_examples": int(d["num_examples"]),
            "steps": int(d["steps"]),
            "initial_loss": _num(d["initial_loss"]),
            "final_loss": _num(d["final_loss"]),
            "final_accuracy": _num(d["final_accuracy"]),
            "first_full_accuracy_step": d["first_full_accuracy_step"],
            "first_low_loss_step": d["first_low_loss_step"],
        }
    return {
        "name": c.name,
        "loss": loss,
        "expected": c.expected,
        "observed": c.observed,
        "status": c.status,
        "passed": c.passed,
        "verdict": c.verdict,
        "numbers": numbers,
    }


def stage_sanity(run: Run) -> dict[str, Any]:
    """Stage 3: loss at init against chance (softmax and SVM), regularization raises the
    loss, a tiny subset overfit to 100% (the notes' sanity checks, :mod:`jaxlearn.sanity`)."""
    s = run.settings
    x, y = run.train
    n = min(s.sanity_examples, int(x.shape[0]))
    xs, ys = x[:n], y[:n]
    params = run.model.init(run.key(3))
    notes: list[str] = []
    bar = run.bar(2, "sanity checks", unit="check")
    with _collect_warnings(notes):
        softmax = sanity.run_all(
            sanity.make_loss_fn(run.model),
            params,
            xs,
            ys,
            num_examples=min(s.overfit_examples, n),
            steps=s.overfit_steps,
            key=jax.random.fold_in(run.key(3), 1),
        )
        bar.update(1)
        svm = sanity.initial_loss(
            sanity.make_loss_fn(run.model, jaxlearn.multiclass_svm), params, xs, ys, chance="svm"
        )
        bar.update(1)
    bar.close()
    checks = [
        _check_dict(softmax["initial_loss"], "softmax"),
        _check_dict(svm, "svm"),
        _check_dict(softmax["regularization_raises_loss"], "softmax"),
        _check_dict(softmax["overfit_small"], "softmax"),
    ]
    return {
        "num_examples": n,
        "checks": checks,
        "passed": all(c["passed"] is True for c in checks),
        "notes": notes,
    }


# --------------------------------------------------------------------------- 4. rules


def stage_rules(run: Run) -> dict[str, Any]:
    """Stage 4: the six update rules on the same model, initialization, data order and
    number of epochs (:func:`jaxlearn.fit`), each at a learning rate typical for it."""
    s = run.settings
    notes: list[str] = []
    histories = {}
    rows = []
    bar = run.bar(len(RULES), "update rules", unit="rule")
    for rule in RULES:
        lr = float(s.rule_learning_rates[rule])
        with _collect_warnings(notes):
            res = jaxlearn.fit(
                run.model,
                run.train,
                run.val,
                optimizer=rule,
                hparams={"learning_rate": lr},
                batch_size=s.batch_size,
                num_epochs=s.rule_epochs,
                key=run.key(4),
                activation_size=0,
                progress=False,
            )
        h = res.history
        histories[rule] = h
        spe = int(h.meta["steps_per_epoch"])
        last = np.asarray(h.loss[-spe:], dtype=float)
        best_epoch = h.meta.get("best_epoch")
        rows.append(
            {
                "rule": rule,
                "learning_rate": lr,
                "final_train_loss": _num(h.train_loss[-1]),
                "last_epoch_minibatch_loss": _num(np.nanmean(last)) if last.size else None,
                "final_val_accuracy": _num(h.val_accuracy[-1]),
                "best_val_accuracy": _num(np.nanmax(h.val_accuracy)),
                "best_epoch": best_epoch,
                "first_nonfinite_step": h.meta.get("first_nonfinite_step"),
                "train_loss_per_epoch": [_num(v) for v in h.train_loss],
                "val_accuracy_per_epoch": [_num(v) for v in h.val_accuracy],
            }
        )
        bar.set_postfix(rule=rule, val_acc=f"{float(h.val_accuracy[-1]):.3f}", refresh=False)
        bar.update(1)
    bar.close()

    def score(r: dict[str, Any]) -> tuple[float, float]:
        acc = r["final_val_accuracy"] if r["final_val_accuracy"] is not None else -1.0
        loss = r["final_train_loss"] if r["final_train_loss"] is not None else math.inf
        return (-acc, loss)

    best = min(rows, key=score)
    fig_path = run.figures / "update_rules.png"
    plot_rule_comparison(histories, fig_path)
    spe = int(next(iter(histories.values())).meta["steps_per_epoch"])
    return {
        "epochs": s.rule_epochs,
        "batch_size": s.batch_size,
        "steps_per_epoch": spe,
        "rules": rows,
        "best_rule": best["rule"],
        "figure": run.rel(fig_path),
        "notes": notes,
    }


# --------------------------------------------------------------------------- 5. search


def _make_objective(run: Run, rule: str) -> Callable[..., dict[str, jax.Array]]:
    tr = jaxlearn.trainer(
        run.model,
        optimizer=rule,
        batch_size=run.settings.batch_size,
        hparams={"learning_rate": 1e-3, "l2": 0.0},
        update_ratios=False,
    )
    train, val = run.train, run.val

    def objective(hp: dict[str, Any], key: jax.Array) -> dict[str, jax.Array]:
        k_init, k_data = jax.random.split(key)
        state = tr.init(k_init, hparams={"learning_rate": hp["learning_rate"], "l2": hp["l2"]})

        def epoch(state: Any, k: jax.Array) -> tuple[Any, tuple[jax.Array, jax.Array]]:
            state, m = tr.train_epoch(state, train, k)
            return state, (tr.evaluate(state.params, val).accuracy, jnp.mean(m.loss))

        _, (acc, loss) = jax.lax.scan(epoch, state, jax.random.split(k_data, hp["epochs"]))
        return {"val_acc": acc, "train_loss": loss}

    return objective


def _bounds(d: search.Dimension) -> tuple[float, float]:
    # The demo searches log_uniform ranges only (narrowed ones too): both bounds are set.
    assert d.low is not None and d.high is not None
    return float(d.low), float(d.high)


def _trial_dict(t: search.Trial) -> dict[str, Any]:
    return {
        "number": t.number,
        "learning_rate": float(t.hparams["learning_rate"]),
        "l2": float(t.hparams["l2"]),
        "status": t.status,
        "val_acc": _num(t.value),
        "best_epoch": t.best_epoch,
        "reason": t.reason,
        "final_train_loss": _num(t.history["train_loss"][-1])
        if t.history.get("train_loss")
        else None,
    }


def stage_search(run: Run) -> dict[str, Any]:
    """Stage 5: coarse-to-fine random search of learning rate and L2 strength, log-uniform,
    1 epoch then 5, each stage's trials one vmapped population
    (:func:`jaxlearn.search.coarse_to_fine`); border warnings; scatter plots."""
    s = run.settings
    rule = run.results["update_rules"]["best_rule"]
    space = {
        "learning_rate": search.log_uniform(*s.search_lr),
        "l2": search.log_uniform(*s.search_l2),
    }
    stages = [search.Stage(n, epochs=e) for n, e in s.search_stages]
    total = sum(n for n, _ in s.search_stages)
    bar = run.bar(total, "search", unit="trial")

    def callback(study: search.Study, new: list[search.Trial]) -> None:
        bar.update(len(new))

    notes: list[str] = []
    with _collect_warnings(notes):
        study = search.coarse_to_fine(
            _make_objective(run, rule),
            space,
            stages,
            run.key(5),
            metric="val_acc",
            trials_per_call=s.search_trials_per_call,
            callback=callback,
        )
    bar.close()
    out_stages = []
    for i, (st, sp) in enumerate(zip(study.stages, study.spaces, strict=True), start=1):
        fig_path = run.figures / f"search_stage{i}.png"
        st.plot(path=fig_path)
        ok = [t for t in st.ranked() if t.status != "failed"]
        out_stages.append(
            {
                "stage": i,
                "num_trials": len(st.trials),
                "epochs": s.search_stages[i - 1][1],
                "ranges": {n: list(_bounds(d)) for n, d in sp.items()},
                "failed": len(st.failed),
                "failure_reasons": sorted({t.reason for t in st.failed if t.reason})[:3],
                "best": _trial_dict(ok[0]) if ok else None,
                "top": [_trial_dict(t) for t in ok[:5]],
                "trials": [_trial_dict(t) for t in sorted(st.trials, key=lambda t: t.number)],
                "border_warnings": list(st.border_warnings),
                "figure": run.rel(fig_path),
            }
        )
    best = study.best
    return {
        "rule": rule,
        "metric": "val_acc",
        "space": {
            n: {"low": lo, "high": hi, "log": bool(d.log)}
            for n, d in space.items()
            for lo, hi in [_bounds(d)]
        },
        "stages": out_stages,
        "best": _trial_dict(best),
        "notes": [n for n in notes if not n.startswith("BorderWarning")],
    }


# --------------------------------------------------------------------------- 6. ensemble


def stage_ensemble(run: Run) -> dict[str, Any]:
    """Stage 6: the best configuration trained as an ensemble over seeds in one program with
    a running (EMA) average of each member's parameters; members, averaged parameters,
    ensemble and a distilled student on the test set; the best checkpoint written."""
    s = run.settings
    rule = run.results["search"]["rule"]
    best = run.results["search"]["best"]
    hp = {"learning_rate": best["learning_rate"], "l2": best["l2"]}
    n_members = s.ensemble_members
    steps_per_epoch = int(run.train[0].shape[0]) // s.batch_size
    # A window of about one epoch: the average starts at the initial weights, so a decay
    # whose window spans the whole run would keep a share of them.
    decay = float(min(0.999, max(0.9, 1.0 - 1.0 / max(1, steps_per_epoch))))
    seeds = [run.config.seed * 1000 + i for i in range(n_members)]
    notes: list[str] = []
    with _collect_warnings(notes):
        r = ensemble.fit_ensemble(
            run.model,
            run.train,
            run.val,
            keys=seeds,
            optimizer=rule,
            hparams=hp,
            batch_size=s.batch_size,
            num_epochs=s.ensemble_epochs,
            average="ema",
            # In a quick run one call (one compiled program); else three, for the bar.
            average_decay=decay,
            epochs_per_call=None if run.config.quick else max(1, s.ensemble_epochs // 3),
            progress=run.progress,
        )
        final = ensemble.evaluate_ensemble(run.model, r.params, run.test)
        averaged = ensemble.evaluate_ensemble(run.model, r.averaged_params, run.test)
        best_ck = ensemble.evaluate_ensemble(run.model, r.best_params, run.test)
        student = ensemble.distill(
            run.model,
            r.params,
            run.model,
            run.train,
            run.val,
            temperature=s.distill_temperature,
            optimizer=rule,
            hparams=hp,
            batch_size=s.batch_size,
            num_epochs=s.distill_epochs,
            key=jax.random.fold_in(run.key(6), 1),
        )
    student_scores = run.model.apply(student.params, run.test[0])
    student_test = float(jaxlearn.accuracy(student_scores, run.test[1]))
    student_loss = float(jaxlearn.softmax_cross_entropy(student_scores, run.test[1]))
    hist = r.history
    best_val = np.nanmax(hist.val_accuracy, axis=1)
    best_member = int(np.argmax(best_val))
    best_epoch = int(hist.best_epoch[best_member])
    members = []
    for i in range(n_members):
        members.append(
            {
                "member": i,
                "seed": seeds[i],
                "final_val_accuracy": _num(hist.val_accuracy[i, -1]),
                "test_accuracy": _num(final.member_accuracy[i]),
                "averaged_test_accuracy": _num(averaged.member_accuracy[i]),
                "best_val_accuracy": _num(best_val[i]),
                "best_epoch": int(hist.best_epoch[i]),
                "best_checkpoint_test_accuracy": _num(best_ck.member_accuracy[i]),
            }
        )

    # The best checkpoint: the member with the best validation accuracy, at its best epoch,
    # with the mean image needed to use it on new data.
    params = jax.tree.map(lambda a: a[best_member], r.best_params)
    ck_path = run.out / "best.npz"
    history = hist.member(best_member)
    meta = {
        "model": {
            "kind": "mlp",
            "input_dim": int(run.train[0].shape[1]),
            "hidden": list(s.hidden),
            "num_classes": 10,
        },
        "rule": rule,
        "hparams": hp,
        "member": best_member,
        "seed": seeds[best_member],
        "epoch": best_epoch,
        "val_accuracy": _num(best_val[best_member]),
        "test_accuracy": _num(best_ck.member_accuracy[best_member]),
        "dataset": run.config.data,
        "data_seed": run.config.seed,
    }
    tree = {"params": params, "mean_image": jnp.asarray(run.mean_image)}
    jaxlearn.save_checkpoint(ck_path, tree, metadata=meta, history=history)
    run.final_history, run.final_params = history, params
    return {
        "rule": rule,
        "hparams": hp,
        "num_members": n_members,
        "epochs": s.ensemble_epochs,
        "average": "ema",
        "average_decay": decay,
        "strategy": r.plan.strategy,
        "num_devices": int(r.plan.num_devices),
        "members": members,
        "mean_member_test_accuracy": _num(final.mean_member_accuracy),
        "std_member_test_accuracy": _num(final.std_member_accuracy),
        "mean_averaged_test_accuracy": _num(averaged.mean_member_accuracy),
        "ensemble_test_accuracy": _num(final.ensemble_accuracy),
        "averaged_ensemble_test_accuracy": _num(averaged.ensemble_accuracy),
        "num_test": int(run.test[1].shape[0]),
        "mean_member_test_loss": _num(np.mean(final.member_loss)),
        "mean_averaged_test_loss": _num(np.mean(averaged.member_loss)),
        "ensemble_test_loss": _num(final.ensemble_loss),
        "averaged_ensemble_test_loss": _num(averaged.ensemble_loss),
        "accuracy_by_size": [_num(v) for v in final.accuracy_by_size],
        "student": {
            "temperature": s.distill_temperature,
            "epochs": s.distill_epochs,
            "test_accuracy": _num(student_test),
            "test_loss": _num(student_loss),
            "val_accuracy": _num(student.val_accuracy[-1]) if student.val_accuracy.size else None,
            "teacher_val_accuracy": _num(student.teacher_val_accuracy),
        },
        "checkpoint": {
            "path": run.rel(ck_path),
            "member": best_member,
            "epoch": best_epoch,
            "val_accuracy": _num(best_val[best_member]),
            "test_accuracy": _num(best_ck.member_accuracy[best_member]),
            "test_loss": _num(best_ck.member_loss[best_member]),
        },
        "notes": notes,
    }


# --------------------------------------------------------------------------- 7. diagnosis


def stage_diagnosis(run: Run) -> dict[str, Any]:
    """Stage 7: the final run (the best checkpoint's member) read as the notes read curves
    (:func:`jaxlearn.diagnose`), with its loss, accuracy and update-ratio figures."""
    from jaxlearn.plots import plot_history

    h, params = run.final_history, run.final_params
    # fit() records the leaf shapes (diagnose skips biases by them); fit_ensemble's member
    # histories do not, so they are added here.
    h.meta.setdefault(
        "leaf_shapes",
        {
            name: list(np.shape(p))
            for name, p in zip(jaxlearn.leaf_names(params), jax.tree.leaves(params), strict=True)
        },
    )
    d = jaxlearn.diagnose(h)
    figs = plot_history(h, run.figures / "final_run")
    tr_acc, va_acc = h.train_accuracy, h.val_accuracy
    ratios = {}
    spe = int(h.meta.get("steps_per_epoch") or 1)
    for leaf, rr in h.update_ratio.items():
        vals = np.asarray(rr, dtype=float)[-spe:]
        vals = vals[np.isfinite(vals)]
        ratios[leaf] = _num(np.median(vals)) if vals.size else None
    ens = run.results["ensemble"]
    return {
        "member": ens["checkpoint"]["member"],
        "summary": d.summary,
        "num_steps": int(h.num_steps),
        "num_epochs": int(h.num_epochs),
        "final_train_accuracy": _num(tr_acc[-1]) if tr_acc.size else None,
        "final_val_accuracy": _num(va_acc[-1]) if va_acc.size else None,
        "final_loss": _num(h.loss[-1]) if h.loss.size else None,
        "update_ratio_last_epoch": ratios,
        "findings": [
            {
                "kind": f.kind,
                "severity": f.severity,
                "message": f.message,
                "evidence": f.evidence,
                "advice": f.advice,
            }
            for f in d
        ],
        "figures": {name: run.rel(p) for name, p in figs.items()},
    }


STAGES: tuple[tuple[str, str, Callable[[Run], dict[str, Any]]], ...] = (
    ("data", "Data", stage_data),
    ("gradcheck", "Gradient check", stage_gradcheck),
    ("sanity", "Sanity checks", stage_sanity),
    ("update_rules", "Update rules", stage_rules),
    ("search", "Search", stage_search),
    ("ensemble", "Ensemble", stage_ensemble),
    ("diagnosis", "Diagnosis", stage_diagnosis),
)
"""``(results key, title, stage function)`` in order."""
