"""What a demo run does: its options (:class:`DemoConfig`), the sizes each mode uses
(:class:`Settings`), and the output folder it writes to (:func:`new_run_dir`)."""

from __future__ import annotations

import dataclasses
import datetime
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = [
    "DATASETS",
    "RULES",
    "DemoConfig",
    "DemoError",
    "Settings",
    "check_out",
    "new_run_dir",
    "settings_for",
]

DATASETS = ("digits", "cifar10")
"""The data sets the demo knows: scikit-learn's bundled digits, CIFAR-10 files on disk."""

SEED_MAX = 2**32 - 1
"""The largest seed: seeds are uint32, as ``jax.random.key`` takes them."""

RULES = ("sgd", "momentum", "nesterov", "adagrad", "rmsprop", "adam")
"""The update rules compared in stage 4, in the order of the notes."""


class DemoError(ValueError):
    """A demo that cannot start: bad options, a missing or malformed data folder, a
    missing extra, or an output folder that would be overwritten."""


@dataclasses.dataclass(frozen=True)
class DemoConfig:
    """The options of one demo run (the ``jaxlearn demo`` command line).

    - ``data``: ``"digits"`` (scikit-learn's bundled 8x8 digits) or ``"cifar10"``.
    - ``data_dir``: the ``cifar-10-batches-py`` folder (``data="cifar10"`` only).
    - ``out``: the output folder; None makes a new ``jaxlearn-demo-<date>-<time>`` folder in the
      working directory. An existing folder must be empty: a run never overwrites another.
    - ``quick``: a smoke run (fewer trials, members and epochs).
    - ``seed``: the seed every random choice of the run derives from.
    - ``max_train``: use about this many training examples at most (None: all).
    - ``stages``: run only the first `stages` of the seven (e.g. 3: data, gradient check
      and sanity checks, a quick look at a new data set before the long run).
    - ``progress``: show progress bars.

    Example:
        >>> from jaxlearn.demo import DemoConfig
        >>> DemoConfig(quick=True).data
        'digits'
        >>> DemoConfig(data="mnist")
        Traceback (most recent call last):
        jaxlearn.demo.config.DemoError: --data must be one of ('digits', 'cifar10'), got 'mnist'.
    """

    data: str = "digits"
    data_dir: str | None = None
    out: str | None = None
    quick: bool = False
    seed: int = 0
    max_train: int | None = None
    stages: int = 7
    progress: bool = True

    def __post_init__(self) -> None:
        if self.data not in DATASETS:
            raise DemoError(f"--data must be one of {DATASETS}, got {self.data!r}.")
        if self.data == "cifar10" and not self.data_dir:
            raise DemoError(
                "--data cifar10 needs --data-dir PATH: the extracted `cifar-10-batches-py` "
                "folder (data_batch_1..5 and test_batch); the demo never downloads."
            )
        if self.data == "digits" and self.data_dir:
            raise DemoError(
                "--data-dir is only for --data cifar10 (the digits ship with scikit-learn)."
            )
        if (
            isinstance(self.seed, bool)
            or not isinstance(self.seed, int)
            or not 0 <= self.seed <= SEED_MAX
        ):
            raise DemoError(f"--seed must be an int in [0, {SEED_MAX}], got {self.seed!r}.")
        if self.max_train is not None and (
            isinstance(self.max_train, bool)
            or not isinstance(self.max_train, int)
            or self.max_train < 100
        ):
            raise DemoError(f"--max-train must be an int >= 100, got {self.max_train!r}.")
        if (
            isinstance(self.stages, bool)
            or not isinstance(self.stages, int)
            or not 1 <= self.stages <= 7
        ):
            raise DemoError(f"--stages must be an int in [1, 7], got {self.stages!r}.")


@dataclasses.dataclass(frozen=True)
class Settings:
    """The sizes of one run's stages (see :func:`settings_for`)."""

    hidden: tuple[int, ...]
    batch_size: int
    burn_in_steps: int
    burn_in_learning_rate: float
    gradcheck_examples: int
    gradcheck_checks: int
    gradcheck_l2: float
    sanity_examples: int
    overfit_examples: int
    overfit_steps: int
    rule_epochs: int
    rule_learning_rates: Mapping[str, float]
    search_lr: tuple[float, float]
    search_l2: tuple[float, float]
    search_stages: tuple[tuple[int, int], ...]
    search_trials_per_call: int
    ensemble_members: int
    ensemble_epochs: int
    distill_epochs: int
    distill_temperature: float

    def to_dict(self) -> dict:
        """The settings as JSON-ready data.

        Example:
            >>> from jaxlearn.demo import settings_for
            >>> d = settings_for(True).to_dict()
            >>> d["ensemble_members"], d["rule_learning_rates"]["adam"]
            (3, 0.002)
        """
        d = dataclasses.asdict(self)
        d["rule_learning_rates"] = dict(self.rule_learning_rates)
        return d


