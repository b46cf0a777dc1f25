"""Markdown table, per-row `dvc exp run` commands and the accuracy-vs-params plot from the CIFAR-10 rows in
results/<dataset>/ (written by cifar10_rows.sh).

    python benchmarks/results_table.py [results/cifar10-jpg]

Each row's command is derived from its saved params.yaml: every key that differs from the repository's
params.yaml becomes one `-S key=value`, so the command reproduces the row exactly.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import yaml

from mambaprune.plots import png_scatter, write_csv

ROW_ORDER = ("refill", "rsst", "magnitude-l1", "random", "mlp50")


def load(path: Path) -> dict:
    return json.loads(path.read_text())


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
    params = flat(yaml.safe_load(params_path.read_text()))
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
    what = {"both": "SSM + MLP", "ssm": "SSM", "mlp": "MLP"}[p["target"]]
    method = p["method"] if p["method"] != "magnitude" else f"magnitude ({p['importance']})"
    return f"{method}, {p['ratio']:.0%} {what}"


def main() -> None:
    root = Path(sys.argv[1] if len(sys.argv) > 1 else "results/cifar10-jpg")
    defaults = flat(yaml.safe_load(Path("params.yaml").read_text()))
    dense = load(root / "dense/pretrain.json")
    print("| row | test acc | Δ vs dense | val acc | params | FLOPs/img | GPU speedup (bf16, b=1024) | wall-clock |")
    print("|---|---|---|---|---|---|---|---|")
    print(f"| dense ({dense['epochs']} epochs) | {dense['test_acc']:.2%} | – | {dense['val_acc']:.2%} | "
          f"{dense['params'] / 1e6:.2f} M | {dense['flops'] / 1e9:.2f} G | 1.00× | {dense['wall_time_s']:.0f} s |")
    rows = [r for r in ROW_ORDER if (root / r / "evaluate.json").exists()]
    rows += sorted(p.name for p in root.iterdir() if (p / "evaluate.json").exists() and p.name not in rows)
    # one test-accuracy column per row, each line starting at the dense model
    points = [{"round": "dense", "params": dense["params"], **{f"{r}_test_acc": dense["test_acc"] for r in rows}}]
    settings = {"dense": dvc_settings(root / "dense/params.yaml", defaults)}
    for row in rows:
        ev = load(root / row / "evaluate.json")
        wall = sum(load(root / row / f"{s}.json")["wall_time_s"] for s in ("prune_r1", "prune_r2", "finetune"))
        drop = ev["test_acc"] - dense["test_acc"]
        print(f"| {label(root / row / 'params.yaml')} | {ev['test_acc']:.2%} | {drop:+.2%} | {ev['val_acc']:.2%} "
              f"| {ev['params'] / 1e6:.2f} M | {ev['flops'] / 1e9:.2f} G "
              f"({ev['flop_ratio']:.2f}× fewer) | {ev['speedup']:.2f}× | {wall:.0f} s |")
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
