"""One call from a trained (pruned) model to fast inference: ``optimize_for_inference(model, batch_size)``.

    import mambaprune as mp
    model = mp.load_checkpoint("models/finetuned.pt", map_location="cuda")
    predict = mp.optimize_for_inference(model, batch_size=1024)      # bf16, CUDA graph
    logits = predict(images)                                          # any batch size, same values as eager

On CUDA the eval forward (under autocast in ``dtype``, optionally ``torch.compile``'d first) is captured once as a
CUDA graph for ``batch_size`` images, with a static input buffer (``step.capture_cuda_graph``, the one capture
helper, shared with the training step); a call copies the images in, replays the graph and copies the logits
out. Eager, a pruned mamba_small at batch 1024 waits on Python (issue #18: 1.06× for 3.9× fewer FLOPs);
replayed, the GPU runs back to back.

Other batch sizes (chosen: pad and split, not one graph per size): a smaller batch fills the first rows of the
static buffer (the rows left from an earlier call are computed and dropped: every image's logits depend only on
that image, so they cannot leak), a larger one runs in chunks of ``batch_size``. So a batch of n costs
ceil(n / batch_size) full replays and memory stays that of one graph; capture at the batch size you serve.

Falls back to the eager model (no autograd, same autocast) with one line on stderr saying why: on CPU (there it
runs fp32, the CPU path's precision), for a model on CPU, or when the capture fails.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable

import torch
import torch.nn as nn

from .step import capture_cuda_graph

__all__ = ["optimize_for_inference", "StaticBatchRunner", "EagerRunner"]

DTYPES = (torch.float32, torch.bfloat16, torch.float16)


def _autocast(device: torch.device, dtype: torch.dtype, cache_enabled: bool = True):
    if device.type != "cuda" or dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast("cuda", dtype=dtype, cache_enabled=cache_enabled)


class StaticBatchRunner:
    """Runs ``run_static`` — a forward of a fixed batch that reads ``static_input`` and returns its output
    (a replayed CUDA graph) — on a batch of any size: copy in, run, copy the rows that belong to it out.

    Batches smaller than the static one are padded (leftover rows are computed and dropped), larger ones run in
    chunks. The returned logits are fresh tensors: the next call overwrites the static output, not them."""

    def __init__(self, run_static: Callable[[], torch.Tensor], static_input: torch.Tensor):
        self.run_static, self.static_input = run_static, static_input
        self.batch_size = static_input.shape[0]
        self.mode, self.reason = "cuda_graph", ""

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != self.static_input.ndim or x.shape[1:] != self.static_input.shape[1:] or x.shape[0] == 0:
            shape = ", ".join(map(str, self.static_input.shape[1:]))
            raise ValueError(f"expected a non-empty batch of images shaped (n, {shape}), got {tuple(x.shape)}")
        outs = []
        for start in range(0, x.shape[0], self.batch_size):
            chunk = x[start:start + self.batch_size]
            self.static_input[:chunk.shape[0]].copy_(chunk)
            outs.append(self.run_static()[:chunk.shape[0]].clone())
        return outs[0] if len(outs) == 1 else torch.cat(outs)


class EagerRunner:
    """The fallback: ``model(x)`` without autograd, under autocast in ``dtype`` on CUDA (fp32 on CPU)."""

    def __init__(self, model: nn.Module, dtype: torch.dtype, reason: str):
        self.model, self.dtype, self.reason, self.mode = model, dtype, reason, "eager"
        self.device = next(model.parameters()).device

    @torch.no_grad()
    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        with _autocast(self.device, self.dtype):
            return self.model(x.to(self.device))


def _fallback(model: nn.Module, dtype: torch.dtype, reason: str, quiet: bool) -> EagerRunner:
    if not quiet:
        print(f"mambaprune.optimize_for_inference: running the model eagerly: {reason}", file=sys.stderr, flush=True)
    return EagerRunner(model, dtype, reason)


def optimize_for_inference(model: nn.Module, batch_size: int, dtype: torch.dtype = torch.bfloat16,
                           compile: bool = False, quiet: bool = False) -> Callable[[torch.Tensor], torch.Tensor]:
    """A callable ``predict(images) -> logits`` that gives ``model``'s eval outputs as fast as this device allows
    (module docstring): a CUDA graph for ``batch_size`` images on CUDA, else the eager model.

    ``dtype``: the autocast dtype on CUDA (``torch.float32``: no autocast). ``compile``: ``torch.compile`` the
    model before capturing (inductor fuses the element-wise work; costs compile time once). The model is put in
    eval mode and must stay unchanged while the callable is used (the graph reads its weights' memory: in-place
    weight updates are seen, replaced tensors are not). ``predict.mode`` is ``"cuda_graph"`` or ``"eager"`` and
    ``predict.reason`` says why it fell back; ``quiet`` suppresses the stderr line.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size={batch_size!r} is not allowed; use an integer >= 1 (the batch the graph is "
                         f"captured for; other sizes are padded or split)")
    if dtype not in DTYPES:
        raise ValueError(f"dtype={dtype!r} is not allowed; use one of {', '.join(map(str, DTYPES))}")
    config = getattr(model, "config", None)
    if config is None:
        raise TypeError(f"optimize_for_inference expects a mambaprune VisionMamba, got {type(model).__name__}")
    model.eval()
    device = next(model.parameters()).device
    if device.type != "cuda":
        why = "no CUDA device" if not torch.cuda.is_available() else "the model is on the CPU (move it with .cuda())"
        return _fallback(model, dtype, f"{why}; CUDA graphs need CUDA (fp32 on CPU)", quiet)
    static_x = torch.zeros(batch_size, config["in_chans"], config["img_size"], config["img_size"], device=device)
    forward_model = torch.compile(model) if compile else model

    def forward():
        with torch.no_grad(), _autocast(device, dtype, cache_enabled=False):
            return forward_model(static_x)

    try:
        replay = capture_cuda_graph(forward, device)
    except Exception as e:  # any capture failure leaves a working (if slower) eager model
        first = str(e).splitlines()[0] if str(e) else ""
        return _fallback(model, dtype, f"CUDA graph capture failed ({type(e).__name__}: {first})", quiet)
    return StaticBatchRunner(replay, static_x)
