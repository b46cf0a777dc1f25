"""The summary stage's cross-stage tables, built from what the other stages wrote (their metrics JSON and epoch
CSVs): one row per model state (dense, each round, finetuned), the kept widths per layer against the dense
model, and every epoch of every training stage in the order it ran."""

from __future__ import annotations

from pathlib import Path

from .config import PruneCfg
from .paths import stage_plots_dir
from .pruning.rounds import FIT_TAGS
from .records import read_csv, read_metrics

__all__ = ["EPOCH_COLUMNS", "read_metrics", "training_stages", "rounds_table", "widths_table", "epochs_table",
           "tag_order"]

EPOCH_COLUMNS = ("train_acc", "val_acc", "train_loss", "val_loss")  # what plots/summary/epochs.csv keeps per epoch


def training_stages(prune: PruneCfg) -> list[str]:
    """pretrain, the rounds in chain order, finetune."""
    return ["pretrain", *(f"prune@{r}" for r in sorted(prune.rounds, key=prune.round_index)), "finetune"]


def rounds_table(prune: PruneCfg) -> list[dict]:
    """Size and accuracy of each model state: dense, after each round, finetuned."""
    def row(name: str, m: dict, suffix: str = "") -> dict:
        return {"round": name, "params": m["params"], "flops": m["flops"], "val_acc": m[f"val_acc{suffix}"],
                "test_acc": m[f"test_acc{suffix}"]}

    rounds = sorted(prune.rounds, key=prune.round_index)
    return [row("dense", read_metrics("pretrain")), *(row(r, read_metrics(f"prune@{r}"), "_after") for r in rounds),
            row("finetuned", read_metrics("finetune"))]


def widths_table(final: dict, dense: dict) -> list[dict]:
    """Per layer: the final model's kept widths beside the dense model's."""
    return [{"layer": i, "ssm_width": s, "mlp_width": m, "ssm_dense": sd, "mlp_dense": md}
            for i, (s, m, sd, md) in enumerate(zip(final["ssm_widths"], final["mlp_widths"], dense["ssm_widths"],
                                                   dense["mlp_widths"]))]


def epochs_table(stages: list[str]) -> list[dict]:
    """Every epoch of every stage's epoch CSVs (``EPOCH_COLUMNS``), numbered in the order they ran (``step``)."""
    rows = []
    for stage in stages:
        for csv in sorted(stage_plots_dir(stage).glob("*_epochs.csv"), key=tag_order):
            for row in read_csv(csv):
                rows.append({"step": len(rows) + 1, "stage": stage, "phase": csv.stem.removesuffix("_epochs"),
                             "epoch": row["epoch"], **{k: row.get(k) for k in EPOCH_COLUMNS}})
    return rows


def tag_order(csv: Path) -> tuple[int, str]:
    """A stage's epoch CSVs in run order (``pruning.rounds.FIT_TAGS``), not by name: an RSST round writes
    rsst_epochs.csv, then recover_epochs.csv; unknown tags last."""
    tag = csv.stem.removesuffix("_epochs")
    return (FIT_TAGS.index(tag) if tag in FIT_TAGS else len(FIT_TAGS), tag)
