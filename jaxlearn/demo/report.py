"""``report.md`` and the one-line stage summaries, rendered from the results only.

:func:`render_report` is a pure function of the ``results.json`` data: every number in the
report is formatted from it, and rendering the saved ``results.json`` again gives the saved
``report.md`` byte for byte. A run that stopped early renders the stages it finished.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

__all__ = ["render_report", "summary_line"]

R = Mapping[str, Any]


def _f(v: Any, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def _acc(v: Any) -> str:
    return _f(v, ".4f")


def _sci(v: Any) -> str:
    return _f(v, ".1e")


def _g(v: Any) -> str:
    return _f(v, ".4g")


def _lr(v: Any) -> str:
    return _f(v, ".3g")


def _table(head: Sequence[str], rows: Sequence[Sequence[str]], align: str = "") -> list[str]:
    """A Markdown table; `align` holds one letter per column (l/r), default left."""
    marks = [("---:" if (align[i : i + 1] == "r") else "---") for i in range(len(head))]
    out = ["| " + " | ".join(head) + " |", "| " + " | ".join(marks) + " |"]
    out += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in rows]
    return out


def _notes(sec: R) -> list[str]:
    notes = sec.get("notes") or []
    return [f"- Note: {n}" for n in notes]


# --------------------------------------------------------------------------- summaries


def _sum_data(d: R) -> str:
    s = d["sizes"]
    return (
        f"{d['dataset']}: {s['train']} train / {s['val']} val / {s['test']} test examples "
        f"of {d['input_dim']} features, {d['num_classes']} classes; training mean image "
        "subtracted."
    )


def _sum_gradcheck(g: R) -> str:
    state = "OK" if g["ok"] else f"FAILED ({g['failures']} checks)"
    return (
        f"{state}: max relative error {_sci(g['max_error_data'])} for the data loss, "
        f"{_sci(g['max_error_reg'])} for the regularization (float64, {g['num_examples']} "
        f"examples after {g['burn_in']['steps']} SGD steps); {g['kinks']} kink(s) crossed."
    )


def _sum_sanity(s: R) -> str:
    parts = []
    for c in s["checks"]:
        n = c["numbers"]
        if c["name"] == "initial_loss":
            parts.append(
                f"{c['loss']} loss at init {_g(n['loss'])} vs {_g(n['expected'])} {c['status']}"
            )
        elif c["name"] == "regularization_raises_loss":
            parts.append(f"regularization raises the loss {c['status']}")
        else:
            parts.append(
                f"{n['num_examples']} examples overfit to "
                f"{_f(n['final_accuracy'], '.0%')} {c['status']}"
            )
    return "; ".join(parts) + "."


def _sum_rules(u: R) -> str:
    best = next(r for r in u["rules"] if r["rule"] == u["best_rule"])
    accs = ", ".join(f"{r['rule']} {_acc(r['final_val_accuracy'])}" for r in u["rules"])
    return (
        f"after {u['epochs']} epochs, validation accuracy {accs}; best: {best['rule']} "
        f"(lr {_lr(best['learning_rate'])})."
    )


def _sum_search(s: R) -> str:
    b = s["best"]
    trials = " then ".join(
        f"{st['num_trials']} trials x {st['epochs']} epoch(s)" for st in s["stages"]
    )
    warn = sum(len(st["border_warnings"]) for st in s["stages"])
    failed = sum(st["failed"] for st in s["stages"])
    return (
        f"{s['rule']}: {trials}; best learning_rate {_lr(b['learning_rate'])}, l2 "
        f"{_lr(b['l2'])}, val acc {_acc(b['val_acc'])}; {failed} failed trial(s), {warn} "
        "border warning(s)."
    )


def _sum_ensemble(e: R) -> str:
    return (
        f"test accuracy: mean member {_acc(e['mean_member_test_accuracy'])}, averaged "
        f"params {_acc(e['mean_averaged_test_accuracy'])}, ensemble of "
        f"{e['num_members']} {_acc(e['ensemble_test_accuracy'])}, distilled student "
        f"{_acc(e['student']['test_accuracy'])}."
    )


def _sum_diagnosis(d: R) -> str:
    kinds = [f["kind"] for f in d["findings"]]
    what = ", ".join(kinds) if kinds else "no problems found"
    return (
        f"member {d['member']}: train {_acc(d['final_train_accuracy'])}, val "
        f"{_acc(d['final_val_accuracy'])} after {d['num_epochs']} epochs; {what}."
    )


_SUMMARIES: dict[str, Callable[[R], str]] = {
    "data": _sum_data,
    "gradcheck": _sum_gradcheck,
    "sanity": _sum_sanity,
    "update_rules": _sum_rules,
    "search": _sum_search,
    "ensemble": _sum_ensemble,
    "diagnosis": _sum_diagnosis,
}


def summary_line(stage: str, section: Mapping[str, Any]) -> str:
    """The one-line summary of a stage, from its section of the results.

    **Arguments:**
    - `stage`: the results key: ``"data"``, ``"gradcheck"``, ``"sanity"``,
      ``"update_rules"``, ``"search"``, ``"ensemble"`` or ``"diagnosis"``.
    - `section`: ``results[stage]``.

    **Returns:** one line of text.

    Example:
        >>> from jaxlearn.demo import summary_line
        >>> print(summary_line("data", {"dataset": "digits", "input_dim": 64, "num_classes": 10,
        ...                             "sizes": {"train": 1259, "val": 269, "test": 269}}))
        digits: 1259 train / 269 val / 269 test examples of 64 features, 10 classes; training
        mean image subtracted.
    """
    if stage not in _SUMMARIES:
        raise ValueError(
            f"summary_line: `stage` must be one of {sorted(_SUMMARIES)}, got {stage!r}."
        )
    return _SUMMARIES[stage](section)


# --------------------------------------------------------------------------- sections


def _sec_data(d: R) -> list[str]:
    s, cc = d["sizes"], d["class_counts"]
    rows = [
        [name, str(s[name]), f"{min(cc[name])}-{max(cc[name])}"]
        for name in ("train", "val", "test")
    ]
    lo, hi = d["train_range"]
    mlo, mhi = d["mean_image_range"]
    return [
        f"Source: {d['source']}; {d['input_dim']} features per example, "
        f"{d['num_classes']} classes.",
        "",
        *_table(["split", "examples", "examples per class"], rows, "lrr"),
        "",
        f"Normalization: {d['normalization']} (mean image values in [{_g(mlo)}, {_g(mhi)}]; "
        f"training inputs now in [{_g(lo)}, {_g(hi)}]). Splits are drawn with a fixed key, "
        "stratified by class.",
    ]


def _sec_gradcheck(g: R) -> list[str]:
    b = g["burn_in"]
    rows = [
        [
            r["part"],
            r["leaf"],
            f"{r['checked']}/{r['size']}",
            _sci(r["max_error"]),
            _sci(r["median_error"]),
            str(r["kinks"]),
            str(r["noise"]),
            _sci(r["forward_error"]),
            r["verdict"] + (" FAIL" if r["failures"] else ""),
        ]
        for r in g["rows"]
    ]
    out = [
        f"The MLP's data loss (softmax cross-entropy on {g['num_examples']} training "
        f"examples) and its L2 regularization (strength {_g(g['l2'])}) are checked "
        f"separately, in {g['dtype']}, with centered differences of step h = {_g(g['h'])} "
        f"against `jax.grad`, after a burn-in of {b['steps']} {b['rule']} steps "
        f"(learning rate {_lr(b['learning_rate'])}; minibatch loss {_g(b['loss_first'])} -> "
        f"{_g(b['loss_last'])}). Threshold: relative error {_g(g['threshold'])}; forward "
        f"mode compared along {g['forward']}.",
        "",
        *_table(
            [
                "part",
                "leaf",
                "checked",
                "max rel. error",
                "median",
                "kinks",
                "below noise",
                "fwd vs rev",
                "verdict",
            ],
            rows,
            "llrrrrrrl",
        ),
        "",
    ]
    if g["ok"]:
        out.append(
            f"- Finding: the gradients are right (max relative error "
            f"{_sci(g['max_relative_error'])}, the notes' verdict: {g['verdict']})."
        )
    else:
        out.append(
            f"- Finding: {g['failures']} check(s) failed: the analytic gradient "
            "disagrees with the numerical one."
        )
    if g["kinks"]:
        sites = "; ".join(f"{n} at {s}" for s, n in g["kink_sites"])
        out.append(
            f"- Kinks: {g['kinks']} checked coordinate(s) crossed a non-smooth point "
            f"({sites}); they are reported, not judged."
        )
    else:
        out.append("- Kinks: no checked coordinate crossed a kink of the ReLUs at this step.")
    return out + _notes(g)


def _sec_sanity(s: R) -> list[str]:
    rows = [
        [c["name"], c["loss"], c["expected"], c["observed"], c["status"], c["verdict"]]
        for c in s["checks"]
    ]
    verdict = (
        "all passed" if s["passed"] else "some did not pass: fix them before training in earnest"
    )
    return [
        f"On {s['num_examples']} training examples, at initialization, regularization off "
        "unless stated.",
        "",
        *_table(["check", "loss", "expected", "observed", "result", "why"], rows),
        "",
        f"- Finding: the sanity checks {verdict}.",
        *_notes(s),
    ]


def _sec_rules(u: R) -> list[str]:
    rows = [
        [
            r["rule"],
            _lr(r["learning_rate"]),
            _g(r["final_train_loss"]),
            _acc(r["final_val_accuracy"]),
            _acc(r["best_val_accuracy"]),
            "-" if r["best_epoch"] is None else str(r["best_epoch"]),
        ]
        for r in u["rules"]
    ]
    best = next(r for r in u["rules"] if r["rule"] == u["best_rule"])
    return [
        f"The same MLP, initialization, data order and budget ({u['epochs']} epochs of "
        f"{u['steps_per_epoch']} minibatches of {u['batch_size']}) for every rule, each at a "
        "learning rate typical for it.",
        "",
        *_table(
            [
                "rule",
                "learning rate",
                "final train loss",
                "final val acc",
                "best val acc",
                "best epoch",
            ],
            rows,
            "lrrrrr",
        ),
        "",
        f"![update rules]({u['figure']})",
        "",
        f"- Finding: {best['rule']} reached the highest validation accuracy on this budget "
        f"({_acc(best['final_val_accuracy'])}); the search below tunes it.",
        *_notes(u),
    ]


def _sec_search(s: R) -> list[str]:
    sp = s["space"]
    space = ", ".join(
        f"{n} log-uniform in [{_g(d['low'])}, {_g(d['high'])}]" for n, d in sp.items()
    )
    rows = []
    for st in s["stages"]:
        b = st["best"] or {}
        rows.append(
            [
                str(st["stage"]),
                str(st["num_trials"]),
                str(st["epochs"]),
                f"[{_lr(st['ranges']['learning_rate'][0])}, "
                f"{_lr(st['ranges']['learning_rate'][1])}]",
                f"[{_lr(st['ranges']['l2'][0])}, {_lr(st['ranges']['l2'][1])}]",
                str(st["failed"]),
                _acc(b.get("val_acc")),
                _lr(b.get("learning_rate")),
                _lr(b.get("l2")),
            ]
        )
    last = s["stages"][-1]
    top = [
        [
            str(t["number"]),
            _lr(t["learning_rate"]),
            _lr(t["l2"]),
            _acc(t["val_acc"]),
            "-" if t["best_epoch"] is None else str(t["best_epoch"] + 1),
            _g(t["final_train_loss"]),
        ]
        for t in last["top"]
    ]
    out = [
        f"Random search of the {s['rule']} rule over {space}; each stage's trials train as "
        "one compiled population, and each stage narrows the ranges around the best trials "
        "of the one before (coarse to fine). Ranked by the best validation accuracy over a "
        "trial's epochs.",
        "",
        *_table(
            [
                "stage",
                "trials",
                "epochs",
                "learning_rate range",
                "l2 range",
                "failed",
                "best val acc",
                "best learning_rate",
                "best l2",
            ],
            rows,
            "rrrllrrrr",
        ),
        "",
        f"Top trials of stage {last['stage']}:",
        "",
        *_table(
            ["trial", "learning_rate", "l2", "val acc", "at epoch", "final train loss"],
            top,
            "rrrrrr",
        ),
        "",
    ]
    for st in s["stages"]:
        out.append(f"![search stage {st['stage']}]({st['figure']})")
    out.append("")
    warned = False
    for st in s["stages"]:
        for w in st["border_warnings"]:
            out.append(f"- Border warning: {w}")
            warned = True
        for reason in st["failure_reasons"]:
            out.append(f"- Failed trials in stage {st['stage']}: {reason}.")
    if not warned:
        out.append("- Border warnings: none; the best values lie inside the ranges explored.")
    b = s["best"]
    out.append(
        f"- Finding: best configuration learning_rate = {_lr(b['learning_rate'])}, "
        f"l2 = {_lr(b['l2'])} (trial {b['number']}, val acc {_acc(b['val_acc'])})."
    )
    return out + _notes(s)


def _sec_ensemble(e: R) -> list[str]:
    rows = [
        [
            str(m["member"]),
            str(m["seed"]),
            _acc(m["final_val_accuracy"]),
            _acc(m["test_accuracy"]),
            _acc(m["averaged_test_accuracy"]),
            f"{_acc(m['best_checkpoint_test_accuracy'])} (epoch {m['best_epoch']})",
        ]
        for m in e["members"]
    ]
    n = e["num_members"]
    mean = e["mean_member_test_accuracy"]
    ck = e["checkpoint"]
    st = e["student"]

    def vs(v: Any) -> str:
        return "-" if v is None or mean is None else f"{v - mean:+.4f}"

    comp = [
        [
            "one member (mean of the members)",
            "1",
            f"{_acc(mean)} +- {_acc(e['std_member_test_accuracy'])}",
            vs(mean),
            _g(e["mean_member_test_loss"]),
        ],
        [
            "averaged parameters (EMA, mean of the members)",
            "1",
            _acc(e["mean_averaged_test_accuracy"]),
            vs(e["mean_averaged_test_accuracy"]),
            _g(e["mean_averaged_test_loss"]),
        ],
        [
            f"ensemble of {n} members (averaged probabilities)",
            str(n),
            _acc(e["ensemble_test_accuracy"]),
            vs(e["ensemble_test_accuracy"]),
            _g(e["ensemble_test_loss"]),
        ],
        [
            f"ensemble of {n} averaged-parameter members",
            str(n),
            _acc(e["averaged_ensemble_test_accuracy"]),
            vs(e["averaged_ensemble_test_accuracy"]),
            _g(e["averaged_ensemble_test_loss"]),
        ],
        [
            "distilled student (one model)",
            "1",
            _acc(st["test_accuracy"]),
            vs(st["test_accuracy"]),
            _g(st["test_loss"]),
        ],
        [
            f"best checkpoint (member {ck['member']}, epoch {ck['epoch']})",
            "1",
            _acc(ck["test_accuracy"]),
            vs(ck["test_accuracy"]),
            _g(ck["test_loss"]),
        ],
    ]
    by_size = ", ".join(f"{k + 1}: {_acc(a)}" for k, a in enumerate(e["accuracy_by_size"]))
    gain = (
        None
        if e["ensemble_test_accuracy"] is None or mean is None
        else e["ensemble_test_accuracy"] - mean
    )
    loss_gain = (
        None
        if e["ensemble_test_loss"] is None or e["mean_member_test_loss"] is None
        else e["ensemble_test_loss"] - e["mean_member_test_loss"]
    )
    h = e["hparams"]
    return [
        f"The best configuration ({e['rule']}, learning_rate {_lr(h['learning_rate'])}, l2 "
        f"{_lr(h['l2'])}) trained over {n} seeds for {e['epochs']} epochs as one program "
        f"(strategy `{e['strategy']}` on {e['num_devices']} device(s)), each member keeping "
        f"an exponential running average of its parameters (decay {_g(e['average_decay'])}). "
        f"A student of the same size is distilled from the ensemble's soft targets "
        f"(temperature {_g(st['temperature'])}, {st['epochs']} epochs).",
        "",
        *_table(
            [
                "member",
                "seed",
                "final val acc",
                "test acc",
                "test acc, averaged params",
                "best checkpoint test acc",
            ],
            rows,
            "rrrrrr",
        ),
        "",
        *_table(
            ["prediction", "models per prediction", "test accuracy", "vs one member", "test loss"],
            comp,
            "lrrrr",
        ),
        "",
        f"Ensemble test accuracy by number of members: {by_size}.",
        "",
        f"- Finding: on the {e['num_test']} test examples (one example is "
        f"{_acc(1 / e['num_test'])} of accuracy) the ensemble of {n} is {_f(gain, '+.4f')} "
        f"in accuracy and {_f(loss_gain, '+.4g')} in loss (negative log-likelihood) against "
        f"the mean member; the distilled student reaches {_acc(st['test_accuracy'])} at one "
        f"model's cost (teacher val acc {_acc(st['teacher_val_accuracy'])}, student val acc "
        f"{_acc(st['val_accuracy'])}).",
        f"- Checkpoint: [{ck['path']}]({ck['path']}) holds member {ck['member']}'s parameters "
        f"at its best validation epoch ({_acc(ck['val_accuracy'])}) with the mean image, "
        "metadata and history (`jaxlearn.load_checkpoint`).",
        *_notes(e),
    ]


def _sec_diagnosis(d: R) -> list[str]:
    ratios = ", ".join(f"{k} {_sci(v)}" for k, v in d["update_ratio_last_epoch"].items())
    out = [
        f"The final run is ensemble member {d['member']} (the best checkpoint's): "
        f"{d['num_steps']} steps, {d['num_epochs']} epochs, final minibatch loss "
        f"{_g(d['final_loss'])}, training accuracy {_acc(d['final_train_accuracy'])}, "
        f"validation accuracy {_acc(d['final_val_accuracy'])}. Median update/weight ratio "
        f"over the last epoch: {ratios} (the notes aim near 1e-3).",
        "",
    ]
    if d["findings"]:
        for f in d["findings"]:
            out.append(
                f"- **{f['kind']}** ({f['severity']}): {f['message']} Evidence: "
                f"{f['evidence']} Advice: {f['advice']}"
            )
    else:
        out.append(f"- {d['summary']}: no problems found.")
    out.append("")
    for name, path in d["figures"].items():
        out.append(f"![final run: {name}]({path})")
    return out


_SECTIONS: tuple[tuple[str, str, Callable[[R], list[str]]], ...] = (
    ("data", "1. Data", _sec_data),
    ("gradcheck", "2. Gradient check", _sec_gradcheck),
    ("sanity", "3. Sanity checks", _sec_sanity),
    ("update_rules", "4. Update rules", _sec_rules),
    ("search", "5. Hyperparameter search", _sec_search),
    ("ensemble", "6. Ensemble", _sec_ensemble),
    ("diagnosis", "7. Diagnosis of the final run", _sec_diagnosis),
)


def _has_figures(results: Any) -> bool:
    """Whether any stage's results name a figure (a partial run may have none)."""
    if isinstance(results, dict):
        return any(
            (k in ("figure", "figures") and bool(v)) or _has_figures(v) for k, v in results.items()
        )
    if isinstance(results, list):
        return any(_has_figures(v) for v in results)
    return False


