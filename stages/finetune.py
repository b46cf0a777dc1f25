"""Stage `finetune`: train the last round's model `finetune.epochs` more → models/finetuned.pt.

Data-parallel with `torchrun --nproc_per_node N stages/finetune.py` or `MAMBAPRUNE_NPROC=N`; rank 0 writes.
"""

import time

from mambaprune import paths
from mambaprune.checkpoint import check_fits_data, load_checkpoint, save_checkpoint
from mambaprune.cli import stage_main
from mambaprune.config import load_params
from mambaprune.counting import size_report
from mambaprune.data import load_meta, make_loaders
from mambaprune.distributed import is_main
from mambaprune.records import publish_metrics
from mambaprune.stage import bind_fit, clear_resume, fingerprint, init_stage, seed_everything
from mambaprune.tracking import stage_run
from mambaprune.train import accuracy_of


def main() -> None:
    params = load_params()
    start = time.time()
    seed_everything(params.seed + 1000)
    rank, world_size, device = init_stage(params.train)
    source = paths.checkpoint(params.prune.last)
    model, extra = load_checkpoint(source, return_extra=True)
    check_fits_data(model, source, load_meta(paths.DATA_DIR))
    model = model.to(device)
    train, val, test, _ = make_loaders(paths.DATA_DIR, params.train, params.seed, device, params.evaluate.batch_size,
                                       rank=rank, world_size=world_size)
    key = fingerprint("finetune", params.seed, params.train, params.finetune, files=(source,))
    with stage_run("finetune", {"finetune": params.finetune.__dict__, "last_round": params.prune.last}) as run:
        fit = bind_fit(params.train, "finetune", train, val, run, key, lr=params.train.lr * params.finetune.lr_scale)
        history = fit(model, params.finetune.epochs, tag="train")
        if not is_main():
            return
        acc = accuracy_of(model, val, test, device)
        save_checkpoint(model, paths.checkpoint("finetuned"), plans=list(extra.get("plans", [])))
        metrics = {**acc, **size_report(model), "epochs": len(history), "wall_time_s": time.time() - start}
        publish_metrics(run, "finetune", metrics)
    clear_resume("finetune")
    print(f"finetune: val {acc['val_acc']:.4f} test {acc['test_acc']:.4f}")


if __name__ == "__main__":
    stage_main(main, data_parallel=True)
