"""Hyperparameter search: log-scale spaces, random and grid search, coarse to fine,
successive halving, border warnings and study tables, with whole populations of trials
run as one compiled program (:mod:`jaxlearn.population`).

The notes' workflow: search learning rate and regularization on a log scale
(:func:`log_uniform`), prefer random to grid search (:func:`random_search`), stage the
search from coarse to fine (:func:`coarse_to_fine`), watch for best values on the border
of the range (:func:`border_warnings`, issued after every search), and keep each trial's
best checkpoint (``checkpoint_dir=``). An objective is a pure function
``(hparams, key) -> dict`` of validation metrics; see :mod:`jaxlearn.search.engine`.

Example:
    >>> import jax, jax.numpy as jnp
    >>> from jaxlearn import search
    >>> def objective(hp, key):
    ...     return {"val_acc": 1.0 - (jnp.log10(hp["lr"]) + 3.0) ** 2 / 10}
    >>> study = search.random_search(objective, {"lr": search.log_uniform(1e-6, 1e0)}, 32,
    ...                              jax.random.key(0), metric="val_acc")
    >>> study.best.value > 0.99, len(study.top_k(5))
    (True, 5)
"""

from jaxlearn.search.bayes import optuna_search
from jaxlearn.search.border import BorderWarning, border_warnings, warn_borders
from jaxlearn.search.engine import (
    SearchOptions,
    evaluate_trials,
    grid_search,
    load_params,
    random_search,
)
from jaxlearn.search.space import (
    Dimension,
    check_space,
    choice,
    grid,
    grid_points,
    int_uniform,
    log_uniform,
    narrow,
    sample,
    uniform,
)
from jaxlearn.search.staged import Stage, coarse_to_fine, narrow_space, successive_halving
from jaxlearn.search.study import STATUSES, Study, Trial, load_study

__all__ = [
    "BorderWarning",
    "Dimension",
    "STATUSES",
    "SearchOptions",
    "Stage",
    "Study",
    "Trial",
    "border_warnings",
    "check_space",
    "choice",
    "coarse_to_fine",
    "evaluate_trials",
    "grid",
    "grid_points",
    "grid_search",
    "int_uniform",
    "load_params",
    "load_study",
    "log_uniform",
    "narrow",
    "narrow_space",
    "optuna_search",
    "random_search",
    "sample",
    "successive_halving",
    "uniform",
    "warn_borders",
]
