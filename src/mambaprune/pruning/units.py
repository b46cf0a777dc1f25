"""The coupling spec: which slices of which tensors make up one prunable unit. Declared once, used by
importance scoring, penalties, masking and physical removal alike.

Unit kinds (per block i, tensor names relative to ``blocks.{i}.``; ``s`` runs over scan directions):
- ``ssm`` channel c of d_inner (width W):
  ``mixer.in_proj.weight`` rows c (x half) and W+c (z half); ``mixer.ssm.{s}.conv1d.weight``/``.bias`` c;
  ``mixer.ssm.{s}.x_proj.weight`` column c (its input) and row c (its Δ output); ``mixer.ssm.{s}.A_log``
  row c; ``mixer.ssm.{s}.D`` c; ``mixer.ssm.{s}.dt_bias`` c (buffer); ``mixer.out_proj.weight`` column c.
- ``mlp`` neuron j of the hidden width: ``mlp.fc1.weight`` row j, ``mlp.fc1.bias`` j, ``mlp.fc2.weight``
  column j.
- ``state`` dimension n of the block's SSM state (width N = the block's d_state): ``mixer.ssm.{s}.A_log``
  column n, ``mixer.ssm.{s}.x_proj.weight`` rows W+n (its B output) and W+N+n (its C output), where W is the
  block's current d_inner (x_proj's output layout is [Δ (W) | B (N) | C (N)]). One unit is state n in EVERY scan
  direction of the block: the directions of a bidirectional block keep the same states, so a block has one
  state size (``config["d_states"][i]``) and its scans stay alike.
- ``embed`` residual channel c of the embedding width (E = ``embed_dim``): ONE group for the whole model, not
  per block, because every block reads and writes the same residual stream. Names are absolute:
  ``patch_embed.weight`` row c and ``.bias`` c, ``pos_embed`` [..., c], every ``blocks.{i}.norm1``/``norm2``
  weight and bias c, ``blocks.{i}.mixer.in_proj.weight`` column c, ``blocks.{i}.mixer.out_proj.weight`` row c,
  ``blocks.{i}.mlp.fc1.weight`` column c, ``blocks.{i}.mlp.fc2.weight`` row c and ``.bias`` c, the final
  ``norm`` weight and bias c, ``head.weight`` column c. The pruned model's LayerNorms normalise over the kept
  channels only (it is an ordinary VisionMamba of width E' = kept channels): their mean and variance change,
  so embed pruning costs accuracy before finetuning even where the removed channels were small
  (``pruning/cost.py`` measures it).

A ``Member(name, dim, offset, after)`` says: along ``dim`` of tensor ``name``, unit c sits at index
``lead + offset * W + c``, where W is the kind's width in the layer and ``lead`` is 0, or the layer's width of
the kind named by ``after`` (x_proj's B and C rows come after its d_inner Δ rows). Indices along a dim that
no member of a kind covers belong to no unit of that kind and are kept.

Layers: ``ssm``, ``mlp`` and ``state`` have one layer per block; ``embed`` has one layer, the whole model
(``num_layers``, ``layer_prefix``, ``widths`` hide the difference from scoring and selection).

Which entries carry a unit's *size* (what magnitude pruning, RSST's penalty and the state scores look at):
``weight_members``, the coupling spec minus the dt_bias buffer and minus A_log. A_log is log(−A): its size says
nothing about the unit's contribution (A_log = 0 means A = −1, not "no unit"); it is still cut with its unit.
D (the skip weight) and the biases are weights of the unit's path and do count.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import torch

__all__ = ["KINDS", "BLOCK_KINDS", "Member", "members", "members_of", "num_directions", "block_prefix",
           "layer_prefix", "num_layers", "widths", "width_of", "complement", "member_start", "unit_matrices",
           "weight_members", "weight_matrices", "double_counted", "kept_index"]

KINDS = ("ssm", "mlp", "state", "embed")
BLOCK_KINDS = ("ssm", "mlp", "state")  # one plan entry per block; ``embed`` is one entry for the whole model
_WIDTH_KEYS = {"ssm": "ssm_widths", "mlp": "mlp_widths", "state": "d_states"}
_NOT_A_SIZE = ("A_log",)  # members whose value carries no size of the unit (see the module docstring)


@dataclass(frozen=True)
class Member:
    name: str  # tensor name relative to the block (absolute for ``embed``), e.g. "mixer.in_proj.weight"
    dim: int  # the dimension indexed by the unit
    offset: int = 0  # unit c sits at lead + offset * width + c along dim
    after: str | None = None  # lead = the layer's width of this kind (None: lead 0)


def _check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise ValueError(f"unit kind must be one of {', '.join(map(repr, KINDS))}, got {kind!r}")


def members(kind: str, directions: int = 1, depth: int | None = None) -> list[Member]:
    """The coupling spec of one unit kind (see module docstring); ``embed`` needs the model's ``depth``."""
    _check_kind(kind)
    if kind == "mlp":
        return [Member("mlp.fc1.weight", 0), Member("mlp.fc1.bias", 0), Member("mlp.fc2.weight", 1)]
    if kind == "state":
        out = []
        for s in range(directions):
            p = f"mixer.ssm.{s}."
            out += [Member(p + "A_log", 1), Member(p + "x_proj.weight", 0, 0, after="ssm"),
                    Member(p + "x_proj.weight", 0, 1, after="ssm")]
        return out
    if kind == "embed":
        if depth is None:
            raise ValueError("members('embed') needs depth=<number of blocks>: the group spans every block")
        out = [Member("patch_embed.weight", 0), Member("patch_embed.bias", 0), Member("pos_embed", 2)]
        for i in range(depth):
            p = block_prefix(i)
            out += [Member(p + "norm1.weight", 0), Member(p + "norm1.bias", 0),
                    Member(p + "mixer.in_proj.weight", 1), Member(p + "mixer.out_proj.weight", 0),
                    Member(p + "norm2.weight", 0), Member(p + "norm2.bias", 0),
                    Member(p + "mlp.fc1.weight", 1), Member(p + "mlp.fc2.weight", 0), Member(p + "mlp.fc2.bias", 0)]
        return out + [Member("norm.weight", 0), Member("norm.bias", 0), Member("head.weight", 1)]
    out = [Member("mixer.in_proj.weight", 0, 0), Member("mixer.in_proj.weight", 0, 1)]
    for s in range(directions):
        p = f"mixer.ssm.{s}."
        out += [Member(p + "conv1d.weight", 0), Member(p + "conv1d.bias", 0),
                Member(p + "x_proj.weight", 1), Member(p + "x_proj.weight", 0),
                Member(p + "A_log", 0), Member(p + "D", 0), Member(p + "dt_bias", 0)]
    out.append(Member("mixer.out_proj.weight", 1))
    return out


