"""One pruning round: a trained model in, a smaller trained model out.

The three methods share one shape — choose the units to remove on the TRAINED weights, cut, (rewind),
retrain — and differ only where the issue says they do:

- ``magnitude``: rank units by ``prune.importance``; cut; rewind; retrain ``prune.epochs``.
- ``refill``: unstructured global magnitude pruning to the round's density decides WHICH units survive
  (per layer, the ones with the most surviving weights); the schedule decides HOW MANY — per layer with
  ``scope: layerwise``; in total with ``scope: global``, where Refill's n_eq per layer set how the total is
  split across layers; then, in both scopes, ``fillback_rate`` of the units each layer would lose come
  back (refill.py); cut; rewind; retrain.
- ``rsst``: the units to remove are chosen first; the round trains at full width with a growing penalty
  on just those units' weight groups; then they are cut (their norms are logged: near zero) and
  ``prune.recover_epochs`` optionally retrain. RSST continues from the trained weights, so ``rewind``
  does not apply to it.

``fit`` is passed in (the stage binds data loaders, resume files and tracking to it), so this module
holds only the method logic.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

import torch

from ..config import PruneCfg
from ..counting import size_summary
from .importance import accumulate_grads, score_units
from .plan import Plan, apply_plan, compose_plans, slice_state
from .refill import refill_select
from .rsst import RSSTRegularizer, group_norms
from .schedule import kept_fraction, round_targets
from .select import round_width, select_units

__all__ = ["RoundContext", "round_ratios", "choose_units", "run_round", "cumulative_plan"]

FitFn = Callable[..., list]  # fit(model, epochs, hooks=(), tag="") -> per-epoch history
EvalFn = Callable[[torch.nn.Module], dict]  # evaluate(model) -> {"val_acc", "test_acc", ...}


@dataclass
class RoundContext:
    cfg: PruneCfg
    round_index: int  # 1-based position in the chain of rounds
    num_rounds: int
    base_config: Mapping  # the dense model's config: the original widths all ratios refer to
    history: list  # plans applied so far, dense → the incoming model
    rewind_state: Mapping[str, torch.Tensor] | None  # dense state to rewind to (init or an early epoch)
    calib: Iterable | None = None  # batches for taylor importance
    seed: int = 0
    # wraps the unit choice, e.g. to compute it on rank 0 and broadcast it under DDP (identity by default)
    wrap_choice: Callable[[Callable], Callable] | None = None


def round_ratios(cfg: PruneCfg, round_index: int, num_rounds: int) -> dict[str, float]:
    """Cumulative fraction of the ORIGINAL units of each targeted kind removed after this round."""
    out = {}
    for kind, final in (("ssm", cfg.ssm_ratio), ("mlp", cfg.mlp_final_ratio)):
        if final > 0:
            out[kind] = 1.0 - kept_fraction(final, round_index, num_rounds)
    return out


def _final_ratio(cfg: PruneCfg, kind: str) -> float:
    return cfg.ssm_ratio if kind == "ssm" else cfg.mlp_final_ratio


def _refill_split(model, kind: str, density: float, cfg: PruneCfg, total: int) -> list[int]:
    """Global scope: Refill's own per-layer counts int(n_eq), scaled so the layers together keep the
    schedule's ``total`` — the schedule says how many, Refill says where (fillback comes after, per layer)."""
    _, natural = refill_select(model, kind, density, 0.0, cfg.refill_criterion, None, 1, 1)
    counts = [layer["n_keep"] for layer in natural["layers"]]
    widths = [layer["units"] for layer in natural["layers"]]
    scale = total / max(1, sum(counts))
    return [round_width(c * scale, w, cfg.min_keep, cfg.round_to) for c, w in zip(counts, widths)]


def choose_units(model, ctx: RoundContext) -> tuple[Plan, dict]:
    """The plan for this round, computed on ``model``'s (trained) weights, and the selection info."""
    cfg, config = ctx.cfg, model.config
    plan: Plan = {"ssm": None, "mlp": None}
    info: dict = {}
    ratios = round_ratios(cfg, ctx.round_index, ctx.num_rounds)
    grads = None
    if cfg.method != "refill" and cfg.importance == "taylor" and ratios:
        grads = accumulate_grads(model, ctx.calib, cfg.calib_batches)
    for kind, ratio in ratios.items():
        base = list(ctx.base_config["ssm_widths" if kind == "ssm" else "mlp_widths"])
        if cfg.method == "refill":
            targets = round_targets(base, _final_ratio(cfg, kind), ctx.round_index, ctx.num_rounds,
                                    cfg.min_keep, cfg.round_to)
            previous = kept_fraction(_final_ratio(cfg, kind), ctx.round_index - 1, ctx.num_rounds)
            density = (1.0 - ratio) / previous  # of the weights still present
            if cfg.scope == "global":
                targets = _refill_split(model, kind, density, cfg, sum(targets))
            keep, kinfo = refill_select(model, kind, density, cfg.fillback_rate, cfg.refill_criterion,
                                        targets, cfg.min_keep, cfg.round_to)
        else:
            scores = score_units(model, kind, cfg.importance, ctx.calib, cfg.calib_batches, ctx.seed,
                                 grads=grads)
            keep, kinfo = select_units(scores, ratio, cfg.scope, cfg.min_keep, cfg.round_to, base_widths=base)
        current = config["ssm_widths" if kind == "ssm" else "mlp_widths"]
        plan[kind] = [None if len(k) == w else k for k, w in zip(keep, current)]
        info[kind] = kinfo
    return plan, info


