"""Every artifact path of the pipeline in one place (relative to the project root)."""

from __future__ import annotations

from pathlib import Path

DATA_DIR = Path("data")
MODELS_DIR = Path("models")
METRICS_DIR = Path("metrics")
PLOTS_DIR = Path("plots")
RESUME_DIR = Path(".cache/resume")  # per-stage resume checkpoints; outside DVC outs, which DVC deletes
TIMINGS_FILE = Path(".cache/timings.jsonl")  # the dense model's throughput history (speed.baseline_flag)


def stage_slug(stage: str) -> str:
    """A file-name-safe stage name: ``prune@r2`` -> ``prune_r2``."""
    return stage.replace("@", "_")


def split_file(split: str, root: Path = DATA_DIR) -> Path:
    return root / f"{split}.pt"


def meta_file(root: Path = DATA_DIR) -> Path:
    return root / "meta.json"


def checkpoint(name: str, root: Path = MODELS_DIR) -> Path:
    """``pretrained``, a round name (``r1``), ``finetuned`` → models/<name>.pt"""
    return root / f"{name}.pt"


def init_checkpoint(root: Path = MODELS_DIR) -> Path:
    """Weights at initialisation (for ``rewind: init``)."""
    return root / "init.pt"


def epoch_checkpoint(epoch: int, root: Path = MODELS_DIR) -> Path:
    """Pretrain weights after ``epoch`` (for ``rewind: epoch``)."""
    return root / "rewind" / f"epoch{epoch}.pt"


def metrics_file(stage: str, root: Path = METRICS_DIR) -> Path:
    return root / f"{stage_slug(stage)}.json"


def stage_plots_dir(stage: str, root: Path = PLOTS_DIR) -> Path:
    """plots/<stage>/: the per-epoch CSVs of one stage (a DVC out of that stage)."""
    return root / stage_slug(stage)


def resume_file(name: str, root: Path = RESUME_DIR) -> Path:
    """A training run's resume checkpoint (``<stage>-<tag>``), kept until its stage finishes."""
    return root / f"{stage_slug(name)}.pt"


def snapshot_dir(stage: str, root: Path = RESUME_DIR) -> Path:
    """Per-epoch snapshots a stage keeps while it runs (DVC clears the stage's outs before a rerun)."""
    return root / f"{stage_slug(stage)}-snapshots"
