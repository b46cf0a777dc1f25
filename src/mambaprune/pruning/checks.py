"""Did a pruning round's cut do its job? Pure checks on the rounds' metrics (``metrics/prune_<round>.json``).

A round's cut should cost little: RSST drives the units it removes to ~0 first, so its cut should be free;
magnitude and Refill cut trained weights and retrain afterwards, so their cut may cost more, but a cut that
loses more than a point of validation accuracy is worth a look whatever the method. The evaluate stage records
``cut_report`` of every round and warns about each costly cut.
"""

from __future__ import annotations

from collections.abc import Mapping

from ..errors import DataError

__all__ = ["CUT_LOSS_LIMIT", "cut_cost", "costly_cuts", "cut_report"]

CUT_LOSS_LIMIT = 0.01  # one point of validation accuracy
RECORD_DECIMALS = 6  # accuracies are fractions stored with 6 significant digits: finer differences are noise


def cut_cost(metrics: Mapping, name: str = "the round") -> float:
    """Validation accuracy the cut itself lost: right before it minus right after it (0 = a free cut), rounded to
    ``RECORD_DECIMALS`` decimals (so 0.90 -> 0.89 costs exactly 0.01, not 0.010000000000000009). DataError when the
    metrics predate the cut report (``name`` says whose)."""
    missing = [k for k in ("val_acc_before_cut", "val_acc_after_cut") if k not in metrics]
    if missing:
        raise DataError(f"{name}'s metrics lack {', '.join(missing)}: they predate the cut report; rerun the "
                        f"prune stages (dvc repro)")
    return round(metrics["val_acc_before_cut"] - metrics["val_acc_after_cut"], RECORD_DECIMALS)


def costly_cuts(rounds: Mapping[str, Mapping], limit: float = CUT_LOSS_LIMIT) -> list[str]:
    """One line per round (in the given order) whose cut lost more than ``limit`` of validation accuracy."""
    return _costly_lines(rounds, _cut_costs(rounds), limit)


def cut_report(rounds: Mapping[str, Mapping], limit: float = CUT_LOSS_LIMIT) -> dict:
    """What the evaluate stage records about the rounds' cuts (``rounds``: name -> that round's metrics, in chain
    order): ``cut_cost`` per round (validation accuracy the cut lost, a fraction), ``costly_cuts`` (how many lost
    more than ``limit``) and ``costly_cut_warnings`` (``costly_cuts``' lines, one per such round)."""
    costs = _cut_costs(rounds)
    warnings = _costly_lines(rounds, costs, limit)
    return {"cut_cost": costs, "costly_cuts": len(warnings), "costly_cut_warnings": warnings}


def _cut_costs(rounds: Mapping[str, Mapping]) -> dict[str, float]:
    return {name: cut_cost(metrics, f"round {name}") for name, metrics in rounds.items()}


def _costly_lines(rounds: Mapping[str, Mapping], costs: Mapping[str, float], limit: float) -> list[str]:
    out = []
    for name, lost in costs.items():
        if lost > limit:
            metrics = rounds[name]
            out.append(f"{name}: the cut lost {100 * lost:.2f} points of validation accuracy "
                       f"({metrics['val_acc_before_cut']:.2%} -> {metrics['val_acc_after_cut']:.2%}), more than "
                       f"{100 * limit:g}")
    return out
