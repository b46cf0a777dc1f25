"""Datasets as uint8 tensors on disk (the ``prepare`` stage) and device-resident batches for training.

``prepare_data`` decodes a source once into ``train.pt``, ``val.pt``, ``test.pt`` and ``meta.json``; training
then keeps each whole uint8 split on the device and converts and augments per batch there, so there are no
worker processes and no per-image work on the host while training.
"""

from __future__ import annotations

import json
import math
import pickle
import tarfile
from functools import partial
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor

from mambaprune.augment import Augment
from mambaprune.config import DataCfg, TrainCfg
from mambaprune.errors import ConfigError, DataError
from mambaprune.paths import meta_file, split_file
from mambaprune.records import atomic_write

__all__ = ["DataError", "SPLITS", "check_source", "prepare_data", "load_split", "load_meta", "augment_batch",
           "BatchLoader", "make_loaders", "eval_loaders", "full_batches"]

SPLITS = ("train", "val", "test")
DIGITS_TEST_FRACTION = 0.2  # digits has no official test split: this share of it is held out
_CHUNK = 4096  # images per vectorised step in resizing and statistics (bounds the float copies)
_RERUN = "run the prepare stage (`dvc repro prepare`)"
_LAYOUT = "expected <root>/train/<class>/<image> and <root>/test/<class>/<image> (torchvision ImageFolder layout)"


class _Source(NamedTuple):
    train_images: Tensor  # uint8 (N, C, H, W), before the validation split
    train_labels: Tensor  # int64 (N,)
    test_images: Tensor
    test_labels: Tensor
    classes: list[str]
    source: str


# ---------------------------------------------------------------------------------------------- prepare


def prepare_data(cfg: DataCfg, seed: int, out_dir: Path) -> dict:
    """Build train/val/test from ``cfg`` and write them to ``out_dir``; return the meta dict.

    The validation split is a seeded, class-stratified share of the train split, so the test split is never
    used for model selection. Nothing is written unless every image was read.
    """
    src = _SOURCES[cfg.name](cfg, seed)
    train_x = _resize(src.train_images, cfg.img_size)
    test_x = _resize(src.test_images, cfg.img_size)
    train_idx, val_idx = _split_indices(src.train_labels, cfg.val_fraction, seed)
    splits = {
        "train": (train_x[train_idx], src.train_labels[train_idx]),
        "val": (train_x[val_idx], src.train_labels[val_idx]),
        "test": (test_x.contiguous(), src.test_labels),
    }
    mean, std = _channel_stats(splits["train"][0])
    meta = {
        "classes": list(src.classes),
        "num_classes": len(src.classes),
        "in_chans": int(train_x.shape[1]),
        "img_size": cfg.img_size,
        "mean": mean,
        "std": std,
        "sizes": {name: len(y) for name, (_, y) in splits.items()},
        "source": src.source,
        "seed": seed,
        "val_fraction": cfg.val_fraction,
    }
    _write_outputs(Path(out_dir), splits, meta)
    return meta


def _digits(cfg: DataCfg, seed: int) -> _Source:
    """scikit-learn's bundled 8x8 handwritten digits: real data that needs no download."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = torch.from_numpy(np.rint(digits.images * (255 / 16)).astype(np.uint8))  # 0..16 -> 0..255
    images = images[:, None].expand(-1, 3, -1, -1).contiguous()  # grey -> RGB, like the other sources
    labels = torch.from_numpy(digits.target.astype(np.int64))
    train_idx, test_idx = _split_indices(labels, DIGITS_TEST_FRACTION, seed)
    classes = [str(c) for c in digits.target_names]
    return _Source(images[train_idx], labels[train_idx], images[test_idx], labels[test_idx], classes,
                   "sklearn.datasets.load_digits")


def _cifar(cfg: DataCfg, seed: int) -> _Source:
    """torchvision's CIFAR-10/100 loaders; any failure to find, fetch or parse the files is one DataError."""
    from torchvision.datasets import CIFAR10, CIFAR100

    cls = CIFAR10 if cfg.name == "cifar10" else CIFAR100
    root = Path(cfg.root)
    try:
        _extract_archive_if_needed(root, cls)
        train = cls(str(root), train=True, download=cfg.download)
        test = cls(str(root), train=False, download=False)
    except (OSError, RuntimeError, EOFError, tarfile.TarError, pickle.UnpicklingError) as e:
        raise DataError(_cifar_missing_message(cls, root, cfg.download, e)) from e

    def tensors(ds) -> tuple[Tensor, Tensor]:
        images = torch.from_numpy(np.ascontiguousarray(ds.data.transpose(0, 3, 1, 2)))  # NHWC -> NCHW
        return images, torch.tensor(ds.targets, dtype=torch.int64)

    return _Source(*tensors(train), *tensors(test), list(train.classes), f"torchvision {cls.__name__} ({root})")


