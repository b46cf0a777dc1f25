"""How a stage script runs as a command: ``stage_main(main)`` at the bottom of every script in stages/.

It turns the project's errors (``errors.MambaPruneError``: bad params, missing data, unusable checkpoints, a
diverging run) into one line on stderr and exit status 2. Any other exception is a bug and propagates with its
traceback. Not a DVC dependency: nothing here changes what a stage computes, so editing a message here reruns
nothing.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

import torch

from . import distributed
from .errors import MambaPruneError

__all__ = ["stage_main"]


def stage_main(fn: Callable[[], None], *, data_parallel: bool = False) -> None:
    """Run a stage; a ``MambaPruneError`` becomes ``error: <message>`` on stderr and exit status 2.

    ``data_parallel``: with ``MAMBAPRUNE_NPROC`` > 1 the stage first re-execs itself under torchrun; under DDP
    every rank waits at a barrier for rank 0's writes before it leaves the process group. After an error
    there is no barrier: the rank exits and torchrun stops the others.
    """
    if data_parallel:
        distributed.relaunch_under_torchrun()
    try:
        fn()
    except MambaPruneError as e:
        rank = "" if distributed.is_main() else f"[rank {torch.distributed.get_rank()}] "
        print(f"{rank}error: {e}", file=sys.stderr)
        sys.exit(2)
    distributed.barrier()
    distributed.cleanup()
