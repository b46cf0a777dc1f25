"""Stage `prune@<round>`: one pruning round (`prune.method`) on the round's input checkpoint.

Usage: python stages/prune.py <round>   (the round names and their inputs come from `prune.rounds`)
Data-parallel with `torchrun --nproc_per_node N stages/prune.py <round>` or `MAMBAPRUNE_NPROC=N`: the units to
cut are chosen on rank 0 and broadcast; rank 0 writes.
"""

import sys
import time

from mambaprune import paths
from mambaprune.checkpoint import check_fits_data, check_same_arch, load_checkpoint, save_checkpoint
from mambaprune.cli import stage_main
from mambaprune.config import ConfigError, load_params
from mambaprune.data import full_batches, load_meta, make_loaders
from mambaprune.distributed import is_main, on_rank0
from mambaprune.pruning.rounds import RoundContext, lambda_points, rewind_source, round_metrics, run_round
from mambaprune.records import publish_metrics
from mambaprune.stage import bind_fit, clear_resume, fingerprint, init_stage, seed_everything
from mambaprune.tracking import stage_run
from mambaprune.train import accuracy_of


def main() -> None:
    if len(sys.argv) != 2:
        raise ConfigError("usage: python stages/prune.py <round>, e.g. r1")
    params, name = load_params(), sys.argv[1]
    start = time.time()
    seed_everything(params.seed + params.prune.round_index(name))
    rank, world_size, device = init_stage(params.train)
    source = paths.checkpoint(params.prune.rounds[name])
    model, extra = load_checkpoint(source, return_extra=True)
    dense_path = paths.checkpoint("pretrained")
    dense = load_checkpoint(dense_path)
    check_fits_data(dense, dense_path, load_meta(paths.DATA_DIR))
    check_same_arch(model, source, dense, dense_path)
    rewind_path = rewind_source(params.prune)
    rewind_state = None
    if rewind_path:
        rewind = load_checkpoint(rewind_path)
        check_same_arch(rewind, rewind_path, dense, dense_path, widths=True)
        rewind_state = rewind.state_dict()
    model = model.to(device)
    train, val, test, _ = make_loaders(paths.DATA_DIR, params.train, params.seed, device, params.evaluate.batch_size,
                                       rank=rank, world_size=world_size)
    key = fingerprint(name, params.seed, params.train, params.prune.__dict__ | {"rounds": None, "last": None},
                      params.prune.round_index(name), params.prune.num_rounds, files=(source,))
    stage = f"prune@{name}"
    logged = {"prune": {k: v for k, v in params.prune.__dict__.items() if k not in ("rounds", "last")},
              "round": name, "round_index": params.prune.round_index(name), "num_rounds": params.prune.num_rounds}
    with stage_run(stage, logged) as run:
        ctx = RoundContext(cfg=params.prune, round_index=params.prune.round_index(name),
                           num_rounds=params.prune.num_rounds, base_config=dense.config,
                           history=list(extra.get("plans", [])), rewind_state=rewind_state,
                           calib=full_batches(train), seed=params.seed, wrap_choice=on_rank0)
        fit = bind_fit(params.train, stage, train, val, run, key)
        model, plan, record = run_round(model, ctx, fit, lambda m: accuracy_of(m, val, test, device))
        if not is_main():
            return
        save_checkpoint(model, paths.checkpoint(name), plans=[*ctx.history, plan])
        metrics = {"round": name, **round_metrics(model, record, dense), "wall_time_s": time.time() - start}
        publish_metrics(run, stage, metrics)
        for step, lam in lambda_points(record.get("lambda_trace", [])):
            run.log_metrics({"rsst_lambda": lam}, step=step)
        for w in metrics["selection_warnings"]:
            print(f"warning: {w}", file=sys.stderr)
    clear_resume(stage)
    print(f"{stage}: params {metrics['params']:,}  val {metrics['val_acc_after']:.4f}  "
          f"test {metrics['test_acc_after']:.4f}")


if __name__ == "__main__":
    stage_main(main, data_parallel=True)
