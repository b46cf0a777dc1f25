"""Structured pruning. The engine: coupling spec (units), plans as data (plan), scores (importance), selection
(select), and the core that puts them together (core: score → select → plan → apply), which both the one-call
pruner (api.prune_model) and the pipeline's rounds (rounds) call. The methods round by round: magnitude with
optional rewinding, Refill (refill), RSST's regulariser (rsst) and the per-round targets and λ schedules
(schedule)."""

from .api import TARGETS, prune_model
from .core import Selection, Targets, score, select
from .importance import CRITERIA, IMPORTANCES, accumulate_grads, score_units
from .plan import Plan, apply_plan, compose_plans, plan_widths, slice_state, validate_plan
from .select import SCOPES, round_width, select_units
from .units import KINDS, Member, block_prefix, kept_index, members, num_directions, unit_matrices, width_of

__all__ = [
    "KINDS", "Member", "members", "num_directions", "block_prefix", "unit_matrices", "kept_index", "width_of",
    "Plan", "plan_widths", "slice_state", "apply_plan", "compose_plans", "validate_plan",
    "CRITERIA", "IMPORTANCES", "accumulate_grads", "score_units",
    "SCOPES", "round_width", "select_units",
    "Targets", "Selection", "score", "select",
    "TARGETS", "prune_model",
]
