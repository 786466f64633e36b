"""Update rules as optax-compatible transforms over pytrees."""

from jaxlearn.optim._base import Rule, compute_dtype
from jaxlearn.optim.averaging import AverageState, averaged_params, param_average
from jaxlearn.optim.rules import (
    RULES,
    AdagradState,
    AdamState,
    MomentumState,
    RMSPropState,
    SgdState,
    adagrad,
    adam,
    momentum,
    nesterov,
    rmsprop,
    sgd,
)

__all__ = [
    "AverageState",
    "averaged_params",
    "param_average",
    "Rule",
    "compute_dtype",
    "RULES",
    "AdagradState",
    "AdamState",
    "MomentumState",
    "RMSPropState",
    "SgdState",
    "adagrad",
    "adam",
    "momentum",
    "nesterov",
    "rmsprop",
    "sgd",
]
