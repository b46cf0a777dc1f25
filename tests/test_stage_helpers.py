"""Helpers inside the stage scripts, tested without running a stage (the scripts import as modules)."""

import importlib.util
from pathlib import Path

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
