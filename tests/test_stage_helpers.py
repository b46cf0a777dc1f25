"""Helpers inside the stage scripts, tested without running a stage (the scripts import as modules)."""

import importlib.util
from pathlib import Path
from types import SimpleNamespace

ROOT = Path(__file__).resolve().parents[1]


def stage_module(name: str):
    spec = importlib.util.spec_from_file_location(f"stage_{name}", ROOT / "stages" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_summary_orders_an_rsst_rounds_phases_as_they_ran(tmp_path):
    summary = stage_module("summary")
    files = [tmp_path / f"{phase}_epochs.csv" for phase in ("recover", "rsst", "retrain", "train", "zzz")]
    assert [f.stem for f in sorted(files, key=summary._phase_order)] == [
        "train_epochs", "rsst_epochs", "retrain_epochs", "recover_epochs", "zzz_epochs"]


def test_min_keep_warnings_trusts_the_selections_own_verdict():
    """A global ranking may leave a layer at the floor without min_keep raising it; select_units then reports no
    warning, and the layer-wise fallback (for Refill, whose record has no warnings) must not invent one."""
    prune = stage_module("prune")
    cfg = SimpleNamespace(min_keep=8, round_to=8)
    base, kept = {"ssm_widths": [64, 256]}, {"ssm_widths": [8, 24]}
    record = {"target_ratios": {"ssm": 0.9}, "selection": {"ssm": {"warnings": []}}}
    assert prune.min_keep_warnings(cfg, record, base, kept) == []
    record["selection"]["ssm"]["warnings"] = ["layer 0 raised"]
    assert prune.min_keep_warnings(cfg, record, base, kept) == ["ssm: layer 0 raised"]
    record["selection"] = {}  # refill: the stage checks the widths itself
    warnings = prune.min_keep_warnings(cfg, record, base, kept)
    assert len(warnings) == 1 and "raised 1 layer(s)" in warnings[0] and "layer 0: 6.4->8" in warnings[0]
