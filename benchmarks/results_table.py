"""Markdown table + accuracy-vs-params plot from the CIFAR-10 rows in results/<dataset>/ (see cifar10_rows.sh).

    python benchmarks/results_table.py [results/cifar10-jpg]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from mambaprune.plots import png_scatter, write_csv


def load(path: Path) -> dict:
    return json.loads(path.read_text())


def main() -> None:
    root = Path(sys.argv[1] if len(sys.argv) > 1 else "results/cifar10-jpg")
    dense = load(root / "dense/pretrain.json")
    print("| row | test acc | Δ vs dense | params | FLOPs/img | GPU speedup (bf16, b=1024) | stage wall-clock |")
    print("|---|---|---|---|---|---|---|")
    print(f"| dense | {dense['test_acc']:.2%} | – | {dense['params'] / 1e6:.2f} M | {dense['flops'] / 1e9:.2f} G "
          f"| 1.00× | {dense['wall_time_s']:.0f} s |")
    rows = sorted(p.name for p in root.iterdir() if (p / "evaluate.json").exists())
    # one test-accuracy column per method, each line starting at the dense model
    points = [{"round": "dense", "params": dense["params"], **{f"{r}_test_acc": dense["test_acc"] for r in rows}}]
    for row in rows:
        ev = load(root / row / "evaluate.json")
        wall = sum(load(root / row / f"{s}.json")["wall_time_s"] for s in ("prune_r1", "prune_r2", "finetune"))
        print(f"| {row} 70/70 | {ev['test_acc']:.2%} | {ev['test_acc'] - dense['test_acc']:+.2%} | "
              f"{ev['params'] / 1e6:.2f} M | {ev['flops'] / 1e9:.2f} G ({ev['flop_ratio']:.2f}× fewer) | "
              f"{ev['speedup']:.2f}× | {wall:.0f} s |")
        for r in ("prune_r1", "prune_r2"):
            m = load(root / row / f"{r}.json")
            points.append({"round": m["round"], "params": m["params"], f"{row}_test_acc": m["test_acc_after"]})
        fin = load(root / row / "finetune.json")
        points.append({"round": "ft", "params": fin["params"], f"{row}_test_acc": fin["test_acc"]})
    write_csv(root / "rounds.csv", points)
    png_scatter(root / "rounds.csv", "params", [f"{r}_test_acc" for r in rows], root / "accuracy_vs_params.png",
                "CIFAR-10 (JPEG), mamba_small: test accuracy vs parameters over rounds", label_col="round",
                ylabel="test accuracy")


if __name__ == "__main__":
    main()
