"""Structured pruning. The engine: coupling spec (units), plans as data (plan), scores (importance), selection
(select), and the core that puts them together (core: score → select → plan → apply), which both the one-call
pruner (api.prune_model) and the pipeline's rounds (rounds) call; the accuracy a cut costs before finetuning
(cost). The methods round by round: magnitude with optional rewinding, Refill (refill), RSST's regulariser (rsst)
and the per-round targets and λ schedules (schedule); checks on a round's metrics (checks)."""

from .api import TARGETS, prune_model, prune_selection
from .core import Selection, Targets, score, select
from .cost import accuracy_cost
from .importance import CRITERIA, IMPORTANCES, accumulate_grads, score_units
from .plan import (
    Plan,
    apply_plan,
    compose_plans,
    config_with_widths,
    layer_entries,
    plan_widths,
    slice_state,
    validate_plan,
)
from .select import SCOPES, round_width, select_units
from .units import (
    BLOCK_KINDS,
    KINDS,
    Member,
    block_prefix,
    complement,
    kept_index,
    members,
    members_of,
    num_directions,
    unit_matrices,
    width_of,
    widths,
)

__all__ = [
    "KINDS", "BLOCK_KINDS", "Member", "members", "members_of", "num_directions", "block_prefix", "unit_matrices",
    "kept_index", "width_of", "widths", "complement",
    "Plan", "layer_entries", "plan_widths", "slice_state", "apply_plan", "compose_plans", "validate_plan",
    "config_with_widths",
    "CRITERIA", "IMPORTANCES", "accumulate_grads", "score_units",
    "SCOPES", "round_width", "select_units",
    "Targets", "Selection", "score", "select",
    "accuracy_cost",
    "TARGETS", "prune_model", "prune_selection",
]
