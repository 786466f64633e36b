"""Read what `jaxlearn demo` wrote: results.json, report.md and the best checkpoint.

    jaxlearn demo --quick                              # writes ./jaxlearn-demo-<date>-<time>/
    python examples/read_report.py                     # reads the newest such folder here
    python examples/read_report.py RUN_DIR             # ... or the one you name
    python examples/read_report.py RUN_DIR --quick     # the numbers only: no model is run

It prints each stage's one-line summary and the ensemble table from results.json, checks
that report.md is exactly what results.json renders to, and (without --quick) loads the
best checkpoint, rebuilds the model and the data split from the metadata, and classifies
the test set again, which must give the accuracy the report states.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

STAGES = ("data", "gradcheck", "sanity", "update_rules", "search", "ensemble", "diagnosis")


def find_run(folder: str | None) -> Path:
    """The run folder named, or the newest ``jaxlearn-demo-*`` folder of the working one."""
    if folder is not None:
        path = Path(folder)
        if not (path / "results.json").is_file():
            raise SystemExit(f"read_report: {path} holds no results.json; is it a demo run?")
        return path
    runs = sorted(Path.cwd().glob("jaxlearn-demo-*/results.json"), key=lambda p: p.stat().st_mtime)
    if not runs:
        raise SystemExit(
            "read_report: no jaxlearn-demo-* folder here; run `jaxlearn demo "
            "--quick` first or name a run folder."
        )
    return runs[-1].parent


def reclassify_test_set(run: Path, results: dict[str, Any]) -> float:
    """Load ``best.npz``, rebuild its model and the run's test split, return its accuracy."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    import jaxlearn
    from jaxlearn.demo import prepare_data

    ck = jaxlearn.load_checkpoint(run / results["ensemble"]["checkpoint"]["path"])
    meta = ck.metadata
    m = meta["model"]
    model = jaxlearn.mlp(m["input_dim"], tuple(m["hidden"]), m["num_classes"])
    like = {
        "params": model.init(jax.random.key(0)),
        "mean_image": jnp.zeros((m["input_dim"],), jnp.float32),
    }
    tree = jaxlearn.load_checkpoint(run / "best.npz", like=like).tree  # checks every leaf
    data = prepare_data(
        meta["dataset"],
        results["meta"].get("data_dir"),
        seed=meta["data_seed"],
        max_train=results["meta"].get("max_train"),
    )
    # New images are normalized as the training data was: minus the stored mean image.
    np.testing.assert_allclose(np.asarray(tree["mean_image"]), data.mean_image, rtol=1e-6)
    x_test, y_test = data.splits.test
    return float(jaxlearn.accuracy(model.apply(tree["params"], jnp.asarray(x_test)), y_test))


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", nargs="?", help="a demo run folder (default: the newest here)")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="print and check the numbers only; do not run the checkpoint",
    )
    args = parser.parse_args(argv)

    from jaxlearn.demo import render_report, summary_line

    run = find_run(args.run)
    results = json.loads((run / "results.json").read_text(encoding="utf-8"))
    meta = results["meta"]
    print(
        f"{run}: {meta['data']}, {'quick' if meta['quick'] else 'full'} run, seed "
        f"{meta['seed']}, jaxlearn {meta['jaxlearn']}, jax {meta['jax']}"
    )
    for i, stage in enumerate(s for s in STAGES if s in results):
        print(f"  {i + 1}. {stage}: {summary_line(stage, results[stage])}")
    same = render_report(results) == (run / "report.md").read_text(encoding="utf-8")
    print(f"report.md {'matches' if same else 'DOES NOT match'} results.json")
    out: dict[str, Any] = {"run": str(run), "report_matches": same}
    if "ensemble" in results:
        e = results["ensemble"]
        rows = {
            "mean member": e["mean_member_test_accuracy"],
            "averaged params": e["mean_averaged_test_accuracy"],
            f"ensemble of {e['num_members']}": e["ensemble_test_accuracy"],
            "distilled student": e["student"]["test_accuracy"],
            "best checkpoint": e["checkpoint"]["test_accuracy"],
        }
        for name, acc in rows.items():
            print(f"  {name:<18} test accuracy {acc:.4f}")
        out["test_accuracy"] = rows
        if not args.quick:
            acc = reclassify_test_set(run, results)
            stated = e["checkpoint"]["test_accuracy"]
            print(f"best.npz reclassifies the test set: accuracy {acc:.4f} (report: {stated:.4f})")
            out["reclassified_test_accuracy"] = acc
    else:
        print("no ensemble stage in this run: no checkpoint to reclassify the test set with")
    return out


if __name__ == "__main__":
    main()
