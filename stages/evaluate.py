"""Stage `evaluate`: test accuracy, size and measured inference speed of the final model vs the dense one."""

import statistics
import sys
import time

import torch

from mambaprune import paths
from mambaprune.checkpoint import load_checkpoint
from mambaprune.config import load_params
from mambaprune.counting import size_summary
from mambaprune.data import load_meta, make_loaders
from mambaprune.runtime import (
    accuracy_of,
    check_fits_data,
    check_same_arch,
    project_root,
    publish_metrics,
    stage_main,
)
from mambaprune.speed import compare_throughput, speedup_with_spread
from mambaprune.timing_history import baseline_flag, read_timings, record_timing, timing_key
from mambaprune.tracking import stage_run
from mambaprune.train import resolve_device


def main() -> None:
    params = load_params()
    start = time.time()
    device = resolve_device(params.train.device)
    final_path, dense_path = paths.checkpoint("finetuned"), paths.checkpoint("pretrained")
    final, dense = load_checkpoint(final_path), load_checkpoint(dense_path)
    meta = load_meta(paths.DATA_DIR)
    check_fits_data(dense, dense_path, meta)
    check_same_arch(final, final_path, dense, dense_path)
    final, dense = final.to(device), dense.to(device)
    _, val, test, _ = make_loaders(paths.DATA_DIR, params.train, params.seed, device, params.evaluate.batch_size)
    with stage_run("evaluate", {"evaluate": params.evaluate.__dict__}) as run:
        final_sum, dense_sum = size_summary(final), size_summary(dense)
        acc, dense_acc = accuracy_of(final, val, test, device), accuracy_of(dense, val, test, device)
        # on CUDA timed as CUDA graphs: eager, a small pruned model waits on Python, not on the GPU
        batch = params.evaluate.throughput_batch
        rates = compare_throughput({"dense": dense, "pruned": final}, batch, params.evaluate.throughput_iters,
                                   device, rounds=5, cuda_graph=True, per_round=True)
        speed = {name: statistics.median(r) for name, r in rates.items()}
        speedup, spread = speedup_with_spread(rates, "pruned", "dense")
        history, key = project_root() / paths.TIMINGS_FILE, timing_key(dense, batch, device, cuda_graph=True)
        flag = baseline_flag(speed["dense"], read_timings(history, key))
        record_timing(history, key, speed["dense"])
        metrics = {
            "test_acc": acc["test_acc"], "val_acc": acc["val_acc"],
            "dense_test_acc": dense_acc["test_acc"], "dense_val_acc": dense_acc["val_acc"],
            "test_acc_drop": dense_acc["test_acc"] - acc["test_acc"],
            **final_sum, "dense_params": dense_sum["params"], "dense_flops": dense_sum["flops"],
            "param_reduction": 1.0 - final_sum["params"] / dense_sum["params"],
            "flop_ratio": dense_sum["flops"] / final_sum["flops"],
            "throughput_img_s": speed["pruned"], "dense_throughput_img_s": speed["dense"],
            "speedup": None if flag else speedup, "speedup_spread": spread, "speed_flag": flag,
            "device": str(device), "threads": torch.get_num_threads(),
            "throughput_batch": params.evaluate.throughput_batch, "wall_time_s": time.time() - start,
        }
        publish_metrics(run, "evaluate", metrics)
    if flag:
        print(f"warning: {flag}", file=sys.stderr)
    print(f"evaluate: test {acc['test_acc']:.4f} (dense {dense_acc['test_acc']:.4f}), params "
          f"{final_sum['params']:,} / {dense_sum['params']:,}, speedup {speedup:.2f}x (spread {spread:.0%}) "
          f"on {device}{' (withheld)' if flag else ''}")


if __name__ == "__main__":
    stage_main(main)
