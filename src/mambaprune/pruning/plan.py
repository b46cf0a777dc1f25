"""A pruning plan is data: per block, the kept indices of SSM channels and of MLP neurons.

``{"ssm": [[kept channels of block 0], ...], "mlp": [[kept neurons of block 0], ...]}``; a block entry of
``None`` (or a missing kind) keeps every unit. Plans are JSON-able, so checkpoints store their history
as plain lists. Applying a plan slices tensors through the coupling spec in ``units.py``; the same plan
slices any state of the model it was made for (initial weights for rewinding, an early-epoch snapshot).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping

import torch

from ..models.mamba import VisionMamba
from .units import KINDS, block_prefix, kept_index, members, num_directions, width_of

__all__ = ["Plan", "plan_widths", "slice_state", "apply_plan", "compose_plans", "validate_plan"]

Plan = dict  # {"ssm": list[list[int] | None], "mlp": list[list[int] | None]}


def validate_plan(plan: Plan, config: Mapping) -> None:
    """Raise ValueError unless every kept list is sorted, unique, in range and non-empty."""
    for kind in KINDS:
        entries = plan.get(kind)
        if entries is None:
            continue
        if len(entries) != config["depth"]:
            raise ValueError(f"plan[{kind!r}] has {len(entries)} blocks, the model has {config['depth']}")
        for i, keep in enumerate(entries):
            if keep is None:
                continue
            w = width_of(config, kind, i)
            if len(keep) == 0:
                raise ValueError(f"plan would empty block {i}'s {kind} layer")
            if any(b <= a for a, b in zip(keep, keep[1:])) or keep[0] < 0 or keep[-1] >= w:
                raise ValueError(f"plan[{kind!r}][{i}] must be sorted unique indices in [0, {w})")


def plan_widths(plan: Plan, config: Mapping) -> dict[str, list[int]]:
    """Widths after applying ``plan`` to a model with ``config``."""
    out = {}
    for kind in KINDS:
        entries = plan.get(kind) or [None] * config["depth"]
        out[kind] = [width_of(config, kind, i) if keep is None else len(keep) for i, keep in enumerate(entries)]
    return out


def slice_state(state: Mapping[str, torch.Tensor], config: Mapping, plan: Plan
                ) -> tuple[dict[str, torch.Tensor], dict]:
    """Slice a state dict of a model with ``config`` by ``plan`` → (smaller state dict, its config)."""
    validate_plan(plan, config)
    new_state = dict(state)
    for kind in KINDS:
        for i, keep in enumerate(plan.get(kind) or []):
            if keep is None:
                continue
            keep_t = torch.as_tensor(keep, dtype=torch.long)
            width = width_of(config, kind, i)
            by_tensor_dim = defaultdict(list)
            for m in members(kind, num_directions(config)):
                by_tensor_dim[(m.name, m.dim)].append(m)
            for (name, dim), ms in by_tensor_dim.items():
                key = block_prefix(i) + name
                t = new_state[key]
                idx = kept_index(t.shape[dim], ms, width, keep_t).to(t.device)
                new_state[key] = t.index_select(dim, idx)
    widths = plan_widths(plan, config)
    new_config = dict(config, ssm_widths=widths["ssm"], mlp_widths=widths["mlp"])
    return new_state, new_config


def apply_plan(model: VisionMamba, plan: Plan) -> VisionMamba:
    """A new, physically smaller VisionMamba whose weights are exact slices of ``model``'s."""
    state, config = slice_state(model.state_dict(), model.config, plan)
    with torch.device("meta"):  # no init work: every tensor is replaced by its slice below
        pruned = VisionMamba(**config)
    pruned.load_state_dict({k: v.detach().clone() for k, v in state.items()}, assign=True)
    pruned.set_scan_impl(model.blocks[0].mixer.ssm[0].scan_impl)
    pruned.train(model.training)
    return pruned


def compose_plans(first: Plan, second: Plan) -> Plan:
    """The plan equal to applying ``first`` then ``second`` (indices of ``second`` refer to survivors)."""
    out = {}
    for kind in KINDS:
        a, b = first.get(kind), second.get(kind)
        if a is None or b is None:
            out[kind] = a if b is None else b
            continue
        out[kind] = [kb if ka is None else (ka if kb is None else [ka[j] for j in kb]) for ka, kb in zip(a, b)]
    return out
