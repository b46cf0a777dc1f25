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

Which entries carry a unit's *size* (what magnitude pruning and RSST's penalty look at): ``weight_members``,
the coupling spec minus the dt_bias buffer and minus A_log. A_log is log(−A): its size says nothing about the
unit's contribution (A_log = 0 means A = −1, not "no unit"); it is still cut with its unit. D (the skip weight)
and the biases are weights of the unit's path and do count.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import torch

__all__ = ["KINDS", "Member", "members", "num_directions", "block_prefix", "unit_matrices",
           "kept_index", "widths", "width_of", "complement", "weight_members", "weight_matrices"]

KINDS = ("ssm", "mlp")
_NOT_A_SIZE = ("A_log",)  # members whose value carries no size of the unit (see the module docstring)


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


def widths(config: Mapping, kind: str) -> list[int]:
    """Per-block widths (unit counts) of ``kind`` in a model config: ``ssm_widths`` or ``mlp_widths``."""
    return [int(w) for w in config[f"{kind}_widths"]]


def width_of(config: Mapping, kind: str, i: int) -> int:
    return widths(config, kind)[i]


def complement(units: Iterable[int], width: int) -> list[int]:
    """The units of a layer of ``width`` that are not in ``units``, sorted (kept <-> removed)."""
    return sorted(set(range(width)) - set(units))


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


def weight_members(config: Mapping, kind: str) -> list[Member]:
    """The members whose entries carry a unit's size: the coupling spec without dt_bias and A_log."""
    return [m for m in members(kind, num_directions(config)) if not m.name.endswith(("dt_bias", *_NOT_A_SIZE))]


def weight_matrices(state: Mapping[str, torch.Tensor], config: Mapping, kind: str, i: int) -> list[torch.Tensor]:
    """``unit_matrices`` of block i restricted to ``weight_members`` (A_log left out)."""
    names = [m.name for m in members(kind, num_directions(config)) if not m.name.endswith("dt_bias")]
    mats = unit_matrices(state, config, kind, i)
    return [mat for name, mat in zip(names, mats, strict=True) if not name.endswith(_NOT_A_SIZE)]


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
