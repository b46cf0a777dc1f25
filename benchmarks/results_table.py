"""Markdown table, per-row `dvc exp run` commands and the accuracy-vs-params plot from the CIFAR-10 rows in
results/<dataset>/ (written by cifar10_rows.sh).

    python benchmarks/results_table.py [results/cifar10-jpg [results/cifar10-jpg-seed1 ...]]

Each row's command is derived from its saved params.yaml: every key that differs from the repository's
params.yaml becomes one `-S key=value`, so the command reproduces the row exactly. A key added after a row ran
(absent from its params.yaml) counts with the behaviour the row had (``ADDED_SINCE_THE_RUNS``).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import yaml

from mambaprune.config import target_kinds
from mambaprune.plots import png_scatter
from mambaprune.records import write_csv

ROW_ORDER = ("refill", "rsst", "magnitude-l1", "random", "mlp50")
# keys added after the runs, with the behaviour the rows had: the only RSST update that existed, eager steps, no
# augmentation beyond crop and flip, no stochastic depth
ADDED_SINCE_THE_RUNS = {"prune.rsst_update": "gradient", "train.cuda_graph": False,  # YAML for off
                        "model.drop_path": 0.0,
                        "train.auto_augment": "none", "train.randaugment_ops": 2, "train.randaugment_magnitude": 9,
                        "train.random_erasing": 0.0, "train.mixup_alpha": 0.0, "train.cutmix_alpha": 0.0,
                        "train.mix_prob": 1.0, "prune.state_ratio": None, "prune.embed_ratio": None,
                        "evaluate.speed_modes": ["eager", "one_call"]}  # timing only: which modes are reported


# metric names the stages wrote before the one vocabulary (counting.size_report, speed.speed_report): an older
# results folder still reads; ``flop_ratio`` was dense/final FLOPs (> 1), ``flop_reduction`` is 1 - final/dense
RENAMED = {"throughput_img_s": "img_per_s", "dense_throughput_img_s": "dense_img_per_s", "sparsity": "param_reduction"}


def load(path: Path) -> dict:
    """A stage's metrics JSON under the current names (older names translated, see ``RENAMED``)."""
    record = {RENAMED.get(k, k): v for k, v in json.loads(path.read_text()).items()}
    if "flop_ratio" in record:
        del record["flop_ratio"]
        record["flop_reduction"] = 1.0 - record["flops"] / record["dense_flops"]
    return record


def flat(tree: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in tree.items():
        if isinstance(v, dict) and k != "rounds":
            out.update(flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def dvc_settings(params_path: Path, defaults: dict) -> list[str]:
    """The `-S key=value` arguments that turn the repository's params.yaml into this row's."""
    params = ADDED_SINCE_THE_RUNS | flat(yaml.safe_load(params_path.read_text()))
    return [f"-S {k}={'null' if v is None else str(v).lower() if isinstance(v, bool) else v}"
            for k, v in params.items() if defaults.get(k, object()) != v]


def print_commands(settings: dict[str, list[str]]) -> None:
    """One `dvc exp run` per row; the settings all rows share go into $C10 once."""
    shared = [s for s in next(iter(settings.values())) if all(s in row for row in settings.values())]
    lines = ['C10="' + " ".join(shared) + '"']
    lines += [" ".join([f"dvc exp run -n c10-{name} $C10", *(s for s in row if s not in shared)]).rstrip()
              for name, row in settings.items()]
    print("\n```bash\n" + "\n".join(lines) + "\n```")


def label(params_path: Path) -> str:
    p = yaml.safe_load(params_path.read_text())["prune"]
    what = " + ".join({"ssm": "SSM", "mlp": "MLP", "state": "state", "embed": "embed"}[kind]
                      for kind in target_kinds(p["target"]))  # both: SSM + MLP
    method = p["method"] if p["method"] != "magnitude" else f"magnitude ({p['importance']})"
    return f"{method}, {p['ratio']:.0%} {what}"


def acc(values: list[float], signed: bool = False) -> str:
    """One seed: the value; several: mean ± half the range, and the seed count."""
    fmt = "+.2%" if signed else ".2%"
    mean = sum(values) / len(values)
    if len(values) == 1:
        return f"{mean:{fmt}}"
    return f"{mean:{fmt}} ± {(max(values) - min(values)) / 2:.2%} (n={len(values)})"


def main() -> None:
    """Arguments: one results root per seed (default results/cifar10-jpg); accuracies are over the roots that
    hold the row, everything else (params, FLOPs, speedup, wall-clock, plot, commands) is from the first."""
    roots = [Path(a) for a in sys.argv[1:]] or [Path("results/cifar10-jpg")]
    root = roots[0]
    defaults = flat(yaml.safe_load(Path("params.yaml").read_text()))
    denses = [load(r / "dense/pretrain.json") for r in roots]
    dense = denses[0]
    print("| row | test acc | Δ vs dense | val acc | params | FLOPs/img | GPU speedup (bf16, b=1024) | wall-clock |")
    print("|---|---|---|---|---|---|---|---|")
    print(f"| dense ({dense['epochs']} epochs) | {acc([d['test_acc'] for d in denses])} | – | "
          f"{acc([d['val_acc'] for d in denses])} | {dense['params'] / 1e6:.2f} M | {dense['flops'] / 1e9:.2f} G "
          f"| 1.00× | {dense['wall_time_s']:.0f} s |")
    rows = [r for r in ROW_ORDER if (root / r / "evaluate.json").exists()]
    rows += sorted(p.name for p in root.iterdir() if (p / "evaluate.json").exists() and p.name not in rows)
    # one test-accuracy column per row, each line starting at the dense model
    points = [{"round": "dense", "params": dense["params"], **{f"{r}_test_acc": dense["test_acc"] for r in rows}}]
    settings = {"dense": dvc_settings(root / "dense/params.yaml", defaults)}
    for row in rows:
        seeds = [(load(r / row / "evaluate.json"), d) for r, d in zip(roots, denses)
                 if (r / row / "evaluate.json").exists()]
        ev = seeds[0][0]
        wall = sum(load(root / row / f"{s}.json")["wall_time_s"] for s in ("prune_r1", "prune_r2", "finetune"))
        print(f"| {label(root / row / 'params.yaml')} | {acc([e['test_acc'] for e, _ in seeds])} "
              f"| {acc([e['test_acc'] - d['test_acc'] for e, d in seeds], signed=True)} "
              f"| {acc([e['val_acc'] for e, _ in seeds])} | {ev['params'] / 1e6:.2f} M | {ev['flops'] / 1e9:.2f} G "
              f"({ev['flop_reduction']:.1%} fewer) | {ev['speedup']:.2f}× | {wall:.0f} s |")
        for r in ("prune_r1", "prune_r2"):
            m = load(root / row / f"{r}.json")
            points.append({"round": m["round"], "params": m["params"], f"{row}_test_acc": m["test_acc_after"]})
        fin = load(root / row / "finetune.json")
        points.append({"round": "ft", "params": fin["params"], f"{row}_test_acc": fin["test_acc"]})
        settings[row] = dvc_settings(root / row / "params.yaml", defaults)
    print_commands(settings)
    write_csv(root / "rounds.csv", points)
    png_scatter(root / "rounds.csv", "params", [f"{r}_test_acc" for r in rows], root / "accuracy_vs_params.png",
                "CIFAR-10 (JPEG), mamba_small: test accuracy vs parameters over rounds", label_col="round",
                ylabel="test accuracy")


if __name__ == "__main__":
    main()