def members_of(config: Mapping, kind: str) -> list[Member]:
    """``members`` for a model with ``config`` (its scan directions and depth)."""
    return members(kind, num_directions(config), int(config["depth"]))


def num_directions(config: Mapping) -> int:
    return 2 if config.get("bidirectional") else 1


def block_prefix(i: int) -> str:
    return f"blocks.{i}."


def layer_prefix(kind: str, i: int) -> str:
    """What the names of layer i's members are relative to: block i, or the model (``embed``)."""
    return "" if kind == "embed" else block_prefix(i)


def num_layers(config: Mapping, kind: str) -> int:
    return 1 if kind == "embed" else int(config["depth"])


def widths(config: Mapping, kind: str) -> list[int]:
    """Per-layer widths of a kind: d_inner, MLP hidden, state size per block; ``[embed_dim]`` for ``embed``.
    A config without ``d_states`` (written before state pruning existed) has ``d_state`` in every block."""
    _check_kind(kind)
    if kind == "embed":
        return [int(config["embed_dim"])]
    if kind == "state" and config.get("d_states") is None:
        return [int(config["d_state"])] * int(config["depth"])
    return [int(w) for w in config[_WIDTH_KEYS[kind]]]


def width_of(config: Mapping, kind: str, i: int) -> int:
    return widths(config, kind)[i]


def complement(units: Iterable[int], width: int) -> list[int]:
    """The units of a layer of ``width`` that are not in ``units``, sorted (kept <-> removed)."""
    return sorted(set(range(width)) - set(units))


