"""Strong augmentation for training batches that already sit on the GPU: every op drawn per sample, vectorised.

The CIFAR recipes that reach 90 %+ from scratch (see README "Results") augment each image with a random
policy (TrivialAugment / RandAugment), erase a random box, then mix pairs of images (Mixup / CutMix).
Our batches live on the device as one tensor, so each step here is a handful of whole-batch kernels with a
per-sample op index and magnitude — no Python loop over images, no host sync:

- ``random_policy``: TrivialAugmentWide (one op per image, a random magnitude bin) or RandAugment (``num_ops``
  ops per image at one magnitude), with torchvision's op tables (``torchvision.transforms.TrivialAugmentWide``
  and ``RandAugment``: the same ops and magnitude bins). The geometric ops (shear, translate, rotate) become one
  per-sample affine matrix and a single ``grid_sample`` (nearest, zero fill); the colour ops are computed for
  the whole batch and selected per sample with ``torch.where``. Why not kornia or torchvision: both apply ONE
  op choice to a whole batch tensor (kornia's policies pick one sub-policy per forward call,
  ``kornia/augmentation/auto/base.py``; torchvision's v2 transforms treat a batch as one image).
- ``random_erasing``: per image with probability p, a box of 2–33 % of the area, aspect 0.3–3.3, filled with
  uniform noise (timm's ``RandomErasing`` in "pixel" mode).
- ``mix_batch``: Mixup or CutMix (timm's defaults: switch 0.5) between each image and its mirror in the
  batch; targets become soft (b, classes) rows that sum to 1. The mix draws (which mix, λ, the box) come from
  a host-side NumPy generator, so they cost no device sync; CutMix's λ is the area actually pasted.

Randomness: every function takes its generator (torch on the images' device; NumPy for ``mix_batch``), so a
batch's augmentation is a pure function of the loader's (seed, epoch) streams and a resumed run repeats it.
Images are float in [0, 1] (the model normalises inside).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["POLICIES", "Augment", "random_policy", "random_erasing", "mix_batch"]

POLICIES = ("none", "trivialaugment", "randaugment")
NUM_BINS = 31  # torchvision's magnitude bins for both policies

# op indices; IDENTITY must stay 0
(IDENTITY, SHEAR_X, SHEAR_Y, TRANSLATE_X, TRANSLATE_Y, ROTATE, BRIGHTNESS, COLOR, CONTRAST, SHARPNESS,
 POSTERIZE, SOLARIZE, AUTOCONTRAST, EQUALIZE) = range(14)
NUM_OPS = 14
_SIGNED = (SHEAR_X, SHEAR_Y, TRANSLATE_X, TRANSLATE_Y, ROTATE, BRIGHTNESS, COLOR, CONTRAST, SHARPNESS)


_TABLES: dict = {}  # (policy, size, device) -> (magnitudes, signed mask): built once, no host copy per batch


def _tables(policy: str, size: int, device: torch.device) -> tuple[Tensor, Tensor]:
    key = (policy, size, str(device))
    if key not in _TABLES:
        signed = torch.zeros(NUM_OPS, dtype=torch.bool)
        signed[list(_SIGNED)] = True
        _TABLES[key] = (_magnitude_table(policy, size).to(device, torch.float32), signed.to(device))
    return _TABLES[key]


def _magnitude_table(policy: str, size: int) -> Tensor:
    """(NUM_OPS, NUM_BINS) magnitudes as torchvision defines them for ``policy`` and ``size``-pixel images.

    Shear: x-offset per unit of y; translate: pixels; rotate: degrees; brightness/color/contrast/sharpness:
    the blend factor minus 1; posterize: bits kept; solarize: threshold in [0, 1]; the rest take none.
    """
    b = NUM_BINS
    table = torch.zeros(NUM_OPS, b, dtype=torch.float64)
    wide = policy == "trivialaugment"
    table[SHEAR_X] = table[SHEAR_Y] = torch.linspace(0.0, 0.99 if wide else 0.3, b, dtype=torch.float64)
    table[TRANSLATE_X] = table[TRANSLATE_Y] = torch.linspace(0.0, 32.0 if wide else 150.0 / 331.0 * size, b,
                                                             dtype=torch.float64)
    table[ROTATE] = torch.linspace(0.0, 135.0 if wide else 30.0, b, dtype=torch.float64)
    for op in (BRIGHTNESS, COLOR, CONTRAST, SHARPNESS):
        table[op] = torch.linspace(0.0, 0.99 if wide else 0.9, b, dtype=torch.float64)
    table[POSTERIZE] = 8 - (torch.arange(b, dtype=torch.float64) / ((b - 1) / (6 if wide else 4))).round()
    table[SOLARIZE] = torch.linspace(1.0, 0.0, b, dtype=torch.float64)
    return table


def _gray(x: Tensor) -> Tensor:
    """ITU-R 601-2 luma with torchvision's coefficients, (b, 1, h, w); a one-channel image is its own gray."""
    if x.shape[1] == 1:
        return x
    r, g, b = x[:, 0:1], x[:, 1:2], x[:, 2:3]
    return r.mul(0.2989).add_(g, alpha=0.587).add_(b, alpha=0.114)


