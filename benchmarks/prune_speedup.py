"""Inference speed of a pruned mamba_small vs dense, in the three ways a user runs it, against its FLOP reduction.

    python benchmarks/prune_speedup.py                                        # 70 % SSM + 70 % MLP
    python benchmarks/prune_speedup.py --state-ratio 0.5 --embed-ratio 0.25   # + half the states, a quarter of width
    python benchmarks/prune_speedup.py --modes eager one_call --batch 1       # batch-1 latency
    python benchmarks/prune_speedup.py --device cpu                           # eager rows, fp32, batch 16

Modes, measured side by side in one run (every mode and model built and warmed up first, then ``--rounds``
interleaved rounds of ``--iters`` batches each; median over rounds, spread = (max − min) / median):
- ``eager``: ``model(x)`` under bf16 autocast (fp32 on CPU), as a user runs a loaded checkpoint;
- ``compiled``: ``torch.compile(model)``, same autocast;
- ``one_call``: ``mambaprune.optimize_for_inference(model, batch)`` (a CUDA graph; ``--one-call-compile`` captures
  the compiled model). On CPU it falls back to eager, so only ``eager`` runs there by default.
"of the FLOP speedup" = speedup / (1 / (1 − flop_reduction)), the share of the speedup the FLOPs promise that
the timing shows (the reference's pruned model reached 2.83x for 74.6 % fewer FLOPs, a 3.93x promise: 0.72).
"""

from __future__ import annotations

import argparse

import torch

from mambaprune import create_model, prune_model, size_report
from mambaprune.speed import MODES, compare_modes


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ssm-ratio", type=float, default=0.7)
    ap.add_argument("--mlp-ratio", type=float, default=0.7)
    ap.add_argument("--state-ratio", type=float, default=0.0, help="fraction of each block's SSM states removed")
    ap.add_argument("--embed-ratio", type=float, default=0.0, help="fraction of the residual channels removed")
    ap.add_argument("--scope", default="global")
    ap.add_argument("--round-to", type=int, default=8, help="kept widths are multiples of this (the pipeline's "
                    "prune.round_to); wider multiples fit GPU tiles better at the cost of coarser pruning")
    ap.add_argument("--model", default="mamba_small")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--modes", nargs="+", choices=MODES, default=None,
                    help="default: all three on CUDA, eager on CPU")
    ap.add_argument("--batch", type=int, default=None, help="default: 1024 on CUDA, 16 on CPU")
    ap.add_argument("--iters", type=int, default=None, help="batches per round; default: 20 on CUDA, 3 on CPU")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--one-call-compile", action="store_true", help="one_call captures the torch.compile'd model")
    args = ap.parse_args()
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    batch = args.batch or (1024 if cuda else 16)
    iters = args.iters or (20 if cuda else 3)

    torch.manual_seed(0)
    dense = create_model(args.model).eval()
    pruned, _ = prune_model(dense, ssm_ratio=args.ssm_ratio, mlp_ratio=args.mlp_ratio, state_ratio=args.state_ratio,
                            embed_ratio=args.embed_ratio, scope=args.scope, importance="l1", min_keep=8,
                            round_to=args.round_to)
    size = size_report(pruned, dense)
    ideal = 1 / (1 - size["flop_reduction"])  # the speedup if time followed FLOPs
    print(f"{args.model}: ssm {args.ssm_ratio} mlp {args.mlp_ratio} state {args.state_ratio} embed {args.embed_ratio} "
          f"(scope {args.scope}, round_to {args.round_to})")
    print(f"params {size['dense_params']:,} -> {size['params']:,} ({size['param_reduction']:.1%} fewer); FLOPs "
          f"{size['dense_flops'] / 1e9:.3f} -> {size['flops'] / 1e9:.3f} G ({size['flop_reduction']:.1%} fewer)")
    print(f"pruned widths: embed {pruned.config['embed_dim']}, ssm {pruned.ssm_widths}\n"
          f"               mlp {pruned.mlp_widths}\n               states {pruned.d_states}", flush=True)

    models = {"dense": dense.to(device), "pruned": pruned.to(device)}
    out = compare_modes(models, batch, iters, device, modes=tuple(args.modes) if args.modes else None,
                        rounds=args.rounds, compile_one_call=args.one_call_compile)
    precision = "bf16 autocast" if cuda else "fp32"
    print(f"\n{device.type}, batch {batch}, {precision}, {args.rounds} interleaved rounds of {iters} batches")
    print(f"{'mode':<10} | {'dense img/s (spread)':>22} | {'pruned img/s (spread)':>22} | {'speedup':>7} | "
          f"of the FLOP speedup ({ideal:.2f}x)")
    for mode, rates in out.items():
        d, p = rates["dense"], rates["pruned"]
        speedup = p["img_per_s"] / d["img_per_s"]
        name = f"{mode}+compile" if mode == "one_call" and args.one_call_compile else mode
        print(f"{name:<10} | {_rate(d['img_per_s'])} ({d['spread']:>5.1%}) | {_rate(p['img_per_s'])} "
              f"({p['spread']:>5.1%}) | {speedup:>6.2f}x | {speedup / ideal:.2f}", flush=True)


def _rate(img_per_s: float) -> str:
    return f"{img_per_s:>12.0f}" if img_per_s >= 100 else f"{img_per_s:>12.2f}"


if __name__ == "__main__":
    main()
