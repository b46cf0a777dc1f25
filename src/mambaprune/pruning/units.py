"""The coupling spec: which slices of which tensors make up one prunable unit. Declared once, used by
importance scoring, penalties, masking and physical removal alike.

Unit kinds (per block i, tensor names relative to ``blocks.{i}.``; ``s`` runs over scan directions):
- ``ssm`` channel c of d_inner (width W):
  ``mixer.in_proj.weight`` rows c (x half) and W+c (z half); ``mixer.ssm.{s}.conv1d.weight``/``.bias`` c;
  ``mixer.ssm.{s}.x_proj.weight`` column c (its input) and row c (its Δ output); ``mixer.ssm.{s}.A_log``
  row c; ``mixer.ssm.{s}.D`` c; ``mixer.ssm.{s}.dt_bias`` c (buffer); ``mixer.out_proj.weight`` column c.
- ``mlp`` neuron j of the hidden width: ``mlp.fc1.weight`` row j, ``mlp.fc1.bias`` j, ``mlp.fc2.weight``
  column j.

A ``Member(name, dim, offset)`` says: along ``dim`` of tensor ``name``, unit c sits at index
``offset * W + c``. Indices along a dim that no member covers (the B and C rows of x_proj) belong to no
unit and are always kept.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch

__all__ = ["KINDS", "Member", "members", "num_directions", "block_prefix", "unit_matrices",
           "double_counted", "kept_index", "width_of"]

KINDS = ("ssm", "mlp")


@dataclass(frozen=True)
class Member:
    name: str  # tensor name relative to the block, e.g. "mixer.in_proj.weight"
    dim: int  # the dimension indexed by the unit
    offset: int = 0  # unit c sits at offset * width + c along dim


def members(kind: str, directions: int = 1) -> list[Member]:
    """The coupling spec of one unit kind (see module docstring)."""
    if kind == "mlp":
        return [Member("mlp.fc1.weight", 0), Member("mlp.fc1.bias", 0), Member("mlp.fc2.weight", 1)]
    if kind != "ssm":
        raise ValueError(f"unit kind must be one of {KINDS}, got {kind!r}")
    out = [Member("mixer.in_proj.weight", 0, 0), Member("mixer.in_proj.weight", 0, 1)]
    for s in range(directions):
        p = f"mixer.ssm.{s}."
        out += [Member(p + "conv1d.weight", 0), Member(p + "conv1d.bias", 0),
                Member(p + "x_proj.weight", 1), Member(p + "x_proj.weight", 0),
                Member(p + "A_log", 0), Member(p + "D", 0), Member(p + "dt_bias", 0)]
    out.append(Member("mixer.out_proj.weight", 1))
    return out


def num_directions(config: Mapping) -> int:
    return 2 if config.get("bidirectional") else 1


def block_prefix(i: int) -> str:
    return f"blocks.{i}."


def width_of(config: Mapping, kind: str, i: int) -> int:
    return int(config["ssm_widths" if kind == "ssm" else "mlp_widths"][i])


def unit_matrices(state: Mapping[str, torch.Tensor], config: Mapping, kind: str, i: int,
                  include_buffers: bool = False) -> list[torch.Tensor]:
    """Views of block i's unit slices as (W, k) matrices: row c holds unit c's entries of one member.

    Works on any mapping name → tensor of the model's shape: parameters, a state dict, gradients.
    Buffers (dt_bias) are left out unless ``include_buffers``: they are not weights to score or penalise.
    """
    w = width_of(config, kind, i)
    out = []
    for m in members(kind, num_directions(config)):
        if m.name.endswith("dt_bias") and not include_buffers:
            continue
        t = state[block_prefix(i) + m.name]
        part = t.narrow(m.dim, m.offset * w, w)
        out.append(part.movedim(m.dim, 0).reshape(w, -1))
    return out


def double_counted(state: Mapping[str, torch.Tensor], config: Mapping, kind: str, i: int) -> list[torch.Tensor]:
    """Block i's entries that belong to one unit through two members, as (W,) vectors: entry c is unit c's.

    A tensor indexed by the unit along two dims holds, for each unit c, one entry in both of its slices:
    only x_proj does (x_proj[c, c] sits in unit c's input column and in its Δ output row). Sums over
    ``unit_matrices`` see these entries twice; subtract them once to count every entry of a unit once.
    """
    w = width_of(config, kind, i)
    by_name: dict[str, list[Member]] = {}
    for m in members(kind, num_directions(config)):
        by_name.setdefault(m.name, []).append(m)
    out = []
    for name, ms in by_name.items():
        if len({m.dim for m in ms}) < 2:  # slices along one dim (in_proj's x and z halves) never overlap
            continue
        if len(ms) != 2 or state[block_prefix(i) + name].ndim != 2:
            raise NotImplementedError(f"{name}: only a 2-D tensor with one member per dim is supported")
        (a, b), units = sorted(ms, key=lambda m: m.dim), torch.arange(w)
        t = state[block_prefix(i) + name]
        out.append(t[a.offset * w + units.to(t.device), b.offset * w + units.to(t.device)])
    return out


def kept_index(size: int, dim_members: list[Member], width: int, keep: torch.Tensor) -> torch.Tensor:
    """Indices to keep along one dim of a tensor of ``size`` entries, given the kept units ``keep``.

    Covered entries follow ``keep`` member by member (in offset order); uncovered entries stay.
    """
    keep = keep.to(torch.long)
    covered = torch.zeros(size, dtype=torch.bool)
    pieces = []
    for m in sorted(dim_members, key=lambda m: m.offset):
        covered[m.offset * width:(m.offset + 1) * width] = True
    start = 0
    for m in sorted(dim_members, key=lambda m: m.offset):
        lo = m.offset * width
        pieces.append(torch.arange(start, lo)[~covered[start:lo]])
        pieces.append(lo + keep)
        start = lo + width
    pieces.append(torch.arange(start, size))
    return torch.cat(pieces)
