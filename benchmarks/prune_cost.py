"""Accuracy a cut costs before finetuning, on a prepared split: a checkpoint vs its pruned copy (issue #18's
measure of embedding-width pruning, whose LayerNorms then normalise over fewer channels; see pruning/cost.py).

    python benchmarks/prune_cost.py models/pretrained.pt --embed-ratio 0.25            # digits, after `dvc repro`
    python benchmarks/prune_cost.py models/pretrained.pt --state-ratio 0.5 --split test
    python benchmarks/prune_cost.py models/pretrained.pt --embed-ratio 0.25 --device cuda   # CIFAR, on a GPU

The split comes from the prepared data (data/<split>.pt, `python stages/prepare.py`). Prints one line per ratio
setting: dense and pruned accuracy, the drop, params and FLOPs. Every ratio defaults to 0, so one run can sweep
``--embed-ratio 0.125 0.25 0.5``.
"""

from __future__ import annotations

import argparse

import torch

from mambaprune import load_checkpoint
from mambaprune.data import load_split
from mambaprune.paths import DATA_DIR
from mambaprune.pruning.cost import accuracy_cost


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkpoint")
    ap.add_argument("--split", default="val", choices=("train", "val", "test"))
    ap.add_argument("--data-dir", default=str(DATA_DIR))
    ap.add_argument("--embed-ratio", type=float, nargs="+", default=[0.0])
    ap.add_argument("--state-ratio", type=float, default=0.0)
    ap.add_argument("--ssm-ratio", type=float, default=0.0)
    ap.add_argument("--mlp-ratio", type=float, default=0.0)
    ap.add_argument("--importance", default="l1", choices=("l1", "l2", "random"))
    ap.add_argument("--scope", default="global")
    ap.add_argument("--min-keep", type=int, default=8)
    ap.add_argument("--round-to", type=int, default=8)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    device = torch.device(args.device)
    model = load_checkpoint(args.checkpoint, map_location=device)
    images, labels = load_split(args.data_dir, args.split)
    batches = [(images[i:i + args.batch].float().div_(255), labels[i:i + args.batch])
               for i in range(0, len(labels), args.batch)]
    print(f"{args.checkpoint}: {args.split} split, {len(labels)} images, embed_dim {model.config['embed_dim']}, "
          f"d_states {model.config['d_states']}")
    for embed_ratio in args.embed_ratio:
        r = accuracy_cost(model, batches, device, ssm_ratio=args.ssm_ratio, mlp_ratio=args.mlp_ratio,
                          state_ratio=args.state_ratio, embed_ratio=embed_ratio, importance=args.importance,
                          scope=args.scope, min_keep=args.min_keep, round_to=args.round_to)
        print(f"ssm {args.ssm_ratio} mlp {args.mlp_ratio} state {args.state_ratio} embed {embed_ratio}: accuracy "
              f"{r['dense_acc']:.4f} -> {r['pruned_acc']:.4f} (drop {100 * r['acc_drop']:.2f} points) before "
              f"finetuning; embed_dim {r['embed_dim']}, d_states {r['d_states']}; params {r['dense_params']:,} -> "
              f"{r['params']:,}, FLOPs {r['dense_flops'] / 1e6:.2f} -> {r['flops'] / 1e6:.2f} M", flush=True)
        for w in r["warnings"]:
            print(f"  warning: {w}")


if __name__ == "__main__":
    main()
