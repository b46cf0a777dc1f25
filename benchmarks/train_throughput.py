"""Training throughput of mamba_small vs a timm ViT of equal width and depth, side by side in one run.

    python benchmarks/train_throughput.py [--batch 1024] [--steps 20] [--no-compile]
    python benchmarks/train_throughput.py --norms [--batch 512]   # eager mamba_small: fused vs plain add+LayerNorm
    python benchmarks/train_throughput.py --model mamba_tiny --batch 64 --steps 3   # another size, no ViT (CPU too)

Prints img/s, MFU (6.23 GFLOP per training image, the reference's figure for mamba_small) and peak memory
for each model, eager and torch.compile'd, and the ratio mamba / ViT. bf16 autocast on CUDA (the
pipeline's configuration: fused Triton scan, fused AdamW); on CPU it runs fp32 at a small batch.
"""

from __future__ import annotations

import argparse
import time
from unittest import mock

import torch
import torch.nn.functional as F

from mambaprune import create_model
from mambaprune.models import list_models

TRAIN_FLOP_PER_IMAGE = 6.23e9
H200_BF16_PEAK = 989e12  # dense bf16 tensor-core peak, FLOP/s


def vit_like():
    from timm.models.vision_transformer import VisionTransformer

    return VisionTransformer(img_size=32, patch_size=4, embed_dim=192, depth=24, num_heads=3, mlp_ratio=4,
                             class_token=False, global_pool="avg", num_classes=10)


def warm_train_step(model, batch: int, device: torch.device, compile: bool):
    """A closure running one training step (fwd, bwd, fused AdamW; bf16 autocast on CUDA) on fixed random
    32x32 images, already run 3 times (compilation, autotuning, allocator) so what follows can be timed."""
    model = model.to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, fused=device.type == "cuda")
    net = torch.compile(model) if compile else model
    x = torch.rand(batch, 3, 32, 32, device=device)
    y = torch.randint(0, 10, (batch,), device=device)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")

    def step():
        with autocast:
            loss = F.cross_entropy(net(x).float(), y)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    for _ in range(3):
        step()
    return step


def bench(model, batch: int, steps: int, device: torch.device, compile: bool) -> dict:
    step = warm_train_step(model, batch, device, compile)
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    rate = batch * steps / (time.perf_counter() - t0)
    peak = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else float("nan")
    return {"img_s": rate, "mfu": rate * TRAIN_FLOP_PER_IMAGE / H200_BF16_PEAK, "peak_gib": peak}


def compare_norms(batch: int, device: torch.device, reps: int = 3, steps: int = 10) -> None:
    """Eager mamba_small with the fused Triton add+LayerNorm (the default on CUDA) against the plain ops, interleaved;
    wall-clock img/s and host time per step (the time until the step's Python returns: when it nears the wall time
    per step, the GPU is waiting on the host). The plain path is what the model runs under torch.compile, so it is
    forced by making ``torch.compiler.is_compiling`` answer True."""
    def plain(on: bool):
        return mock.patch("torch.compiler.is_compiling", return_value=on)

    steps_by_path = {}
    for fused in (True, False):
        torch.manual_seed(0)
        with plain(not fused):
            steps_by_path[fused] = warm_train_step(create_model("mamba_small"), batch, device, compile=False)
    runs = {True: [], False: []}
    for _ in range(reps):
        for fused, step in steps_by_path.items():
            with plain(not fused):
                torch.cuda.synchronize()
                t0, host = time.perf_counter(), 0.0
                for _ in range(steps):
                    h0 = time.perf_counter()
                    step()
                    host += time.perf_counter() - h0
                torch.cuda.synchronize()
                runs[fused].append((batch * steps / (time.perf_counter() - t0), host / steps * 1e3))
    for fused in (True, False):
        print(f"mamba_small eager batch {batch}, {'fused' if fused else 'plain'} norms: "
              f"{max(r[0] for r in runs[fused]):.0f} img/s (best of {reps}), host time per step "
              f"{min(r[1] for r in runs[fused]):.1f} ms")
    print(f"fused / plain: {max(r[0] for r in runs[True]) / max(r[0] for r in runs[False]):.2f}x")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="mamba_small", choices=list_models(),
                    help="the Mamba size; the ViT and MFU rows are for mamba_small's width and depth only")
    ap.add_argument("--batch", type=int, default=None)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--no-compile", action="store_true")
    ap.add_argument("--norms", action="store_true", help="only compare fused and plain add+LayerNorm (CUDA, eager)")
    args = ap.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    batch = args.batch or (1024 if device.type == "cuda" else 32)
    torch.backends.cuda.matmul.allow_tf32 = True
    if args.norms:
        if device.type != "cuda":
            raise SystemExit("--norms compares CUDA kernels: no CUDA device here")
        compare_norms(batch, device)
        return
    modes = [False] if args.no_compile or device.type != "cuda" else [False, True]
    models = {args.model: lambda: create_model(args.model)}
    try:
        if args.model == "mamba_small":
            vit_like()
            models["vit(timm)"] = vit_like
    except ImportError:
        print("timm not installed: ViT comparison skipped")
    results = {}
    for compile in modes:
        for name, make in models.items():
            torch.manual_seed(0)
            r = bench(make(), batch, args.steps, device, compile)
            results[(name, compile)] = r
            mfu = f"MFU {r['mfu']:.1%}  " if args.model == "mamba_small" else ""  # 6.23 GFLOP: mamba_small's
            print(f"{name:12s} {'compiled' if compile else 'eager':8s} batch {batch}: {r['img_s']:9.0f} img/s  "
                  f"{mfu}peak {r['peak_gib']:.1f} GiB", flush=True)
    for compile in modes:
        if ("vit(timm)", compile) in results:
            ratio = results[(args.model, compile)]["img_s"] / results[("vit(timm)", compile)]["img_s"]
            print(f"mamba_small / ViT ({'compiled' if compile else 'eager'}): {ratio:.2f}x")
    if len(modes) == 2 and "vit(timm)" in models:
        best_m = max(results[(args.model, c)]["img_s"] for c in modes)
        best_v = max(results[("vit(timm)", c)]["img_s"] for c in modes)
        print(f"best mamba_small / best ViT: {best_m / best_v:.2f}x")


if __name__ == "__main__":
    main()
