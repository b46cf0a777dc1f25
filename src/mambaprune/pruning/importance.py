"""Unit importance criteria: one score per prunable unit, one small function per criterion.

A criterion is ``fn(model, kind, grads, generator) -> list[Tensor]``: one 1-D float64 CPU tensor per
layer (per block; one layer for ``embed``), of that layer's width, higher = more important. Which tensor slices
make up a unit comes only from ``units.unit_matrices`` (buffers such as ``dt_bias`` excluded), so every
criterion scores the same coupled group that pruning removes. Adding a criterion = adding one function to
``CRITERIA``.

What is scored, per kind (``scored_matrices``):
- ``ssm``, ``mlp``: every member entry of the unit (``units.py``), A_log rows included for SSM channels (there
  every channel's A_log row starts equal, log(1..n)).
- ``state`` n of a block: its B row and its C row of x_proj, in every scan direction (2·d_inner entries per
  direction). Its A_log column is cut with it but not scored: A_log is log(−A), a decay rate, not a size (as in
  Refill and RSST, see units.py), and A_log's column for state n starts at log(n + 1), 0 to 2.8 against
  |w| ≈ 0.016 for x_proj entries at init, so with it in the mean every criterion would rank states by index.
  B and C rows carry the state's size: zeroing either removes the state's contribution exactly.
- ``embed`` channel c: every member entry over the whole model (patch embedding row and bias, positional
  embedding column, every LayerNorm weight and bias, in_proj and fc1 columns, out_proj and fc2 rows, fc2 bias,
  head column): in_chans·patch² + 1 + tokens + Σ_blocks (3·d_inner + 2·hidden + 5) + 2 + classes entries.

- ``l1``: mean |w| over all the unit's entries (the reference scored only the out_proj column for SSM
  channels and fc1 row + fc2 column for MLP neurons; we use every member, as they are all removed).
- ``l2``: root mean square of w over the unit.
- ``taylor``: mean over the unit of |w · ∂L/∂w| (first-order estimate of the loss change when the weight
  is zeroed; Molchanov et al. 2019), gradients summed over a few calibration batches.
- ``random``: a seeded control; any method worth using must beat it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
import torch.nn as nn
import torch.nn.functional as F

from .units import KINDS, double_counted, num_layers, unit_matrices, weight_matrices, widths

__all__ = ["CRITERIA", "IMPORTANCES", "score_units", "scored_matrices", "accumulate_grads", "l1", "l2", "taylor",
           "random"]

Criterion = Callable[[nn.Module, str, "dict[str, torch.Tensor] | None", torch.Generator], list[torch.Tensor]]


def _params(model: nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach() for n, p in model.named_parameters()}


def scored_matrices(state, config, kind: str, i: int) -> list[torch.Tensor]:
    """Layer i's unit entries that the criteria score, as (W, k) matrices (see the module docstring): every
    member's for ``ssm``/``mlp``/``embed``; for ``state`` the B and C rows of x_proj (A_log left out)."""
    if kind == "state":
        return weight_matrices(state, config, kind, i)
    return unit_matrices(state, config, kind, i)


def _per_unit(state, config, kind: str, fn: Callable[[torch.Tensor], torch.Tensor]) -> list[torch.Tensor]:
    """Mean of ``fn`` (elementwise, float64) over every scored entry of each unit, layer by layer.

    A mean, not a sum: an SSM channel's x_proj column and row grow with the layer's width, so summed scores
    would make wider layers look more important in a global ranking (and already-pruned layers less).
    Every entry counts once: x_proj[c, c], in both the column and the row of unit c, is subtracted once.
    """
    out = []
    for i in range(num_layers(config, kind)):
        mats = scored_matrices(state, config, kind, i)
        twice = double_counted(state, config, kind, i) if kind == "ssm" else []
        entries = sum(m.shape[1] for m in mats) - len(twice)
        total = sum(fn(m.double()).sum(dim=1) for m in mats) - sum(fn(d.double()) for d in twice)
        out.append((total / entries).cpu())
    return out


