"""Say what is wrong with a run, the way the notes read loss and accuracy curves.

:func:`diagnose` looks at a :class:`~jaxlearn.History` and returns :class:`Finding` s, each
with the evidence (numbers from the run) and the notes' advice:

- ``nonfinite``: the loss became NaN or infinite (learning rate too high), with the step;
- ``init_loss_high``: the first step's data loss (its loss less the regularization
  penalty ``fit`` records) is far above the loss at chance, ``log(C)`` for a softmax over
  C classes, ``C - 1`` for the SVM (initial weights or inputs too large); judged when the
  loss at chance is known (given, or from the classes and loss ``fit`` records);
- ``exploding``: the loss grew far above its starting value (learning rate too high);
- ``lr_too_low``: the loss decays linearly or barely (learning rate too low);
- ``plateau_high``: the loss dropped at once and then plateaued at a high value
  (learning rate too high);
- ``noisy_loss``: the step-to-step wiggle is large next to the curve's scale (batch too
  small);
- ``overfitting``: a large train/validation accuracy gap (more regularization or data);
- ``underfitting``: no gap but low accuracy (model too small, or too much regularization);
- ``update_ratio_low`` / ``update_ratio_high``: a leaf's ``||update|| / ||param||`` far
  from the notes' ~1e-3 (high ones only from ``ratio_min_steps`` steps on, unless far out:
  ratios start high and fall as the weights grow);
- ``dead_units``: many hidden ReLUs never active (learning rate too high or a bad init).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np

from jaxlearn._checks import check_int, number, real_number
from jaxlearn.losses import loss_at_chance
from jaxlearn.train.history import History

__all__ = ["Finding", "Diagnosis", "diagnose", "bad_steps"]

_SEVERITY = {"error": 0, "warning": 1, "info": 2}


class Finding(NamedTuple):
    """One problem found in a run.

    - ``kind``: a stable identifier (``"nonfinite"``, ``"lr_too_low"``, ``"overfitting"``...).
    - ``severity``: ``"error"``, ``"warning"`` or ``"info"``.
    - ``message``: what is wrong and its likely cause, in one sentence.
    - ``evidence``: the numbers from the run that show it.
    - ``advice``: what to try, from the notes.
    - ``step``: the step where it happened, when there is one.
    - ``leaf``: the parameter leaf concerned (update-ratio findings), else None.
    """

    kind: str
    severity: str
    message: str
    evidence: str
    advice: str
    step: int | None = None
    leaf: str | None = None

    def __str__(self) -> str:
        return (
            f"[{self.severity}] {self.kind}: {self.message}\n"
            f"    evidence: {self.evidence}\n    advice: {self.advice}"
        )


class Diagnosis(list):
    """The findings of :func:`diagnose`, most severe first; prints as a readable report."""

    def __init__(self, findings: Sequence[Finding] = (), summary: str = "") -> None:
        super().__init__(sorted(findings, key=lambda f: _SEVERITY[f.severity]))
        self.summary = summary

    @property
    def kinds(self) -> list[str]:
        """The findings' kinds, in order."""
        return [f.kind for f in self]

    def __str__(self) -> str:
        head = self.summary or "Diagnosis"
        if not self:
            return f"{head}: no problems found."
        lines = [f"{head}: {len(self)} finding{'s' if len(self) > 1 else ''}."]
        lines += [str(f) for f in self]
        return "\n".join(lines)

    def _repr_pretty_(self, p, cycle) -> None:  # pragma: no cover - IPython display
        p.text(str(self))


def _smooth(x: np.ndarray, window: int) -> np.ndarray:
    """Centered moving average (edges use the available points)."""
    if window <= 1 or x.size < 3:
        return x.astype(float)
    k = np.ones(window)
    num = np.convolve(x, k, mode="same")
    den = np.convolve(np.ones_like(x, dtype=float), k, mode="same")
    return num / den


def _fmt(v: float) -> str:
    return f"{v:.4g}"


# The losses `fit` names in ``history.meta["loss"]``, as `loss_at_chance` names them.
_CHANCE_KINDS = {"softmax_cross_entropy": "softmax", "multiclass_svm": "svm"}


