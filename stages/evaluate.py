"""Stage `evaluate`: test accuracy, size and measured inference speed (per mode) of the final model vs the dense
one, and whether any pruning round's cut lost more than a point of validation accuracy."""

import sys
import time

from mambaprune import paths
from mambaprune.checkpoint import check_fits_data, load_checkpoint, load_matching
from mambaprune.cli import stage_main
from mambaprune.config import HEADLINE_SPEED_MODE, load_params
from mambaprune.counting import size_report
from mambaprune.data import eval_loaders, load_meta
from mambaprune.pruning.checks import cut_report
from mambaprune.records import publish_metrics, read_metrics
from mambaprune.speed import speed_report
from mambaprune.tracking import repo_root, stage_run
from mambaprune.train import accuracy_of, resolve_device


def main() -> None:
    params = load_params()
    start = time.time()
    rounds = sorted(params.prune.rounds, key=params.prune.round_index)
    cuts = cut_report({r: read_metrics(f"prune@{r}") for r in rounds})  # before the work: stale records fail here
    device = resolve_device(params.train.device)
    final_path, dense_path = paths.checkpoint("finetuned"), paths.checkpoint("pretrained")
    dense = load_checkpoint(dense_path)
    check_fits_data(dense, dense_path, load_meta(paths.DATA_DIR))
    final = load_matching(final_path, dense, dense_path)
    final, dense = final.to(device), dense.to(device)
    val, test = eval_loaders(paths.DATA_DIR, params.seed, device, params.evaluate.batch_size)
    with stage_run("evaluate", {"evaluate": params.evaluate.__dict__}) as run:
        acc, dense_acc = accuracy_of(final, val, test, device), accuracy_of(dense, val, test, device)
        speed = speed_report(dense, final, params.evaluate.throughput_batch, params.evaluate.throughput_iters, device,
                             repo_root() / paths.TIMINGS_FILE, modes=tuple(params.evaluate.speed_modes))
        metrics = {
            "test_acc": acc["test_acc"], "val_acc": acc["val_acc"],
            "dense_test_acc": dense_acc["test_acc"], "dense_val_acc": dense_acc["val_acc"],
            "test_acc_drop": dense_acc["test_acc"] - acc["test_acc"], **size_report(final, dense), **speed,
            **cuts, "device": str(device), "throughput_batch": params.evaluate.throughput_batch,
            "wall_time_s": time.time() - start,
        }
        publish_metrics(run, "evaluate", metrics)
    if speed["speed_flag"]:
        print(f"warning: {speed['speed_flag']}", file=sys.stderr)
    for line in cuts["costly_cut_warnings"]:
        print(f"warning: {line}", file=sys.stderr)
    print(f"evaluate: test {acc['test_acc']:.4f} (dense {dense_acc['test_acc']:.4f}), params "
          f"{metrics['params']:,} / {metrics['dense_params']:,} on {device}; speedup, spread:")
    for mode, figures in speed["speed_by_mode"].items():
        speedup = "withheld" if figures["speedup"] is None else f"{figures['speedup']:.2f}x"
        how = f"; runs as {figures['runs_as']}: {figures['reason']}" if figures["reason"] else ""
        head = " = the headline speedup" if mode == HEADLINE_SPEED_MODE else ""
        print(f"  {mode:<9} {speedup} (spread {figures['speedup_spread']:.0%}){how}{head}")
    print(f"  costly cuts: {cuts['costly_cuts']} of {len(rounds)} round(s)")


if __name__ == "__main__":
    stage_main(main)
