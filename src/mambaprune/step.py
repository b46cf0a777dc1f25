"""One optimisation step — forward, loss, backward, clipping, hooks, optimizer — run eagerly or as a CUDA graph.

Why a graph: at the CIFAR batch (512) on an H200, an eager mamba_small step spends ~100 ms of host time
launching ~1,000 small kernels for ~45 ms of GPU work, so the GPU waits on Python. Captured once and replayed,
the whole step costs one launch. What a replay needs, and how this module provides it:

- **Static buffers**: the batch is copied into fixed input/target tensors before each replay; outputs (loss,
  logits, gradient norm) are fixed tensors the caller reads (and copies) before the next step.
- **Per-step scalars as data**: the LR and the round's progress live in 0-d device tensors refilled before each
  replay, so the LR schedule and RSST's growing strength need no recapture. The optimizer is fused AdamW (or
  SGD) with ``capturable=True`` and that LR tensor as every group's ``lr``.
- **No trace of the warm-up**: kernels must run once before capture (Triton compilation, cuBLAS workspaces,
  the optimizer's lazily created state), and those warm-up steps would move the weights. Weights, buffers,
  optimizer state and the CUDA RNG are snapshot before and restored after, so the first replayed step is the
  first step of training, exactly as eager.
- **Other shapes**: a batch of another size (an epoch's last, partial batch) runs the same body eagerly against
  the same optimizer and gradient tensors.
- **Fallbacks** (one line each, then eager): CPU, DDP (its bucketed all-reduce is not captured here), a hook
  that is not marked ``graph_safe``, or a capture that fails for any reason.

Hooks (see ``train.fit``) get ``progress`` and ``lr`` as Python floats eagerly and as 0-d device tensors in a
graph; a hook marks itself ``graph_safe = True`` when it computes with torch ops only (no ``float()``, no
host-side branching on those values).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import nullcontext
from typing import NamedTuple, TypeVar

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["StepOutputs", "TrainStep", "capture_cuda_graph", "graph_mode_reason", "autocast", "call_hooks"]

T = TypeVar("T")
WARMUP_STEPS = 3  # eager steps on a side stream before the capture (PyTorch's whole-network capture recipe)


class StepOutputs(NamedTuple):
    loss: torch.Tensor  # data loss + hook penalties (what was differentiated)
    data_loss: torch.Tensor
    logits: torch.Tensor  # float32
    grad_norm: torch.Tensor | None  # total norm before clipping, or None with clipping off


def autocast(device: torch.device, graph: bool = False):
    """bf16 on CUDA (no loss scaling needed), plain fp32 on CPU. In a graph the autocast weight-cast cache must
    be off: cached casts made during capture would be reused stale by the replays."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16, cache_enabled=not graph)
    return nullcontext()


def graph_mode_reason(setting: str, device: torch.device, distributed: bool, hooks: Sequence,
                      optimizer: str = "adamw") -> str | None:
    """None when the step should be captured, else why not (printed when ``setting`` asked for it)."""
    if setting == "off":
        return "train.cuda_graph is off"
    if device.type != "cuda":
        return f"training on {device.type}, CUDA graphs need CUDA"
    if optimizer != "adamw":
        return f"train.optimizer {optimizer!r}: only AdamW takes its LR as a device tensor here"
    if distributed:
        return "DDP's gradient all-reduce is not captured here"
    unsafe = [type(h).__name__ for h in hooks if not getattr(h, "graph_safe", False)]
    if unsafe:
        return f"hook(s) {', '.join(unsafe)} not marked graph_safe"
    return None


def call_hooks(hooks, method: str, *args) -> list:
    return [getattr(h, method)(*args) for h in hooks if hasattr(h, method)]


def capture_cuda_graph(fn: Callable[[], T], device: torch.device, warmup: int = 2,
                       before_capture: Callable[[], None] | None = None) -> Callable[[], T]:
    """``fn`` captured once as a CUDA graph → a function that replays it and returns ``fn``'s output tensors,
    refilled in place by each replay (read or copy them before the next replay).

    ``fn`` first runs ``warmup`` times on a side stream (Triton compilation, cuBLAS workspaces and lazily created
    state may not happen during a capture), then ``before_capture`` (e.g. undo what the warm-up changed).
    """
    side = torch.cuda.Stream(device)
    side.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(side):
        for _ in range(warmup):
            fn()
    torch.cuda.current_stream(device).wait_stream(side)
    if before_capture is not None:
        before_capture()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = fn()

    def replay() -> T:
        graph.replay()
        return out

    return replay


def _get_rng_state(device: torch.device) -> torch.Tensor:
    return torch.cuda.get_rng_state(device) if device.type == "cuda" else torch.get_rng_state()


def _set_rng_state(device: torch.device, state: torch.Tensor) -> None:
    if device.type == "cuda":
        torch.cuda.set_rng_state(state, device)
    else:
        torch.set_rng_state(state)


