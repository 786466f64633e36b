"""Border warnings: the best value on the edge of the range explored means: widen it.

The notes: "be careful with best values at the border ... you may be missing more optimal
hyperparameter setting beyond the interval". After every search (and every stage of a
coarse-to-fine search) :func:`border_warnings` looks at each numeric hyperparameter on its
own scale (``log10`` for log dimensions), takes the range the trials actually explored
(not the range asked for), and warns when the best trial lies in the outer ``edge``
fraction of it, naming the edge and the direction to widen. Nothing is said when the best
lies inside.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence

import numpy as np

from jaxlearn._checks import number
from jaxlearn.search.space import Dimension
from jaxlearn.search.study import Trial

__all__ = ["BorderWarning", "border_warnings", "warn_borders"]


class BorderWarning(UserWarning):
    """The best trials sit at the edge of the range explored: widen the range that way."""


def _num(v: float) -> str:
    return f"{v:.3g}"


def border_warnings(
    ranked: Sequence[Trial],
    space: Mapping[str, Dimension],
    *,
    edge: float = 0.1,
    top: int = 3,
    min_trials: int = 8,
    where: str = "search",
    grid: bool = False,
) -> list[str]:
    """Messages for the hyperparameters whose best trial sits on the edge explored.

    For each numeric dimension with at least two distinct values explored: on its scale
    ``u`` (``log10`` for log dimensions), with ``[u_min, u_max]`` the range the trials
    explored, the best trial is *at the low edge* when ``u_best <= u_min + edge * (u_max -
    u_min)`` (for a grid or choice: the lowest value explored) and likewise at the high
    edge. The message counts how many of the `top` best trials are at that edge too. For a
    grid or choice whose space holds values beyond that edge that no trial tried, the
    message names them instead of asking to widen the range.
    A continuous range explored by fewer than `min_trials` successful trials is not judged
    (with ``n`` trials and no signal at all, the best is an extreme one with chance
    ``2 / n``); a grid or choice always is, and so is every dimension when `grid` says the
    trials were laid out on a grid (their edges are the grid's, not chance draws).

    **Arguments:**
    - `ranked`: trials best first (:meth:`Study.ranked`); failed trials are ignored.
    - `space`: the search space.
    - `edge`: the fraction of the explored width that counts as the edge, in (0, 0.5).
    - `top`: how many of the best trials to count at the edge, for the message.
    - `min_trials`: the fewest successful trials to judge a continuous range.
    - `where`: what ran (``"search"``, ``"stage 1"``), for the message.
    - `grid`: the trials are the points of a grid search.

    **Returns:** a list of messages, empty when every best value lies inside.

    Example:
        >>> from jaxlearn.search import Trial, border_warnings, log_uniform
        >>> trials = [Trial(i, {"lr": 10.0**-u}, "complete", -u) for i, u in enumerate(range(7))]
        >>> ranked = sorted(trials, key=lambda t: -t.value)
        >>> print(border_warnings(ranked, {"lr": log_uniform(1e-6, 1.0)}, min_trials=7)[0])
        search: the best trial has lr = 1 at the high edge of the range explored
        [1e-06, 1] (log scale; 1 of the top 3 trials there). The optimum may lie above it:
        widen the range of lr above 1.
    """
    edge = number("border_warnings", "edge", edge, lo=0, hi=0.5, lo_open=True, hi_open=True)
    ok = [t for t in ranked if t.status != "failed"]
    if not ok:
        return []
    best, leaders = ok[0], ok[:top]
    out = []
    for name, dim in space.items():
        if not dim.numeric or name not in best.hparams:
            continue
        vals = np.array([float(t.hparams[name]) for t in ok if name in t.hparams])
        u = dim.to_scale(vals)
        lo, hi = float(u.min()), float(u.max())
        if not hi > lo:
            continue
        discrete = grid or dim.kind in ("choice", "grid")
        if not discrete and len(vals) < min_trials:
            continue
        band = 0.0 if discrete else edge * (hi - lo)

        def at(side: str, x: float, lo=lo, hi=hi, band=band) -> bool:
            return x <= lo + band if side == "low" else x >= hi - band

        ub = float(dim.to_scale(float(best.hparams[name])))
        for side in ("low", "high"):
            if not at(side, ub):
                continue
            count = sum(at(side, float(dim.to_scale(float(t.hparams[name])))) for t in leaders)
            bound = dim.from_scale(lo if side == "low" else hi)
            direction = "below" if side == "low" else "above"
            scale = "log scale" if dim.log else "linear scale"
            scaled = [(v, float(dim.to_scale(float(v)))) for v in dim.values]
            untried = [v for v, c in scaled if (c < lo if side == "low" else c > hi)]
            if untried:  # the space goes on that way: nothing to widen yet
                out.append(
                    f"{where}: the best trial has {name} = {_num(float(best.hparams[name]))} "
                    f"at the {side} edge of the values explored, but values of the space "
                    f"{direction} it were not tried ({', '.join(_num(float(v)) for v in untried)})"
                    f": run more trials, or search those values."
                )
                continue
            out.append(
                f"{where}: the best trial has {name} = {_num(float(best.hparams[name]))} at "
                f"the {side} edge of the range explored [{_num(float(dim.from_scale(lo)))}, "
                f"{_num(float(dim.from_scale(hi)))}] ({scale}; {count} of the top "
                f"{len(leaders)} trials there). The optimum may lie {direction} it: widen "
                f"the range of {name} {direction} {_num(float(bound))}."
            )
    return out


def warn_borders(
    ranked: Sequence[Trial],
    space: Mapping[str, Dimension],
    *,
    where: str = "search",
    edge: float = 0.1,
    grid: bool = False,
) -> list[str]:
    """:func:`border_warnings`, each message also issued as a :class:`BorderWarning`.

    **Arguments:** as :func:`border_warnings`.

    **Returns:** the messages.

    Example:
        >>> from jaxlearn.search import Trial, warn_borders, uniform
        >>> trials = [Trial(i, {"x": x}, "complete", -abs(x - 0.5)) for i, x in
        ...           enumerate([0.1, 0.5, 0.9])]
        >>> warn_borders(sorted(trials, key=lambda t: -t.value), {"x": uniform(0.0, 1.0)})
        []
    """
    msgs = border_warnings(ranked, space, where=where, edge=edge, grid=grid)
    for m in msgs:
        warnings.warn(m, BorderWarning, stacklevel=3)
    return msgs
