"""Did a pruning round's cut do its job? Pure checks on the rounds' metrics (``metrics/prune_<round>.json``).

A round's cut should cost little: RSST drives the units it removes to ~0 first, so its cut should be free;
magnitude and Refill cut trained weights and retrain afterwards, so their cut may cost more, but a cut that
loses more than a point of validation accuracy is worth a look whatever the method.
"""

from __future__ import annotations

from collections.abc import Mapping

__all__ = ["CUT_LOSS_LIMIT", "cut_cost", "costly_cuts"]

CUT_LOSS_LIMIT = 0.01  # one point of validation accuracy


def cut_cost(metrics: Mapping) -> float:
    """Validation accuracy the cut itself lost: right before it minus right after it (0 = a free cut)."""
    missing = [k for k in ("val_acc_before_cut", "val_acc_after_cut") if k not in metrics]
    if missing:
        raise ValueError(f"round metrics lack {', '.join(missing)}: they predate the cut report; rerun the "
                         f"prune stages (dvc repro)")
    return metrics["val_acc_before_cut"] - metrics["val_acc_after_cut"]


def costly_cuts(rounds: Mapping[str, Mapping], limit: float = CUT_LOSS_LIMIT) -> list[str]:
    """One line per round (in the given order) whose cut lost more than ``limit`` of validation accuracy."""
    out = []
    for name, metrics in rounds.items():
        lost = cut_cost(metrics)
        if lost > limit:
            out.append(f"{name}: the cut lost {100 * lost:.2f} points of validation accuracy "
                       f"({metrics['val_acc_before_cut']:.2%} -> {metrics['val_acc_after_cut']:.2%}), more than "
                       f"{100 * limit:g}")
    return out
