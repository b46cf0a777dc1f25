"""Inference throughput, measured side by side so ratios are fair (same device, same run, interleaved).

On CUDA a forward can also be timed as a replayed CUDA graph (``cuda_graph=True``): that removes the Python and
kernel-launch time, which at batch 1 (and for small pruned models at any batch) is larger than the GPU work, so
the figure is what the GPU does, as a server that captures its model would see it.

``compare_modes`` times the three ways a user runs a model — eager (``model(x)`` under autocast),
``torch.compile(model)``, and the one-call path ``optimize_for_inference`` — for several models, interleaved.
``speed_report`` is what the evaluate stage publishes: both models' rates, the speedup with its spread, and
whether the dense timing can be trusted (``timing_history``).
"""

from __future__ import annotations

import contextlib
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch

from .inference import optimize_for_inference
from .step import capture_cuda_graph
from .timing_history import baseline_flag, read_timings, record_timing, timing_key

__all__ = ["MODES", "images_per_second", "compare_throughput", "compare_modes", "speedup_with_spread",
           "speed_report"]

MODES = ("eager", "compiled", "one_call")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


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
        forward = capture_cuda_graph(lambda: model(x), device) if graph else lambda: model(x)
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


def _runner(model, mode: str, batch: int, device: torch.device, dtype: torch.dtype, compile_one_call: bool
            ) -> Callable:
    """``x -> logits`` the way ``mode`` runs ``model`` (eager and compiled under the same autocast as the one-call
    path; fp32 on CPU)."""
    if mode == "one_call":
        return optimize_for_inference(model, batch, dtype=dtype, compile=compile_one_call, quiet=True)
    model.eval()
    forward = torch.compile(model) if mode == "compiled" else model
    use_autocast = device.type == "cuda" and dtype != torch.float32

    @torch.no_grad()
    def run(x):
        with torch.autocast("cuda", dtype=dtype) if use_autocast else contextlib.nullcontext():
            return forward(x)

    return run


def compare_modes(models: dict, batch: int, iters: int, device: torch.device, modes: tuple[str, ...] | None = None,
                  rounds: int = 3, dtype: torch.dtype = torch.bfloat16, compile_one_call: bool = False) -> dict:
    """images/s of every named model in every mode → ``{mode: {name: {"img_per_s", "spread", "rates"}}}``.

    ``modes`` default: all of ``MODES`` on CUDA, eager alone on CPU. Every (mode, model) runner is built and
    warmed up first (compilation, capture); then each of ``rounds`` rounds times every runner once for ``iters``
    batches, in turn, so drift hits all alike. ``img_per_s`` is the median over rounds, ``spread`` =
    (max − min) / median. A one-call runner that fell back to eager (CPU) is timed as what it is;
    ``compile_one_call`` makes it capture the ``torch.compile``'d model.
    """
    modes = tuple(modes) if modes is not None else (MODES if device.type == "cuda" else ("eager",))
    unknown = [m for m in modes if m not in MODES]
    if unknown or not modes:
        raise ValueError(f"modes={modes!r} is not allowed; use some of {', '.join(map(repr, MODES))}")
    if isinstance(rounds, bool) or not isinstance(rounds, int) or rounds < 1:
        raise ValueError(f"rounds={rounds!r} is not allowed; use an integer >= 1")
    runners, inputs = {}, {}
    for name, model in models.items():
        cfg = model.config
        inputs[name] = torch.rand(batch, cfg["in_chans"], cfg["img_size"], cfg["img_size"], device=device)
        for mode in modes:
            runners[mode, name] = _runner(model, mode, batch, device, dtype, compile_one_call)
            runners[mode, name](inputs[name])  # warm-up
    rates = {key: [] for key in runners}
    for _ in range(rounds):
        for (mode, name), run in runners.items():
            x = inputs[name]
            _sync(device)
            t0 = time.perf_counter()
            for _ in range(iters):
                run(x)
            _sync(device)
            rates[mode, name].append(batch * iters / (time.perf_counter() - t0))
    out: dict = {mode: {} for mode in modes}
    for (mode, name), r in rates.items():
        med = statistics.median(r)
        out[mode][name] = {"img_per_s": med, "spread": (max(r) - min(r)) / med, "rates": r}
    return out


def speedup_with_spread(rates: dict[str, list[float]], model: str, baseline: str) -> tuple[float, float]:
    """(median, spread) of ``model``'s speedup over ``baseline`` from ``compare_throughput(per_round=True)``:
    each round's ratio compares two timings taken back to back, so drift between rounds cancels; the spread,
    (max - min) / median of those ratios, says how far to trust the median."""
    ratios = [m / b for m, b in zip(rates[model], rates[baseline])]
    mid = statistics.median(ratios)
    return mid, (max(ratios) - min(ratios)) / mid


def speed_report(dense, pruned, batch: int, iters: int, device: torch.device, history: Path | str,
                 rounds: int = 5) -> dict:
    """The evaluate stage's speed metrics: ``img_per_s`` and ``dense_img_per_s`` (median of ``rounds`` interleaved
    timings; CUDA graphs on CUDA, where eager a small pruned model waits on Python, not on the GPU), ``speedup``
    (median of the per-round ratios) and ``speedup_spread``, and ``threads``. The dense rate is checked against
    its own earlier timings on this machine in the JSON-lines file ``history`` and then added to it: when it is
    far off (``timing_history.baseline_flag``) ``speedup`` is None and ``speed_flag`` says why, else
    ``speed_flag`` is None."""
    rates = compare_throughput({"dense": dense, "pruned": pruned}, batch, iters, device, rounds=rounds,
                               cuda_graph=True, per_round=True)
    speed = {name: statistics.median(r) for name, r in rates.items()}
    speedup, spread = speedup_with_spread(rates, "pruned", "dense")
    key = timing_key(dense, batch, device, cuda_graph=True)
    flag = baseline_flag(speed["dense"], read_timings(history, key))
    record_timing(history, key, speed["dense"])
    return {"img_per_s": speed["pruned"], "dense_img_per_s": speed["dense"], "speedup": None if flag else speedup,
            "speedup_spread": spread, "speed_flag": flag, "threads": torch.get_num_threads()}