def member_start(m: Member, config: Mapping, i: int, width: int) -> int:
    """Index of unit 0 of member ``m`` in layer i along ``m.dim``."""
    lead = width_of(config, m.after, i) if m.after else 0
    return lead + m.offset * width


def unit_matrices(state: Mapping[str, torch.Tensor], config: Mapping, kind: str, i: int,
                  include_buffers: bool = False) -> list[torch.Tensor]:
    """Views of layer i's unit slices as (W, k) matrices: row c holds unit c's entries of one member.

    Works on any mapping name → tensor of the model's shape: parameters, a state dict, gradients.
    Buffers (dt_bias) are left out unless ``include_buffers``: they are not weights to score or penalise.
    """
    w = width_of(config, kind, i)
    out = []
    for m in members_of(config, kind):
        if m.name.endswith("dt_bias") and not include_buffers:
            continue
        t = state[layer_prefix(kind, i) + m.name]
        part = t.narrow(m.dim, member_start(m, config, i, w), w)
        out.append(part.movedim(m.dim, 0).reshape(w, -1))
    return out


def weight_members(config: Mapping, kind: str) -> list[Member]:
    """The members whose entries carry a unit's size: the coupling spec without dt_bias and A_log."""
    return [m for m in members_of(config, kind) if not m.name.endswith(("dt_bias", *_NOT_A_SIZE))]


def weight_matrices(state: Mapping[str, torch.Tensor], config: Mapping, kind: str, i: int) -> list[torch.Tensor]:
    """``unit_matrices`` of layer i restricted to ``weight_members`` (A_log left out)."""
    names = [m.name for m in members_of(config, kind) if not m.name.endswith("dt_bias")]
    mats = unit_matrices(state, config, kind, i)
    return [mat for name, mat in zip(names, mats, strict=True) if not name.endswith(_NOT_A_SIZE)]


def double_counted(state: Mapping[str, torch.Tensor], config: Mapping, kind: str, i: int) -> list[torch.Tensor]:
    """Block i's entries that belong to one unit through two members, as (W,) vectors: entry c is unit c's.

    A tensor indexed by the unit along two dims holds, for each unit c, one entry in both of its slices:
    only x_proj does (x_proj[c, c] sits in unit c's input column and in its Δ output row). Sums over
    ``unit_matrices`` see these entries twice; subtract them once to count every entry of a unit once.
    """
    w = width_of(config, kind, i)
    by_name: dict[str, list[Member]] = {}
    for m in members_of(config, kind):
        by_name.setdefault(m.name, []).append(m)
    out = []
    for name, ms in by_name.items():
        if len({m.dim for m in ms}) < 2:  # slices along one dim (in_proj's x and z halves) never overlap
            continue
        if len(ms) != 2 or state[layer_prefix(kind, i) + name].ndim != 2:
            raise NotImplementedError(f"{name}: only a 2-D tensor with one member per dim is supported")
        (a, b), units = sorted(ms, key=lambda m: m.dim), torch.arange(w)
        t = state[layer_prefix(kind, i) + name]
        units = units.to(t.device)
        out.append(t[member_start(a, config, i, w) + units, member_start(b, config, i, w) + units])
    return out


def kept_index(size: int, dim_members: list[Member], width: int, keep: torch.Tensor, lead: int = 0) -> torch.Tensor:
    """Indices to keep along one dim of a tensor of ``size`` entries, given the kept units ``keep``.

    Covered entries follow ``keep`` member by member (in offset order); uncovered entries stay. ``lead``: where
    offset 0 starts (the members' ``after`` width, see ``member_start``).
    """
    keep = keep.to(torch.long)
    covered = torch.zeros(size, dtype=torch.bool)
    pieces = []
    for m in sorted(dim_members, key=lambda m: m.offset):
        covered[lead + m.offset * width:lead + (m.offset + 1) * width] = True
    start = 0
    for m in sorted(dim_members, key=lambda m: m.offset):
        lo = lead + m.offset * width
        pieces.append(torch.arange(start, lo)[~covered[start:lo]])
        pieces.append(lo + keep)
        start = lo + width
    pieces.append(torch.arange(start, size))
    return torch.cat(pieces)