def check_source(cfg: DataCfg) -> None:
    """Raise ``DataError`` now if ``prepare_data`` could not read ``cfg``'s source, without decoding any image.

    For the pipeline's ``check`` stage, which runs before DVC deletes the ``prepare`` stage's outputs: a source
    that is missing fails there and leaves ``data/`` in place. CIFAR files that are absent while
    ``data.download`` is on are downloaded here (what prepare would do first anyway).
    """
    if cfg.name in ("cifar10", "cifar100"):
        from torchvision.datasets import CIFAR10, CIFAR100

        cls, root = (CIFAR10 if cfg.name == "cifar10" else CIFAR100), Path(cfg.root)
        try:
            _extract_archive_if_needed(root, cls)
            if not (root / cls.base_folder).is_dir():
                cls(str(root), train=True, download=cfg.download)
        except (OSError, RuntimeError, EOFError, tarfile.TarError, pickle.UnpicklingError) as e:
            raise DataError(_cifar_missing_message(cls, root, cfg.download, e)) from e
    elif cfg.name == "imagefolder":
        _image_trees(cfg)


def _extract_archive_if_needed(root: Path, cls) -> None:
    """Unpack a hand-placed archive, which torchvision only does as part of a download."""
    archive = root / cls.filename
    if archive.is_file() and not (root / cls.base_folder).is_dir():
        from torchvision.datasets.utils import extract_archive

        extract_archive(str(archive), str(root))


def _cifar_missing_message(cls, root: Path, download: bool, err: BaseException) -> str:
    why = "download failed" if download else "download is off (data.download: false)"
    return (f"{cls.__name__} not found or corrupt in {root.resolve()} ({why}: {type(err).__name__}: {err}). "
            f"Place the standard archive {cls.filename} (from {cls.url}) or its extracted folder "
            f"{cls.base_folder}/ in that folder, or set data.root in params.yaml to the folder that holds them.")


def _imagefolder(cfg: DataCfg, seed: int) -> _Source:
    """A ``train/`` and ``test/`` tree of class folders under ``cfg.root``; both must have the same classes."""
    train, test = _image_trees(cfg)  # checked before any decoding
    (train_x, train_y), (test_x, test_y) = _decode_tree(train, cfg.img_size), _decode_tree(test, cfg.img_size)
    return _Source(train_x, train_y, test_x, test_y, list(train.classes), f"imagefolder ({Path(cfg.root)})")


def _image_trees(cfg: DataCfg):
    """The train and test listings of an imagefolder root, their layout checked from the directory listings."""
    root = Path(cfg.root)
    if not root.is_dir():
        raise DataError(f"imagefolder root {root.resolve()} does not exist: {_LAYOUT}; set data.root in params.yaml")
    train, test = _list_image_tree(root / "train"), _list_image_tree(root / "test")
    if train.classes != test.classes:
        only_train = sorted(set(train.classes) - set(test.classes))
        only_test = sorted(set(test.classes) - set(train.classes))
        raise DataError(f"class folders of {root / 'train'} and {root / 'test'} differ: only in train {only_train}, "
                        f"only in test {only_test}; both splits need the same classes")
    return train, test


def _list_image_tree(folder: Path):
    """One ImageFolder tree's listing (labels follow sorted class names), with its layout checked."""
    from torchvision.datasets import ImageFolder
    from torchvision.datasets.folder import IMG_EXTENSIONS

    if not folder.is_dir():
        raise DataError(f"{folder.resolve()} does not exist: {_LAYOUT}")
    try:
        tree = ImageFolder(str(folder), allow_empty=True)
    except FileNotFoundError:
        raise DataError(f"{folder.resolve()} has no class folders: {_LAYOUT}") from None
    counts = np.bincount(np.asarray(tree.targets, dtype=np.int64), minlength=len(tree.classes))
    empty = [name for name, n in zip(tree.classes, counts) if n == 0]
    if empty:
        raise DataError(f"class folder(s) {', '.join(empty)} in {folder.resolve()} hold no images "
                        f"(extensions read: {', '.join(IMG_EXTENSIONS)}); add images to them or remove them")
    return tree


