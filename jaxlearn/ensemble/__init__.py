"""Model ensembles, the notes' four ways, each as one compiled program.

- **Independent members** (:func:`fit_ensemble`): N members of one model, each with its own
  key (initialization, dropout, data order) and, when given, its own hyperparameters,
  stacked on a leading member axis and trained as one program through
  :mod:`jaxlearn.population`: vmapped, in vmapped chunks, or one after another inside the
  program (:func:`choose_strategy` picks per backend and size; force one with
  ``strategy=``), the member axis sharded over every device (``NamedSharding`` on a
  ``Mesh``, ``vmap(..., spmd_axis_name=...)``; under ``jax.default_device``, every device
  of its platform), every process after
  ``jax.distributed.initialize()`` (``examples/distributed_ensemble.py``). Member ``i``
  equals ``jaxlearn.fit(..., key=keys[i])``.
- **Top models of a search** (:func:`top_k_ensemble`): the k best trials' params stacked.
- **Snapshots of one run** (:func:`snapshot_ensemble`): a cyclic cosine rate, the params at
  each cycle's end.
- **A running average of the params** (``fit_ensemble(average="ema")`` or
  :func:`averaged_trainer`): EMA/Polyak params kept in the optimizer state
  (:func:`jaxlearn.param_average`), evaluated beside the raw params.

Prediction averages the members' probabilities (:func:`predict_proba`, :func:`predict`);
:func:`evaluate_ensemble` reports each member, their mean and spread, the ensemble and
accuracy against ensemble size, and :func:`comparison_table` sets the approaches side by
side. :func:`distill` trains one student on the ensemble's soft targets
(:func:`distillation_loss`), for the ensemble's accuracy at one model's cost.

Example:
    >>> import jax, jax.numpy as jnp, jaxlearn
    >>> from jaxlearn import ensemble
    >>> x = jax.random.normal(jax.random.key(0), (64, 4))
    >>> y = (x[:, 0] - x[:, 1] > 0).astype(jnp.int32)
    >>> model = jaxlearn.mlp(4, (8,), 2)
    >>> r = ensemble.fit_ensemble(model, (x, y), num_members=4, learning_rate=0.5,
    ...                           batch_size=16, num_epochs=3, train_eval_size=0)
    >>> rep = ensemble.evaluate_ensemble(model, r.params, (x, y))
    >>> rep.member_accuracy.shape, rep.ensemble_accuracy > 0.8
    ((4,), True)
"""

from jaxlearn.ensemble._common import stack_hparams
from jaxlearn.ensemble.distill import DistillResult, distill, distillation_loss, soft_targets
from jaxlearn.ensemble.fit import (
    EnsembleHistory,
    EnsembleResult,
    averaged_trainer,
    choose_strategy,
    estimate_member_bytes,
    fit_ensemble,
    init_members,
)
from jaxlearn.ensemble.predict import (
    EnsembleReport,
    comparison_table,
    evaluate_ensemble,
    member_probabilities,
    predict,
    predict_proba,
    stack_members,
    unstack_members,
)
from jaxlearn.ensemble.snapshots import SnapshotResult, snapshot_ensemble
from jaxlearn.ensemble.topk import TopK, top_k_ensemble

__all__ = [
    "DistillResult",
    "EnsembleHistory",
    "EnsembleReport",
    "EnsembleResult",
    "SnapshotResult",
    "TopK",
    "averaged_trainer",
    "choose_strategy",
    "comparison_table",
    "distill",
    "distillation_loss",
    "estimate_member_bytes",
    "evaluate_ensemble",
    "fit_ensemble",
    "init_members",
    "member_probabilities",
    "predict",
    "predict_proba",
    "snapshot_ensemble",
    "soft_targets",
    "stack_hparams",
    "stack_members",
    "top_k_ensemble",
    "unstack_members",
]
