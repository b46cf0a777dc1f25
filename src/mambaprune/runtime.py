"""What every stage script needs: params, seeding, the device, resume fingerprints.

Data-parallel training stages (pretrain, prune, finetune) call ``cli.stage_main(fn, data_parallel=True)`` and
``init_stage``: under ``torchrun`` (or with ``MAMBAPRUNE_NPROC``) every rank runs the same script on its
shard of each global batch; rank 0 alone writes outputs and tracks (``is_main``, ``tracked_run``).
"""

from __future__ import annotations

import hashlib
import json
import os
import random
from pathlib import Path

import numpy as np
import torch

from . import distributed
from .config import REWIND_EPOCHS, Params
from .paths import RESUME_DIR, metrics_file, resume_file, stage_plots_dir, stage_slug
from .records import write_json

__all__ = ["REWIND_EPOCHS", "clear_resume", "seed_everything", "fingerprint",
           "project_root", "bind_fit", "build_model", "accuracy_of",
           "check_fits_data", "check_same_arch", "init_stage", "tracked_run", "full_batches", "choice_on_rank0"]


def project_root() -> Path:
    """The real repo root, also inside a queued ``dvc exp run`` (which runs in a temp copy)."""
    return Path(os.environ.get("DVC_ROOT", os.getcwd()))


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def fingerprint(*parts: object, files: tuple[Path, ...] = ()) -> str:
    """A key for resume checkpoints: changes whenever a stage's inputs or params change."""
    h = hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode())
    for f in files:
        with open(f, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()[:16]


def clear_resume(stage: str) -> None:
    """Delete a finished stage's resume files (checkpoints and snapshots): the stage's outputs now exist."""
    import shutil

    for f in RESUME_DIR.glob(f"{stage_slug(stage)}-*"):
        shutil.rmtree(f) if f.is_dir() else f.unlink(missing_ok=True)


def init_stage(train_cfg) -> tuple[int, int, torch.device]:
    """(rank, world_size, device) of this process: joins the DDP process group under torchrun; the device
    is ``cuda:LOCAL_RANK`` there when training on CUDA, else as ``train.device`` resolves."""
    from .train import resolve_device

    rank, world_size, _ = distributed.init_from_env(train_cfg.device)
    return rank, world_size, resolve_device(train_cfg.device)  # init_from_env made cuda:LOCAL_RANK current


def tracked_run(stage: str, params=None):
    """``tracking.stage_run`` on rank 0; a no-op run (``NullRun``) on every other rank."""
    from contextlib import nullcontext

    from .tracking import NullRun, stage_run

    return stage_run(stage, params) if distributed.is_main() else nullcontext(NullRun())


def full_batches(loader):
    """The same global batches as a (possibly rank-sharded) train ``BatchLoader``, unsharded and without the
    strong augmentations (policy, erasing, mixing; crop and flip stay): what taylor calibration should see, so
    the pruning plan depends neither on the number of processes nor on Mixup partners."""
    if getattr(loader, "world_size", 1) == 1 and getattr(loader, "augment", None) is None:
        return loader
    from .data import BatchLoader

    full = BatchLoader(loader.images, loader.labels, loader.batch_size, shuffle=loader.shuffle, seed=loader.seed,
                       device=loader.device, crop_padding=loader.crop_padding, hflip=loader.hflip,
                       drop_last=loader.drop_last)
    full.set_epoch(loader.epoch)
    return full


def choice_on_rank0(choose):
    """A pruning round's unit choice computed on rank 0 alone and broadcast: every rank cuts exactly the same
    units even where its floats differ in the last bit (e.g. taylor gradients from non-deterministic CUDA
    kernels). The identity in a single process."""
    return distributed.on_rank0(choose) if distributed.is_distributed() else choose


_DATA_KEYS = ("img_size", "in_chans", "num_classes")
_ARCH_KEYS = (*_DATA_KEYS, "patch_size", "embed_dim", "depth", "d_state", "d_conv", "bidirectional")


def check_fits_data(model, path: Path, meta: dict) -> None:
    """Refuse (CheckpointError) a checkpoint built for other images or classes than the prepared data/."""
    from .checkpoint import CheckpointError

    diff = [f"{k} {model.config[k]} vs data {meta[k]}" for k in _DATA_KEYS if model.config[k] != meta[k]]
    if diff:
        raise CheckpointError(f"{path} does not fit the prepared data ({', '.join(diff)}): it comes from a run on "
                              f"other data. Re-run the pipeline from pretrain (`dvc repro`), or prepare the data it "
                              f"was trained on (data.* in params.yaml)")


def check_same_arch(model, path: Path, ref, ref_path: Path, widths: bool = False) -> None:
    """Refuse (CheckpointError) a checkpoint that is not the same network as ``ref`` (pruned widths aside,
    unless ``widths``): e.g. a round's input left over from a run with another model.* size."""
    from .checkpoint import CheckpointError

    keys = (*_ARCH_KEYS, "ssm_widths", "mlp_widths") if widths else _ARCH_KEYS
    diff = [f"{k} {model.config[k]} vs {ref.config[k]}" for k in keys if model.config[k] != ref.config[k]]
    if diff:
        raise CheckpointError(f"{path} and {ref_path} are not the same architecture ({', '.join(diff)}): they come "
                              f"from different runs. Re-run the pipeline from pretrain (`dvc repro`)")


def bind_fit(train_cfg, stage: str, train_loader, val_loader, run, key: str, lr: float | None = None):
    """``fit(model, epochs, hooks=(), tag="")`` with this stage's resume file, CSV and tracking bound.

    Each tag (e.g. ``rsst`` then ``recover`` in one round) gets its own resume file and CSV.
    """
    from .train import fit as train_fit

    def fit(model, epochs: int, hooks=(), tag: str = "train", epoch_callback=None):
        name = f"{stage}-{tag}"
        return train_fit(model, train_loader, val_loader, train_cfg, epochs, lr=lr, hooks=hooks,
                         epoch_callback=epoch_callback,
                         resume_path=resume_file(name), resume_key=f"{key}-{tag}",
                         metrics_csv=stage_plots_dir(stage) / f"{tag}_epochs.csv",
                         log_fn=lambda rec: run.log_epoch({f"{tag}/{k}": v for k, v in rec.items()}
                                                          | {"epoch": rec["epoch"]}),
                         desc=name)

    return fit


def build_model(params: Params, meta: dict):
    """The dense model for this dataset: classes, channels, image size and normalisation from meta.json."""
    from .models import create_model

    return create_model(params.model.name, num_classes=meta["num_classes"], img_size=meta["img_size"],
                        in_chans=meta["in_chans"], norm_mean=meta["mean"], norm_std=meta["std"],
                        **params.model.overrides())


def accuracy_of(model, val_loader, test_loader, device) -> dict[str, float]:
    """Validation and test accuracy (test is reported, never used to choose anything)."""
    from .train import evaluate

    val, test = evaluate(model, val_loader, device), evaluate(model, test_loader, device)
    return {"val_acc": val["acc"], "val_loss": val["loss"], "test_acc": test["acc"], "test_loss": test["loss"]}


def publish_metrics(run, stage: str, metrics: dict) -> None:
    """A stage's final metrics: the scalar ones to its MLflow run, all of them to ``metrics/<stage>.json``."""
    run.log_metrics({k: v for k, v in metrics.items() if isinstance(v, int | float)})
    write_json(metrics_file(stage), metrics)