def _blend(x: Tensor, degenerate: Tensor, factor: Tensor) -> Tensor:
    return (factor * x + (1.0 - factor) * degenerate).clamp_(0.0, 1.0)


def _smooth(x: Tensor) -> Tensor:
    """PIL's SMOOTH kernel (1 1 1 / 1 5 1 / 1 1 1, /13) per channel, border pixels kept: sharpness' degenerate."""
    c = x.shape[1]
    kernel = torch.ones(3, 3, dtype=x.dtype, device=x.device)
    kernel[1, 1] = 5.0
    kernel = (kernel / kernel.sum()).expand(c, 1, 3, 3)
    inner = F.conv2d(x, kernel, groups=c)
    out = x.clone()
    out[:, :, 1:-1, 1:-1] = inner
    return out


def _autocontrast(x: Tensor) -> Tensor:
    lo = x.amin(dim=(2, 3), keepdim=True)
    hi = x.amax(dim=(2, 3), keepdim=True)
    flat = hi <= lo
    scale = torch.where(flat, torch.ones_like(hi), 1.0 / (hi - lo).clamp_min(1e-12))
    return torch.where(flat, x, (x - lo) * scale).clamp_(0.0, 1.0)


def _equalize(x: Tensor) -> Tensor:
    """Per-image, per-channel histogram equalisation on 8-bit levels (torchvision's tensor ``equalize``)."""
    b, c, h, w = x.shape
    levels = (x * 255.0).round_().clamp_(0, 255).to(torch.long).view(b * c, h * w)
    hist = torch.zeros(b * c, 256, dtype=torch.long, device=x.device)
    hist.scatter_add_(1, levels, torch.ones_like(levels))
    last = (torch.arange(256, device=x.device) * (hist > 0)).argmax(dim=1, keepdim=True)  # last non-empty bin
    step = (h * w - hist.gather(1, last)) // 255
    lut = (hist.cumsum(dim=1) + step // 2) // step.clamp_min(1)
    lut = torch.cat([torch.zeros_like(lut[:, :1]), lut[:, :-1]], dim=1).clamp_(0, 255)
    lut = torch.where(step > 0, lut, torch.arange(256, device=x.device))  # one level only: unchanged
    return (lut.gather(1, levels).to(x.dtype) / 255.0).view(b, c, h, w)


def _geometric(x: Tensor, op: Tensor, mag: Tensor) -> Tensor:
    """Shear / translate / rotate per sample as one affine ``grid_sample`` (identity for the other ops)."""
    b, _, h, w = x.shape
    one, zero = torch.ones_like(mag), torch.zeros_like(mag)
    rad = torch.deg2rad(mag)
    cos = torch.where(op == ROTATE, torch.cos(rad), one)
    sin = torch.where(op == ROTATE, torch.sin(rad), zero)
    shx = torch.where(op == SHEAR_X, mag, zero)
    shy = torch.where(op == SHEAR_Y, mag, zero)
    tx = torch.where(op == TRANSLATE_X, -2.0 * mag / w, zero)  # pixels -> normalised coordinates
    ty = torch.where(op == TRANSLATE_Y, -2.0 * mag / h, zero)
    theta = torch.stack([torch.stack([cos, shx - sin, tx], dim=1),
                         torch.stack([sin + shy, cos, ty], dim=1)], dim=1).to(x.dtype)
    grid = F.affine_grid(theta, [b, x.shape[1], h, w], align_corners=False)
    moved = F.grid_sample(x, grid, mode="nearest", padding_mode="zeros", align_corners=False)
    is_geometric = ((op >= SHEAR_X) & (op <= ROTATE)).view(b, 1, 1, 1)
    return torch.where(is_geometric, moved, x)


def _apply_ops(x: Tensor, op: Tensor, mag: Tensor) -> Tensor:
    """Apply op ``op[i]`` with magnitude ``mag[i]`` to image i (op/mag: (b,) tensors on x's device)."""
    x = _geometric(x, op, mag)
    b = x.shape[0]
    factor = (1.0 + mag).to(x.dtype).view(b, 1, 1, 1)
    gray = _gray(x)
    candidates = {
        BRIGHTNESS: lambda: _blend(x, torch.zeros_like(x), factor),
        COLOR: lambda: _blend(x, gray, factor),
        CONTRAST: lambda: _blend(x, gray.mean(dim=(1, 2, 3), keepdim=True), factor),
        SHARPNESS: lambda: _blend(x, _smooth(x), factor),
        POSTERIZE: lambda: _posterize(x, mag),
        SOLARIZE: lambda: torch.where(x >= mag.to(x.dtype).view(b, 1, 1, 1), 1.0 - x, x),
        AUTOCONTRAST: lambda: _autocontrast(x),
        EQUALIZE: lambda: _equalize(x),
    }
    out = x
    for k, make in candidates.items():
        out = torch.where((op == k).view(b, 1, 1, 1), make(), out)
    return out


def _posterize(x: Tensor, bits: Tensor) -> Tensor:
    levels = (x * 255.0).round_().clamp_(0, 255).to(torch.int32)
    drop = (8 - bits).to(torch.int32).view(-1, 1, 1, 1)
    mask = ~((torch.ones_like(drop) << drop) - 1)
    return (levels & mask).to(x.dtype) / 255.0


def random_policy(x: Tensor, policy: str, generator: torch.Generator, num_ops: int = 2, magnitude: int = 9) -> Tensor:
    """TrivialAugmentWide (``policy="trivialaugment"``: one op per image, magnitude bin uniform in [0, 30]) or
    RandAugment (``"randaugment"``: ``num_ops`` ops per image, each at bin ``magnitude``); ``"none"``: x.

    Ops are drawn uniformly from the 14 of torchvision's tables (identity included); signed ops get a random
    sign. ``generator`` lives on x's device.
    """
    if policy not in POLICIES:
        raise ValueError(f"augmentation policy must be one of {', '.join(POLICIES)}, got {policy!r}")
    if policy == "none":
        return x
    if not 0 <= magnitude < NUM_BINS:
        raise ValueError(f"magnitude must be a bin in [0, {NUM_BINS - 1}], got {magnitude}")
    b, dev = x.shape[0], x.device
    table, signed = _tables(policy, x.shape[-1], dev)
    for _ in range(1 if policy == "trivialaugment" else num_ops):
        op = torch.randint(0, NUM_OPS, (b,), generator=generator, device=dev)
        if policy == "trivialaugment":
            bins = torch.randint(0, NUM_BINS, (b,), generator=generator, device=dev)
        else:
            bins = torch.full((b,), magnitude, device=dev)
        flip = (torch.rand(b, generator=generator, device=dev) < 0.5) & signed[op]
        mag = table[op, bins]
        mag = torch.where(flip, -mag, mag)
        x = _apply_ops(x, op, mag)
    return x


def random_erasing(x: Tensor, prob: float, generator: torch.Generator, area: tuple[float, float] = (0.02, 1 / 3),
                   aspect: tuple[float, float] = (0.3, 3.3)) -> Tensor:
    """With probability ``prob`` per image, replace a random box (``area`` share, ``aspect`` h/w) by noise."""
    if prob <= 0:
        return x
    b, c, h, w = x.shape
    dev = x.device
    u = torch.rand(6, b, generator=generator, device=dev)
    share = area[0] + (area[1] - area[0]) * u[0]
    ratio = torch.exp(math.log(aspect[0]) + (math.log(aspect[1]) - math.log(aspect[0])) * u[1])
    bh = (share * h * w * ratio).sqrt().round().clamp(1, h)
    bw = (share * h * w / ratio).sqrt().round().clamp(1, w)
    top = ((h - bh + 1) * u[2]).floor()
    left = ((w - bw + 1) * u[3]).floor()
    rows = torch.arange(h, device=dev).view(1, h, 1)
    cols = torch.arange(w, device=dev).view(1, 1, w)
    box = ((rows >= top.view(b, 1, 1)) & (rows < (top + bh).view(b, 1, 1))
           & (cols >= left.view(b, 1, 1)) & (cols < (left + bw).view(b, 1, 1)) & (u[4] < prob).view(b, 1, 1))
    noise = torch.rand(x.shape, generator=generator, device=dev, dtype=x.dtype)
    return torch.where(box.unsqueeze(1), noise, x)


def mix_batch(x: Tensor, y: Tensor, num_classes: int, rng: np.random.Generator, mixup_alpha: float,
              cutmix_alpha: float, prob: float = 1.0, switch_prob: float = 0.5) -> tuple[Tensor, Tensor]:
    """Mixup or CutMix of each image with its mirror in the batch (``x.flip(0)``) → (images, soft targets).

    With probability ``prob`` the batch is mixed: by CutMix when only cutmix_alpha > 0, or with probability
    ``switch_prob`` when both are; λ ~ Beta(α, α). The targets are λ·onehot(y) + (1 − λ)·onehot(y mirrored),
    CutMix's λ being 1 − (pasted box area) / (image area). Unmixed batches get one-hot targets, so the loss
    always sees (b, classes) rows summing to 1.
    """
    target = F.one_hot(y, num_classes).to(torch.float32)
    if (mixup_alpha <= 0 and cutmix_alpha <= 0) or rng.random() >= prob:
        return x, target
    use_cutmix = cutmix_alpha > 0 and (mixup_alpha <= 0 or rng.random() < switch_prob)
    partner_x, partner_t = x.flip(0), target.flip(0)
    if use_cutmix:
        lam = float(rng.beta(cutmix_alpha, cutmix_alpha))
        h, w = x.shape[-2:]
        cut = math.sqrt(1.0 - lam)
        ch, cw = int(h * cut), int(w * cut)
        cy, cx = int(rng.integers(h)), int(rng.integers(w))
        top, bottom = max(cy - ch // 2, 0), min(cy + ch // 2, h)
        left, right = max(cx - cw // 2, 0), min(cx + cw // 2, w)
        x = x.clone()
        x[..., top:bottom, left:right] = partner_x[..., top:bottom, left:right]
        lam = 1.0 - (bottom - top) * (right - left) / (h * w)
    else:
        lam = float(rng.beta(mixup_alpha, mixup_alpha))
        x = x * lam + partner_x * (1.0 - lam)
    return x, target * lam + partner_t * (1.0 - lam)


@dataclass(frozen=True)
class Augment:
    """The strong augmentations of a training loader (crop and flip stay with the loader)."""

    policy: str = "none"
    num_ops: int = 2
    magnitude: int = 9
    erasing: float = 0.0
    mixup_alpha: float = 0.0
    cutmix_alpha: float = 0.0
    mix_prob: float = 1.0

    @property
    def mixes(self) -> bool:
        return self.mix_prob > 0 and (self.mixup_alpha > 0 or self.cutmix_alpha > 0)

    @property
    def active(self) -> bool:
        return self.policy != "none" or self.erasing > 0 or self.mixes

    def images(self, x: Tensor, generator: torch.Generator) -> Tensor:
        """Policy, then erasing: the per-image part."""
        x = random_policy(x, self.policy, generator, self.num_ops, self.magnitude)
        return random_erasing(x, self.erasing, generator)

    def mix(self, x: Tensor, y: Tensor, num_classes: int, rng: np.random.Generator) -> tuple[Tensor, Tensor]:
        return mix_batch(x, y, num_classes, rng, self.mixup_alpha, self.cutmix_alpha, self.mix_prob)
