"""Update rules as optax-compatible transforms over pytrees."""

from jaxlearn.optim._base import Rule, compute_dtype
from jaxlearn.optim.averaging import AverageState, averaged_params, param_average
from jaxlearn.optim.packed import (
    PACK_MIN_LEAVES,
    PACKING_COST,
    Layout,
    Packed,
    pack,
    packed_value_and_grad,
    packing_threshold,
    should_pack,
    unpack,
)
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
from jaxlearn.optim.second_order import NewtonState, hessian_free, newton

__all__ = [
    "NewtonState",
    "hessian_free",
    "newton",
    "PACK_MIN_LEAVES",
    "PACKING_COST",
    "Layout",
    "Packed",
    "pack",
    "packed_value_and_grad",
    "packing_threshold",
    "should_pack",
    "unpack",
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