def _decode_tree(tree, size: int) -> tuple[Tensor, Tensor]:
    """Every image of a listed tree as uint8 RGB (n, 3, size, size), and its labels."""
    images = np.empty((len(tree.samples), size, size, 3), dtype=np.uint8)
    for i, (path, _) in enumerate(tree.samples):
        images[i] = _decode_image(path, size)
    labels = torch.tensor(tree.targets, dtype=torch.int64)
    return torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(), labels


def _decode_image(path: str, size: int) -> np.ndarray:
    try:
        with Image.open(path) as img:
            rgb = img.convert("RGB")
        if rgb.size != (size, size):
            rgb = rgb.resize((size, size), Image.Resampling.BILINEAR)
        return np.asarray(rgb)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise DataError(f"cannot read image {path} ({e}); replace or delete that file") from e


_SOURCES = {"digits": _digits, "cifar10": _cifar, "cifar100": _cifar, "imagefolder": _imagefolder}


def _split_indices(labels: Tensor, fraction: float, seed: int) -> tuple[Tensor, Tensor]:
    """Seeded (keep, held-out) index split, stratified by class unless some class is too small for that."""
    from sklearn.model_selection import train_test_split

    idx = np.arange(len(labels))
    try:
        keep, held = train_test_split(idx, test_size=fraction, random_state=seed, stratify=labels.numpy())
    except ValueError:  # a class with one sample, or fewer held-out samples than classes
        keep, held = train_test_split(idx, test_size=fraction, random_state=seed)
    return torch.from_numpy(np.sort(keep)), torch.from_numpy(np.sort(held))


def _resize(images: Tensor, size: int) -> Tensor:
    """Bilinear resize of a uint8 batch (antialiased when shrinking), in chunks to bound the float copies."""
    n, c, h, w = images.shape
    if (h, w) == (size, size):
        return images
    out = torch.empty((n, c, size, size), dtype=torch.uint8)
    for i in range(0, n, _CHUNK):
        x = F.interpolate(images[i:i + _CHUNK].float(), size=(size, size), mode="bilinear", align_corners=False,
                          antialias=size < max(h, w))
        out[i:i + _CHUNK] = x.round_().clamp_(0, 255).to(torch.uint8)
    return out


def _channel_stats(images: Tensor) -> tuple[list[float], list[float]]:
    """Per-channel mean and (population) std of images/255, accumulated in float64."""
    total = torch.zeros(images.shape[1], dtype=torch.float64)
    total_sq = torch.zeros_like(total)
    for i in range(0, len(images), _CHUNK):
        x = images[i:i + _CHUNK].double().div_(255)
        total += x.sum(dim=(0, 2, 3))
        total_sq += x.square().sum(dim=(0, 2, 3))
    count = images.numel() // images.shape[1]
    mean = total / count
    std = (total_sq / count - mean.square()).clamp_min(0).sqrt()
    return mean.tolist(), std.tolist()


def _write_outputs(out_dir: Path, splits: dict[str, tuple[Tensor, Tensor]], meta: dict) -> None:
    """Every file atomically (``records.atomic_write``), the old meta.json removed first and the new one written
    last: until it is in place ``load_meta`` refuses the folder, so no stage ever pairs a new split with old
    metadata or reads a split from an interrupted run."""
    meta_file(out_dir).unlink(missing_ok=True)
    for name, (images, labels) in splits.items():
        atomic_write(split_file(name, out_dir), partial(torch.save, {"images": images, "labels": labels}))
    atomic_write(meta_file(out_dir), lambda f: f.write((json.dumps(meta, indent=2) + "\n").encode()))


# ---------------------------------------------------------------------------------------------- load


def load_split(data_dir: str | Path, split: str) -> tuple[Tensor, Tensor]:
    """(uint8 images (N, C, H, W), int64 labels (N,)) of one prepared split."""
    path = split_file(split, Path(data_dir))
    if not path.is_file():
        raise DataError(f"{path} not found: {_RERUN}")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # a damaged file can fail inside zip, pickle or storage code alike; details chained
        raise DataError(f"{path} is unreadable or corrupt ({type(e).__name__}): {_RERUN}") from e
    images = data.get("images") if isinstance(data, dict) else None
    labels = data.get("labels") if isinstance(data, dict) else None
    ok = (isinstance(images, Tensor) and isinstance(labels, Tensor) and images.dtype == torch.uint8
          and images.dim() == 4 and labels.dtype == torch.int64 and labels.shape == images.shape[:1])
    if not ok:
        raise DataError(f"{path} does not hold uint8 'images' (N, C, H, W) and int64 'labels' (N,): {_RERUN}")
    return images, labels


