"""Stage `summary` (always runs): the headline metrics (metrics/summary.json, the pipeline's only DVC metrics
file), every stage's metrics gathered into the cross-stage plots, and the final state logged on the experiment's
MLflow parent run (stages restored from DVC's run-cache log nothing)."""

import json
from pathlib import Path

from mambaprune import paths
from mambaprune.config import load_params
from mambaprune.headline import headline
from mambaprune.plots import plot_epochs, plot_rounds, plot_widths, read_csv, round_floats, write_csv, write_json
from mambaprune.runtime import project_root, stage_main
from mambaprune.tracking import summarize

OUT = paths.PLOTS_DIR / "summary"


def read_metrics(stage: str) -> dict:
    return json.loads(paths.metrics_file(stage).read_text())


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
                               "epoch": row["epoch"], **{k: row.get(k) for k in EPOCH_COLUMNS}})
    write_csv(OUT / "epochs.csv", epochs)

    head = headline(final, params.prune)
    write_json(paths.metrics_file("summary"), head)
    pngs = [plot_epochs(OUT / "epochs.csv", OUT / "epochs.png"),
            plot_rounds(OUT / "rounds.csv", OUT / "rounds.png"),
            plot_widths(OUT / "widths.csv", OUT / "widths.png")]
    artifacts = [*pngs, OUT / "rounds.csv", OUT / "widths.csv", OUT / "epochs.csv", "params.yaml", "dvc.lock"]
    summarize(project_root(), params.to_dict(), round_floats(head), [a for a in artifacts if Path(a).exists()])
    speedup = "withheld" if head["speedup"] is None else f"{head['speedup']:.2f}x"
    print(f"summary: test acc {head['test_acc']:.4f} (dense {head['dense_test_acc']:.4f}), "
          f"params {head['params']:,} ({head['param_reduction']:.1%} fewer), speedup {speedup}")


EPOCH_COLUMNS = ("train_acc", "val_acc", "train_loss", "val_loss")  # what plots/summary/epochs.csv keeps


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
