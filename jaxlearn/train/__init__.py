"""Training: the pure core (state, step, epoch), ``fit``, history, diagnosis, checkpoints."""

from jaxlearn.train.checkpoint import Checkpoint, Checkpointer, load_checkpoint, save_checkpoint
from jaxlearn.train.core import (
    OPTIMIZERS,
    EvalMetrics,
    StepMetrics,
    Trainer,
    TrainState,
    leaf_names,
    trainer,
)
from jaxlearn.train.diagnose import Diagnosis, Finding, bad_steps, diagnose
from jaxlearn.train.fit import FitResult, activation_stats, fit
from jaxlearn.train.history import History

__all__ = [
    "OPTIMIZERS",
    "EvalMetrics",
    "StepMetrics",
    "Trainer",
    "TrainState",
    "leaf_names",
    "trainer",
    "History",
    "Checkpoint",
    "Checkpointer",
    "save_checkpoint",
    "load_checkpoint",
    "Finding",
    "Diagnosis",
    "diagnose",
    "bad_steps",
    "FitResult",
    "fit",
    "activation_stats",
]
