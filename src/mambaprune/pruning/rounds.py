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
  ``prune.recover_epochs`` optionally retrain. RSST continues from the trained weights: it never rewinds
  (``PruneCfg.rewinds``).

Every method selects through the pruning core (``core.py``): ``choose_units`` turns the round's targets into
a ``Selection`` (plan, info, warnings).

Unit kinds: those ``prune.target`` names (``ssm``, ``mlp``, ``state``, ``embed``; ``PruneCfg.kinds``), each with
its own final ratio, reached by the same schedule. All three methods handle every kind: magnitude and RSST rank
units by ``importance.py``'s criteria (how a state dimension and a residual channel are scored: its docstring);
Refill's weights of a unit are ``units.weight_matrices`` (a state: its B and C rows; an embed channel: every
member entry over the model, one layer, so both scopes give the same selection); RSST shrinks the groups of the
removed states/channels like the others (for ``embed`` the cut still changes what the LayerNorms normalise over,
so it is not free even when the removed channels are at zero: ``cost.py``). Every kind is chosen on the same
incoming model, and the round's plan cuts them all at once; rewinding slices the rewind state by the composed
plan of every kind. ``fit`` is passed in (the stage binds data loaders, resume files and
tracking to it), so this module holds only the method logic.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import torch

from .. import paths
from ..config import PruneCfg
from ..counting import size_report
from .core import Selection, Targets, score, select
from .plan import Plan, apply_plan, compose_plans, layer_entries, slice_state
from .refill import refill_select
from .rsst import RSSTRegularizer, group_norms
from .schedule import kept_fraction, round_targets
from .select import floor_warnings, round_width
from .units import KINDS, complement, widths

__all__ = ["FIT_TAGS", "RoundContext", "rewind_source", "round_ratios", "round_targets_of", "choose_units",
           "norm_stats", "run_round", "state_and_embed", "cumulative_plan", "round_metrics", "lambda_points"]

# The tags ``fit`` runs under, in the order a stage runs them: pretrain and finetune train; a round retrains, or
# (RSST) trains with the penalty and then recovers. Each tag has its own epoch CSV and resume file.
FIT_TAGS = ("train", "rsst", "retrain", "recover")

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


def rewind_source(cfg: PruneCfg) -> Path | None:
    """The checkpoint a round's retraining restarts from (``prune.rewind``), or None when it keeps the trained
    weights (``PruneCfg.rewinds``). ``rewind_epoch`` is in range: ``load_params`` checked it."""
    if not cfg.rewinds:
        return None
    if cfg.rewind == "init" or cfg.rewind_epoch == 0:
        return paths.init_checkpoint()
    return paths.epoch_checkpoint(cfg.rewind_epoch)


def round_ratios(cfg: PruneCfg, round_index: int, num_rounds: int) -> dict[str, float]:
    """Cumulative fraction of the ORIGINAL units of each targeted kind removed after this round."""
    out = {}
    for kind in cfg.kinds:
        if (final := cfg.final_ratio(kind)) > 0:
            out[kind] = 1.0 - kept_fraction(final, round_index, num_rounds)
    return out


def round_targets_of(ctx: RoundContext) -> Targets:
    """This round's ``Targets``: ``round_ratios`` of the dense model's widths, with the config's scope,
    min_keep and round_to."""
    ratios = round_ratios(ctx.cfg, ctx.round_index, ctx.num_rounds)
    base = {kind: widths(ctx.base_config, kind) for kind in ratios}
    return Targets(ratios, base, ctx.cfg.scope, ctx.cfg.min_keep, ctx.cfg.round_to)


def _refill_split(model, kind: str, density: float, cfg: PruneCfg, total: int) -> list[int]:
    """Global scope: Refill's own per-layer counts int(n_eq), scaled so the layers together keep the
    schedule's ``total`` — the schedule says how many, Refill says where (fillback comes after, per layer)."""
    _, natural = refill_select(model, kind, density, 0.0, cfg.refill_criterion, None, 1, 1)
    counts = [layer["n_keep"] for layer in natural["layers"]]
    widths = [layer["units"] for layer in natural["layers"]]
    scale = total / max(1, sum(counts))
    return [round_width(c * scale, w, cfg.min_keep, cfg.round_to) for c, w in zip(counts, widths)]


def choose_units(model, ctx: RoundContext) -> Selection:
    """This round's ``Selection``, computed on ``model``'s (trained) weights: by importance scores through the
    core (magnitude, rsst), or by Refill's magnitude mask."""
    cfg, targets = ctx.cfg, round_targets_of(ctx)
    if cfg.method == "refill":
        return _refill_selection(model, ctx, targets)
    return select(model, score(model, targets.ratios, cfg.importance, ctx.calib, cfg.calib_batches, ctx.seed),
                  targets)


