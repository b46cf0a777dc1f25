"""A pruning plan is data: per block, the kept indices of SSM channels, MLP neurons and SSM states, and the kept
residual channels of the whole model.

``{"ssm": [[kept channels of block 0], ...], "mlp": [[kept neurons of block 0], ...],
"state": [[kept states of block 0], ...], "embed": [kept residual channels]}``: ``embed`` is ONE list, the
embedding width being one group for the whole model (``units.py``). A block entry of ``None``, an ``embed`` of
``None`` or a missing kind keeps every unit, so plans written before the state and embed kinds existed still
hold. Plans are JSON-able, so checkpoints store their history as plain lists. Applying a plan slices tensors
through the coupling spec in ``units.py``; the same plan slices any state of the model it was made for (initial
weights for rewinding, an early-epoch snapshot). Every index refers to the model the plan was made for, whatever
else the plan removes.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping

import torch

from ..models.mamba import VisionMamba
from .units import KINDS, kept_index, layer_prefix, members_of, num_layers, width_of, widths

__all__ = ["Plan", "layer_entries", "plan_widths", "slice_state", "apply_plan", "compose_plans", "validate_plan",
           "config_with_widths"]

Plan = dict  # {"ssm" | "mlp" | "state": list[list[int] | None] | None, "embed": list[int] | None}
_CONFIG_KEYS = {"ssm": "ssm_widths", "mlp": "mlp_widths", "state": "d_states"}


def layer_entries(plan: Plan, kind: str, config: Mapping) -> list:
    """The plan's kept list (or None) for each layer of ``kind``: per block, or the one ``embed`` layer."""
    entry = plan.get(kind)
    if kind == "embed":
        return [entry]
    return list(entry) if entry is not None else [None] * num_layers(config, kind)


def validate_plan(plan: Plan, config: Mapping) -> None:
    """Raise ValueError unless every kept list is sorted, unique, in range and non-empty."""
    for kind in KINDS:
        entries = plan.get(kind)
        if entries is None:
            continue
        if kind == "embed":
            if not all(isinstance(c, int) and not isinstance(c, bool) for c in entries):
                raise ValueError("plan['embed'] must be one list of kept channel indices (the embedding is one group "
                                 f"for the whole model), got {entries!r}")
        elif len(entries) != config["depth"]:
            raise ValueError(f"plan[{kind!r}] has {len(entries)} blocks, the model has {config['depth']}")
        for i, keep in enumerate(layer_entries(plan, kind, config)):
            if keep is None:
                continue
            w = width_of(config, kind, i)
            where = f"plan[{kind!r}]" + ("" if kind == "embed" else f"[{i}]")
            if len(keep) == 0:
                raise ValueError(f"{where} would empty " + ("the embedding" if kind == "embed" else
                                                            f"block {i}'s {kind} layer"))
            if any(b <= a for a, b in zip(keep, keep[1:])) or keep[0] < 0 or keep[-1] >= w:
                raise ValueError(f"{where} must be sorted unique indices in [0, {w})")


def plan_widths(plan: Plan, config: Mapping) -> dict[str, list[int]]:
    """Per-layer widths of every kind after applying ``plan`` to a model with ``config`` (embed: one layer)."""
    return {kind: [w if keep is None else len(keep)
                   for w, keep in zip(widths(config, kind), layer_entries(plan, kind, config))] for kind in KINDS}


def config_with_widths(config: Mapping, kind: str, kind_widths: list[int]) -> dict:
    """``config`` with the per-layer widths of one kind replaced (embed: ``embed_dim``)."""
    if kind == "embed":
        return dict(config, embed_dim=int(kind_widths[0]))
    return dict(config, **{_CONFIG_KEYS[kind]: [int(w) for w in kind_widths]})


def slice_state(state: Mapping[str, torch.Tensor], config: Mapping, plan: Plan
                ) -> tuple[dict[str, torch.Tensor], dict]:
    """Slice a state dict of a model with ``config`` by ``plan`` → (smaller state dict, its config).

    Kinds are cut one after the other (``KINDS`` order), each along its own dims; the running config tells the
    ``state`` kind where x_proj's B and C rows start once the ``ssm`` kind has cut the Δ rows before them.
    """
    validate_plan(plan, config)
    new_state, cfg = dict(state), dict(config)
    for kind in KINDS:
        by_tensor_dim = defaultdict(list)
        for m in members_of(cfg, kind):
            by_tensor_dim[(m.name, m.dim)].append(m)
        entries = layer_entries(plan, kind, cfg)
        for i, keep in enumerate(entries):
            if keep is None:
                continue
            keep_t = torch.as_tensor(keep, dtype=torch.long)
            width = width_of(cfg, kind, i)
            for (name, dim), ms in by_tensor_dim.items():
                key = layer_prefix(kind, i) + name
                t = new_state[key]
                lead = width_of(cfg, ms[0].after, i) if ms[0].after else 0
                idx = kept_index(t.shape[dim], ms, width, keep_t, lead).to(t.device)
                new_state[key] = t.index_select(dim, idx)
        kind_widths = [width_of(cfg, kind, i) if keep is None else len(keep) for i, keep in enumerate(entries)]
        cfg = config_with_widths(cfg, kind, kind_widths)
    return new_state, cfg


def apply_plan(model: VisionMamba, plan: Plan) -> VisionMamba:
    """A new, physically smaller VisionMamba whose weights are exact slices of ``model``'s."""
    state, config = slice_state(model.state_dict(), model.config, plan)
    with torch.device("meta"):  # no init work: every tensor is replaced by its slice below
        pruned = VisionMamba(**config)
    pruned.load_state_dict({k: v.detach().clone() for k, v in state.items()}, assign=True)
    pruned.set_scan_impl(model.blocks[0].mixer.ssm[0].scan_impl)
    pruned.train(model.training)
    return pruned


def _compose_keep(ka: list[int] | None, kb: list[int] | None) -> list[int] | None:
    return kb if ka is None else (ka if kb is None else [ka[j] for j in kb])


def compose_plans(first: Plan, second: Plan) -> Plan:
    """The plan equal to applying ``first`` then ``second`` (indices of ``second`` refer to survivors)."""
    out = {}
    for kind in KINDS:
        a, b = first.get(kind), second.get(kind)
        if a is None or b is None:
            out[kind] = a if b is None else b
        elif kind == "embed":
            out[kind] = _compose_keep(a, b)
        else:
            out[kind] = [_compose_keep(ka, kb) for ka, kb in zip(a, b)]
    return out
