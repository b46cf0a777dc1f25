"""Inference speed of 70 % SSM + 70 % MLP pruned mamba_small vs dense, against the FLOP ratio.

    python benchmarks/prune_speedup.py [--ratio 0.7] [--scope global] [--round-to 8] [--compile]

Measured side by side (interleaved rounds) in one run: bf16 batch 1024 throughput and batch-1 latency on
CUDA, each eager and as a replayed CUDA graph (no Python or launch overhead: the GPU's own time); ``--compile``
adds torch.compile'd rows (batch 1024, and batch 1024 and 1 as CUDA graphs); fp32 at a small batch on CPU.
The FLOP ratio comes from ``count_flops``; "of ideal" = speedup / FLOP ratio (the reference's pruned model
reached 2.83x for a 3.93x FLOP cut, 0.72 of ideal).
"""

from __future__ import annotations

import argparse

import torch

from mambaprune import count_flops, count_params, create_model, prune_model
from mambaprune.speed import compare_throughput


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--ratio", type=float, default=0.7)
    ap.add_argument("--scope", default="global")
    ap.add_argument("--round-to", type=int, default=8, help="kept widths are multiples of this (the pipeline's "
                    "prune.round_to); wider multiples fit GPU tiles better at the cost of coarser pruning")
    ap.add_argument("--cpu-batch", type=int, default=16)
    ap.add_argument("--compile", action="store_true", help="also time torch.compile'd models (CUDA, batch 1024)")
    args = ap.parse_args()
    torch.manual_seed(0)
    dense = create_model("mamba_small").eval()
    pruned, _ = prune_model(dense, ssm_ratio=args.ratio, mlp_ratio=args.ratio, scope=args.scope, importance="l1",
                            min_keep=8, round_to=args.round_to)
    flop_ratio = count_flops(dense) / count_flops(pruned)
    p_dense, p_pruned = count_params(dense), count_params(pruned)
    print(f"params {p_dense:,} -> {p_pruned:,} ({1 - p_pruned / p_dense:.1%} fewer); "
          f"FLOPs {count_flops(dense) / 1e9:.3f} -> {count_flops(pruned) / 1e9:.3f} G ({flop_ratio:.2f}x)")
    print(f"pruned widths: ssm {pruned.ssm_widths}\n               mlp {pruned.mlp_widths}")
    settings = [("cpu", args.cpu_batch, 5, "")]  # (device, batch, iterations, mode)
    if torch.cuda.is_available():
        cuda = [("cuda", 1024, 20, ""), ("cuda", 1024, 20, "graph"), ("cuda", 1, 50, ""), ("cuda", 1, 200, "graph")]
        compiled = [("cuda", 1024, 20, "compiled"), ("cuda", 1024, 20, "compiled graph"),
                    ("cuda", 1, 200, "compiled graph")]
        settings = cuda + compiled * args.compile + settings
    for dev, batch, iters, mode in settings:
        device = torch.device(dev)
        models = {"dense": dense.to(device), "pruned": pruned.to(device)}
        if mode.startswith("compiled"):
            models = {name: torch.compile(m) for name, m in models.items()}
        rates = compare_throughput(models, batch, iters, device, cuda_graph=mode.endswith("graph"))
        dev = f"{dev} {mode.replace('graph', 'CUDA graph')}".strip()
        speedup = rates["pruned"] / rates["dense"]
        unit = "img/s" if batch > 1 else "img/s (batch 1: 1/latency)"
        extra = f", latency {1e3 / rates['dense']:.2f} -> {1e3 / rates['pruned']:.2f} ms" if batch == 1 else ""
        print(f"{dev} batch {batch}: dense {rates['dense']:.0f} {unit}, pruned {rates['pruned']:.0f}; speedup "
              f"{speedup:.2f}x = {speedup / flop_ratio:.2f} of the FLOP ratio{extra}", flush=True)
        dense, pruned = dense.cpu(), pruned.cpu()


if __name__ == "__main__":
    main()
