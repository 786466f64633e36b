"""``run_demo``: the seven stages in order, timed, summarized, written to a new folder."""

from __future__ import annotations

import datetime
import json
import math
import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from jaxlearn.demo.config import DemoConfig, DemoError, check_out, new_run_dir, settings_for
from jaxlearn.demo.report import render_report, summary_line

__all__ = ["DemoResult", "run_demo"]


class DemoResult(NamedTuple):
    """What :func:`run_demo` returns: the run's folder, its results and its report text."""

    out: Path
    results: dict[str, Any]
    report: str


def _json_ready(v: Any) -> Any:
    """Plain JSON data: NumPy scalars and arrays as Python values, NaN and inf as None."""
    if isinstance(v, dict):
        return {str(k): _json_ready(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_json_ready(x) for x in v]
    if isinstance(v, np.ndarray):
        return _json_ready(v.tolist())
    if isinstance(v, (bool, np.bool_)):
        return bool(v)
    if isinstance(v, (int, np.integer)):
        return int(v)
    if isinstance(v, (float, np.floating)):
        f = float(v)
        return f if math.isfinite(f) else None
    return v


def _check_extras(config: DemoConfig) -> None:
    try:
        import matplotlib  # noqa: F401
    except ImportError as e:
        raise DemoError(
            "the demo draws its figures with matplotlib; install it with "
            "`pip install 'jaxlearn[plot]'` (or '.[all]' from a checkout)."
        ) from e
    if config.data == "digits":
        try:
            import sklearn  # noqa: F401
        except ImportError as e:
            raise DemoError(
                "--data digits reads scikit-learn's bundled digits; install it "
                "with `pip install 'jaxlearn[data]'` (or '.[all]')."
            ) from e


def _device() -> str:
    import jax

    devs = jax.devices()
    kind = getattr(devs[0], "device_kind", devs[0].platform)
    return f"{len(devs)} {devs[0].platform} device(s) ({kind})"


def _files(results: dict[str, Any]) -> dict[str, str]:
    files = {"report.md": "this report", "results.json": "every number of this report, as JSON"}
    ens = results.get("ensemble")
    if ens:
        files[ens["checkpoint"]["path"]] = "the best checkpoint (params, mean image, history)"
    rules = results.get("update_rules")
    if rules:
        files[rules["figure"]] = "the update rules side by side"
    for st in (results.get("search") or {}).get("stages", []):
        files[st["figure"]] = f"search stage {st['stage']}: val acc against each hyperparameter"
    for name, path in ((results.get("diagnosis") or {}).get("figures") or {}).items():
        files[path] = f"the final run's {name.replace('_', ' ')}"
    return files


def run_demo(config: DemoConfig | None = None, *, log: Callable[[str], Any] = print) -> DemoResult:
    """Run the whole craft of the notes on real data and write a report a person reads.

    In order: (1) split train/val/test and subtract the training mean image; (2) check the
    MLP's data-loss and regularization gradients separately in float64 after a burn-in,
    kinks reported; (3) sanity checks: loss at init against log(10) and 9 (SVM),
    regularization raises the loss, 20 examples overfit; (4) SGD, momentum, Nesterov,
    Adagrad, RMSprop and Adam side by side on one budget; (5) coarse-to-fine random search
    of learning rate and L2 strength as vmapped populations, with border warnings; (6) the
    best configuration as an ensemble over seeds in one program with a running average of
    the parameters, and a distilled student; (7) a diagnosis of the final run. Writes
    ``report.md``, ``results.json``, ``figures/*.png`` and ``best.npz`` to a new folder.
    If a stage fails, the stages done so far are still written, with the error, before
    the exception propagates.

    **Arguments:**
    - `config`: the run's :class:`~jaxlearn.demo.DemoConfig` (default: digits, full run).
    - `log`: where the progress lines go (``print``; a list's ``append`` collects them).

    **Returns:** a :class:`DemoResult` ``(out, results, report)``.

    **Raises:** :class:`~jaxlearn.demo.DemoError` before anything is written when the data
    cannot be read, an extra is missing or ``config.out`` holds files.

    Example:
        >>> from jaxlearn.demo import DemoConfig, run_demo
        >>> run_demo(DemoConfig(data="cifar10", data_dir="/nonexistent"))
        Traceback (most recent call last):
        jaxlearn.demo.config.DemoError: --data-dir /nonexistent: load_cifar10: folder ...
    """
    import jax
    import jax.numpy as jnp

    import jaxlearn
    from jaxlearn.demo._stages import STAGES, Run
    from jaxlearn.demo.datasets import prepare_data

    config = DemoConfig() if config is None else config
    if not isinstance(config, DemoConfig):
        raise DemoError(f"run_demo: `config` must be a DemoConfig, got {type(config).__name__}.")
    _check_extras(config)
    if config.out is not None:
        check_out(config.out)  # before any work: a run never overwrites another
    settings = settings_for(config.quick)
    wall0, cpu0 = time.perf_counter(), time.process_time()
    splits, info, mean_image = prepare_data(
        config.data,
        config.data_dir,
        seed=config.seed,
        max_train=config.max_train,
        min_train=settings.batch_size,  # the stages draw whole minibatches
    )
    timings = {
        "1. data": {"wall_s": time.perf_counter() - wall0, "cpu_s": time.process_time() - cpu0}
    }
    out = new_run_dir(config.out).resolve()
    (out / "figures").mkdir(exist_ok=True)
    results: dict[str, Any] = {
        "meta": {
            "data": config.data,
            "data_dir": config.data_dir,
            "seed": config.seed,
            "quick": config.quick,
            "max_train": config.max_train,
            "stages": config.stages,
            "jaxlearn": jaxlearn.__version__,
            "jax": jax.__version__,
            "device": _device(),
            "python": platform.python_version(),
            "started": datetime.datetime.now().isoformat(timespec="seconds"),
            "out": str(out),
        },
        "settings": settings.to_dict(),
        "data": info,
    }
    model = jaxlearn.mlp(info["input_dim"], settings.hidden, info["num_classes"])
    run = Run(
        config=config,
        settings=settings,
        train=tuple(jnp.asarray(a) for a in splits.train),  # type: ignore[arg-type]
        val=tuple(jnp.asarray(a) for a in splits.val),  # type: ignore[arg-type]
        test=tuple(jnp.asarray(a) for a in splits.test),  # type: ignore[arg-type]
        mean_image=mean_image,
        model=model,
        out=out,
        results=results,
        progress=config.progress,
    )
    mode = "quick run" if config.quick else "full run"
    if config.stages < len(STAGES):
        mode += f", stages 1-{config.stages}"
    log(f"jaxlearn demo ({mode}, seed {config.seed}) on {_device()}; writing to {out}")
    n = len(STAGES)
    log(
        f"[1/{n}] Data: {summary_line('data', info)} "
        f"({timings['1. data']['wall_s']:.1f} s wall, {timings['1. data']['cpu_s']:.1f} s CPU)"
    )
    results["timings"] = timings
    error: BaseException | None = None
    for i, (key, title, fn) in enumerate(STAGES[1 : config.stages], start=2):
        w0, c0 = time.perf_counter(), time.process_time()
        try:
            section = fn(run)
        except Exception as e:
            results["error"] = f"stage {i} ({title}) failed: {type(e).__name__}: {e}"
            error = e
            break
        results[key] = _json_ready(section)
        t = {"wall_s": time.perf_counter() - w0, "cpu_s": time.process_time() - c0}
        timings[f"{i}. {key.replace('_', ' ')}"] = t
        log(
            f"[{i}/{n}] {title}: {summary_line(key, results[key])} "
            f"({t['wall_s']:.1f} s wall, {t['cpu_s']:.1f} s CPU)"
        )
    timings["total"] = {"wall_s": time.perf_counter() - wall0, "cpu_s": time.process_time() - cpu0}
    results["files"] = _files(results)
    text = json.dumps(_json_ready(results), indent=1, allow_nan=False)
    (out / "results.json").write_text(text + "\n", encoding="utf-8")
    # The report is rendered from the JSON text itself: every number in it is in the file.
    loaded = json.loads(text)
    report = render_report(loaded)
    (out / "report.md").write_text(report, encoding="utf-8")
    if error is not None:
        log(f"The run stopped at an error; what it finished is in {out / 'report.md'}")
        raise error
    total = timings["total"]
    log(f"Done in {total['wall_s']:.1f} s wall ({total['cpu_s']:.1f} s CPU).")
    log(f"Report:     {out / 'report.md'}")
    log(f"Results:    {out / 'results.json'}")
    if any((out / "figures").rglob("*.png")):
        log(f"Figures:    {out / 'figures'}")
    if "ensemble" in results:
        log(f"Checkpoint: {out / results['ensemble']['checkpoint']['path']}")
    return DemoResult(out, loaded, report)
