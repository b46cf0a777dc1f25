"""pruning/checks.py: a round whose cut lost more than a point of validation accuracy is flagged, others are not."""

import pytest

from mambaprune.errors import DataError
from mambaprune.pruning.checks import costly_cuts, cut_cost, cut_report


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
    with pytest.raises(DataError, match="round r1's metrics lack val_acc_before_cut.*rerun the prune stages"):
        costly_cuts({"r1": {"val_acc_before": 0.9, "val_acc_after_cut": 0.9}})


@pytest.mark.parametrize("before, after", [(0.90, 0.89), (0.5, 0.49), (0.98, 0.97), (0.979167, 0.969167)])
def test_a_cut_that_lost_exactly_one_point_is_not_flagged(before, after):
    """'More than 1 point': exactly 1 is not flagged, though 0.90 - 0.89 is 0.010000000000000009 in floats."""
    assert cut_cost({"val_acc_before_cut": before, "val_acc_after_cut": after}) == 0.01
    assert costly_cuts({"r": {"val_acc_before_cut": before, "val_acc_after_cut": after}}) == []
    assert costly_cuts({"r": {"val_acc_before_cut": before, "val_acc_after_cut": after - 1e-4}})  # 1.01 points


def test_cut_report_flags_the_round_that_lost_1_5_points_not_the_one_that_lost_0_5():
    rounds = {"r1": {"val_acc_before_cut": 0.98, "val_acc_after_cut": 0.975},  # 0.5 points
              "r2": {"val_acc_before_cut": 0.97, "val_acc_after_cut": 0.955},  # 1.5 points
              "r3": {"val_acc_before_cut": 0.96, "val_acc_after_cut": 0.95}}  # 1.0 point: not more than 1
    report = cut_report(rounds)
    assert report == {"cut_cost": {"r1": 0.005, "r2": 0.015, "r3": 0.01}, "costly_cuts": 1,
                      "costly_cut_warnings": ["r2: the cut lost 1.50 points of validation accuracy "
                                              "(97.00% -> 95.50%), more than 1"]}