class TrainStep:
    """``step(x, y, lr, progress) -> StepOutputs``: one optimisation step of ``net`` (the module that runs the
    forward: ``model`` itself, or its DDP/compiled wrapper) on a batch.

    With ``graph=True`` the first full-size batch triggers the capture (see module docstring); call
    ``prepare_optimizer`` right after building the optimizer and after loading its state, before the first step.
    ``mode`` says what actually runs: ``"eager"`` or ``"cuda-graph"``.
    """

    def __init__(self, net: nn.Module, model: nn.Module, optimizer: torch.optim.Optimizer, hooks: Sequence,
                 device: torch.device, label_smoothing: float, grad_clip: float, graph: bool = False,
                 log: Callable[[str], None] = print, capture: Callable = None):
        self.net, self.model, self.optimizer, self.hooks = net, model, optimizer, list(hooks)
        self.device, self.label_smoothing, self.grad_clip = device, label_smoothing, grad_clip
        self.log = log
        self.capture = capture or capture_cuda_graph  # tests pass a stand-in that re-runs the body on CPU
        self.graph_wanted = graph
        self.mode = "eager"
        self._replay: Callable[[], StepOutputs] | None = None
        self._static: dict = {}
        self._lr = torch.zeros((), device=device) if graph else None  # the optimizer's LR, as data
        self._progress = torch.zeros((), device=device) if graph else None

    # ---------------------------------------------------------------------------------------------- the body
    def _body(self, x: torch.Tensor, y: torch.Tensor, lr, progress, graph: bool) -> StepOutputs:
        """Forward, loss, backward, clip, hooks, optimizer step — the same ops eagerly and under capture."""
        with autocast(self.device, graph):
            logits = self.net(x)
        logits = logits.float()
        data_loss = F.cross_entropy(logits, y, label_smoothing=self.label_smoothing)
        loss = data_loss
        for term in call_hooks(self.hooks, "loss_term", self.model, progress):
            if term is not None:
                loss = loss + term
        loss.backward()
        grad_norm = None
        if self.grad_clip > 0:  # before after_backward, so a penalty gradient added there is not scaled away
            grad_norm = nn.utils.clip_grad_norm_(self.model.parameters(), self.grad_clip)
        call_hooks(self.hooks, "after_backward", self.model, progress)
        self.optimizer.step()
        call_hooks(self.hooks, "after_step", self.model, progress, lr)
        return StepOutputs(loss.detach(), data_loss.detach(), logits.detach(), grad_norm)

    def prepare_optimizer(self) -> None:
        """In graph mode every param group reads the LR from one device tensor (call again after
        ``optimizer.load_state_dict``, which replaces group entries)."""
        if self._lr is not None:
            for group in self.optimizer.param_groups:
                group["lr"] = self._lr

    # ---------------------------------------------------------------------------------------------- eager
    def _eager(self, x, y, lr: float, progress: float) -> StepOutputs:
        if self._lr is None:
            for group in self.optimizer.param_groups:
                group["lr"] = lr
            self.optimizer.zero_grad(set_to_none=True)
            return self._body(x, y, lr, progress, graph=False)
        # graph mode, another batch size: the same LR tensor, and the gradient tensors the graph writes
        self._lr.fill_(lr)
        self._progress.fill_(progress)
        self.optimizer.zero_grad(set_to_none=False)
        return self._body(x, y, self._lr, self._progress, graph=False)

    # ---------------------------------------------------------------------------------------------- graph
    def _snapshot(self) -> dict:
        opt = {id(p): {k: v.clone() if torch.is_tensor(v) else v for k, v in st.items()}
               for p, st in self.optimizer.state.items()}
        return {"model": {k: v.detach().clone() for k, v in self.model.state_dict().items()}, "opt": opt,
                "rng": _get_rng_state(self.device)}

    @torch.no_grad()
    def _restore(self, snap: dict) -> None:
        """Undo the warm-up in place (the graph will hold these very tensors' addresses)."""
        for k, v in self.model.state_dict().items():
            v.copy_(snap["model"][k])
        for p, st in self.optimizer.state.items():
            saved = snap["opt"].get(id(p))
            for k, v in st.items():
                if torch.is_tensor(v):
                    v.copy_(saved[k]) if saved is not None and k in saved else v.zero_()  # fresh state is zeros
                elif saved is not None and k in saved:
                    st[k] = saved[k]
        _set_rng_state(self.device, snap["rng"])

    def _graph_body(self) -> StepOutputs:
        # set_to_none: inside the capture this only drops the Python references, and the graph's backward
        # allocates (and at each replay overwrites) the gradients, instead of accumulating into old ones
        self.optimizer.zero_grad(set_to_none=True)
        return self._body(self._static["x"], self._static["y"], self._lr, self._progress, graph=True)

    def _try_capture(self, x, y) -> None:
        snap = self._snapshot()
        self._static = {"x": x.clone(), "y": y.clone()}
        try:
            self._replay = self.capture(self._graph_body, self.device, WARMUP_STEPS, lambda: self._restore(snap))
            self.mode = "cuda-graph"
        except Exception as e:  # any failure: train eagerly, from the state before the attempt
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)
            self._replay, self._static = None, {}
            self.optimizer.zero_grad(set_to_none=True)
            self._restore(snap)
            first = str(e).splitlines()[0] if str(e) else ""
            self.log(f"CUDA graph capture failed ({type(e).__name__}: {first}); training eagerly")

    # ---------------------------------------------------------------------------------------------- call
    def __call__(self, x: torch.Tensor, y: torch.Tensor, lr: float, progress: float) -> StepOutputs:
        if self.graph_wanted:
            self.graph_wanted = False  # one attempt, on the first batch
            self._try_capture(x, y)
        if self._replay is not None and x.shape == self._static["x"].shape and y.shape == self._static["y"].shape:
            self._static["x"].copy_(x, non_blocking=True)
            self._static["y"].copy_(y, non_blocking=True)
            self._lr.fill_(lr)
            self._progress.fill_(progress)
            return self._replay()
        return self._eager(x, y, lr, progress)