def load_meta(data_dir: str | Path) -> dict:
    """The meta.json written by prepare_data (classes, in_chans, img_size, mean, std, sizes, source)."""
    path = meta_file(Path(data_dir))
    if not path.is_file():
        raise DataError(f"{path} not found: {_RERUN}")
    try:
        meta = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DataError(f"{path} is unreadable or corrupt ({e}): {_RERUN}") from e
    if not isinstance(meta, dict) or "num_classes" not in meta:
        raise DataError(f"{path} is not a prepare_data meta file: {_RERUN}")
    return meta


# ---------------------------------------------------------------------------------------------- batches


def augment_batch(x: Tensor, crop_padding: int, hflip: bool, generator: torch.Generator) -> Tensor:
    """Random zero-padded crop and random horizontal flip, drawn per image but applied as whole-batch ops.

    All randomness comes from ``generator`` (on ``x``'s device), so a seeded generator repeats the batch.
    """
    if crop_padding > 0:
        x = _random_crop(x, crop_padding, generator)
    if hflip:
        x = _random_hflip(x, generator)
    return x


def _random_crop(x: Tensor, pad: int, generator: torch.Generator) -> Tensor:
    b, c, h, w = x.shape
    padded = F.pad(x, (pad, pad, pad, pad))
    offsets = torch.randint(0, 2 * pad + 1, (2, b), generator=generator, device=x.device)
    rows = offsets[0, :, None] + torch.arange(h, device=x.device)  # (B, H): source row of each output row
    cols = offsets[1, :, None] + torch.arange(w, device=x.device)
    x = padded.gather(2, rows[:, None, :, None].expand(b, c, h, w + 2 * pad))
    return x.gather(3, cols[:, None, None, :].expand(b, c, h, w))


def _random_hflip(x: Tensor, generator: torch.Generator) -> Tensor:
    flip = torch.rand(x.shape[0], generator=generator, device=x.device) < 0.5
    return torch.where(flip[:, None, None, None], x.flip(3), x)


def _seeded_generator(seed: int, epoch: int, stream: int, device: torch.device | str = "cpu") -> torch.Generator:
    """A generator whose state depends only on (seed, epoch, stream), never on what ran before."""
    state = np.random.SeedSequence([seed, epoch, stream]).generate_state(1, dtype=np.uint64)[0]
    return torch.Generator(device=device).manual_seed(int(state) & (2**63 - 1))


class BatchLoader:
    """Batches of a uint8 dataset held on ``device``: yields (float32 images in [0, 1], int64 labels).

    Shuffle order and augmentation are a pure function of (seed, epoch): call ``set_epoch`` before each epoch
    (without it every pass repeats epoch 0), and a resumed run sees exactly the batches of an uninterrupted one.

    With ``world_size > 1`` (DDP), ``batch_size`` is the GLOBAL batch: every step each rank gets
    ``batch_size // world_size`` samples, rank r taking the r-th strided slice of the global batch, so the
    ranks' shards of an epoch are disjoint. Without ``drop_last`` the epoch's order is first padded by wrapping
    around to a multiple of ``world_size`` (as DistributedSampler does: fewer than ``world_size`` repeats), so
    every rank runs the same number of equal-sized steps.

    ``augment`` adds the strong per-image augmentations and Mixup/CutMix after crop and flip (``augment.py``);
    with mixing on, the labels come out as soft (b, ``num_classes``) targets, rows summing to 1.
    """

    def __init__(self, images: Tensor, labels: Tensor, batch_size: int, *, shuffle: bool, seed: int,
                 device: torch.device | str, crop_padding: int = 0, hflip: bool = False, drop_last: bool = False,
                 rank: int = 0, world_size: int = 1, augment: Augment | None = None, num_classes: int | None = None):
        if images.dtype != torch.uint8 or images.dim() != 4 or len(images) != len(labels) or len(images) == 0:
            raise ValueError(f"need a non-empty uint8 (N, C, H, W) batch and N labels, got {tuple(images.shape)} "
                             f"{images.dtype} and {len(labels)} labels")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} out of range for world_size {world_size}")
        if batch_size < world_size or batch_size % world_size:
            raise ConfigError(f"train.batch_size ({batch_size}) is the global batch and must be a multiple of the "
                              f"number of training processes (world_size {world_size}); change train.batch_size "
                              "or the process count (MAMBAPRUNE_NPROC, torchrun --nproc_per_node)")
        self.device = torch.device(device)
        self.images = images.to(self.device)
        self.labels = labels.to(self.device, torch.int64)
        self.batch_size, self.shuffle, self.seed = batch_size, shuffle, seed
        self.crop_padding, self.hflip, self.drop_last = crop_padding, hflip, drop_last
        self.rank, self.world_size = rank, world_size
        self.augment = augment if augment is not None and augment.active else None
        if self.augment is not None and self.augment.mixes and num_classes is None:
            raise ValueError("Mixup/CutMix need num_classes to build soft targets")
        self.num_classes = num_classes
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        """Steps per epoch (the same on every rank)."""
        n = len(self.labels)
        if self.drop_last:
            return n // self.batch_size
        return math.ceil(self._padded_len(n) / self.batch_size)

    def _padded_len(self, n: int) -> int:
        return math.ceil(n / self.world_size) * self.world_size

    def _epoch_order(self) -> Tensor:
        """Sample indices of this epoch, in global-batch order, shared by all ranks."""
        n = len(self.labels)
        if self.shuffle:  # on the CPU: the same order whatever the device
            order = torch.randperm(n, generator=_seeded_generator(self.seed, self.epoch, 0))
        else:
            order = torch.arange(n)
        if self.drop_last:
            return order[: len(self) * self.batch_size]
        padded = self._padded_len(n)
        return order.repeat(math.ceil(padded / n))[:padded]

    def __iter__(self):
        order = self._epoch_order().to(self.device)
        augment = self.crop_padding > 0 or self.hflip or self.augment is not None
        gen = _seeded_generator(self.seed, self.epoch, 1 + self.rank, self.device) if augment else None
        mix_rng = (np.random.default_rng(np.random.SeedSequence([self.seed, self.epoch, 1_000_000 + self.rank]))
                   if self.augment is not None and self.augment.mixes else None)
        for start in range(0, len(order), self.batch_size):
            idx = order[start:start + self.batch_size][self.rank::self.world_size]
            x, y = self.images[idx].float().div_(255), self.labels[idx]
            if augment:
                x = augment_batch(x, self.crop_padding, self.hflip, gen)
            if self.augment is not None:
                x = self.augment.images(x, gen)
                if mix_rng is not None:
                    x, y = self.augment.mix(x, y, self.num_classes, mix_rng)
            yield x, y