def _removed(plan: Plan, config: Mapping) -> dict[str, list[list[int]]]:
    out = {}
    for kind in ("ssm", "mlp"):
        widths = config["ssm_widths" if kind == "ssm" else "mlp_widths"]
        entries = plan.get(kind) or [None] * len(widths)
        out[kind] = [[] if keep is None else sorted(set(range(w)) - set(keep)) for keep, w in zip(entries, widths)]
    return out


def _norm_stats(model, plan: Plan) -> dict[str, float]:
    """Mean L2 norm of the removed and of the kept units' weight groups, per kind, and their ratio (logged at
    the cut: RSST did its job when ``<kind>_removed_kept_ratio`` is near 0; a magnitude cut of trained weights
    sees 0.7-0.8 on the digits default)."""
    stats = {}
    removed = _removed(plan, model.config)
    for kind, per_block in removed.items():
        if not any(per_block):
            continue
        widths = model.config["ssm_widths" if kind == "ssm" else "mlp_widths"]
        kept = [sorted(set(range(w)) - set(r)) for r, w in zip(per_block, widths)]
        rem = torch.cat([n for n in group_norms(model, model.config, kind, per_block) if n.numel()])
        kep = torch.cat([n for n in group_norms(model, model.config, kind, kept) if n.numel()])
        stats[f"{kind}_removed_norm_mean"] = rem.mean().item()
        stats[f"{kind}_removed_norm_max"] = rem.max().item()
        stats[f"{kind}_kept_norm_mean"] = kep.mean().item()
        stats[f"{kind}_removed_kept_ratio"] = stats[f"{kind}_removed_norm_mean"] / stats[f"{kind}_kept_norm_mean"]
    return stats


def cumulative_plan(history: list) -> Plan | None:
    out = None
    for plan in history:
        out = plan if out is None else compose_plans(out, plan)
    return out


def run_round(model, ctx: RoundContext, fit: FitFn, evaluate: EvalFn) -> tuple[torch.nn.Module, Plan, dict]:
    """Prune ``model`` once by ``ctx.cfg.method`` → (new trained model, this round's plan, record)."""
    cfg = ctx.cfg
    record: dict = {"method": cfg.method, "round_index": ctx.round_index, "num_rounds": ctx.num_rounds,
                    "target_ratios": round_ratios(cfg, ctx.round_index, ctx.num_rounds)}
    record["before"] = evaluate(model)
    choose = ctx.wrap_choice(choose_units) if ctx.wrap_choice else choose_units
    plan, info = choose(model, ctx)
    record["selection"] = info
    removed = _removed(plan, model.config)

    if cfg.method == "rsst":
        reg = RSSTRegularizer(model, removed, strength=cfg.rsst_strength, schedule=cfg.rsst_schedule,
                              exponent=cfg.rsst_exponent, penalty=cfg.rsst_penalty, update=cfg.rsst_update)
        record["train_history"] = fit(model, cfg.epochs, hooks=(reg,), tag="rsst")
        record["lambda_trace"] = list(reg.lambda_trace)
        record["before_cut"] = evaluate(model)
    else:
        record["before_cut"] = record["before"]
    record["norms_at_cut"] = _norm_stats(model, plan)

    model = apply_plan(model, plan)
    record["after_cut"] = evaluate(model)

    if cfg.method == "rsst":
        record["recover_history"] = fit(model, cfg.recover_epochs, hooks=(), tag="recover")
    else:
        if cfg.rewind != "none" and ctx.rewind_state is not None:
            total = cumulative_plan([*ctx.history, plan])
            state, _ = slice_state(ctx.rewind_state, ctx.base_config, total)
            model.load_state_dict(state)
            record["after_rewind"] = evaluate(model)
        record["train_history"] = fit(model, cfg.epochs, hooks=(), tag="retrain")

    record["after"] = evaluate(model)
    record.update(size_summary(model))
    return model, plan, record