@torch.no_grad()
def l1(model: nn.Module, kind: str, grads, generator) -> list[torch.Tensor]:
    return _per_unit(_params(model), model.config, kind, torch.abs)


@torch.no_grad()
def l2(model: nn.Module, kind: str, grads, generator) -> list[torch.Tensor]:
    return [s.sqrt() for s in _per_unit(_params(model), model.config, kind, torch.square)]


@torch.no_grad()
def taylor(model: nn.Module, kind: str, grads, generator) -> list[torch.Tensor]:
    if grads is None:
        raise ValueError("importance 'taylor' needs calibration batches (calib=...) to compute gradients")
    params = _params(model)
    prod = {n: params[n].double() * grads[n].double() for n in params}
    return _per_unit(prod, model.config, kind, torch.abs)


@torch.no_grad()
def random(model: nn.Module, kind: str, grads, generator) -> list[torch.Tensor]:
    return [torch.rand(w, generator=generator, dtype=torch.float64) for w in widths(model.config, kind)]


def _stream_seed(seed: int, kind: str) -> int:
    """One random stream per (seed, kind), so random scores of different kinds are independent draws. SSM and MLP
    keep the streams they had before the state and embed kinds existed (seed·2 + 0 | 1), so earlier random runs
    reproduce; state and embed draw from a disjoint range."""
    i = KINDS.index(kind)
    return seed * 2 + i if i < 2 else (1 << 48) + seed * 2 + (i - 2)


CRITERIA: dict[str, Criterion] = {"l1": l1, "l2": l2, "taylor": taylor, "random": random}
IMPORTANCES = tuple(CRITERIA)
_NEEDS_GRADS = {"taylor"}


def accumulate_grads(model: nn.Module, calib: Iterable, max_batches: int = 4) -> dict[str, torch.Tensor]:
    """Cross-entropy gradients summed over up to ``max_batches`` ``(x, y)`` batches of ``calib``.

    Uses ``torch.autograd.grad``, so the model's weights, its ``.grad`` fields and its train/eval mode are
    left as they were. Runs in eval mode (no training-time behaviour leaks into the scores).
    """
    if max_batches < 1:
        raise ValueError(f"calib_batches must be >= 1, got {max_batches}")
    names, params = zip(*[(n, p) for n, p in model.named_parameters() if p.requires_grad])
    device = params[0].device
    total = [torch.zeros_like(p) for p in params]
    was_training = model.training
    model.eval()
    seen = 0
    try:
        with torch.enable_grad():
            for x, y in calib:
                if seen >= max_batches:
                    break
                loss = F.cross_entropy(model(x.to(device)), y.to(device))
                for t, g in zip(total, torch.autograd.grad(loss, params, allow_unused=True)):
                    if g is not None:
                        t.add_(g)
                seen += 1
    finally:
        model.train(was_training)
    if seen == 0:
        raise ValueError("calib yielded no (x, y) batches; taylor importance needs at least one")
    return dict(zip(names, total))


def score_units(model: nn.Module, kind: str, importance: str, calib: Iterable | None = None,
                calib_batches: int = 4, seed: int = 0, grads: dict[str, torch.Tensor] | None = None
                ) -> list[torch.Tensor]:
    """Per-layer unit scores of ``kind`` ('ssm' | 'mlp' | 'state' | 'embed') on the model's current weights.

    ``grads`` (from ``accumulate_grads``) lets several kinds share one calibration pass.
    """
    if kind not in KINDS:
        raise ValueError(f"unit kind must be one of {', '.join(map(repr, KINDS))}, got {kind!r}")
    if importance not in CRITERIA:
        raise ValueError(f"importance must be one of {', '.join(map(repr, IMPORTANCES))}, got {importance!r}")
    if importance not in _NEEDS_GRADS:
        grads = None
    elif grads is None:
        if calib is None:
            raise ValueError(f"importance {importance!r} needs calibration batches: pass calib=<(x, y) batches>")
        grads = accumulate_grads(model, calib, calib_batches)
    generator = torch.Generator().manual_seed(_stream_seed(int(seed), kind))
    return CRITERIA[importance](model, kind, grads, generator)