# Each rule at a learning rate typical for it (the notes compare rules at their own
# good rates): plain SGD needs the largest steps, the adaptive rules much smaller ones.
_RULE_LR = {
    "sgd": 0.1,
    "momentum": 0.02,
    "nesterov": 0.02,
    "adagrad": 0.03,
    "rmsprop": 2e-3,
    "adam": 2e-3,
}


def settings_for(quick: bool) -> Settings:
    """The stage sizes of a full run or of a ``--quick`` smoke run.

    A full run compares the rules over 10 epochs, searches 32 trials for 1 epoch then 16
    for 5, and trains 5 members for 15 epochs; a quick run 4 epochs, 12 then 8 trials, and
    3 members for 6 epochs. Compilation, not arithmetic, dominates both on a CPU.

    **Arguments:**
    - `quick`: the smoke-run sizes.

    **Returns:** a :class:`Settings`.

    Example:
        >>> from jaxlearn.demo import settings_for
        >>> settings_for(False).search_stages, settings_for(True).search_stages
        (((32, 1), (16, 5)), ((12, 1), (8, 5)))
    """
    common: dict[str, Any] = dict(
        hidden=(100,),
        batch_size=64,
        burn_in_steps=20,
        burn_in_learning_rate=0.1,
        gradcheck_l2=1e-3,
        sanity_examples=200,
        overfit_examples=20,
        rule_learning_rates=dict(_RULE_LR),
        search_lr=(1e-5, 1.0),
        search_l2=(1e-6, 1.0),
        distill_temperature=4.0,
    )
    if quick:
        return Settings(
            **common,
            gradcheck_examples=8,
            gradcheck_checks=8,
            overfit_steps=200,
            rule_epochs=4,
            search_stages=((12, 1), (8, 5)),
            search_trials_per_call=4,
            ensemble_members=3,
            ensemble_epochs=6,
            distill_epochs=6,
        )
    return Settings(
        **common,
        gradcheck_examples=16,
        gradcheck_checks=16,
        overfit_steps=300,
        rule_epochs=10,
        search_stages=((32, 1), (16, 5)),
        search_trials_per_call=8,
        ensemble_members=5,
        ensemble_epochs=15,
        distill_epochs=15,
    )


def check_out(out: str | os.PathLike) -> Path:
    """Refuse an output folder that would overwrite something: a file, or a folder with files.

    **Arguments:**
    - `out`: the folder asked for with ``--out``.

    **Returns:** the path (not created).

    **Raises:** :class:`DemoError` when `out` is a file or a non-empty folder.

    Example:
        >>> import tempfile
        >>> from jaxlearn.demo import check_out
        >>> check_out(tempfile.mkdtemp()).is_dir()
        True
    """
    path = Path(out)
    if path.exists():
        if not path.is_dir():
            raise DemoError(f"--out {os.fspath(path)} exists and is not a folder.")
        if any(path.iterdir()):
            raise DemoError(
                f"--out {os.fspath(path)} already exists and is not empty; the demo never "
                "overwrites a previous run. Name a new folder, or leave --out out to get a "
                "fresh one."
            )
    return path


def new_run_dir(
    out: str | os.PathLike | None = None,
    *,
    parent: str | os.PathLike = ".",
    now: datetime.datetime | None = None,
) -> Path:
    """Create the folder a run writes to, never one that holds another run.

    With `out`, that folder is used when it does not exist or is empty; a non-empty one is
    refused. Without, a new ``jaxlearn-demo-YYYYmmdd-HHMMSS`` folder is made in `parent`
    (``-2``, ``-3``... appended when that name is taken); the folder is created atomically,
    so two runs started in the same second get two folders.

    **Arguments:**
    - `out`: the folder asked for, or None.
    - `parent`: where a new folder is made when `out` is None.
    - `now`: the time in the folder's name (default: now).

    **Returns:** the created (empty) folder.

    **Raises:** :class:`DemoError` when `out` exists and is not an empty folder.

    Example:
        >>> import datetime, tempfile
        >>> from jaxlearn.demo import new_run_dir
        >>> parent, t = tempfile.mkdtemp(), datetime.datetime(2026, 11, 26, 9, 30)
        >>> [new_run_dir(parent=parent, now=t).name for _ in range(2)]
        ['jaxlearn-demo-20261126-093000', 'jaxlearn-demo-20261126-093000-2']
    """
    if out is not None:
        path = check_out(out)
        if not path.exists():
            path.mkdir(parents=True)
        return path
    stamp = (now or datetime.datetime.now()).strftime("%Y%m%d-%H%M%S")
    base = Path(parent) / f"jaxlearn-demo-{stamp}"
    for i in range(1, 10_000):
        path = base if i == 1 else base.with_name(f"{base.name}-{i}")
        try:
            path.mkdir(parents=True)
        except FileExistsError:
            continue
        return path
    raise DemoError(f"cannot create a new folder next to {base}: 10000 names taken.")