def _chance(
    fn: str, meta: Mapping[str, Any], num_classes: int | None, chance_loss: float | None
) -> tuple[float | None, str]:
    """The loss at chance and how it was found: `chance_loss` if given, else from the
    classes (`num_classes`, else the History's record) and the loss the History names (the
    softmax when it names none); None when unknown."""
    if num_classes is not None:
        check_int(fn, "num_classes", num_classes, 2)
    if chance_loss is not None:
        value = number(fn, "chance_loss", chance_loss, lo=0, lo_open=True)
        return value, "the given loss at chance"
    c: Any = num_classes if num_classes is not None else meta.get("num_classes")
    if isinstance(c, bool) or not isinstance(c, (int, np.integer)) or c < 2:
        return None, ""
    named = str(meta.get("loss"))
    if num_classes is None and named not in _CHANCE_KINDS:
        return None, ""  # a loss of the user's own: its value at chance is not known
    kind = _CHANCE_KINDS.get(named, "softmax")
    value, how = loss_at_chance(fn, kind, int(c))
    return value, f"{how}, the {'SVM' if kind == 'svm' else 'softmax'} loss at chance"


def bad_steps(history: History) -> np.ndarray:
    """Which steps went bad: a NaN or infinite loss, or the step's ``finite`` flag off.

    The flag counts too because an update can overflow while the loss it came from was
    finite (:func:`~jaxlearn.fit` skips or stops at such updates). :func:`diagnose` dates
    its ``nonfinite`` finding by this mask and :func:`jaxlearn.plots.plot_loss` marks it.

    **Arguments:**
    - `history`: a :class:`~jaxlearn.History`; a ``finite`` record of another length than
      ``loss`` (none recorded) is ignored.

    **Returns:** a boolean array, one value per step of ``history.loss``.

    Example:
        >>> import numpy as np, jaxlearn
        >>> from jaxlearn.train.diagnose import bad_steps
        >>> h = jaxlearn.History.from_arrays({"loss": [2.3, 2.2, 2.1, np.nan],
        ...                                   "finite": [True, True, False, False]})
        >>> bad_steps(h).tolist()
        [False, False, True, True]
    """
    loss = np.asarray(history.loss, dtype=float)
    bad = ~np.isfinite(loss)
    finite = np.asarray(history.finite, dtype=bool)
    if finite.shape == loss.shape:
        bad |= ~finite
    return bad


