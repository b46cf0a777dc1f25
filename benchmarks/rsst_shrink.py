"""Did RSST do its job? One RSST round from a trained checkpoint, and how far the units to remove shrank.

Runs the pipeline's own round (``pruning.rounds.run_round``, ``train.fit``) on the pipeline's layout (``data/``
from the prepare stage, a checkpoint such as ``models/pretrained.pt``) with the settings of a params.yaml,
``prune.method`` forced to rsst; no resume files, no tracking, nothing written unless ``--json``. Prints one
table: per unit kind, the mean group norm of the removed units at the round's start and at the cut, the kept
units' mean norm, removed/kept at the cut (RSST's goal: <= 0.01) and the shrink factor; then validation and
test accuracy before the round, right before and right after the cut, and the wall time.

    python benchmarks/rsst_shrink.py                              # params.yaml, data/, models/pretrained.pt
    python benchmarks/rsst_shrink.py --set prune.rsst_strength=1000 --set prune.rsst_schedule=linear
    python benchmarks/rsst_shrink.py --params params.yaml --data data --checkpoint models/r1.pt --round r2

Runs on CPU or CUDA (``train.device``; bf16 autocast on CUDA, as the pipeline).
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from set_params import set_keys  # noqa: E402  (benchmarks/ is not a package)

from mambaprune.checkpoint import load_checkpoint  # noqa: E402
from mambaprune.config import parse_params  # noqa: E402
from mambaprune.data import full_batches, make_loaders  # noqa: E402
from mambaprune.pruning.rounds import RoundContext, norm_stats, run_round  # noqa: E402
from mambaprune.stage import seed_everything  # noqa: E402
from mambaprune.train import accuracy_of, resolve_device  # noqa: E402
from mambaprune.train import fit as train_fit  # noqa: E402


def load_settings(path: Path, assignments: list[str]):
    """params.yaml with the ``--set key=value`` assignments applied and ``prune.method: rsst``."""
    raw = set_keys(yaml.safe_load(path.read_text()), [*assignments, "prune.method=rsst"])
    return parse_params(raw)


def shrink_round(params, round_name: str, data_dir: Path, checkpoint: Path, dense_path: Path) -> dict:
    """Run one RSST round; return per-kind norms at the start and at the cut, accuracies and wall time."""
    cfg = params.prune
    if round_name not in cfg.rounds:
        raise SystemExit(f"round {round_name!r} is not in prune.rounds ({', '.join(cfg.rounds)})")
    index = cfg.round_index(round_name)
    seed_everything(params.seed + index)
    device = resolve_device(params.train.device)
    model, extra = load_checkpoint(checkpoint, return_extra=True)
    dense = load_checkpoint(dense_path)
    model = model.to(device)
    train, val, test, _ = make_loaders(data_dir, params.train, params.seed, device, params.evaluate.batch_size)
    start = copy.deepcopy(model)

    def fit(m, epochs, hooks=(), tag=""):
        return train_fit(m, train, val, params.train, epochs, hooks=hooks, desc=tag)

    ctx = RoundContext(cfg=cfg, round_index=index, num_rounds=cfg.num_rounds, base_config=dense.config,
                       history=list(extra.get("plans", [])), rewind_state=None, calib=full_batches(train),
                       seed=params.seed)
    t0 = time.perf_counter()
    _, plan, record = run_round(model, ctx, fit, lambda m: accuracy_of(m, val, test, device))
    wall = time.perf_counter() - t0
    at_start, at_cut = norm_stats(start, plan), record["norms_at_cut"]
    kinds = {}
    for kind in ("ssm", "mlp"):
        if f"{kind}_removed_norm_mean" not in at_cut:
            continue
        kinds[kind] = dict(removed_start=at_start[f"{kind}_removed_norm_mean"],
                           removed_cut=at_cut[f"{kind}_removed_norm_mean"],
                           kept_start=at_start[f"{kind}_kept_norm_mean"], kept_cut=at_cut[f"{kind}_kept_norm_mean"],
                           ratio_cut=at_cut[f"{kind}_removed_kept_ratio"],
                           shrink=at_start[f"{kind}_removed_norm_mean"] / at_cut[f"{kind}_removed_norm_mean"])
    acc = {phase: {k: record[phase][k] for k in ("val_acc", "test_acc")}
           for phase in ("before", "before_cut", "after_cut")}
    steps = len(train) * cfg.epochs
    return dict(kinds=kinds, acc=acc, wall_s=wall, steps=steps, device=str(device), round=round_name,
                removed_share=record["target_ratios"], num_rounds=cfg.num_rounds,
                settings={k: getattr(cfg, k) for k in ("rsst_update", "rsst_strength", "rsst_schedule",
                                                       "rsst_exponent", "rsst_penalty", "epochs", "ratio")})


def print_table(result: dict) -> None:
    s = result["settings"]
    print(f"RSST round: update {s['rsst_update']}, strength {s['rsst_strength']:g}, schedule {s['rsst_schedule']} "
          f"(k {s['rsst_exponent']:g}), {s['epochs']} epochs = {result['steps']} steps, on {result['device']}; "
          f"after round {result['round']} of {result['num_rounds']}, removed: "
          + ", ".join(f"{share:.1%} of the {kind} units" for kind, share in result["removed_share"].items()))
    print("| kind | removed norm, start | removed norm, cut | kept norm, start | kept norm, cut | removed/kept at cut "
          "| shrink |")
    print("|---|---|---|---|---|---|---|")
    for kind, k in result["kinds"].items():
        print(f"| {kind} | {k['removed_start']:.4g} | {k['removed_cut']:.3g} | {k['kept_start']:.4g} | "
              f"{k['kept_cut']:.4g} | {k['ratio_cut']:.2e} | ×{k['shrink']:.3g} |")
    a = result["acc"]
    print(f"val acc: before the round {a['before']['val_acc']:.2%}, right before the cut "
          f"{a['before_cut']['val_acc']:.2%}, right after {a['after_cut']['val_acc']:.2%} "
          f"(cut cost {100 * (a['before_cut']['val_acc'] - a['after_cut']['val_acc']):+.2f} points); test acc "
          f"{a['before']['test_acc']:.2%}, {a['before_cut']['test_acc']:.2%}, {a['after_cut']['test_acc']:.2%}")
    print(f"wall time {result['wall_s']:.1f} s (round: training + 3 evaluations)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--params", type=Path, default=Path("params.yaml"))
    ap.add_argument("--data", type=Path, default=Path("data"), help="the prepare stage's output folder")
    ap.add_argument("--checkpoint", type=Path, default=Path("models/pretrained.pt"), help="the round's input")
    ap.add_argument("--dense", type=Path, default=None,
                    help="the dense model all ratios refer to (default: pretrained.pt beside --checkpoint)")
    ap.add_argument("--round", default=None, help="which round of prune.rounds (default: the first)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="override a params.yaml key, as `dvc exp run -S` (repeatable)")
    ap.add_argument("--json", type=Path, default=None, help="also write the numbers here")
    args = ap.parse_args()
    for path in (args.params, args.data, args.checkpoint):
        if not path.exists():
            raise SystemExit(f"{path} not found: run from the project root after `dvc repro pretrain`, or pass "
                             "--params/--data/--checkpoint")
    params = load_settings(args.params, args.set)
    round_name = args.round or next(r for r, parent in params.prune.rounds.items() if parent == "pretrained")
    dense = args.dense or args.checkpoint.parent / "pretrained.pt"
    result = shrink_round(params, round_name, args.data, args.checkpoint, dense)
    print_table(result)
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
