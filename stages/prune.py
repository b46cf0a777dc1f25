"""Stage `prune@<round>`: one pruning round (`prune.method`) on the round's input checkpoint.

Usage: python stages/prune.py <round>   (the round names and their inputs come from `prune.rounds`)
Data-parallel with `torchrun --nproc_per_node N stages/prune.py <round>` or `MAMBAPRUNE_NPROC=N`: the units to
cut are chosen on rank 0 and broadcast; rank 0 writes.
"""

import math
import sys
import time

from mambaprune import paths
from mambaprune.checkpoint import load_checkpoint, save_checkpoint
from mambaprune.config import ConfigError, load_params
from mambaprune.counting import count_params
from mambaprune.data import load_meta, make_loaders
from mambaprune.distributed import is_main
from mambaprune.pruning.rounds import RoundContext, run_round
from mambaprune.runtime import (
    accuracy_of,
    bind_fit,
    check_fits_data,
    check_same_arch,
    choice_on_rank0,
    clear_resume,
    fingerprint,
    full_batches,
    init_stage,
    publish_metrics,
    seed_everything,
    stage_main,
    tracked_run,
)


def rewind_source(params):
    """The checkpoint `prune.rewind` returns to, checked before any work starts."""
    p = params.prune
    if p.rewind == "none" or p.method == "rsst":
        return None
    if p.rewind == "init" or p.rewind_epoch == 0:
        return paths.init_checkpoint()
    return paths.epoch_checkpoint(p.rewind_epoch)  # in range: load_params checked it (config._check_rewind)


def min_keep_warnings(cfg, record: dict, base_config, config) -> list[str]:
    """Per unit kind, a warning when min_keep/round_to kept more units than the asked ratio allows, naming the
    effective ratio. ``select_units`` (magnitude, rsst) words its own, also when it has none: the layer-wise test
    below means nothing for a global ranking. Refill's schedule reports no warnings, so it gets this check."""
    out = []
    floor = math.ceil(cfg.min_keep / cfg.round_to) * cfg.round_to
    for kind, asked in record["target_ratios"].items():
        selection = record["selection"].get(kind, {})
        if "warnings" in selection:
            out += [f"{kind}: {w}" for w in selection["warnings"]]
            continue
        base, kept = list(base_config[f"{kind}_widths"]), list(config[f"{kind}_widths"])
        raised = [f"layer {i}: {w * (1 - asked):.1f}->{n}" for i, (w, n) in enumerate(zip(base, kept))
                  if w * (1 - asked) < min(floor, w) and n == min(floor, w)]
        if raised:
            effective = 1.0 - sum(kept) / sum(base)
            out.append(f"{kind}: min_keep={cfg.min_keep} (round_to={cfg.round_to}) raised {len(raised)} layer(s) "
                       f"above their target ({', '.join(raised)}); effective ratio {effective:.4f} instead of the "
                       f"asked {asked:.4f}")
    return out


def main() -> None:
    if len(sys.argv) != 2:
        raise ConfigError("usage: python stages/prune.py <round>, e.g. r1")
    params, name = load_params(), sys.argv[1]
    if name not in params.prune.rounds:
        raise ConfigError(f"round {name!r} is not in prune.rounds ({', '.join(params.prune.rounds)})")
    start = time.time()
    seed_everything(params.seed + params.prune.round_index(name))
    rank, world_size, device = init_stage(params.train)
    source = paths.checkpoint(params.prune.rounds[name])
    model, extra = load_checkpoint(source, return_extra=True)
    dense_path = paths.checkpoint("pretrained")
    dense = load_checkpoint(dense_path)
    check_fits_data(dense, dense_path, load_meta(paths.DATA_DIR))
    check_same_arch(model, source, dense, dense_path)
    rewind_path = rewind_source(params)
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
    with tracked_run(stage, logged) as run:
        ctx = RoundContext(cfg=params.prune, round_index=params.prune.round_index(name),
                           num_rounds=params.prune.num_rounds, base_config=dense.config,
                           history=list(extra.get("plans", [])), rewind_state=rewind_state,
                           calib=full_batches(train), seed=params.seed, wrap_choice=choice_on_rank0)
        fit = bind_fit(params.train, stage, train, val, run, key)
        model, plan, record = run_round(model, ctx, fit, lambda m: accuracy_of(m, val, test, device))
        if not is_main():
            return
        save_checkpoint(model, paths.checkpoint(name), plans=[*ctx.history, plan])
        metrics = {
            "round": name, **{f"{k}_{phase}": record[phase][k] for k in ("val_acc", "test_acc")
                              for phase in ("before", "before_cut", "after_cut", "after")},
            **{k: record[k] for k in ("params", "flops", "ssm_widths", "mlp_widths")},
            "sparsity": 1.0 - record["params"] / count_params(dense),
            "norms_at_cut": record["norms_at_cut"], "target_ratios": record["target_ratios"],
            "selection_warnings": min_keep_warnings(params.prune, record, dense.config, model.config),
            "wall_time_s": time.time() - start,
        }
        if "lambda_trace" in record:
            trace = record["lambda_trace"]
            metrics["rsst_lambda_final"] = trace[-1] if trace else 0.0
            metrics["rsst_lambda_trace"] = trace[:: max(1, len(trace) // 50)]
            for i, lam in enumerate(trace):
                if i % max(1, len(trace) // 200) == 0:
                    run.log_metrics({"rsst_lambda": lam}, step=i)
        publish_metrics(run, stage, metrics)
        run.log_metrics({f"cut/{k}": v for k, v in record["norms_at_cut"].items()})
        for w in metrics["selection_warnings"]:
            print(f"warning: {w}", file=sys.stderr)
    clear_resume(stage)
    print(f"{stage}: params {metrics['params']:,}  val {metrics['val_acc_after']:.4f}  "
          f"test {metrics['test_acc_after']:.4f}")


if __name__ == "__main__":
    stage_main(main, data_parallel=True)