def _refill_selection(model, ctx: RoundContext, targets: Targets) -> Selection:
    """Refill: the schedule fixes how many units each layer keeps, Refill's mask which ones; min_keep/round_to
    warnings from the kept widths (``select.floor_warnings``)."""
    cfg = ctx.cfg
    keep, info = {}, {}
    for kind, ratio in targets.ratios.items():
        base, final = list(targets.base_widths[kind]), cfg.final_ratio(kind)
        layer_targets = round_targets(base, final, ctx.round_index, ctx.num_rounds, cfg.min_keep, cfg.round_to)
        density = (1.0 - ratio) / kept_fraction(final, ctx.round_index - 1, ctx.num_rounds)  # of weights present
        if cfg.scope == "global":
            layer_targets = _refill_split(model, kind, density, cfg, sum(layer_targets))
        keep[kind], info[kind] = refill_select(model, kind, density, cfg.fillback_rate, cfg.refill_criterion,
                                               layer_targets, cfg.min_keep, cfg.round_to)
        info[kind]["warnings"] = floor_warnings(ratio, base, [len(k) for k in keep[kind]], cfg.min_keep,
                                                cfg.round_to)
    return Selection.from_keep(model.config, keep, info)


def _removed(plan: Plan, config: Mapping) -> dict[str, list[list[int]]]:
    """Per kind and layer (block; the one ``embed`` layer), the units ``plan`` removes from a model with
    ``config``."""
    out = {}
    for kind in KINDS:
        entries = layer_entries(plan, kind, config)
        out[kind] = [[] if keep is None else complement(keep, w) for keep, w in zip(entries, widths(config, kind))]
    return out


def norm_stats(model, plan: Plan) -> dict[str, float]:
    """Mean L2 norm of the removed and of the kept units' weight groups, per kind, and their ratio (logged at
    the cut: RSST did its job when ``<kind>_removed_kept_ratio`` is near 0; a magnitude cut of trained weights
    sees 0.7-0.8 on the digits default)."""
    stats = {}
    removed = _removed(plan, model.config)
    for kind, per_block in removed.items():
        if not any(per_block):
            continue
        kept = [complement(r, w) for r, w in zip(per_block, widths(model.config, kind))]
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
    selection = choose(model, ctx)
    plan = selection.plan
    record["selection"], record["warnings"] = selection.info, selection.warnings
    removed = _removed(plan, model.config)

    if cfg.method == "rsst":
        reg = RSSTRegularizer(model, removed, strength=cfg.rsst_strength, schedule=cfg.rsst_schedule,
                              exponent=cfg.rsst_exponent, penalty=cfg.rsst_penalty, update=cfg.rsst_update)
        record["train_history"] = fit(model, cfg.epochs, hooks=(reg,), tag="rsst")
        record["lambda_trace"] = list(reg.lambda_trace)
        record["before_cut"] = evaluate(model)
    else:
        record["before_cut"] = record["before"]
    record["norms_at_cut"] = norm_stats(model, plan)

    model = apply_plan(model, plan)
    record["after_cut"] = evaluate(model)

    if cfg.method == "rsst":
        record["recover_history"] = fit(model, cfg.recover_epochs, hooks=(), tag="recover")
    else:
        if cfg.rewinds and ctx.rewind_state is not None:
            total = cumulative_plan([*ctx.history, plan])
            state, _ = slice_state(ctx.rewind_state, ctx.base_config, total)
            model.load_state_dict(state)
            record["after_rewind"] = evaluate(model)
        record["train_history"] = fit(model, cfg.epochs, hooks=(), tag="retrain")

    record["after"] = evaluate(model)
    record.update(size_report(model), **state_and_embed(model))
    return model, plan, record


def state_and_embed(model: torch.nn.Module) -> dict:
    """The widths ``counting.size_report`` leaves out: per-block state sizes and the embedding width (the
    names ``cost.accuracy_cost`` uses)."""
    return {"d_states": list(model.config["d_states"]), "embed_dim": int(model.config["embed_dim"])}


def round_metrics(model: torch.nn.Module, record: Mapping, dense: torch.nn.Module) -> dict:
    """What a round publishes (``metrics/prune_<round>.json``): val/test accuracy before the round, right before
    and right after the cut and at its end; the model's size against ``dense`` (``counting.size_report``); the
    round's target ratios (per targeted kind), its state sizes and embedding width (``state_and_embed``), its
    selection warnings and the group norms at the cut (with each kind's removed/kept ratio, ``norm_stats``); for
    RSST the final λ and the λ schedule, thinned."""
    metrics = {f"{k}_{phase}": record[phase][k] for phase in ("before", "before_cut", "after_cut", "after")
               for k in ("val_acc", "test_acc")}
    metrics |= size_report(model, dense) | state_and_embed(model)
    metrics |= {"norms_at_cut": record["norms_at_cut"], "target_ratios": record["target_ratios"],
                "selection_warnings": record["warnings"]}
    if "lambda_trace" in record:
        trace = record["lambda_trace"]
        metrics["rsst_lambda_final"] = trace[-1] if trace else 0.0
        metrics["rsst_lambda_trace"] = [lam for _, lam in lambda_points(trace)]
    return metrics


def lambda_points(trace: list[float], points: int = 50) -> list[tuple[int, float]]:
    """(step, λ) of every k-th step of an RSST round, about ``points`` of them: the λ schedule as published."""
    stride = max(1, len(trace) // points)
    return [(step, trace[step]) for step in range(0, len(trace), stride)]