def train_augment(cfg: TrainCfg) -> Augment:
    """The strong augmentations ``train.*`` asks for (crop and flip are the loader's own)."""
    return Augment(policy=cfg.auto_augment, num_ops=cfg.randaugment_ops, magnitude=cfg.randaugment_magnitude,
                   erasing=cfg.random_erasing, mixup_alpha=cfg.mixup_alpha, cutmix_alpha=cfg.cutmix_alpha,
                   mix_prob=cfg.mix_prob)


def make_loaders(data_dir: str | Path, train_cfg: TrainCfg, seed: int, device: torch.device | str,
                 eval_batch_size: int, *, rank: int = 0, world_size: int = 1
                 ) -> tuple[BatchLoader, BatchLoader, BatchLoader, dict]:
    """(train, val, test, meta): train shuffled, augmented and sharded across ranks; val and test whole, in order.

    Every rank gets all of val and test, so evaluation needs no gathering across ranks.
    """
    meta = load_meta(data_dir)
    train = BatchLoader(*load_split(data_dir, "train"), train_cfg.batch_size, shuffle=True, seed=seed, device=device,
                        crop_padding=train_cfg.crop_padding, hflip=train_cfg.hflip, rank=rank, world_size=world_size,
                        augment=train_augment(train_cfg), num_classes=meta["num_classes"])
    val, test = eval_loaders(data_dir, seed, device, eval_batch_size)
    return train, val, test, meta


def eval_loaders(data_dir: str | Path, seed: int, device: torch.device | str, batch_size: int
                 ) -> tuple[BatchLoader, BatchLoader]:
    """(val, test): the whole splits, in order, unaugmented: what evaluation reads (no train split loaded)."""
    return tuple(BatchLoader(*load_split(data_dir, split), batch_size, shuffle=False, seed=seed, device=device)
                 for split in ("val", "test"))


def full_batches(loader: BatchLoader) -> BatchLoader:
    """The same global batches as a (possibly rank-sharded) train ``BatchLoader``, unsharded and without the
    strong augmentations (policy, erasing, mixing; crop and flip stay): what taylor calibration should see, so
    the pruning plan depends neither on the number of processes nor on Mixup partners."""
    if loader.world_size == 1 and loader.augment is None:
        return loader
    full = BatchLoader(loader.images, loader.labels, loader.batch_size, shuffle=loader.shuffle, seed=loader.seed,
                       device=loader.device, crop_padding=loader.crop_padding, hflip=loader.hflip,
                       drop_last=loader.drop_last)
    full.set_epoch(loader.epoch)
    return full
