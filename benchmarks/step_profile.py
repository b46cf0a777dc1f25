"""Where a training step's time goes: mamba_small fwd+bwd+AdamW under torch.profiler, kernels grouped by kind.

    python benchmarks/step_profile.py [--batch 1024] [--steps 5] [--model mamba_small] [--compile]
    python benchmarks/step_profile.py --forward-only [--pruned 0.7]    # inference forward, dense or pruned

Prints milliseconds per step and share for each group (matrix products, the selective scan, the depthwise conv,
norms, optimizer, element-wise/other) and the ten most expensive kernels. On CUDA the device time of each
kernel is used (bf16 autocast, as the pipeline trains); on CPU the ops' own CPU time (fp32, small batch), where
the scan's forward runs as plain aten ops and so lands under element-wise (only its backward is one op).
"""

from __future__ import annotations

import argparse
import re

import torch
from torch.profiler import ProfilerActivity, profile
from train_throughput import warm_train_step  # the same step the throughput benchmark times

from mambaprune import create_model, prune_model

GROUPS = [  # first match wins; patterns cover cuBLAS/CUTLASS kernel names and aten op names
    ("matmul", r"gemm|cutlass|nvjet|sm90_|matmul|aten::mm|aten::addmm|aten::addmv|aten::bmm|aten::linear"),
    ("selective scan", r"_scan_fwd_kernel|_scan_bwd_kernel|selective_scan|SelectiveScan"),
    ("depthwise conv", r"conv|cudnn"),
    ("norms", r"layer_norm|LayerNorm|GammaBeta"),
    ("optimizer", r"adam|multi_tensor|foreach"),
]


def group_of(name: str) -> str:
    return next((g for g, pattern in GROUPS if re.search(pattern, name, re.IGNORECASE)), "element-wise / other")


def warm_forward(model, batch: int, device: torch.device, compile: bool):
    """A closure running one inference forward (no_grad; bf16 autocast on CUDA), already run 3 times."""
    net = torch.compile(model.to(device).eval()) if compile else model.to(device).eval()
    x = torch.rand(batch, 3, 32, 32, device=device)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")

    @torch.no_grad()
    def forward():
        with autocast:
            net(x)

    for _ in range(3):
        forward()
    return forward


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="mamba_small")
    ap.add_argument("--batch", type=int, default=None)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--compile", action="store_true")
    ap.add_argument("--forward-only", action="store_true", help="profile an inference forward (no_grad)")
    ap.add_argument("--pruned", type=float, default=0.0, help="prune SSM and MLP at this ratio first (global l1)")
    args = ap.parse_args()
    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    batch = args.batch or (1024 if cuda else 16)
    torch.manual_seed(0)
    model = create_model(args.model)
    if args.pruned:
        model, _ = prune_model(model, ssm_ratio=args.pruned, mlp_ratio=args.pruned, importance="l1")
    compile = args.compile and cuda
    step = warm_forward(model, batch, device, compile) if args.forward_only else warm_train_step(model, batch, device,
                                                                                                  compile)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with profile(activities=activities) as prof:
        for _ in range(args.steps):
            step()
        if cuda:
            torch.cuda.synchronize()

    def own_us(event) -> float:
        if cuda:
            return getattr(event, "self_device_time_total", 0.0) or getattr(event, "self_cuda_time_total", 0.0)
        return event.self_cpu_time_total

    # on CUDA only the kernels themselves (an op's "self device time" repeats the time of the kernels it launched)
    kernel = torch.autograd.DeviceType.CUDA
    events = [(e.key, own_us(e)) for e in prof.key_averages() if not cuda or e.device_type == kernel]
    events = [(k, t) for k, t in events if t > 0 and (cuda or k.startswith("aten::") or "scan" in k.lower())]
    total = sum(t for _, t in events)
    by_group: dict[str, float] = {}
    for key, t in events:
        by_group[group_of(key)] = by_group.get(group_of(key), 0.0) + t
    where = f"{torch.cuda.get_device_name()} bf16" if cuda else f"CPU fp32 ({torch.get_num_threads()} threads)"
    what = f"{args.model}{f' pruned {args.pruned:.0%}' if args.pruned else ''}, batch {batch}, {where}"
    print(f"{what}{', compiled' if compile else ''}: {total / args.steps / 1e3:.1f} ms of {'kernel' if cuda else 'op'} "
          f"time per {'forward' if args.forward_only else 'training step'}")
    for group, t in sorted(by_group.items(), key=lambda kv: -kv[1]):
        print(f"  {group:<22}{t / args.steps / 1e3:9.2f} ms  {t / total:6.1%}")
    print("top kernels:" if cuda else "top ops:")
    for key, t in sorted(events, key=lambda kv: -kv[1])[:10]:
        print(f"  {t / args.steps / 1e3:9.2f} ms  [{group_of(key)}] {key[:90]}")


if __name__ == "__main__":
    main()
