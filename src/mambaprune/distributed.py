"""Data-parallel training across processes (PyTorch DDP, launched by ``torchrun``), in a few helpers.

Under ``torchrun`` (RANK/WORLD_SIZE/LOCAL_RANK/MASTER_ADDR/MASTER_PORT set) ``init_from_env`` joins the
process group: NCCL with one GPU per process (``cuda:LOCAL_RANK``) on CUDA, gloo on CPU. Without it (or with
WORLD_SIZE=1) every helper is a no-op, so single-process code paths stay as they were.

``MAMBAPRUNE_NPROC=N`` (N > 1) makes a training stage started as ``python stages/x.py`` re-exec itself
under ``torchrun --standalone --nproc_per_node N`` (``relaunch_under_torchrun``): ``dvc repro`` needs no
change to dvc.yaml.
"""

from __future__ import annotations

import functools
import os
import sys

import torch
import torch.distributed as dist

__all__ = ["init_from_env", "is_distributed", "is_main", "barrier", "cleanup", "broadcast_object", "on_rank0",
           "all_sum", "relaunch_under_torchrun"]

NPROC_ENV = "MAMBAPRUNE_NPROC"


def init_from_env(device: str = "auto") -> tuple[int, int, int]:
    """(rank, world_size, local_rank); joins the process group when ``WORLD_SIZE`` > 1, else (0, 1, 0).

    ``device`` is ``train.device``: NCCL when it may use CUDA and CUDA is present (and the process's current
    GPU becomes ``cuda:local_rank``), gloo otherwise.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1, 0
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        if device != "cpu" and torch.cuda.is_available():
            torch.cuda.set_device(local_rank)
            dist.init_process_group("nccl", device_id=torch.device("cuda", local_rank))
        else:
            dist.init_process_group("gloo")
    return rank, world, local_rank


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def is_main() -> bool:
    """True on rank 0, and in a plain single process."""
    return not is_distributed() or dist.get_rank() == 0


def barrier() -> None:
    if is_distributed():
        dist.barrier()


def cleanup() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def broadcast_object(obj, src: int = 0):
    """``obj`` of rank ``src`` on every rank (pickled; meant for plans, small dicts, a resume state)."""
    if not is_distributed():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def on_rank0(fn):
    """``fn`` wrapped so that rank 0 alone computes the result and every rank returns it. When ``fn`` raises
    on rank 0, the other ranks raise too (instead of waiting forever for a result)."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        if not is_distributed():
            return fn(*args, **kwargs)
        if not is_main():
            ok, value = broadcast_object(None)
            if not ok:
                raise RuntimeError(f"{fn.__qualname__} failed on rank 0: {value}")
            return value
        try:
            value = fn(*args, **kwargs)
        except Exception as e:
            broadcast_object((False, f"{type(e).__name__}: {e}"))
            raise
        return broadcast_object((True, value))[1]

    return wrapper


def all_sum(t: torch.Tensor) -> torch.Tensor:
    """``t`` summed over ranks, in place (identity in a single process)."""
    if is_distributed():
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def relaunch_under_torchrun() -> None:
    """If ``MAMBAPRUNE_NPROC`` asks for more than one process and we are not a torchrun worker yet, replace
    this process by ``torchrun --standalone --nproc_per_node N <this script> <args>`` (its exit status is
    the stage's). ``N`` may also be torchrun's ``gpu`` or ``auto``."""
    nproc = os.environ.get(NPROC_ENV, "").strip()
    if nproc in ("", "0", "1") or "WORLD_SIZE" in os.environ:
        return
    argv = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
            sys.argv[0], *sys.argv[1:]]
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, argv)
