"""The one training loop: pretraining, every pruning round and finetuning all go through ``fit``.

Read ``fit`` top to bottom: set up (device, optimizer, resume), then per epoch: train steps with the LR
from ``lr_at``, validate, record, call the epoch callbacks (CSV, tracking, snapshots), and commit a resume
checkpoint.

Pruning methods plug in through *hooks*: any object with any of
    loss_term(model, progress) -> Tensor | None    added to the loss (its gradient is clipped with the loss's)
    after_backward(model, progress)                after backward and clipping, before the step (edit .grad;
                                                   a penalty gradient added here escapes clipping, as RSST's)
    on_fit_start(total_steps)                      once before training (also on resume): the number of steps
    after_step(model, progress, lr)                after the optimizer step (edit weights, e.g. a proximal step)
    on_epoch_end(epoch, record)                    may add keys to the epoch record
where progress = (global_step + 1) / total_steps ∈ (0, 1].

What happens with each epoch's record is up to the *epoch callbacks*: ``callback(history, model)`` after every
epoch, with the history so far (its last record is the epoch just finished), and once after a resume with the
restored history, so a CSV can be rewritten and a fresh tracking run shown the whole curve. A callback therefore
handles records it has not seen yet, e.g. ``history_csv(path)`` rewrites the whole file.

Determinism: on CPU with the same seed, a run killed after epoch k and rerun with the same
``resume_path``/``resume_key`` ends with bit-identical weights to an uninterrupted run. The loader's order
and augmentation are a pure function of (seed, epoch) (``set_epoch``); the checkpoint carries everything
else (weights, optimizer moments, torch RNG states); the LR is a pure function of the step.
"""

from __future__ import annotations

import math
import os
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm import tqdm

from . import distributed
from .config import TrainCfg
from .errors import TrainingError
from .records import atomic_write, write_csv
from .step import TrainStep, autocast, call_hooks, graph_mode_reason

# On CUDA the loss and gradient norm are checked for NaN/inf every this many steps (one host sync), not after
# every step; a failure still names its exact step, and nothing is saved between the bad step and the check.
CUDA_CHECK_EVERY = 16
CPU_CHECK_EVERY = 1
CUDA_COMMIT_EVERY_S = 60.0  # on CUDA the resume checkpoint is written at most this often (a kill loses less)

__all__ = ["TrainingError", "EpochCallback", "resolve_device", "share_cpu_cores", "build_optimizer", "lr_at",
           "evaluate", "accuracy_of", "history_csv", "fit"]

EpochCallback = Callable[[list[dict], nn.Module], None]  # (history so far, model) -> None; see the docstring


