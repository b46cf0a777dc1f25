"""One call to prune: validate → score (importance.py) → select (select.py) → plan → apply (plan.py).

The pruner holds no state: the plan it returns is the whole record of what was removed, and the
selection info (thresholds, per-layer counts, warnings) comes back from ``prune_model_with_info``.
Every argument is checked before any work, so a typo (``scope="layer-wise"``) fails loudly instead of
silently pruning nothing, as the reference design did.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

import torch.nn as nn

from ..counting import count_flops, count_params, layer_table
from .importance import IMPORTANCES, accumulate_grads, score_units
from .plan import Plan, apply_plan, plan_widths
from .select import SCOPES, select_units
from .units import KINDS, widths

__all__ = ["TARGETS", "prune_model", "prune_model_with_info", "prune_report", "ratios_for_target"]

TARGETS = ("ssm", "mlp", "both")


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


def ratios_for_target(target: str, ratio: float, mlp_ratio: float | None = None) -> tuple[float, float]:
    """(ssm_ratio, mlp_ratio) for a ``target`` of 'ssm' | 'mlp' | 'both' (as ``PruneCfg`` defines them)."""
    _choice("target", target, TARGETS)
    ratio = _ratio("ratio", ratio)
    mlp = ratio if mlp_ratio is None else _ratio("mlp_ratio", mlp_ratio)
    return (ratio if target in ("ssm", "both") else 0.0), (mlp if target in ("mlp", "both") else 0.0)


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


def prune_model_with_info(model: nn.Module, ssm_ratio: float = 0.0, mlp_ratio: float = 0.0, scope: str = "global",
                          importance: str = "l1", min_keep: int = 8, round_to: int = 8,
                          calib: Iterable | None = None, calib_batches: int = 4, seed: int = 0,
                          base_widths=None, *, state_ratio: float = 0.0, embed_ratio: float = 0.0
                          ) -> tuple[nn.Module, Plan, dict]:
    """``prune_model`` that also returns the selection info per kind: {'ssm': info | None, 'mlp': ..., 'state': ...,
    'embed': ...}."""
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
    base = _base_widths(base_widths, model)

    plan: Plan = {kind: None for kind in KINDS}
    info: dict = {kind: None for kind in KINDS}
    grads = None
    if importance == "taylor" and any(ratios.values()):  # one calibration pass serves every kind
        grads = accumulate_grads(model, calib, calib_batches)
    for kind in KINDS:  # every kind is scored on the input model: the plan's indices all refer to it
        if ratios[kind] == 0.0:
            continue
        scores = score_units(model, kind, importance, seed=seed, grads=grads)
        keep, info[kind] = select_units(scores, ratios[kind], scope, min_keep, round_to, base[kind])
        plan[kind] = keep[0] if kind == "embed" else keep  # the embedding is one layer: one kept list
    return apply_plan(model, plan), plan, info


def prune_model(model: nn.Module, ssm_ratio: float = 0.0, mlp_ratio: float = 0.0, scope: str = "global",
                importance: str = "l1", min_keep: int = 8, round_to: int = 8, calib: Iterable | None = None,
                calib_batches: int = 4, seed: int = 0, base_widths=None, *, state_ratio: float = 0.0,
                embed_ratio: float = 0.0) -> tuple[nn.Module, Plan]:
    """Remove the least important SSM channels, MLP neurons, SSM states and residual channels → (new smaller
    model, plan).

    Ratios are fractions of ``base_widths`` (default: the model's current widths) removed in total; 0
    leaves a kind untouched (its plan entry is None). ``state_ratio``: state dimensions of each block's SSM
    (ranked per block or globally by ``scope``, like the other kinds); ``embed_ratio``: channels of the residual
    stream, one group for the whole model (``scope`` makes no difference there; the pruned LayerNorms normalise
    over the kept channels, see ``units.py``). ``min_keep``/``round_to`` apply to every kind (with mamba_small's
    16 states, round_to 8 keeps 8 or 16 per block; the Triton scan pads a state size up to the next power of two,
    so only powers of two save scan time on a GPU). ``model`` is not modified. See ``select.py`` for
    scope/min_keep/round_to and ``importance.py`` for the criteria (taylor needs ``calib`` batches).
    """
    pruned, plan, _ = prune_model_with_info(model, ssm_ratio, mlp_ratio, scope, importance, min_keep, round_to,
                                            calib, calib_batches, seed, base_widths, state_ratio=state_ratio,
                                            embed_ratio=embed_ratio)
    return pruned, plan


def prune_report(model_before: nn.Module, model_after: nn.Module, plan: Plan, info: Mapping | None = None) -> dict:
    """Flat summary for logs/metrics: params and FLOPs before/after, widths, effective ratios, warnings."""
    p0, p1 = count_params(model_before), count_params(model_after)
    f0, f1 = count_flops(model_before), count_flops(model_after)
    after = plan_widths(plan, model_before.config)
    out = {"params_before": p0, "params_after": p1, "params_ratio": p1 / p0,
           "flops_before": f0, "flops_after": f1, "flops_ratio": f1 / f0,
           "ssm_widths": after["ssm"], "mlp_widths": after["mlp"], "d_states": after["state"],
           "embed_dim": after["embed"][0], "layers": layer_table(model_after, model_before.config), "warnings": []}
    for kind in KINDS:
        out[f"{kind}_kept_fraction"] = sum(after[kind]) / sum(widths(model_before.config, kind))
        kind_info = (info or {}).get(kind)
        if kind_info:
            out[f"{kind}_effective_ratio"] = kind_info["effective_ratio"]
            out[f"{kind}_threshold"] = kind_info["threshold"]
            out["warnings"] += [f"{kind}: {w}" for w in kind_info["warnings"]]
    return out
