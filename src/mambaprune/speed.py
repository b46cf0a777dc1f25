"""Inference throughput, measured side by side so ratios are fair (same device, same run, interleaved).

On CUDA a forward can also be timed as a replayed CUDA graph (``cuda_graph=True``): that removes the Python and
kernel-launch time, which at batch 1 (and for small pruned models at any batch) is larger than the GPU work, so
the figure is what the GPU does, as a server that captures its model would see it.
"""

from __future__ import annotations

import contextlib
import statistics
import time

import torch


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _cuda_graph(forward):
    """``forward`` captured once as a CUDA graph (the training step's capture helper, ``step.capture_cuda_graph``,
    warmed up on a side stream first); returns a function replaying it."""
    from .step import capture_cuda_graph

    return capture_cuda_graph(forward, torch.device("cuda", torch.cuda.current_device()), warmup=2)


@torch.no_grad()
def images_per_second(model, batch: int, iters: int, device: torch.device, repeats: int = 1,
                      cuda_graph: bool = False) -> float:
    """Median images/s of ``model`` on random inputs (bf16 autocast on CUDA, fp32 on CPU)."""
    cfg = model.config
    x = torch.rand(batch, cfg["in_chans"], cfg["img_size"], cfg["img_size"], device=device)
    model.eval()
    graph = cuda_graph and device.type == "cuda"
    autocast = (torch.autocast("cuda", dtype=torch.bfloat16, cache_enabled=not graph) if device.type == "cuda"
                else contextlib.nullcontext())
    rates = []
    with autocast:
        forward = _cuda_graph(lambda: model(x)) if graph else lambda: model(x)
        forward()  # warm-up (kernel selection, Triton compilation)
        for _ in range(repeats):
            _sync(device)
            t0 = time.perf_counter()
            for _ in range(iters):
                forward()
            _sync(device)
            rates.append(batch * iters / (time.perf_counter() - t0))
    return statistics.median(rates)


def compare_throughput(models: dict, batch: int, iters: int, device: torch.device, rounds: int = 3,
                       cuda_graph: bool = False, per_round: bool = False) -> dict:
    """images/s per named model, measured in interleaved rounds (A, B, A, B, ...) to cancel drift: the median
    of the rounds, or with ``per_round`` the list of every round's figure (for ``speedup_with_spread``)."""
    rates = {name: [] for name in models}
    for _ in range(rounds):
        for name, model in models.items():
            rates[name].append(images_per_second(model, batch, iters, device, cuda_graph=cuda_graph))
    return rates if per_round else {name: statistics.median(r) for name, r in rates.items()}


def speedup_with_spread(rates: dict[str, list[float]], model: str, baseline: str) -> tuple[float, float]:
    """(median, spread) of ``model``'s speedup over ``baseline`` from ``compare_throughput(per_round=True)``:
    each round's ratio compares two timings taken back to back, so drift between rounds cancels; the spread,
    (max - min) / median of those ratios, says how far to trust the median."""
    ratios = [m / b for m, b in zip(rates[model], rates[baseline])]
    mid = statistics.median(ratios)
    return mid, (max(ratios) - min(ratios)) / mid