def render_report(results: Mapping[str, Any]) -> str:
    """The Markdown report of a demo run, from its results (``results.json``) only.

    **Arguments:**
    - `results`: the run's results: ``meta`` and one section per finished stage
      (``data``, ``gradcheck``, ``sanity``, ``update_rules``, ``search``, ``ensemble``,
      ``diagnosis``), optionally ``timings`` and ``error``.

    **Returns:** the report as a string (Markdown, ending with a newline).

    Example:
        >>> from jaxlearn.demo import render_report
        >>> text = render_report({"meta": {"data": "digits", "seed": 0, "quick": True,
        ...                                "jaxlearn": "0.1.0", "jax": "0.10.2",
        ...                                "device": "cpu"}})
        >>> print(text.splitlines()[0])
        # jaxlearn demo: digits, quick run, seed 0
    """
    meta = results.get("meta", {})
    mode = "quick run" if meta.get("quick") else "full run"
    if meta.get("stages", len(_SECTIONS)) < len(_SECTIONS):
        mode += f", stages 1-{meta['stages']} of {len(_SECTIONS)}"
    figures = ", every figure in `figures/`" if _has_figures(results) else ""
    out = [
        f"# jaxlearn demo: {meta.get('data', '?')}, {mode}, seed {meta.get('seed', '?')}",
        "",
        f"jaxlearn {meta.get('jaxlearn', '?')}, jax {meta.get('jax', '?')} on "
        f"{meta.get('device', '?')}. The craft of the cs231n notes, stage by stage: every "
        f"number below is in `results.json`{figures}.",
        "",
    ]
    if results.get("error"):
        out += [f"**The run stopped early:** {results['error']}", ""]
    done = [(k, t, f) for k, t, f in _SECTIONS if k in results]
    if done:
        out += ["## Summary", ""]
        out += [
            f"{i}. **{t.split('. ', 1)[1]}**: {summary_line(k, results[k])}"
            for i, (k, t, _) in enumerate(done, start=1)
        ]
        out.append("")
    for key, title, fn in done:
        out += [f"## {title}", "", *fn(results[key]), ""]
    timings = results.get("timings") or {}
    if timings:
        rows = [
            [name, _f(t["wall_s"], ".1f"), _f(t["cpu_s"], ".1f")] for name, t in timings.items()
        ]
        out += [
            "## Time",
            "",
            *_table(["stage", "wall seconds", "CPU seconds"], rows, "lrr"),
            "",
            "CPU seconds count every thread of the process; on a shared machine the wall "
            "time also includes waiting for a core.",
            "",
        ]
    files = results.get("files") or {}
    if files:
        out += ["## Files", ""]
        out += [f"- [{path}]({path}): {what}" for path, what in files.items()]
        out.append("")
    return "\n".join(out).rstrip("\n") + "\n"