def resolve_device(name: str) -> torch.device:
    """``auto`` → cuda when available, else cpu; ``cuda`` on a machine without CUDA fails clearly."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise TrainingError(f"train.device is {name!r} but CUDA is not available; use 'auto' or 'cpu'")
    device = torch.device(name)
    if device.type == "cuda" and device.index is None:  # the current device: a DDP launcher sets it per rank
        device = torch.device("cuda", torch.cuda.current_device())
    if device.type == "cpu":
        share_cpu_cores()
    return device


def share_cpu_cores() -> int:
    """Give this process the cores ÷ the number of DVC queue workers running on the machine; return its threads.

    ``dvc queue start -j N`` runs N experiments at once, and each stage's torch would start one thread per core:
    on 2 cores, 2 workers ran ~2x slower than one after the other and corrupted each other's timings. Only a
    stage run by the queue (in DVC's temp copy, ``<DVC_ROOT>/.dvc/tmp/exps/``) is changed, so ``dvc repro`` and
    ``dvc exp run`` keep their results whatever else runs; one worker changes nothing; ``OMP_NUM_THREADS`` wins.
    """
    root = os.environ.get("DVC_ROOT")
    queued = bool(root) and Path.cwd().resolve().is_relative_to(Path(root).resolve() / ".dvc" / "tmp" / "exps")
    workers = _queue_workers() if queued else 0
    if workers > 1 and not os.environ.get("OMP_NUM_THREADS"):
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        torch.set_num_threads(max(1, cores // workers))
    return torch.get_num_threads()


def _queue_workers() -> int:
    """Running ``dvc exp queue-worker`` processes (one per ``-j``), read from /proc; 0 where there is none."""
    count = 0
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue  # gone meanwhile, or not ours to read
        count += b"exp" in argv and b"queue-worker" in argv
    return count


def build_optimizer(model: nn.Module, cfg: TrainCfg, lr: float, capturable: bool = False) -> torch.optim.Optimizer:
    """AdamW or SGD with two groups: weights decay; ``model.no_weight_decay()`` names and 1-D params don't.

    Decaying A_log/D would pull the SSM dynamics towards A = -1, D = 0, and decaying norms/biases only
    hurts; the group order is fixed (decay, no-decay) so optimizer states line up across runs. On CUDA the
    fused AdamW kernel is used (call after moving the model to its device); ``capturable``: its step may be
    captured in a CUDA graph (state and LR stay on the device).
    """
    skip = set(model.no_weight_decay()) if hasattr(model, "no_weight_decay") else set()
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim < 2 or name in skip else decay).append(p)
    groups = [g for g in (dict(params=decay, weight_decay=cfg.weight_decay),
                          dict(params=no_decay, weight_decay=0.0)) if g["params"]]
    if cfg.optimizer == "adamw":
        on_cuda = all(p.is_cuda for g in groups for p in g["params"])
        return torch.optim.AdamW(groups, lr=lr, fused=on_cuda or None,  # fused: one kernel for all params
                                 capturable=capturable)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=cfg.momentum, nesterov=False)
    raise ValueError(f"train.optimizer must be 'adamw' or 'sgd', got {cfg.optimizer!r}")


def lr_at(step: int, total_steps: int, warmup_steps: int, base_lr: float, schedule: str,
          min_lr_ratio: float) -> float:
    """LR of 0-based ``step``: linear warm-up to base_lr over ``warmup_steps`` (step 0 gets base/warmup,
    never 0), then constant or cosine from base_lr (first step after warm-up) to base_lr*min_lr_ratio
    (last step, ``total_steps - 1``). A pure function, so a resumed run needs no scheduler state."""
    if step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    if schedule == "constant":
        return base_lr
    if schedule != "cosine":
        raise ValueError(f"schedule must be 'cosine' or 'constant', got {schedule!r}")
    min_lr = base_lr * min_lr_ratio
    t = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps - 1))
    return min_lr + 0.5 * (base_lr - min_lr) * (1.0 + math.cos(math.pi * t))


@torch.no_grad()
def evaluate(model: nn.Module, loader: Iterable, device: torch.device | str) -> dict[str, float]:
    """Mean cross-entropy and accuracy over ``loader``, on this process only: under DDP every rank gets the
    whole val/test split (see ``data.make_loaders``), so no collective is needed and rank 0 alone may call it."""
    device = torch.device(device)
    was_training = model.training
    model.eval()
    totals = torch.zeros(3, dtype=torch.float64, device=device)  # loss sum, correct, count
    for x, y in loader:
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        with autocast(device):
            logits = model(x)
        logits = logits.float()
        totals[0] += F.cross_entropy(logits, y, reduction="sum").double()
        totals[1] += (logits.argmax(1) == y).sum()
        totals[2] += y.numel()
    model.train(was_training)
    loss_sum, correct, n = totals.tolist()
    if n == 0:
        raise ValueError("evaluate: the loader yielded no samples")
    return dict(loss=loss_sum / n, acc=correct / n)


def accuracy_of(model: nn.Module, val_loader: Iterable, test_loader: Iterable, device) -> dict[str, float]:
    """Validation and test accuracy and loss (test is reported, never used to choose anything)."""
    val, test = evaluate(model, val_loader, device), evaluate(model, test_loader, device)
    return {"val_acc": val["acc"], "val_loss": val["loss"], "test_acc": test["acc"], "test_loss": test["loss"]}


def _progress_disabled() -> bool:
    return (os.environ.get("MAMBAPRUNE_NO_PROGRESS") == "1" or not sys.stderr.isatty()
            or not distributed.is_main())


def history_csv(path: Path | str) -> EpochCallback:
    """An epoch callback keeping ``path`` a CSV of the history so far (``records.write_csv``; columns are the union
    of record keys, hooks may add some)."""
    return lambda history, model: write_csv(path, history)


def _save_resume(path: Path, state: dict) -> None:
    """Atomic (``records.atomic_write``): a kill mid-write leaves the previous checkpoint intact."""
    atomic_write(path, lambda f: torch.save(state, f))


def _load_resume(path: Path | None, key: str, model: nn.Module, epochs: int, steps_per_epoch: int,
                 desc: str) -> dict | None:
    """The resume state when ``path`` holds a readable checkpoint of this very run, else None (with a note)."""
    if path is None or not Path(path).exists():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        found = (state["key"], state["epochs"], state["steps_per_epoch"])
        shapes_match = ({k: v.shape for k, v in state["model"].items()}
                        == {k: v.shape for k, v in model.state_dict().items()})
    except Exception as e:  # truncated, corrupt, or not ours: start fresh rather than crash
        print(f"[{desc}] note: ignoring unreadable resume checkpoint {path} ({type(e).__name__}: {e}); "
              "starting fresh", flush=True)
        return None
    if found != (key, epochs, steps_per_epoch):
        print(f"[{desc}] note: ignoring resume checkpoint {path}: it belongs to another run "
              f"(key/epochs/steps {found} != {(key, epochs, steps_per_epoch)}); starting fresh", flush=True)
        return None
    if not shapes_match:
        print(f"[{desc}] note: ignoring resume checkpoint {path}: its tensors do not match the model; "
              "starting fresh", flush=True)
        return None
    return state


def _rng_state(device: torch.device) -> dict:
    state = {"cpu": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _set_rng_state(state: dict, device: torch.device) -> None:
    torch.set_rng_state(state["cpu"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def fit(model: nn.Module, train_loader, val_loader, cfg: TrainCfg, epochs: int, *, lr: float | None = None,
        hooks: Iterable = (), callbacks: Iterable[EpochCallback] = (), resume_path: Path | None = None,
        resume_key: str = "", desc: str = "train") -> list[dict]:
    """Train ``model`` in place for ``epochs`` epochs; return the per-epoch history (a list of records).

    Each epoch: ``train_loader.set_epoch(epoch)``, steps with lr = ``lr_at(...)``, validation, then the
    record goes to hooks' ``on_epoch_end`` and the history, and ``callbacks`` see the history; last, the resume
    checkpoint commits the epoch. After a resume the callbacks see the restored history first.

    Under DDP (a process group is initialised, see ``distributed``): ``train_loader`` must be this rank's
    shard (``make_loaders(..., rank=, world_size=)``; ``cfg.batch_size`` stays the global batch), the model
    is wrapped in ``DistributedDataParallel``, the loss checked and the epoch's train loss/accuracy reported
    are the means over all ranks, every rank runs validation on the whole split, and rank 0 alone calls the
    callbacks and writes the resume checkpoint; on resume rank 0 reads the checkpoint and broadcasts it, so
    every rank continues from the same state. Hooks run on every rank on the unwrapped model;
    ``after_backward`` sees the already averaged (identical) gradients.
    """
    if epochs == 0:
        return []
    hooks, callbacks = list(hooks), list(callbacks)
    device = resolve_device(cfg.device)
    model.to(device)
    base_lr = cfg.lr if lr is None else lr
    steps_per_epoch = len(train_loader)
    if steps_per_epoch == 0:
        raise TrainingError(f"{desc}: the train loader yields no batches; lower train.batch_size or use more "
                            "training data")
    total_steps = epochs * steps_per_epoch
    warmup_steps = min(total_steps, round(cfg.warmup_epochs * steps_per_epoch))
    call_hooks(hooks, "on_fit_start", total_steps)
    rank0, ddp = distributed.is_main(), distributed.is_distributed()
    no_graph = graph_mode_reason(cfg.cuda_graph, device, ddp, hooks, cfg.optimizer)
    if no_graph and rank0 and (cfg.cuda_graph == "on" or device.type == "cuda"):
        print(f"[{desc}] training eagerly: {no_graph}", flush=True)
    optimizer = build_optimizer(model, cfg, base_lr, capturable=no_graph is None)
    if ddp and getattr(train_loader, "world_size", None) not in (None, torch.distributed.get_world_size()):
        raise TrainingError(f"{desc}: the train loader is sharded for world_size {train_loader.world_size} but "
                            f"{torch.distributed.get_world_size()} processes train; build it with "
                            "make_loaders(..., rank=, world_size=)")

    # ---- resume: continue after the last committed epoch of this very run
    history: list[dict] = []
    start_epoch = 1
    state = _load_resume(resume_path, resume_key, model, epochs, steps_per_epoch, desc) if rank0 else None
    state = distributed.broadcast_object(state)  # rank 0 decides; every rank resumes from the same state
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        history = [dict(rec) for rec in state["history"]]
        _set_rng_state(state["rng"], device)
        start_epoch = state["epoch"] + 1
        if rank0:
            print(f"[{desc}] resuming from {resume_path} after epoch {state['epoch']}/{epochs}", flush=True)
            for callback in callbacks:
                callback(history, model)
        del state

    # ---- the module that runs the steps: compiled (CUDA only) and/or DDP-wrapped
    net = model
    if ddp:
        net = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda"
                                                  else None, find_unused_parameters=False)
    if cfg.compile and device.type == "cuda":
        net = torch.compile(net)
    step_fn = TrainStep(net, model, optimizer, hooks, device, cfg.label_smoothing, cfg.grad_clip,
                        graph=no_graph is None, log=lambda msg: print(f"[{desc}] {msg}", flush=True))
    step_fn.prepare_optimizer()
    check_every = CUDA_CHECK_EVERY if device.type == "cuda" else CPU_CHECK_EVERY
    last_commit = time.perf_counter()

    for epoch in range(start_epoch, epochs + 1):
        train_loader.set_epoch(epoch)
        model.train()
        t0 = time.perf_counter()
        loss_sum = torch.zeros((), device=device)
        correct = torch.zeros((), dtype=torch.long, device=device)
        seen = 0
        pending: list = []  # (step in epoch, loss, grad norm) not yet checked for NaN/inf
        loss_value = float("nan")
        bar = tqdm(total=steps_per_epoch, desc=f"{desc} {epoch}/{epochs}", disable=_progress_disabled(),
                   leave=False, dynamic_ncols=True)
        for i, (x, y) in enumerate(train_loader):
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            step = (epoch - 1) * steps_per_epoch + i
            progress = (step + 1) / total_steps
            lr_now = lr_at(step, total_steps, warmup_steps, base_lr, cfg.schedule, cfg.min_lr_ratio)
            out = step_fn(x, y, lr_now, progress)  # forward, loss, backward, clip, hooks, optimizer step

            # non-finite checks, in batches of `check_every` steps so the GPU never waits for the host
            # (copies: a replayed graph overwrites its outputs at the next step)
            pending.append((i, out.loss.clone(), None if out.grad_norm is None else out.grad_norm.clone()))
            if len(pending) == check_every or i + 1 == steps_per_epoch:
                problem, bad_step, loss_value = _first_nonfinite(pending, ddp)
                pending.clear()
                if problem:
                    bar.close()
                    raise _failure(desc, f"{problem} at epoch {epoch}, step {bad_step + 1}/{steps_per_epoch}",
                                   cfg, base_lr, resume_path, history)

            labels = y.argmax(1) if y.ndim == 2 else y  # Mixup/CutMix targets: the dominant label
            n = labels.numel()
            seen += n
            loss_sum += out.data_loss * n
            correct += (out.logits.argmax(1) == labels).sum()
            bar.update(1)
            if not bar.disable and (i % 10 == 0 or i + 1 == steps_per_epoch):
                bar.set_postfix(loss=f"{loss_value:.3f}", acc=f"{correct.item() / seen:.3f}",
                                img_s=f"{seen / (time.perf_counter() - t0):.0f}", refresh=False)
        bar.close()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        train_time = time.perf_counter() - t0
        bad = [name for name, t in model.state_dict().items() if t.is_floating_point() and not t.isfinite().all()]
        if bad:  # e.g. inf gradients with grad_clip off: stop before anything saves these weights
            raise _failure(desc, f"non-finite weights after epoch {epoch} ({bad[0]}, ...)", cfg, base_lr,
                           resume_path, history)

        # ---- validate, record, report (train loss/accuracy over all ranks' samples)
        val = evaluate(model, val_loader, device)
        loss_total, correct_total, seen = distributed.all_sum(torch.stack([
            loss_sum.double(), correct.double(), torch.tensor(float(seen), dtype=torch.float64, device=device)
        ])).tolist()
        seen = max(seen, 1)
        record = dict(epoch=epoch, train_loss=loss_total / seen, train_acc=correct_total / seen,
                      val_loss=val["loss"], val_acc=val["acc"], lr=lr_now,
                      epoch_time_s=time.perf_counter() - t0, img_per_s=seen / train_time)
        call_hooks(hooks, "on_epoch_end", epoch, record)
        history.append(record)
        if rank0:
            print(f"[{desc}] epoch {epoch}/{epochs}  train loss {record['train_loss']:.4f} acc "
                  f"{record['train_acc']:.4f}  val loss {record['val_loss']:.4f} acc {record['val_acc']:.4f}  "
                  f"lr {lr_now:.2e}  {record['img_per_s']:.0f} img/s", flush=True)
        for callback in callbacks if rank0 else ():
            callback(history, model)

        # ---- commit the epoch (last, so a kill before this point reruns the whole epoch). On CUDA an epoch can take
        # seconds and a ~200 MB checkpoint a good share of one: commit every CUDA_COMMIT_EVERY_S and at the end.
        due = (device.type != "cuda" or epoch == epochs
               or time.perf_counter() - last_commit >= CUDA_COMMIT_EVERY_S)
        if rank0 and resume_path is not None and due:
            last_commit = time.perf_counter()
            _save_resume(Path(resume_path), dict(
                key=resume_key, epoch=epoch, epochs=epochs, steps_per_epoch=steps_per_epoch,
                model=model.state_dict(), optimizer=optimizer.state_dict(),
                history=[dict(rec) for rec in history], rng=_rng_state(device)))
    return history


def _first_nonfinite(pending: list, ddp: bool) -> tuple[str | None, int, float]:
    """(what went wrong at the first bad step of ``pending`` or None, that step, the last step's loss), read
    with one host sync. Under DDP the loss is the mean over ranks and the clipped norm is already identical,
    so every rank takes the same branch (a lone raise would deadlock)."""
    losses = torch.stack([loss.float() for _, loss, _ in pending])
    if ddp:
        losses = distributed.all_sum(losses) / torch.distributed.get_world_size()
    norms = torch.stack([norm.float() if norm is not None else losses.new_zeros(()) for _, _, norm in pending])
    loss_values, norm_values = torch.stack([losses, norms]).tolist()
    for (step, _, norm), loss_value, norm_value in zip(pending, loss_values, norm_values):
        if not math.isfinite(loss_value):
            return f"non-finite loss ({loss_value})", step, loss_values[-1]
        if norm is not None and not math.isfinite(norm_value):
            return f"non-finite gradient norm ({norm_value})", step, loss_values[-1]
    return None, -1, loss_values[-1]


def _failure(desc: str, what: str, cfg: TrainCfg, lr: float, resume_path, history: list[dict]) -> TrainingError:
    """The error for a run that went non-finite: where, what survived, and what to change."""
    kept = (f"; the resume checkpoint of epoch {history[-1]['epoch']} at {resume_path} is kept"
            if resume_path is not None and history else "")
    return TrainingError(f"{desc}: {what}{kept}. Likely fixes: lower train.lr (now {lr:g}), enable or tighten "
                         f"train.grad_clip (now {cfg.grad_clip:g}), check the data for NaN/inf or "
                         "unnormalised inputs.")
