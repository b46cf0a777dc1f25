"""The summary stage's tables (``mambaprune.summary``), from metrics and epoch CSVs written in a temp project."""

import pytest

from mambaprune.config import PruneCfg
from mambaprune.errors import DataError
from mambaprune.paths import metrics_file, stage_plots_dir
from mambaprune.pruning.rounds import FIT_TAGS
from mambaprune.records import write_csv, write_json
from mambaprune.summary import epochs_table, read_metrics, rounds_table, tag_order, training_stages, widths_table

PRUNE = PruneCfg(rounds={"b": "a", "a": "pretrained"}, last="b")  # listed out of order: the chain decides


def test_an_rsst_rounds_epoch_csvs_come_in_the_order_they_ran(tmp_path):
    files = [tmp_path / f"{tag}_epochs.csv" for tag in ("recover", "rsst", "retrain", "train", "zzz")]
    assert [f.stem for f in sorted(files, key=tag_order)] == [
        "train_epochs", "rsst_epochs", "retrain_epochs", "recover_epochs", "zzz_epochs"]
    assert FIT_TAGS == ("train", "rsst", "retrain", "recover")


def test_tables_follow_the_round_chain(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for stage, params, acc in (("pretrain", 100, 0.9), ("prune@a", 70, 0.8), ("prune@b", 50, 0.7),
                               ("finetune", 50, 0.75)):
        suffix = "_after" if stage.startswith("prune") else ""
        write_json(metrics_file(stage), {"params": params, "flops": 2 * params, f"val_acc{suffix}": acc,
                                         f"test_acc{suffix}": acc - 0.01, "ssm_widths": [8], "mlp_widths": [16]})
        tags = ("rsst", "recover") if stage == "prune@b" else ("train",)
        for tag in reversed(tags):
            write_csv(stage_plots_dir(stage) / f"{tag}_epochs.csv", [{"epoch": 1, "train_acc": acc, "val_acc": acc}])
    assert training_stages(PRUNE) == ["pretrain", "prune@a", "prune@b", "finetune"]
    assert [(r["round"], r["params"], r["val_acc"]) for r in rounds_table(PRUNE)] == [
        ("dense", 100, 0.9), ("a", 70, 0.8), ("b", 50, 0.7), ("finetuned", 50, 0.75)]
    assert [(r["step"], r["stage"], r["phase"]) for r in epochs_table(training_stages(PRUNE))] == [
        (1, "pretrain", "train"), (2, "prune@a", "train"), (3, "prune@b", "rsst"), (4, "prune@b", "recover"),
        (5, "finetune", "train")]
    dense = {"ssm_widths": [64, 64], "mlp_widths": [128, 128]}
    assert widths_table({"ssm_widths": [8, 16], "mlp_widths": [24, 32]}, dense)[1] == {
        "layer": 1, "ssm_width": 16, "mlp_width": 32, "ssm_dense": 64, "mlp_dense": 128}
    with pytest.raises(DataError, match="metrics/evaluate.json not found: run the stages before this one"):
        read_metrics("evaluate")
