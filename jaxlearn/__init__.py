"""jaxlearn: the craft of training a network well, as fast and exact JAX.

Gradient checks, sanity checks, update rules, learning-rate annealing, babysitting a run,
hyperparameter search and ensembles, all as pure functions over pytrees.

The public API of each part is re-exported here from its module's ``__all__``; parts with
many names of their own (``jaxlearn.sanity``, ``jaxlearn.search``, ``jaxlearn.ensemble``)
are reached as submodules.
"""

from jaxlearn import (  # noqa: F401  (submodules reached as jaxlearn.search.*)
    data,
    ensemble,
    gradcheck,
    losses,
    models,
    optim,
    plots,
    population,
    sanity,
    schedules,
    search,
    train,
)
from jaxlearn.data import *  # noqa: F403
from jaxlearn.gradcheck import *  # noqa: F403
from jaxlearn.losses import *  # noqa: F403
from jaxlearn.models import *  # noqa: F403
from jaxlearn.optim import *  # noqa: F403
from jaxlearn.schedules import *  # noqa: F403
from jaxlearn.train import *  # noqa: F403

__version__ = "0.1.0"

__all__ = [
    *optim.__all__,
    *schedules.__all__,
    *losses.__all__,
    *models.__all__,
    *data.__all__,
    *train.__all__,
    *gradcheck.__all__,
]
