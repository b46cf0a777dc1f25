"""The headline file (metrics/summary.json, the only DVC metrics file) and the end-of-run report."""

from __future__ import annotations

from mambaprune.config import parse_params
from mambaprune.headline import HEADLINE_KEYS, NEXT_COMMANDS, headline, report

EVALUATE = {  # an evaluate stage record, rounded as metrics/evaluate.json stores it
    "test_acc": 0.95, "dense_test_acc": 0.98, "val_acc": 0.97, "test_acc_drop": 0.03, "params": 150_000,
    "dense_params": 300_000, "flops": 2_500_000, "dense_flops": 10_000_000, "param_reduction": 0.5,
    "flop_reduction": 0.75, "speedup": 1.5, "speedup_spread": 0.1, "speed_flag": None, "img_per_s": 4500.0,
    "dense_img_per_s": 3000.0, "device": "cpu", "wall_time_s": 4.2, "ssm_widths": [8, 16], "mlp_widths": [32, 24],
    "cut_cost": {"r1": 0.0, "r2": 0.015, "r3": 0.005}, "costly_cuts": 1, "costly_cut_warnings": ["r2: ..."],
}


def prune_cfg(**kw):
    return parse_params({"prune": {"method": "rsst", "ratio": 0.7, "target": "both",
                                   "rounds": {"r1": "pretrained", "r2": "r1", "r3": "r2"}, "last": "r3", **kw}}).prune


def test_headline_exact_values_and_at_most_15_columns():
    h = headline(EVALUATE, prune_cfg())  # the record's values under the record's names (one vocabulary)
    assert h == {"test_acc": 0.95, "dense_test_acc": 0.98, "test_acc_drop": 0.03, "params": 150_000,
                 "param_reduction": 0.5, "flop_reduction": 0.75, "speedup": 1.5, "speedup_spread": 0.1,
                 "img_per_s": 4500.0, "device": "cpu", "method": "rsst", "target": "both", "ratio": 0.7, "rounds": 3,
                 "costly_cuts": 1}
    assert list(h) == list(HEADLINE_KEYS) and len(h) <= 15


def test_a_withheld_speedup_stays_null_and_the_report_says_why():
    h = headline({**EVALUATE, "speedup": None}, prune_cfg())
    assert h["speedup"] is None
    assert "not published" in report(h)


def test_report_names_the_numbers_the_outputs_and_three_next_commands():
    text = report(headline(EVALUATE, prune_cfg()), "digits")
    assert "rsst, 0.7 of both units removed in 3 round(s) on digits" in text
    assert "95.00 %" in text and "dense 98.00 %" in text and "drop +3.00 points" in text
    assert "150,000" in text and "50.00 % fewer" in text and "FLOPs 75.00 % fewer" in text
    assert "1.50x measured on cpu, spread 10 %" in text
    assert "costly cuts    1 of 3 round(s) lost more than 1 point of val accuracy at the cut" in text
    assert "metrics/summary.json" in text and "plots/summary" in text and "mlflow.db" in text
    assert len(NEXT_COMMANDS) == 3 and all(cmd in text for cmd, _ in NEXT_COMMANDS)
    assert max(len(line) for line in text.splitlines()) <= 120  # fits a terminal, unlike `dvc metrics show`


def test_the_report_says_whether_any_cut_was_costly():
    assert "costly cuts    none (no round's cut lost more than 1 point" in report(
        headline({**EVALUATE, "costly_cuts": 0}, prune_cfg()))
    older = {k: v for k, v in EVALUATE.items() if k != "costly_cuts"}  # a record from before the cut check
    h = headline(older, prune_cfg())
    assert h["costly_cuts"] is None and "costly cuts    not checked" in report(h)
