"""Refill (Structure-LTH, Chen et al., ICML 2022): turn an unstructured magnitude mask into whole units.

1. Global unstructured magnitude pruning of the trained weights of one unit kind (all blocks together)
   to weight density ``density``: the ``density`` share of largest-|w| entries survive.
2. Per layer, n_eq = surviving weights / weights per unit: the width that many weights would fill.
3. Keep int(n + (units − n) · fillback_rate) whole units, n = n_eq — or the schedule's ``targets[i]`` when
   given (the schedule fixes how many a round removes, refill decides which) — ranked by surviving-weight
   count (``remain``) or by the unit's L1 magnitude (``magnitude``), then min_keep / round_to. So in every
   case ``fillback_rate`` is the share of the units the layer would lose that come back (0: keep n, 1: keep
   all), as in the seed.

Which entries count as a unit's weights: ``units.weight_matrices`` — the coupling spec minus buffers (dt_bias)
and minus A_log (see units.py). For a state dimension: its B and C rows of x_proj in every scan direction; for a
residual channel (``embed``): every member entry over the whole model, which is ONE layer, so "global" step 1 and
the per-layer steps 2-3 coincide (fillback_rate is still the share of the channels the cut would remove that
come back).
"""

from __future__ import annotations

import torch

from .select import round_width
from .units import num_layers, weight_matrices

__all__ = ["refill_select", "REFILL_CRITERIA"]

REFILL_CRITERIA = ("remain", "magnitude")


def _unit_rows(model: torch.nn.Module, kind: str) -> list[torch.Tensor]:
    """Per layer, |w| of every unit as one (W, k) matrix (all weight members side by side), detached."""
    params = {n: p.detach() for n, p in model.named_parameters()}
    config = model.config
    return [torch.cat([m.abs().float() for m in weight_matrices(params, config, kind, i)], dim=1)
            for i in range(num_layers(config, kind))]


def refill_select(model: torch.nn.Module, kind: str, density: float, fillback_rate: float, criterion: str,
                  targets: list[int] | None, min_keep: int, round_to: int) -> tuple[list[list[int]], dict]:
    """Kept unit indices per block (sorted) and info; the model is not changed.

    ``targets[i]``, when given, replaces n_eq as the count kept at ``fillback_rate`` 0 (see module docstring).

    ``density``: share of this kind's weights (of the model as it is now) that survive global magnitude
    pruning. info: ``threshold`` (largest pruned |w|; survivors are strictly above it), ``density``,
    and per layer ``layers[i]`` = dict(units, weights_per_unit, survivors, n_eq, n_keep).
    """
    if criterion not in REFILL_CRITERIA:
        raise ValueError(f"refill criterion must be one of {', '.join(REFILL_CRITERIA)}; got {criterion!r}")
    if not 0.0 <= density <= 1.0 or not 0.0 <= fillback_rate <= 1.0:
        raise ValueError(f"density and fillback_rate must be in [0, 1], got {density}, {fillback_rate}")
    rows = _unit_rows(model, kind)
    if targets is not None and len(targets) != len(rows):
        raise ValueError(f"targets need {len(rows)} entries (one per layer), got {len(targets)}")
    flat = torch.cat([r.flatten() for r in rows])
    n_pruned = flat.numel() - int(round(density * flat.numel()))
    threshold = flat.kthvalue(n_pruned).values.item() if n_pruned > 0 else float("-inf")

    keep, layers = [], []
    for i, r in enumerate(rows):
        width, per_unit = r.shape
        alive = (r > threshold).sum(dim=1)
        survivors = int(alive.sum())
        n_eq = survivors / per_unit
        n = n_eq if targets is None else min(int(targets[i]), width)
        n_keep = round_width(int(n + (width - n) * fillback_rate), width, min_keep, round_to)
        magnitude = r.sum(dim=1)
        if criterion == "remain":  # count first, magnitude breaks ties (stable sorts, last key first)
            order = magnitude.argsort(descending=True, stable=True)
            order = order[alive[order].argsort(descending=True, stable=True)]
        else:
            order = magnitude.argsort(descending=True, stable=True)
        keep.append(sorted(order[:n_keep].tolist()))
        layers.append(dict(units=width, weights_per_unit=per_unit, survivors=survivors, n_eq=n_eq, n_keep=n_keep))
    return keep, dict(threshold=threshold, density=density, layers=layers)
