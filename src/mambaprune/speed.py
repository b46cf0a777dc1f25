"""Inference throughput, measured side by side so ratios are fair (same device, same run, interleaved).

On CUDA the one-call path replays a CUDA graph: that removes the Python and kernel-launch time, which at batch 1
(and for small pruned models at any batch) is larger than the GPU work, so the figure is what the GPU does, as a
server that captures its model would see it.

``compare_modes`` times the three ways a user runs a model — eager (``model(x)`` under autocast),
``torch.compile(model)``, and the one-call path ``optimize_for_inference`` — for several models, interleaved.
``speed_report`` is what the evaluate stage publishes: per mode both models' rates and the speedup with its
spread; the headline figures are the one-call path's (``config.HEADLINE_SPEED_MODE``: a CUDA graph on CUDA,
eager on CPU, where it falls back), with a check that the dense timing can be trusted (``timing_history``).
"""

from __future__ import annotations

import contextlib
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch

from .config import HEADLINE_SPEED_MODE, SPEED_MODES
from .inference import optimize_for_inference
from .timing_history import baseline_flag, read_timings, record_timing, timing_key

__all__ = ["MODES", "compare_modes", "speedup_with_spread", "speed_report"]

MODES = SPEED_MODES  # ("eager", "compiled", "one_call"), named once, in config (evaluate.speed_modes' choices)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


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
    """images/s of every named model in every mode → ``{mode: {name: {"img_per_s", "spread", "rates", "runs_as",
    "reason"}}}``.

    ``modes`` default: all of ``MODES`` on CUDA, eager alone on CPU. Every (mode, model) runner is built and
    warmed up first (compilation, capture); then each of ``rounds`` rounds times every runner once for ``iters``
    batches, in turn, so drift hits all alike. ``img_per_s`` is the median over rounds, ``spread`` =
    (max − min) / median. ``runs_as`` is what actually ran: the mode's name, except for ``one_call``:
    ``"cuda_graph"``, or ``"eager"`` when it fell back (CPU), ``reason`` saying why (else None). A fallen-back
    one-call runner is the eager model: with ``eager`` among the modes it is not timed twice, its figures are
    eager's; alone it is timed as what it is. ``compile_one_call`` makes it capture the ``torch.compile``'d model.
    """
    modes = tuple(modes) if modes is not None else (MODES if device.type == "cuda" else ("eager",))
    unknown = [m for m in modes if m not in MODES]
    if unknown or not modes:
        raise ValueError(f"modes={modes!r} is not allowed; use some of {', '.join(map(repr, MODES))}")
    if isinstance(rounds, bool) or not isinstance(rounds, int) or rounds < 1:
        raise ValueError(f"rounds={rounds!r} is not allowed; use an integer >= 1")
    runners, inputs, ran = {}, {}, {}
    for name, model in models.items():
        cfg = model.config
        inputs[name] = torch.rand(batch, cfg["in_chans"], cfg["img_size"], cfg["img_size"], device=device)
        for mode in modes:
            run = _runner(model, mode, batch, device, dtype, compile_one_call)
            ran[mode, name] = (getattr(run, "mode", mode), getattr(run, "reason", "") or None)
            if mode == "one_call" and ran[mode, name][0] == "eager" and "eager" in modes:
                continue  # the fallback is the eager mode: timed once, under "eager"
            runners[mode, name] = run
            run(inputs[name])  # warm-up
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
    for (mode, name), (runs_as, reason) in ran.items():
        r = rates[mode, name] if (mode, name) in rates else rates["eager", name]
        med = statistics.median(r)
        out[mode][name] = {"img_per_s": med, "spread": (max(r) - min(r)) / med, "rates": r, "runs_as": runs_as,
                           "reason": reason}
    return out


def speedup_with_spread(rates: dict[str, list[float]], model: str, baseline: str) -> tuple[float, float]:
    """(median, spread) of ``model``'s speedup over ``baseline`` from per-round rates (``compare_modes``'
    ``"rates"``, keyed by model name): each round's ratio compares two timings taken back to back, so drift
    between rounds cancels; the spread, (max - min) / median of those ratios, says how far to trust the median."""
    ratios = [m / b for m, b in zip(rates[model], rates[baseline])]
    mid = statistics.median(ratios)
    return mid, (max(ratios) - min(ratios)) / mid


def speed_report(dense, pruned, batch: int, iters: int, device: torch.device, history: Path | str,
                 modes: tuple[str, ...] = ("eager", HEADLINE_SPEED_MODE), rounds: int = 5) -> dict:
    """The evaluate stage's speed metrics, every mode of ``modes`` timed in the same ``rounds`` interleaved
    rounds (``compare_modes``, bf16 autocast on CUDA, fp32 on CPU).

    ``speed_by_mode``: per mode, ``dense_img_per_s`` and ``img_per_s`` (medians over the rounds), ``speedup``
    (median of the per-round ratios) with ``speedup_spread``, ``runs_as`` and ``reason`` (``compare_modes``;
    on CPU one_call ``runs_as`` eager, and says why). The top-level ``img_per_s``, ``dense_img_per_s``,
    ``speedup`` and ``speedup_spread`` are the ``HEADLINE_SPEED_MODE``'s (the one-call path: a CUDA graph on
    CUDA, where eager a small pruned model waits on Python, not on the GPU; eager on CPU), as before. Its dense
    rate is checked against its earlier timings on this machine in the JSON-lines file ``history`` and then
    added to it: when it is far off (``timing_history.baseline_flag``) every mode's ``speedup`` is None (the
    rounds were timed together: all saw the disturbance) and ``speed_flag`` says why, else ``speed_flag`` is
    None. Also ``threads``."""
    if HEADLINE_SPEED_MODE not in modes:
        raise ValueError(f"modes={modes!r} must include {HEADLINE_SPEED_MODE!r}: the headline speedup is its")
    timed = compare_modes({"dense": dense, "pruned": pruned}, batch, iters, device, modes=tuple(modes),
                          rounds=rounds)
    by_mode = {}
    for mode, rates in timed.items():
        d, p = rates["dense"], rates["pruned"]
        speedup, spread = speedup_with_spread({"dense": d["rates"], "pruned": p["rates"]}, "pruned", "dense")
        by_mode[mode] = {"dense_img_per_s": d["img_per_s"], "img_per_s": p["img_per_s"], "speedup": speedup,
                         "speedup_spread": spread, "runs_as": p["runs_as"], "reason": p["reason"]}
    head = by_mode[HEADLINE_SPEED_MODE]
    key = timing_key(dense, batch, device, cuda_graph=head["runs_as"] == "cuda_graph")
    flag = baseline_flag(head["dense_img_per_s"], read_timings(history, key))
    record_timing(history, key, head["dense_img_per_s"])
    if flag:
        for figures in by_mode.values():
            figures["speedup"] = None
    return {"img_per_s": head["img_per_s"], "dense_img_per_s": head["dense_img_per_s"], "speedup": head["speedup"],
            "speedup_spread": head["speedup_spread"], "speed_flag": flag, "speed_by_mode": by_mode,
            "threads": torch.get_num_threads()}
