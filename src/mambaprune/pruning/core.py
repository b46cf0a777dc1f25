"""The pruning core: a selection is score → select → plan → apply, for ``prune_model`` and every round alike.

- ``Targets``: what a selection aims at. Per unit kind, the fraction of the base (original) widths removed in
  total, plus the ranking scope, ``min_keep`` and ``round_to`` (``select.py``). A kind without a ratio stays
  whole.
- ``score``: importance scores of the targeted kinds on the model's current weights (``importance.py``; taylor
  runs one calibration pass for all kinds).
- ``select``: scores + targets → ``Selection``: the plan, each kind's selection info, and the warnings (where
  min_keep/round_to kept more units than asked) as data, for the caller to print or publish.
- ``plan.apply_plan`` then cuts; the plan is the whole record of what was removed.

Refill chooses its units from an unstructured magnitude mask instead of scores (``refill.py``); its kept lists
become a ``Selection`` the same way (``Selection.from_keep``, in ``rounds.py``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn as nn

from .importance import accumulate_grads, score_units
from .plan import Plan
from .select import select_units
from .units import KINDS, widths

__all__ = ["Targets", "Selection", "score", "select"]


@dataclass(frozen=True)
class Targets:
    """What one selection aims at: ``ratios[kind]`` of ``base_widths[kind]`` removed in total."""

    ratios: Mapping[str, float]  # kind -> fraction of its base units removed; kinds left out stay whole
    base_widths: Mapping[str, Sequence[int]]  # per kind, the widths the ratios refer to (the dense model's)
    scope: str = "global"
    min_keep: int = 8
    round_to: int = 8


@dataclass
class Selection:
    """The units to keep (``plan``), how each kind's were chosen (``info``) and the warnings of all kinds."""

    plan: Plan
    info: dict[str, dict] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)  # "<kind>: min_keep=... raised ...; effective ratio ..."

    @classmethod
    def from_keep(cls, config: Mapping, keep: Mapping[str, list[list[int]]], info: Mapping[str, dict]
                  ) -> Selection:
        """From kept indices per kind and layer (a layer keeping every unit becomes None; ``embed``, one layer for
        the whole model, becomes one kept list) and per-kind info, whose ``warnings`` lists are gathered, prefixed
        with their kind."""
        plan: Plan = {kind: None for kind in KINDS}
        for kind, layers in keep.items():
            entries = [None if len(k) == w else list(k) for k, w in zip(layers, widths(config, kind), strict=True)]
            plan[kind] = entries[0] if kind == "embed" else entries
        warnings = [f"{kind}: {w}" for kind in keep for w in info[kind].get("warnings", [])]
        return cls(plan, dict(info), warnings)


def score(model: nn.Module, kinds: Iterable[str], importance: str, calib: Iterable | None = None,
          calib_batches: int = 4, seed: int = 0) -> dict[str, list[torch.Tensor]]:
    """Per-block unit scores of each of ``kinds``; taylor's calibration pass (on ``calib``) serves them all."""
    kinds = list(kinds)
    grads = None
    if importance == "taylor" and kinds:
        if calib is None:
            raise ValueError("importance 'taylor' needs calibration batches: pass calib=<(x, y) batches>")
        grads = accumulate_grads(model, calib, calib_batches)
    return {kind: score_units(model, kind, importance, seed=seed, grads=grads) for kind in kinds}


def select(model: nn.Module, scores: Mapping[str, list[torch.Tensor]], targets: Targets) -> Selection:
    """Keep the best-scoring units of each targeted kind (``select.select_units``) → ``Selection``."""
    keep, info = {}, {}
    for kind, ratio in targets.ratios.items():
        keep[kind], info[kind] = select_units(scores[kind], ratio, targets.scope, targets.min_keep, targets.round_to,
                                              base_widths=list(targets.base_widths[kind]))
    return Selection.from_keep(model.config, keep, info)
