"""Stage `summary` (always runs): gather every stage's metrics into the cross-stage plots and log the final
state on the experiment's MLflow parent run (stages restored from DVC's run-cache log nothing)."""

from pathlib import Path

from mambaprune import paths
from mambaprune.cli import stage_main
from mambaprune.config import load_params
from mambaprune.plots import plot_rounds, plot_widths, png_line_plot
from mambaprune.records import write_csv
from mambaprune.summary import epochs_table, read_metrics, rounds_table, training_stages, widths_table
from mambaprune.tracking import repo_root, summarize

OUT = paths.PLOTS_DIR / "summary"


def main() -> None:
    params = load_params()
    final, dense = read_metrics("evaluate"), read_metrics("pretrain")
    write_csv(OUT / "rounds.csv", rounds_table(params.prune))
    write_csv(OUT / "widths.csv", widths_table(final, dense))
    write_csv(OUT / "epochs.csv", epochs_table(training_stages(params.prune)))

    pngs = [png_line_plot(OUT / "epochs.csv", "step", ["train_acc", "val_acc"], OUT / "epochs.png",
                          "Accuracy per epoch, stage after stage", ylabel="accuracy"),
            plot_rounds(OUT / "rounds.csv", OUT / "rounds.png"),
            plot_widths(OUT / "widths.csv", OUT / "widths.png")]
    final_metrics = {k: v for k, v in final.items() if isinstance(v, int | float)}
    artifacts = [*pngs, OUT / "rounds.csv", OUT / "widths.csv", OUT / "epochs.csv", "params.yaml", "dvc.lock"]
    summarize(repo_root(), params.to_dict(), final_metrics, [a for a in artifacts if Path(a).exists()])
    print(f"summary: test acc {final['test_acc']:.4f} (dense {final['dense_test_acc']:.4f}), "
          f"params {final['params']:,} ({final['param_reduction']:.1%} fewer), speedup {final['speedup']:.2f}x")


if __name__ == "__main__":
    stage_main(main)
