"""pruning/checks.py: a round whose cut lost more than a point of validation accuracy is flagged, others are not."""

import pytest

from mambaprune.pruning.checks import costly_cuts, cut_cost


def test_cut_cost_and_costly_cuts():
    rounds = {
        "r1": {"val_acc_before_cut": 0.9792, "val_acc_after_cut": 0.9792},  # free (RSST)
        "r2": {"val_acc_before_cut": 0.90, "val_acc_after_cut": 0.891},  # 0.9 points: within the limit
        "r3": {"val_acc_before_cut": 0.90, "val_acc_after_cut": 0.85},  # 5 points
        "r4": {"val_acc_before_cut": 0.80, "val_acc_after_cut": 0.81},  # the cut helped
    }
    assert cut_cost(rounds["r1"]) == 0.0 and cut_cost(rounds["r3"]) == pytest.approx(0.05)
    assert costly_cuts(rounds) == ["r3: the cut lost 5.00 points of validation accuracy (90.00% -> 85.00%), "
                                   "more than 1"]
    assert [line[:2] for line in costly_cuts(rounds, limit=0.005)] == ["r2", "r3"]
    with pytest.raises(ValueError, match="val_acc_before_cut.*rerun the prune stages"):
        costly_cuts({"r1": {"val_acc_before": 0.9, "val_acc_after_cut": 0.9}})
