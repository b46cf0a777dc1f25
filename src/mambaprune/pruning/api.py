"""``prune_model``: the pruning core (``core.py``: score → select → plan → apply) with defaults, for one call.

The pruner holds no state: the plan it returns is the whole record of what was removed, and
``counting.size_report(pruned, model)`` says how much smaller it is. For the selection info (thresholds, per-layer
counts, min_keep warnings) call ``prune_selection``: the same work without the cut (as ``cost.accuracy_cost``
does). Every argument is checked before any work, so a typo (``scope="layer-wise"``)
fails loudly instead of silently pruning nothing, as the reference design did.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

import torch.nn as nn

from .core import Selection, Targets, score, select
from .importance import IMPORTANCES
from .plan import Plan, apply_plan
from .select import SCOPES
from .units import KINDS, widths

__all__ = ["TARGETS", "prune_model", "prune_selection"]

# prune.target's one-word values; any '+'-joined combination of KINDS is one too (config.target_kinds parses it,
# config.PruneCfg.final_ratio maps it to each kind's ratio)
TARGETS = ("ssm", "mlp", "both", "state", "embed")


def _choice(arg: str, value, allowed: tuple) -> None:
    if value not in allowed:
        raise ValueError(f"{arg}={value!r} is not allowed; use one of {', '.join(map(repr, allowed))}")


def _ratio(arg: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) \
            or not 0.0 <= value < 1.0:
        raise ValueError(f"{arg}={value!r} is not allowed; use a number in [0, 1) (the fraction of units removed)")
    return float(value)


def _int(arg: str, value, lo: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < lo:
        raise ValueError(f"{arg}={value!r} is not allowed; use an integer >= {lo}")
    return value


def _base_widths(base_widths, model: nn.Module) -> dict[str, list[int]]:
    """Accepts None, {'ssm': [...], 'mlp': [...], 'state': [...], 'embed': [width]} (a kind left out: the current
    widths) or an original model config (ssm_widths/mlp_widths/d_states/embed_dim)."""
    current = {kind: widths(model.config, kind) for kind in KINDS}
    if base_widths is None:
        return current
    if not isinstance(base_widths, Mapping):
        raise ValueError(f"base_widths={base_widths!r} is not allowed; use None, a dict of per-layer width lists "
                         f"by kind ({', '.join(map(repr, KINDS))}), or the unpruned model's config")
    is_config = "depth" in base_widths
    out = {}
    for kind in KINDS:
        b = widths(base_widths, kind) if is_config else base_widths.get(kind, base_widths.get(f"{kind}_widths"))
        b = current[kind] if b is None else [int(w) for w in ([b] if isinstance(b, int) else b)]
        if len(b) != len(current[kind]) or any(x < y for x, y in zip(b, current[kind])):
            raise ValueError(f"base_widths[{kind!r}]={b} does not fit the model: it needs one original width per "
                             f"block, each >= the current width {current[kind]}")
        out[kind] = b
    return out


def prune_model(model: nn.Module, ssm_ratio: float = 0.0, mlp_ratio: float = 0.0, scope: str = "global",
                importance: str = "l1", min_keep: int = 8, round_to: int = 8, calib: Iterable | None = None,
                calib_batches: int = 4, seed: int = 0, base_widths=None, *, state_ratio: float = 0.0,
                embed_ratio: float = 0.0) -> tuple[nn.Module, Plan]:
    """Remove the least important SSM channels, MLP neurons, SSM states and residual channels → (new smaller
    model, plan).

    Ratios are fractions of ``base_widths`` (default: the model's current widths) removed in total; 0
    leaves a kind untouched (its plan entry is None, as is any block that keeps every unit). ``state_ratio``:
    state dimensions of each block's SSM (ranked per block or globally by ``scope``, like the other kinds);
    ``embed_ratio``: channels of the residual stream, one group for the whole model (``scope`` makes no difference
    there; the pruned LayerNorms normalise over the kept channels, see ``units.py``). ``min_keep``/``round_to``
    apply to every kind (with mamba_small's 16 states, round_to 8 keeps 8 or 16 per block; the Triton scan pads a
    state size up to the next power of two, so only powers of two save scan time on a GPU). Every kind is scored
    on the input model, so the plan's indices all refer to it. ``model`` is not modified. See ``select.py`` for
    scope/min_keep/round_to and ``importance.py`` for the criteria (taylor needs ``calib`` batches).
    """
    selection = prune_selection(model, ssm_ratio, mlp_ratio, scope, importance, min_keep, round_to, calib,
                                calib_batches, seed, base_widths, state_ratio=state_ratio, embed_ratio=embed_ratio)
    return apply_plan(model, selection.plan), selection.plan


def prune_selection(model: nn.Module, ssm_ratio: float = 0.0, mlp_ratio: float = 0.0, scope: str = "global",
                    importance: str = "l1", min_keep: int = 8, round_to: int = 8, calib: Iterable | None = None,
                    calib_batches: int = 4, seed: int = 0, base_widths=None, *, state_ratio: float = 0.0,
                    embed_ratio: float = 0.0) -> Selection:
    """What ``prune_model`` would remove, before cutting: its arguments checked (before any work), turned into
    the core's ``Targets``, scored and selected → ``core.Selection`` (plan, per-kind info, warnings)."""
    ratios = {"ssm": _ratio("ssm_ratio", ssm_ratio), "mlp": _ratio("mlp_ratio", mlp_ratio),
              "state": _ratio("state_ratio", state_ratio), "embed": _ratio("embed_ratio", embed_ratio)}
    _choice("scope", scope, SCOPES)
    _choice("importance", importance, IMPORTANCES)
    _int("min_keep", min_keep, 1)
    _int("round_to", round_to, 1)
    _int("calib_batches", calib_batches, 1)
    _int("seed", seed, 0)
    if importance == "taylor" and calib is None:
        raise ValueError("importance='taylor' needs calib=<iterable of (x, y) batches> for its gradients")
    targets = Targets({kind: r for kind, r in ratios.items() if r > 0}, _base_widths(base_widths, model), scope,
                      min_keep, round_to)
    return select(model, score(model, targets.ratios, importance, calib, calib_batches, seed), targets)

