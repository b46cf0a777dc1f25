"""Stage `prune@<round>`: one pruning round (`prune.method`) on the round's input checkpoint (`prune.rounds`).
Usage: python stages/prune.py <round>. Data-parallel with `MAMBAPRUNE_NPROC=N` (or under torchrun): the units to
cut are chosen on rank 0 and broadcast; rank 0 writes."""

import sys
import time

from mambaprune import paths
from mambaprune.checkpoint import check_fits_data, load_checkpoint, load_matching, save_checkpoint
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
    params, name, start = load_params(), sys.argv[1], time.time()
    prune, stage = params.prune, f"prune@{name}"
    seed_everything(params.seed + prune.round_index(name))
    rank, world_size, device = init_stage(params.train)
    dense_path, source = paths.checkpoint("pretrained"), paths.checkpoint(prune.rounds[name])
    dense = load_checkpoint(dense_path)
    check_fits_data(dense, dense_path, load_meta(paths.DATA_DIR))
    model, extra = load_matching(source, dense, dense_path, return_extra=True)
    rewind = rewind_source(prune)  # None: retrain from the trained weights
    rewind_state = load_matching(rewind, dense, dense_path, widths=True).state_dict() if rewind else None
    train, val, test, _ = make_loaders(paths.DATA_DIR, params.train, params.seed, device, params.evaluate.batch_size,
                                       rank=rank, world_size=world_size)
    ctx = RoundContext(cfg=prune, round_index=prune.round_index(name), num_rounds=prune.num_rounds,
                       base_config=dense.config, history=list(extra.get("plans", [])), calib=full_batches(train),
                       rewind_state=rewind_state, seed=params.seed, wrap_choice=on_rank0)
    round_params = {k: v for k, v in vars(prune).items() if k not in ("rounds", "last")}  # the chain aside
    key = fingerprint(name, params.seed, params.train, round_params, ctx.round_index, ctx.num_rounds, files=(source,))
    logged = {"prune": round_params, "round": name, "round_index": ctx.round_index, "num_rounds": ctx.num_rounds}
    with stage_run(stage, logged) as run:
        fit = bind_fit(params.train, stage, train, val, run, key)
        model, plan, record = run_round(model.to(device), ctx, fit, lambda m: accuracy_of(m, val, test, device))
        if not is_main():
            return
        save_checkpoint(model, paths.checkpoint(name), plans=[*ctx.history, plan])
        metrics = {"round": name, **round_metrics(model, record, dense), "wall_time_s": time.time() - start}
        publish_metrics(run, stage, metrics)
        for step, lam in lambda_points(record.get("lambda_trace", [])):
            run.log_metrics({"rsst_lambda": lam}, step=step)
        for warning in metrics["selection_warnings"]:
            print(f"warning: {warning}", file=sys.stderr)
    clear_resume(stage)
    print(f"{stage}: params {metrics['params']:,}  val {metrics['val_acc_after']:.4f}  "
          f"test {metrics['test_acc_after']:.4f}")


if __name__ == "__main__":
    stage_main(main, data_parallel=True)
