"""Inference throughput, measured side by side so ratios are fair (same device, same run, interleaved)."""

from __future__ import annotations

import contextlib
import statistics
import time

import torch


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.no_grad()
def images_per_second(model, batch: int, iters: int, device: torch.device, repeats: int = 1) -> float:
    """Median images/s of ``model`` on random inputs (bf16 autocast on CUDA, fp32 on CPU)."""
    cfg = model.config
    x = torch.rand(batch, cfg["in_chans"], cfg["img_size"], cfg["img_size"], device=device)
    model.eval()
    autocast = (torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda"
                else contextlib.nullcontext())
    rates = []
    with autocast:
        model(x)  # warm-up (kernel selection, Triton compilation)
        for _ in range(repeats):
            _sync(device)
            t0 = time.perf_counter()
            for _ in range(iters):
                model(x)
            _sync(device)
            rates.append(batch * iters / (time.perf_counter() - t0))
    return statistics.median(rates)


def compare_throughput(models: dict, batch: int, iters: int, device: torch.device, rounds: int = 3) -> dict:
    """images/s per named model, measured in interleaved rounds (A, B, A, B, ...) to cancel drift."""
    rates = {name: [] for name in models}
    for _ in range(rounds):
        for name, model in models.items():
            rates[name].append(images_per_second(model, batch, iters, device))
    return {name: statistics.median(r) for name, r in rates.items()}
