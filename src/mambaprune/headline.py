"""The headline of a run: the dozen numbers a comparison of experiments needs, in one small file.

``metrics/summary.json`` is the pipeline's only DVC metrics file, so ``dvc exp show`` and ``dvc metrics diff``
show these columns and nothing else; every stage's full record stays in ``metrics/<stage>.json`` (a plain DVC
output) and in MLflow. The names are the project's one vocabulary (``counting.size_report`` defines the sizes
and reductions, ``speed.speed_report`` the throughputs, ``pruning.checks.cut_report`` the costly cuts), copied
from the evaluate stage's record, never recomputed: reductions are fractions removed (0..1, higher = smaller
model); ``speedup`` is the measured inference speedup over the dense model through the one-call path
(``config.HEADLINE_SPEED_MODE``), None when the evaluate stage withheld it (timing disturbed).
"""

from __future__ import annotations

from collections.abc import Mapping

# metric name -> what it is (README "Comparing runs" prints this list); at most 15: `dvc exp show` must fit
HEADLINE_KEYS = {
    "test_acc": "test accuracy of the final (pruned + finetuned) model",
    "dense_test_acc": "test accuracy of the dense model it was pruned from",
    "test_acc_drop": "dense_test_acc - test_acc (positive = the pruned model is worse)",
    "params": "parameters of the final model",
    "param_reduction": "fraction of the dense model's parameters removed",
    "flop_reduction": "fraction of the dense model's FLOPs per image removed",
    "speedup": "measured inference throughput, final / dense, through the one-call path (optimize_for_inference: "
               "a CUDA graph on GPU, eager on CPU; null: withheld, see metrics/evaluate.json)",
    "speedup_spread": "(max - min) / median of the speedup over the interleaved timing rounds",
    "img_per_s": "final model's inference throughput (images/s) on device",
    "device": "where throughput was measured",
    "method": "prune.method",
    "target": "prune.target",
    "ratio": "prune.ratio: final fraction of units removed per targeted kind",
    "rounds": "number of pruning rounds",
    "costly_cuts": "rounds whose cut lost more than 1 point of validation accuracy (metrics/evaluate.json)",
}


def headline(evaluate: Mapping, prune) -> dict:
    """The headline from the evaluate stage's record (``metrics/evaluate.json``) and the ``prune`` params (a
    ``PruneCfg``): the record's values under the same names, the params beside them."""
    return {
        **{key: evaluate[key] for key in ("test_acc", "dense_test_acc", "test_acc_drop", "params", "param_reduction",
                                          "flop_reduction")},
        **{key: evaluate.get(key) for key in ("speedup", "speedup_spread", "img_per_s", "device")},
        "method": prune.method,
        "target": prune.target,
        "ratio": prune.ratio,
        "rounds": prune.num_rounds,
        "costly_cuts": evaluate.get("costly_cuts"),
    }


def _cuts(h: Mapping) -> str:
    n = h.get("costly_cuts")
    if n is None:
        return "not checked (metrics/evaluate.json predates the cut check: dvc repro)"
    if n == 0:
        return "none (no round's cut lost more than 1 point of validation accuracy)"
    return f"{n} of {h['rounds']} round(s) lost more than 1 point of val accuracy at the cut (metrics/evaluate.json)"


NEXT_COMMANDS = (
    ("dvc exp run -S prune.ratio=0.7", "a second experiment: reruns only the pruning rounds onward"),
    ("make exps", "every experiment side by side (dvc exp show, headline columns only)"),
    ("make ui", "the same runs in MLflow: prints the URL of the comparison view"),
)


def report(h: Mapping, data_name: str = "") -> str:
    """What ``make run`` prints at the end: the headline in words, where the outputs are, what to try next."""
    def pct(x):
        return "n/a" if x is None else f"{100 * x:.2f} %"

    if h.get("speedup") is None:
        speed = "not published (timing disturbed: see metrics/evaluate.json speed_flag)"
    else:
        spread = "" if h.get("speedup_spread") is None else f", spread {100 * h['speedup_spread']:.0f} %"
        speed = f"{h['speedup']:.2f}x measured on {h.get('device')}{spread}"
    on = f" on {data_name}" if data_name else ""
    lines = [
        f"Result: {h['method']}, {h['ratio']:g} of {h['target']} units removed in {h['rounds']} round(s){on}",
        f"  test accuracy  {pct(h['test_acc'])}   (dense {pct(h['dense_test_acc'])}, "
        f"drop {100 * h['test_acc_drop']:+.2f} points)",
        f"  parameters     {h['params']:,}   ({pct(h['param_reduction'])} fewer; "
        f"FLOPs {pct(h['flop_reduction'])} fewer)",
        f"  speedup        {speed}",
        f"  costly cuts    {_cuts(h)}",
        "Outputs: metrics/summary.json (these numbers), metrics/<stage>.json (each stage's record),",
        "         plots/summary/*.png (curves, accuracy vs params, kept widths), MLflow store mlflow.db",
        "Next:",
    ]
    width = max(len(cmd) for cmd, _ in NEXT_COMMANDS)
    lines += [f"  {cmd:<{width}}   # {why}" for cmd, why in NEXT_COMMANDS]
    return "\n".join(lines)


def main() -> None:
    """``python -m mambaprune.headline``: print ``report`` for metrics/summary.json (the end of ``make run``)."""
    import json
    import sys

    from mambaprune import paths
    from mambaprune.config import load_params

    path = paths.metrics_file("summary")
    if not path.is_file():
        sys.exit(f"{path} not found: run the pipeline first (`dvc repro`)")
    print(report(json.loads(path.read_text()), load_params().data.name))


if __name__ == "__main__":
    main()