def diagnose(
    history: History,
    *,
    gap: float = 0.1,
    low_accuracy: float = 0.9,
    ratio_band: tuple[float, float] = (1e-4, 1e-2),
    noise: float = 0.15,
    dead_fraction: float = 0.5,
    ratio_min_steps: int = 200,
    num_classes: int | None = None,
    chance_loss: float | None = None,
    init_factor: float = 3.0,
    late_fraction: float = 0.1,
) -> Diagnosis:
    """Read a run's curves as the notes teach and say what is wrong, with evidence and advice.

    Loss curves (per step): the first data loss above ``init_factor`` times the loss at
    chance (``log(C)``) -> initial weights or inputs too large; NaN or exploding -> rate too
    high (with the step); a linear or barely decaying loss -> rate too low; a quick drop
    then a high plateau -> rate too high; a wiggle large next to the curve's scale -> batch
    too small.
    Accuracies (per epoch): ``train - val > gap`` -> overfitting; ``train - val`` small and
    ``train < low_accuracy`` -> underfitting, or a run too short to judge it when the loss
    still fell at the end (by more than ``late_fraction`` of its whole decrease from the
    third quarter of the steps to the last, the whole decrease being at least 10% of the
    first loss: train longer first). Update ratios (per weight leaf, median over the
    last epoch but never the run's first half; leaves with fewer than 2 dimensions are
    skipped when ``history.meta["leaf_shapes"]`` names them) outside ``ratio_band`` around
    the notes' ``~1e-3``.

    Early in training the ratios run high and fall as the weights grow (an MLP on digits at
    a good rate: 2e-2 on its last layer at first, 1e-2 after 150 steps, 6e-3 after 400), so
    a run shorter than ``ratio_min_steps`` is too short to judge a ratio above the band: the
    summary names such leaves instead of a finding. A ratio above ``10 * high`` is reported
    even so (an update a tenth the size of the weights is too large at any time), and so is
    one below the band (it only gets lower).

    The first loss is judged only when the loss at chance is known: `chance_loss`, else
    from the classes (`num_classes`, else ``history.meta["num_classes"]``, which
    :func:`~jaxlearn.fit` records) and the loss the History names (``log(C)`` for the
    softmax, ``C - 1`` for the margin-1 SVM; a loss of your own is judged only with an
    argument). What is judged is the data loss: the first loss less the L2/L1 penalty at
    initialization, which ``fit`` records as ``meta["initial_penalty"]`` (a History with a
    penalty it does not record is not judged: a strong L2 on a wide net alone can exceed
    3x). Small random weights give about ``log(C)`` (softmax), He-initialized nets 1.1-1.5x
    that; 3x takes scores spread 4-6 times wider (C from 2 to 1000), as weights 4x too large
    in one layer or 2x in each of two do, or inputs left at a scale of 10. Where ``fit``
    recorded the inputs' mean and standard deviation (``meta["inputs"]``) and they are far
    from zero mean and unit scale (``|mean| > max(std, 1)`` or ``std > 3``), the finding
    names the inputs first.

    **Arguments:**
    - `history`: the :class:`~jaxlearn.History` of a run (e.g. ``fit(...).history``).
    - `gap`: the train/validation accuracy gap that counts as overfitting.
    - `low_accuracy`: training accuracy below which a run with no gap is underfitting.
    - `ratio_band`: update-to-weight ratios outside ``[low, high]`` are reported.
    - `noise`: the std of the loss around its trend over the second half, as a share of the
      curve's scale (the largest of the smoothed trend's span, the loss's decrease and its
      level over the second half), that counts as noisy. A plateau's wiggle of a few
      percent of the loss is not noise, however flat the trend.
    - `dead_fraction`: share of never-active hidden units that is reported.
    - `ratio_min_steps`: runs of fewer steps are too short to judge a ratio above the band.
    - `num_classes`: the classes, to judge the first loss (chance: ``log(C)``, or ``C - 1``
      when the History names the SVM); None (the default): as the History records.
    - `chance_loss`: the loss at chance itself, for any loss (e.g. an SVM's
      ``(C - 1) * margin``); it replaces the value from the classes.
    - `init_factor`: the first loss above this many times the loss at chance is reported.
    - `late_fraction`: how much of the loss's whole decrease (first loss to the median of
      the last quarter of the steps) may still come between the medians of the third and
      the last quarter before a low accuracy is "train longer first" rather than "a bigger
      model".

    **Returns:** a :class:`Diagnosis`, a list of :class:`Finding` (empty when the run looks
    healthy), most severe first; ``print`` it for a report.

    Example:
        >>> import numpy as np, jaxlearn
        >>> h = jaxlearn.History.from_arrays({
        ...     "loss": np.r_[np.linspace(2.3, 2.0, 30), [40.0, np.nan]],
        ...     "finite": np.r_[np.ones(31, bool), [False]],
        ...     "learning_rate": np.full(32, 3.0)})
        >>> d = jaxlearn.diagnose(h)
        >>> d.kinds[0], d[0].step
        ('nonfinite', 31)

        With the number of classes, the first loss is judged against ``log(C)``:

        >>> h = jaxlearn.History.from_arrays({"loss": np.geomspace(60.0, 0.1, 300)})
        >>> d = jaxlearn.diagnose(h, num_classes=10)
        >>> d.kinds, d[0].message.split(":")[0]
        (['init_loss_high'], 'The data loss at initialization, 60, is 26.1x the loss at chance')
    """
    if not isinstance(history, History):
        raise ValueError(f"diagnose: `history` must be a History, got {type(history).__name__}.")
    ratio_min_steps = check_int("diagnose", "ratio_min_steps", ratio_min_steps, 0)
    lo_band, hi_band = ratio_band
    if not (0 < lo_band < hi_band):
        raise ValueError(
            f"diagnose: `ratio_band` must be (low, high) with 0 < low < high, got {ratio_band!r}."
        )
    chance, chance_how = _chance("diagnose", history.meta, num_classes, chance_loss)
    init_factor = number("diagnose", "init_factor", init_factor, lo=1, lo_open=True)
    late_fraction = number("diagnose", "late_fraction", late_fraction, lo=0, hi=1)
    findings: list[Finding] = []
    loss = np.asarray(history.loss, dtype=float)
    n = loss.size
    spe = int(history.meta.get("steps_per_epoch") or 0)
    lr = history.learning_rate
    e = history.num_epochs
    summary = f"Diagnosis of {n} steps, {e} epoch{'' if e == 1 else 's'}"

    def epoch_of(step: int) -> str:
        return f" (epoch {step // spe + 1})" if spe else ""

    def lr_at(step: int) -> str:
        if lr.size > step and np.isfinite(lr[step]):
            return f"; learning rate {_fmt(float(lr[step]))} at that step"
        return ""

    # The last epoch (or tenth of the run), and never its first half: ratios start high and
    # fall as the weights grow, so the early steps of a one-epoch run would read them high.
    last = slice(max(n // 2, n - (spe or max(1, n // 10))), n)
    ratio_medians: dict[str, tuple[float, int]] = {}
    shapes = history.meta.get("leaf_shapes") or {}
    for leaf, r in history.update_ratio.items():
        if leaf in shapes and len(shapes[leaf]) < 2:
            continue  # biases and gains start at zero or one: the heuristic is for weights
        vals = np.asarray(r, dtype=float)[last]
        vals = vals[np.isfinite(vals)]
        if vals.size:
            ratio_medians[leaf] = (float(np.median(vals)), int(vals.size))
    # The leaves' median ratio judges the rate as a whole; any one leaf too high rules out
    # a rate too low (that leaf is reported as too high, and both cannot be said of one
    # rate).
    median_ratio = (
        float(np.median([v for v, _ in ratio_medians.values()])) if ratio_medians else math.nan
    )
    ratios_high, ratios_low = median_ratio > hi_band, median_ratio < lo_band
    any_high = any(v > hi_band for v, _ in ratio_medians.values())
    # Dead ReLUs pass no gradient: the loss stalls and the ratios read tiny (or 0) because the
    # rate was too high, not too low. Their finding explains both.
    dead_layers = {
        layer: float(stats["dead_units"][-1])
        for layer, stats in history.activations.items()
        if stats.get("dead_units") is not None
        and stats["dead_units"].size
        and float(stats["dead_units"][-1]) > dead_fraction
    }

    # ------------------------------------------------------------------ divergence
    bad = bad_steps(history)
    diverged = False
    good = loss
    if bad.any():
        s = int(np.argmax(bad))
        diverged = True
        before = loss[max(0, s - 3) : s]
        findings.append(
            Finding(
                "nonfinite",
                "error",
                f"The loss or an update became NaN or infinite at step {s}{epoch_of(s)}: the "
                "learning rate is too high.",
                (
                    f"loss before: {', '.join(_fmt(v) for v in before) or '-'}, then "
                    f"{_fmt(float(loss[s]))}{lr_at(s)}; {int(bad.sum())} non-finite steps in all."
                ),
                "Lower the learning rate (by 3-10x, the notes search it on a log scale); check the "
                "initialization scale and the data for NaN or huge values.",
                step=s,
            )
        )
        good = loss[:s]
    # ------------------------------------------------------------------ initialization
    hp = history.meta.get("hparams") or {}
    regs = {k: real_number(hp.get(k)) or 0.0 for k in ("l2", "l1")}
    penalty = history.meta.get("initial_penalty")
    if penalty is None and not any(regs.values()):
        penalty = 0.0
    # With a penalty in the first loss that the History does not record, the data loss at
    # initialization is unknown: not judged (a strong L2 on a wide net alone can exceed it).
    if chance is not None and good.size and penalty is not None:
        l0 = float(good[0])
        data0 = l0 - float(penalty)
        if data0 > init_factor * chance:
            reg = ", ".join(f"{k} = {_fmt(v)}" for k, v in regs.items() if v)
            said = (
                f"the first step's data loss {_fmt(data0)} (its loss {_fmt(l0)} less the "
                f"{reg} penalty {_fmt(float(penalty))})"
                if penalty
                else f"the first step's loss {_fmt(l0)}"
            )
            # The inputs' values, as fit records them: far from zero mean and unit scale,
            # they are the first thing to fix (the notes' preprocessing).
            inputs = history.meta.get("inputs") or {}
            m, sd = real_number(inputs.get("mean")), real_number(inputs.get("std"))
            raw = m is not None and sd is not None and (abs(m) > max(sd, 1.0) or sd > 3.0)
            findings.append(
                Finding(
                    "init_loss_high",
                    "warning",
                    f"The data loss at initialization, {_fmt(data0)}, is "
                    f"{data0 / chance:.1f}x the loss at chance: "
                    + (
                        "the inputs are not normalized (or the initial weights are too large)."
                        if raw
                        else "the initial weights (or the inputs) are likely too large."
                    ),
                    f"{said} against {_fmt(chance)} = {chance_how} (small random weights give "
                    f"about that, a He init a little more; {init_factor:g}x takes scores spread "
                    "several times wider)"
                    + (
                        f"; the training inputs have mean {_fmt(m or 0.0)} and standard "
                        f"deviation {_fmt(sd or 0.0)} (first {inputs.get('examples', '?')} "
                        "examples)."
                        if raw
                        else "."
                    ),
                    (
                        "Zero-center the inputs and scale them to unit standard deviation (the "
                        "training set's mean and std, applied to every split), then check the "
                        "first loss again; if it stays high, scale the initialization down (std "
                        "sqrt(2 / fan_in) for ReLU layers, the notes' He init)."
                        if raw
                        else "Scale the initialization down (std sqrt(2 / fan_in) for ReLU "
                        "layers, the notes' He init) and the inputs to zero mean and unit "
                        "scale; check the loss is a mean over the batch, not a sum "
                        "(sanity.initial_loss checks it before training)."
                    ),
                    step=0,
                )
            )

    if good.size >= 4:
        l0 = float(good[0])  # the loss at initialization
        sm3 = _smooth(good, 3)
        peak = int(np.argmax(sm3))
        # A spike in the first epoch counts unsmoothed: a rate too high can blow the loss up
        # for a step or two and then kill the ReLUs, leaving a flat curve behind.
        first = good[: max(spe or 0, 10)]
        # Three times the start and half a unit of loss above it: a converged model's loss
        # of 0.007 wandering to 0.04 while fine-tuning is not an explosion.
        top = max(float(sm3[peak]), float(first.max()))
        if l0 > 0 and top > 3 * l0 and top > l0 + 0.5:
            rise = int(np.argmax(good > 2 * l0))
            diverged = True
            findings.append(
                Finding(
                    "exploding",
                    "error",
                    f"The loss exploded from {_fmt(l0)} to {_fmt(float(good.max()))}, first "
                    f"doubling at step {rise}{epoch_of(rise)}: the learning rate is too high.",
                    f"loss {_fmt(l0)} at the start, {_fmt(float(good[rise]))} at step {rise}, "
                    f"peak {_fmt(float(good.max()))} at step {int(np.argmax(good))}{lr_at(rise)}.",
                    "Lower the learning rate (by 3-10x); gradient clipping or a warmup "
                    "can help too.",
                    step=rise,
                )
            )

    # ------------------------------------------------------------------ shape of the curve
    curve_explains = False
    # The share of the loss's decrease made in the run's last quarter (None: not measured).
    late_share: float | None = None
    if not diverged and good.size >= 20:
        m = good.size
        w = max(3, m // 25)
        sm = _smooth(good, w)
        l0 = float(good[0])
        quarters = np.array_split(good, 4)
        q1, q2, q3, q4 = (float(np.median(v)) for v in quarters)
        tail = q4
        drop = l0 - tail
        rel = drop / abs(l0) if l0 != 0 else 0.0
        d_first, d_last = q1 - q2, q3 - q4
        # Only a real decrease (a tenth of the first loss) says a run is still learning: on a
        # flat loss the quarters' medians differ by noise, of a "decrease" that is noise too.
        late_share = d_last / drop if rel >= 0.1 else None
        e = max(w, m // 10)
        early = float(np.median(good[max(0, e - w) : e]))
        early_drop = l0 - early
        final_acc = history.train_accuracy[-1] if history.num_epochs else np.nan
        learned = final_acc >= low_accuracy
        # "Too low" only while the loss still falls (or the updates are tiny): a loss that
        # went flat at a high value with healthy updates is held there by something else
        # (strong regularization, a small model): underfitting, below.
        still_falling = d_last > 0 and d_last >= 0.5 * max(d_first, 0.0)
        if (
            rel < 0.1
            and not learned
            and not any_high
            and not dead_layers
            and (still_falling or ratios_low or not ratio_medians)
        ):
            curve_explains = True
            findings.append(
                Finding(
                    "lr_too_low",
                    "warning",
                    "The loss barely decreases: the learning rate is too low.",
                    f"the loss went from {_fmt(l0)} to {_fmt(tail)} ({-100 * rel:+.1f}%) in {m} "
                    "steps.",
                    "Raise the learning rate (by 3-10x); search it on a log scale.",
                )
            )
        elif (
            drop > 0
            and early_drop > 0.7 * drop
            and tail > 0.1 * l0
            and abs(q3 - q4) < 0.1 * abs(l0)
            and rel >= 0.1
            and not learned
        ):
            curve_explains = True
            findings.append(
                Finding(
                    "plateau_high",
                    "warning",
                    "The loss dropped at once and then plateaued at a high value: the learning "
                    "rate is too high.",
                    f"{100 * early_drop / drop:.0f}% of the decrease happened in the first {e} "
                    f"steps; the loss then stayed near {_fmt(tail)} ({100 * tail / l0:.0f}% of its "
                    f"start {_fmt(l0)}) with training accuracy {final_acc:.3f}.",
                    "Lower the learning rate, or anneal it (step or exponential decay).",
                )
            )
        elif (
            drop > 0
            and d_first > 0
            and d_last > 0.5 * d_first
            and rel < 0.9
            and early_drop < 0.5 * drop
            and not any_high
            and not dead_layers
        ):
            curve_explains = True
            findings.append(
                Finding(
                    "lr_too_low",
                    "warning",
                    "The loss decays about linearly, not exponentially: the learning rate is too "
                    "low (or the run is far from done).",
                    f"the loss fell by {_fmt(d_first)} from the first to the second quarter of the "
                    f"steps and by {_fmt(d_last)} from the third to the last ({_fmt(l0)} -> "
                    f"{_fmt(tail)}).",
                    "Raise the learning rate (by 3-10x), or train longer if that is the plan.",
                )
            )
        resid = good[m // 2 :] - sm[m // 2 :]
        wiggle = float(np.std(resid))
        # The wiggle is judged against the curve's own scale: the smoothed trend's span, the
        # whole decrease, or the loss's level over the second half, whichever is largest.
        # The span alone shrinks to ~0 on a long plateau (the moving average hides a quick
        # first drop), where a wiggle of a few percent of the loss would read as "noisy".
        scales = {
            "the trend's span": float(sm.max() - sm.min()),
            "the loss's decrease": drop,
            "the loss's level": abs(float(np.median(good[m // 2 :]))),
        }
        what, scale = max(scales.items(), key=lambda kv: kv[1])
        if rel >= 0.1 and scale > 0 and wiggle / scale > noise:
            findings.append(
                Finding(
                    "noisy_loss",
                    "warning",
                    "The loss is very noisy from step to step: the batch size is likely too small.",
                    f"std of the loss around its trend {_fmt(wiggle)} over the second half, "
                    f"{100 * wiggle / scale:.0f}% of {what} {_fmt(scale)}.",
                    "Use larger minibatches (or a lower learning rate).",
                )
            )

    # ------------------------------------------------------------------ accuracies
    if history.num_epochs:
        tr_acc, va_acc = history.train_accuracy, history.val_accuracy
        ok = np.isfinite(tr_acc)
        if ok.any():
            # The last epoch with a training accuracy; its validation accuracy may be
            # missing (a run without validation data can still underfit).
            i = int(np.flatnonzero(ok)[-1])
            t, v = float(tr_acc[i]), float(va_acc[i])
            has_val = math.isfinite(v)
            best = int(np.nanargmax(va_acc)) if np.isfinite(va_acc).any() else i
            # A run stopped while its loss still fell is too short to judge the model's size.
            still_learning = late_share is not None and late_share > late_fraction
            if has_val and t - v > gap:
                findings.append(
                    Finding(
                        "overfitting",
                        "warning",
                        "Training accuracy is far above validation accuracy: the model overfits.",
                        f"after epoch {i + 1}: train {t:.3f}, validation {v:.3f} (gap {t - v:.3f} "
                        f"> {gap}); validation was best, {float(va_acc[best]):.3f}, at epoch "
                        f"{best + 1}.",
                        "Increase regularization (L2 strength, dropout), get more data, or keep "
                        "the best epoch's parameters (early stopping).",
                    )
                )
            elif (
                t < low_accuracy
                and (not has_val or abs(t - v) <= gap / 2)
                and not diverged
                and not curve_explains
                and not ratios_high
                and not dead_layers  # dead units explain a poor fit: not a size problem
            ):
                findings.append(
                    Finding(
                        "underfitting",
                        "warning",
                        "Training and validation accuracy are both low with no gap: the model "
                        "underfits."
                        if has_val
                        else "Training accuracy is low: the model underfits.",
                        f"after epoch {i + 1}: train {t:.3f}"
                        + (f", validation {v:.3f}" if has_val else " (no validation data)")
                        + f" (< {low_accuracy})"
                        + (
                            "; the loss was still falling: it fell by "
                            f"{100 * (late_share or 0.0):.0f}% of its whole decrease from the "
                            "third quarter of the steps to the last."
                            if still_learning
                            else "."
                        ),
                        "Train longer first (the loss has not settled); if the accuracy stays "
                        "low, use a bigger model (more or wider layers) or less regularization."
                        if still_learning
                        else "Use a bigger model (more or wider layers), less regularization, or "
                        "train longer with a well-tuned learning rate.",
                    )
                )

    # ------------------------------------------------------------------ update ratios
    # Early ratios overstate where a run settles (on digits at a good rate, W2's fall from
    # 2e-2 to 1e-2 over the first 150 steps and to 6e-3 by 400; 200 steps put the last epoch
    # past that fall): a short run's high ratio is too short to judge unless it is far out;
    # a low one only gets lower, and is judged.
    short = n < ratio_min_steps
    unjudged: list[str] = []
    if not diverged:
        for leaf, (med, count) in ratio_medians.items():
            where = f"median over the last {count} steps {med:.2e}"
            if short and hi_band < med < 10 * hi_band:
                unjudged.append(f"{leaf} {med:.2e}")
            elif med < lo_band and not dead_layers:
                findings.append(
                    Finding(
                        "update_ratio_low",
                        "info",
                        f"Updates to {leaf} are tiny next to its values: its learning rate may be "
                        "too low.",
                        f"||update|| / ||{leaf}||: {where} (the notes aim near 1e-3; "
                        f"< {lo_band:g}).",
                        "Raise the learning rate (or check this leaf gets a gradient at all).",
                        leaf=leaf,
                    )
                )
            elif med > hi_band:
                findings.append(
                    Finding(
                        "update_ratio_high",
                        "info" if med < 10 * hi_band else "warning",
                        f"Updates to {leaf} are large next to its values: the learning rate is "
                        "likely too high.",
                        f"||update|| / ||{leaf}||: {where} (the notes aim near 1e-3; "
                        f"> {hi_band:g}).",
                        "Lower the learning rate.",
                        leaf=leaf,
                    )
                )

    if unjudged:
        summary += (
            f" (too short to judge the update ratios above {hi_band:g}: "
            f"{', '.join(unjudged)}; they are judged from {ratio_min_steps} steps)"
        )

    # ------------------------------------------------------------------ activations
    for layer, dead in dead_layers.items():
        findings.append(
            Finding(
                "dead_units",
                "warning",
                f"Most units of {layer} never activate: dead ReLUs.",
                f"{100 * dead:.0f}% of the units of {layer} output zero for every "
                "example checked after the last epoch.",
                "Check the initialization (He init for ReLU, biases near 0) and the input "
                "normalization; if the units died during training (a loss spike), lower the "
                "learning rate.",
            )
        )
    return Diagnosis(findings, summary)
