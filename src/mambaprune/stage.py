"""What a stage script sets up before it computes: seeds, this process's rank and device, the dense model,
resume keys and files, and ``fit`` bound to the stage's loaders, resume file, epoch CSV and tracking run.

A DVC dependency of the training stages: the seeds and the bound ``fit`` decide what they compute. Under
``torchrun`` (or with ``MAMBAPRUNE_NPROC``, see ``cli.stage_main``) every rank runs the same script on its shard
of each global batch; rank 0 alone writes outputs and tracks.
"""

from __future__ import annotations

import hashlib
import json
import random
import shutil
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch

from . import distributed
from .checkpoint import save_checkpoint
from .config import REWIND_EPOCHS, Params, TrainCfg
from .models import VisionMamba, create_model
from .paths import RESUME_DIR, epoch_checkpoint, resume_file, stage_plots_dir, stage_slug
from .tracking import epoch_logger
from .train import EpochCallback, history_csv, resolve_device
from .train import fit as train_fit

__all__ = ["seed_everything", "init_stage", "build_model", "fingerprint", "clear_resume", "bind_fit",
           "rewind_snapshots", "publish_rewind_snapshots"]


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def init_stage(train_cfg: TrainCfg) -> tuple[int, int, torch.device]:
    """(rank, world_size, device) of this process: joins the DDP process group under torchrun; the device
    is ``cuda:LOCAL_RANK`` there when training on CUDA, else as ``train.device`` resolves."""
    rank, world_size, _ = distributed.init_from_env(train_cfg.device)
    return rank, world_size, resolve_device(train_cfg.device)  # init_from_env made cuda:LOCAL_RANK current


def build_model(params: Params, meta: dict) -> VisionMamba:
    """The dense model for this dataset: classes, channels, image size and normalisation from meta.json."""
    return create_model(params.model.name, num_classes=meta["num_classes"], img_size=meta["img_size"],
                        in_chans=meta["in_chans"], norm_mean=meta["mean"], norm_std=meta["std"],
                        **params.model.overrides())


def fingerprint(*parts: object, files: tuple[Path, ...] = ()) -> str:
    """A key for resume checkpoints: changes whenever a stage's inputs or params change."""
    h = hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode())
    for f in files:
        with open(f, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()[:16]


def clear_resume(stage: str) -> None:
    """Delete a finished stage's resume files (checkpoints and snapshots): the stage's outputs now exist. Also
    the hidden temp files ``records.atomic_write`` leaves when a kill lands mid-write (``.<file>.<random>.tmp``)."""
    slug = stage_slug(stage)
    for f in [*RESUME_DIR.glob(f"{slug}-*"), *RESUME_DIR.glob(f".{slug}-*.tmp")]:
        shutil.rmtree(f) if f.is_dir() else f.unlink(missing_ok=True)


def bind_fit(train_cfg: TrainCfg, stage: str, train_loader, val_loader, run, key: str, lr: float | None = None):
    """``fit(model, epochs, hooks=(), tag="train", callbacks=())`` with this stage's loaders, resume file, epoch
    CSV (``plots/<stage>/<tag>_epochs.csv``) and tracking run (metrics ``<tag>/...``) bound.

    Each tag (e.g. ``rsst`` then ``recover`` in one round) gets its own resume file, CSV and metric prefix.
    """
    def fit(model, epochs: int, hooks: Iterable = (), tag: str = "train", callbacks: Iterable[EpochCallback] = ()):
        name = f"{stage}-{tag}"
        reports = [history_csv(stage_plots_dir(stage) / f"{tag}_epochs.csv"), epoch_logger(run, tag), *callbacks]
        return train_fit(model, train_loader, val_loader, train_cfg, epochs, lr=lr, hooks=hooks, callbacks=reports,
                         resume_path=resume_file(name), resume_key=f"{key}-{tag}", desc=name)

    return fit


def rewind_snapshots(folder: Path) -> EpochCallback:
    """An epoch callback saving the weights after each of the first ``REWIND_EPOCHS`` epochs as
    ``folder/epoch<k>.pt``: the states ``prune.rewind: epoch`` returns to. ``folder`` outlives a crash (DVC clears
    models/ before rerunning a stage)."""
    def snapshot(history: list[dict], model) -> None:
        if (epoch := history[-1]["epoch"]) <= REWIND_EPOCHS:
            save_checkpoint(model, folder / f"epoch{epoch}.pt")

    return snapshot


def publish_rewind_snapshots(folder: Path, epochs: int) -> None:
    """Copy this run's snapshots (epochs 1..min(REWIND_EPOCHS, epochs)) to models/rewind/: only these, as a
    crashed run with more epochs may have left others in ``folder``."""
    epoch_checkpoint(0).parent.mkdir(parents=True, exist_ok=True)
    for epoch in range(1, min(REWIND_EPOCHS, epochs) + 1):
        shutil.copy2(folder / f"epoch{epoch}.pt", epoch_checkpoint(epoch))
