"""Stage `pretrain`: train the dense model → models/pretrained.pt, models/init.pt and the early-epoch snapshots
models/rewind/epoch<k>.pt that `prune.rewind` can return to. Data-parallel with `MAMBAPRUNE_NPROC=N` (or under
torchrun); rank 0 writes."""

import time

from mambaprune import paths
from mambaprune.checkpoint import save_checkpoint
from mambaprune.cli import stage_main
from mambaprune.config import load_params
from mambaprune.counting import size_report
from mambaprune.data import make_loaders
from mambaprune.distributed import is_main
from mambaprune.records import publish_metrics
from mambaprune.stage import (
    bind_fit,
    build_model,
    clear_resume,
    fingerprint,
    init_stage,
    publish_rewind_snapshots,
    rewind_snapshots,
    seed_everything,
)
from mambaprune.tracking import stage_run
from mambaprune.train import accuracy_of


def main() -> None:
    params = load_params()
    start = time.time()
    seed_everything(params.seed)  # the same on every rank: the same initial weights
    rank, world_size, device = init_stage(params.train)
    train, val, test, meta = make_loaders(paths.DATA_DIR, params.train, params.seed, device,
                                          params.evaluate.batch_size, rank=rank, world_size=world_size)
    model = build_model(params, meta).to(device)
    if is_main():
        save_checkpoint(model, paths.init_checkpoint())
    key = fingerprint("pretrain", params.seed, params.model, params.train, params.pretrain,
                      files=(paths.meta_file(), paths.split_file("train")))
    snapshots = paths.snapshot_dir("pretrain")
    logged = {"model": params.model.__dict__, "train": params.train.__dict__, "pretrain": params.pretrain.__dict__,
              "seed": params.seed}
    with stage_run("pretrain", logged) as run:
        fit = bind_fit(params.train, "pretrain", train, val, run, key)
        history = fit(model, params.pretrain.epochs, tag="train", callbacks=[rewind_snapshots(snapshots)])
        if not is_main():
            return
        acc = accuracy_of(model, val, test, device)
        save_checkpoint(model, paths.checkpoint("pretrained"), plans=[])
        publish_rewind_snapshots(snapshots, params.pretrain.epochs)
        metrics = {**acc, **size_report(model), "epochs": len(history), "wall_time_s": time.time() - start}
        publish_metrics(run, "pretrain", metrics)
    clear_resume("pretrain")
    print(f"pretrain: val {acc['val_acc']:.4f} test {acc['test_acc']:.4f} params {metrics['params']:,}")


if __name__ == "__main__":
    stage_main(main, data_parallel=True)
