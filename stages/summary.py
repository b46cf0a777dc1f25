"""Stage `summary` (always runs): gather every stage's metrics into the cross-stage plots and log the final
state on the experiment's MLflow parent run (stages restored from DVC's run-cache log nothing)."""

import json
from pathlib import Path

from mambaprune import paths
from mambaprune.cli import stage_main
from mambaprune.config import load_params
from mambaprune.errors import DataError
from mambaprune.plots import plot_rounds, plot_widths, png_line_plot
from mambaprune.records import read_csv, write_csv
from mambaprune.tracking import repo_root, summarize

OUT = paths.PLOTS_DIR / "summary"


def read_metrics(stage: str) -> dict:
    path = paths.metrics_file(stage)
    if not path.is_file():
        raise DataError(f"{path} not found: run the stages before the summary (`dvc repro`)")
    return json.loads(path.read_text())


def main() -> None:
    params = load_params()
    chain = sorted(params.prune.rounds, key=params.prune.round_index)
    stages = ["pretrain", *(f"prune@{r}" for r in chain), "finetune"]
    rounds = [{"round": "dense", **_point(read_metrics("pretrain"))}]
    rounds += [{"round": r, **_point(read_metrics(f"prune@{r}"), "_after")} for r in chain]
    rounds.append({"round": "finetuned", **_point(read_metrics("finetune"))})
    write_csv(OUT / "rounds.csv", rounds)

    final = read_metrics("evaluate")
    dense = read_metrics("pretrain")
    widths = [{"layer": i, "ssm_width": s, "mlp_width": m, "ssm_dense": sd, "mlp_dense": md}
              for i, (s, m, sd, md) in enumerate(zip(final["ssm_widths"], final["mlp_widths"],
                                                     dense["ssm_widths"], dense["mlp_widths"]))]
    write_csv(OUT / "widths.csv", widths)

    epochs, step = [], 0
    for stage in stages:
        for csv in sorted(paths.stage_plots_dir(stage).glob("*_epochs.csv"), key=_phase_order):
            for row in read_csv(csv):
                step += 1
                epochs.append({"step": step, "stage": stage, "phase": csv.stem.removesuffix("_epochs"),
                               "epoch": row["epoch"], "train_acc": row.get("train_acc"),
                               "val_acc": row.get("val_acc")})
    write_csv(OUT / "epochs.csv", epochs)

    pngs = [png_line_plot(OUT / "epochs.csv", "step", ["train_acc", "val_acc"], OUT / "epochs.png",
                          "Accuracy per epoch, stage after stage", ylabel="accuracy"),
            plot_rounds(OUT / "rounds.csv", OUT / "rounds.png"),
            plot_widths(OUT / "widths.csv", OUT / "widths.png")]
    final_metrics = {k: v for k, v in final.items() if isinstance(v, int | float)}
    artifacts = [*pngs, OUT / "rounds.csv", OUT / "widths.csv", OUT / "epochs.csv", "params.yaml", "dvc.lock"]
    summarize(repo_root(), params.to_dict(), final_metrics, [a for a in artifacts if Path(a).exists()])
    print(f"summary: test acc {final['test_acc']:.4f} (dense {final['dense_test_acc']:.4f}), "
          f"params {final['params']:,} ({final['param_reduction']:.1%} fewer), speedup {final['speedup']:.2f}x")


PHASES = ("train", "rsst", "retrain", "recover")  # the order a stage runs them in (pruning/rounds.py)


def _phase_order(csv: Path) -> tuple[int, str]:
    """In run order, not by name: an RSST round writes rsst_epochs.csv, then recover_epochs.csv."""
    phase = csv.stem.removesuffix("_epochs")
    return (PHASES.index(phase) if phase in PHASES else len(PHASES), phase)


def _point(m: dict, suffix: str = "") -> dict:
    return {"params": m["params"], "flops": m["flops"], "val_acc": m[f"val_acc{suffix}"],
            "test_acc": m[f"test_acc{suffix}"]}


if __name__ == "__main__":
    stage_main(main)
