"""Structured pruning. The engine: coupling spec (units), plans as data (plan), scores (importance), selection
(select), the one-call pruner (api) and the accuracy a cut costs before finetuning (cost). The methods the
pipeline runs round by round (rounds): magnitude with optional rewinding, Refill (refill), RSST's regulariser
(rsst) and the per-round targets and λ schedules (schedule); checks on a round's metrics (checks)."""

from .api import TARGETS, prune_model, prune_model_with_info, prune_report, ratios_for_target
from .cost import accuracy_cost
from .importance import CRITERIA, IMPORTANCES, accumulate_grads, score_units
from .plan import (
    Plan,
    apply_plan,
    compose_plans,
    config_with_widths,
    identity_plan,
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
    "kept_index", "width_of", "widths",
    "Plan", "identity_plan", "layer_entries", "plan_widths", "slice_state", "apply_plan", "compose_plans",
    "validate_plan", "config_with_widths",
    "CRITERIA", "IMPORTANCES", "accumulate_grads", "score_units",
    "SCOPES", "round_width", "select_units",
    "accuracy_cost",
    "TARGETS", "prune_model", "prune_model_with_info", "prune_report", "ratios_for_target",
]
