"""Stage `summary` (always runs): the headline metrics (metrics/summary.json, the pipeline's only DVC metrics
file), every stage's metrics gathered into the cross-stage plots, and the final state logged on the experiment's
MLflow parent run (stages restored from DVC's run-cache log nothing)."""

from pathlib import Path

from mambaprune import paths
from mambaprune.cli import stage_main
from mambaprune.config import load_params
from mambaprune.headline import headline
from mambaprune.plots import plot_epochs, plot_rounds, plot_widths
from mambaprune.records import round_floats, write_csv, write_json
from mambaprune.summary import epochs_table, read_metrics, rounds_table, training_stages, widths_table
from mambaprune.tracking import repo_root, summarize

OUT = paths.PLOTS_DIR / "summary"


def main() -> None:
    params = load_params()
    final, dense = read_metrics("evaluate"), read_metrics("pretrain")
    write_csv(OUT / "rounds.csv", rounds_table(params.prune))
    write_csv(OUT / "widths.csv", widths_table(final, dense))
    write_csv(OUT / "epochs.csv", epochs_table(training_stages(params.prune)))
    head = headline(final, params.prune)
    write_json(paths.metrics_file("summary"), head)

    pngs = [plot_epochs(OUT / "epochs.csv", OUT / "epochs.png"),
            plot_rounds(OUT / "rounds.csv", OUT / "rounds.png"),
            plot_widths(OUT / "widths.csv", OUT / "widths.png")]
    artifacts = [*pngs, OUT / "rounds.csv", OUT / "widths.csv", OUT / "epochs.csv", "params.yaml", "dvc.lock"]
    summarize(repo_root(), params.to_dict(), round_floats(head), [a for a in artifacts if Path(a).exists()])
    speedup = "withheld" if head["speedup"] is None else f"{head['speedup']:.2f}x"
    print(f"summary: test acc {head['test_acc']:.4f} (dense {head['dense_test_acc']:.4f}), "
          f"params {head['params']:,} ({head['param_reduction']:.1%} fewer), speedup {speedup}")


if __name__ == "__main__":
    stage_main(main)
