"""Stage `evaluate`: test accuracy, size and measured inference speed of the final model vs the dense one."""

import time

from mambaprune import paths
from mambaprune.checkpoint import check_fits_data, load_checkpoint, load_matching
from mambaprune.cli import stage_main
from mambaprune.config import load_params
from mambaprune.counting import size_report
from mambaprune.data import eval_loaders, load_meta
from mambaprune.records import publish_metrics
from mambaprune.speed import compare_throughput
from mambaprune.tracking import stage_run
from mambaprune.train import accuracy_of, resolve_device


def main() -> None:
    params = load_params()
    start = time.time()
    device = resolve_device(params.train.device)
    final_path, dense_path = paths.checkpoint("finetuned"), paths.checkpoint("pretrained")
    dense = load_checkpoint(dense_path)
    check_fits_data(dense, dense_path, load_meta(paths.DATA_DIR))
    final = load_matching(final_path, dense, dense_path)
    final, dense = final.to(device), dense.to(device)
    val, test = eval_loaders(paths.DATA_DIR, params.seed, device, params.evaluate.batch_size)
    with stage_run("evaluate", {"evaluate": params.evaluate.__dict__}) as run:
        acc, dense_acc = accuracy_of(final, val, test, device), accuracy_of(dense, val, test, device)
        # on CUDA timed as CUDA graphs: eager, a small pruned model waits on Python, not on the GPU
        speed = compare_throughput({"dense": dense, "pruned": final}, params.evaluate.throughput_batch,
                                   params.evaluate.throughput_iters, device, cuda_graph=True)
        metrics = {
            "test_acc": acc["test_acc"], "val_acc": acc["val_acc"],
            "dense_test_acc": dense_acc["test_acc"], "dense_val_acc": dense_acc["val_acc"],
            "test_acc_drop": dense_acc["test_acc"] - acc["test_acc"],
            **size_report(final, dense), "img_per_s": speed["pruned"], "dense_img_per_s": speed["dense"],
            "speedup": speed["pruned"] / speed["dense"], "device": str(device),
            "throughput_batch": params.evaluate.throughput_batch, "wall_time_s": time.time() - start,
        }
        publish_metrics(run, "evaluate", metrics)
    print(f"evaluate: test {acc['test_acc']:.4f} (dense {dense_acc['test_acc']:.4f}), params "
          f"{metrics['params']:,} / {metrics['dense_params']:,}, speedup {metrics['speedup']:.2f}x on {device}")


if __name__ == "__main__":
    stage_main(main)
