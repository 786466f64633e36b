"""Training: the pure core (state, step, epoch), ``fit``, history, diagnosis, checkpoints."""

from jaxlearn.train.core import (
    OPTIMIZERS,
    EvalMetrics,
    StepMetrics,
    Trainer,
    TrainState,
    leaf_names,
    trainer,
)

__all__ = [
    "OPTIMIZERS",
    "EvalMetrics",
    "StepMetrics",
    "Trainer",
    "TrainState",
    "leaf_names",
    "trainer",
]
