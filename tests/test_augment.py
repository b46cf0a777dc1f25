"""Per-sample GPU-batch augmentation: each op against torchvision's own, labels kept consistent, seeds repeat."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torchvision.transforms.v2.functional as TF

from mambaprune import augment as A
from mambaprune.data import BatchLoader


def _images(n=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, 32, 32), generator=g).float() / 255  # 8-bit levels, like the loader's


def _apply(x, op, magnitude):
    b = x.shape[0]
    return A._apply_ops(x, torch.full((b,), op), torch.full((b,), float(magnitude)))


# (op, our magnitude, torchvision's equivalent on the same batch)
REFERENCE = {
    "brightness": (A.BRIGHTNESS, 0.4, lambda x: TF.adjust_brightness(x, 1.4)),
    "color": (A.COLOR, -0.5, lambda x: TF.adjust_saturation(x, 0.5)),
    "contrast": (A.CONTRAST, 0.6, lambda x: TF.adjust_contrast(x, 1.6)),
    "sharpness": (A.SHARPNESS, 0.7, lambda x: TF.adjust_sharpness(x, 1.7)),
    "posterize": (A.POSTERIZE, 3, lambda x: TF.posterize((x * 255).round().to(torch.uint8), 3).float() / 255),
    "solarize": (A.SOLARIZE, 0.4, lambda x: TF.solarize(x, 0.4)),
    "autocontrast": (A.AUTOCONTRAST, 0, TF.autocontrast),
    "equalize": (A.EQUALIZE, 0, lambda x: TF.equalize((x * 255).round().to(torch.uint8)).float() / 255),
    "rotate": (A.ROTATE, 30, lambda x: TF.rotate(x, 30.0)),
    "translate_x": (A.TRANSLATE_X, 5, lambda x: TF.affine(x, angle=0.0, translate=[5, 0], scale=1.0,
                                                        shear=[0.0, 0.0])),
    "translate_y": (A.TRANSLATE_Y, -7, lambda x: TF.affine(x, angle=0.0, translate=[0, -7], scale=1.0,
                                                         shear=[0.0, 0.0])),
    "shear_x": (A.SHEAR_X, 0.3, lambda x: TF.affine(x, angle=0.0, translate=[0, 0], scale=1.0,
                                                   shear=[math.degrees(math.atan(0.3)), 0.0])),
    "shear_y": (A.SHEAR_Y, -0.2, lambda x: TF.affine(x, angle=0.0, translate=[0, 0], scale=1.0,
                                                    shear=[0.0, math.degrees(math.atan(-0.2))])),
    "identity": (A.IDENTITY, 0, lambda x: x),
}


@pytest.mark.parametrize("name", sorted(REFERENCE))
def test_each_op_equals_torchvision(name):
    op, magnitude, reference = REFERENCE[name]
    x = _images()
    torch.testing.assert_close(_apply(x, op, magnitude), reference(x), rtol=0, atol=2e-6)


def test_ops_are_chosen_per_sample():
    """A batch of one image repeated: each copy gets its own op, so the copies end up different."""
    x = _images(1).expand(64, -1, -1, -1).contiguous()
    out = A.random_policy(x, "trivialaugment", torch.Generator().manual_seed(0))
    distinct = {tuple(o.flatten()[::97].tolist()) for o in out}
    assert len(distinct) > 20
    # and the per-sample op really is what ran: sample i equals op[i] applied alone
    g = torch.Generator().manual_seed(3)
    op = torch.randint(0, A.NUM_OPS, (64,), generator=g)
    mag = torch.rand(64, generator=g) * 0.5
    mag = torch.where(op == A.POSTERIZE, torch.full_like(mag, 4.0), mag)
    mixed = A._apply_ops(x, op, mag)
    for i in (0, 7, 33):
        alone = A._apply_ops(x[i:i + 1], op[i:i + 1], mag[i:i + 1])
        torch.testing.assert_close(mixed[i:i + 1], alone, rtol=0, atol=1e-6)


def test_trivialaugment_applies_each_image_its_own_drawn_op():
    """The generator's draws, in order: an op per image, a magnitude bin per image, a sign per image."""
    x = _images(1).expand(32, -1, -1, -1).contiguous()
    out = A.random_policy(x, "trivialaugment", torch.Generator().manual_seed(11))
    g = torch.Generator().manual_seed(11)
    op = torch.randint(0, A.NUM_OPS, (32,), generator=g)
    bins = torch.randint(0, A.NUM_BINS, (32,), generator=g)
    flip = torch.rand(32, generator=g) < 0.5
    assert len(set(op.tolist())) >= 8
    table, signed = A._tables("trivialaugment", 32, torch.device("cpu"))
    mag = torch.where(flip & signed[op], -table[op, bins], table[op, bins])
    for i in range(32):
        torch.testing.assert_close(out[i:i + 1], A._apply_ops(x[i:i + 1], op[i:i + 1], mag[i:i + 1]), rtol=0,
                                   atol=1e-6)


@pytest.mark.parametrize("policy", ["trivialaugment", "randaugment"])
def test_policies_repeat_with_the_seed(policy):
    x = _images(16)
    a = A.random_policy(x, policy, torch.Generator().manual_seed(5))
    b = A.random_policy(x, policy, torch.Generator().manual_seed(5))
    c = A.random_policy(x, policy, torch.Generator().manual_seed(6))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.min() >= 0 and a.max() <= 1


def test_magnitude_tables_match_torchvision():
    from torchvision.transforms import RandAugment, TrivialAugmentWide

    for policy, cls in (("trivialaugment", TrivialAugmentWide), ("randaugment", RandAugment)):
        space = (cls()._augmentation_space(A.NUM_BINS) if cls is TrivialAugmentWide
                 else cls()._augmentation_space(A.NUM_BINS, (32, 32)))
        ours = A._magnitude_table(policy, 32)
        for name, op in (("ShearX", A.SHEAR_X), ("TranslateY", A.TRANSLATE_Y), ("Rotate", A.ROTATE),
                         ("Brightness", A.BRIGHTNESS), ("Posterize", A.POSTERIZE), ("Solarize", A.SOLARIZE)):
            theirs = space[name][0].double()
            if name == "Solarize":  # torchvision's table is for 0..255 images up to 255.0 ... ours for [0, 1]
                theirs = theirs / theirs.max() if theirs.max() > 1 else theirs
            torch.testing.assert_close(ours[op], theirs, rtol=1e-6, atol=1e-6, msg=f"{policy} {name}")


def test_random_erasing_boxes():
    x = torch.zeros(200, 3, 32, 32)
    assert torch.equal(A.random_erasing(x, 0.0, torch.Generator().manual_seed(0)), x)
    out = A.random_erasing(x, 1.0, torch.Generator().manual_seed(0))
    changed = (out != 0).any(dim=1)  # (b, h, w) pixels replaced by noise (noise is never exactly 0 here)
    area = changed.float().mean(dim=(1, 2))
    assert (area > 0).all() and area.min() >= 0.015 and area.max() <= 0.36
    rows, cols = changed.any(dim=2), changed.any(dim=1)
    box_area = rows.sum(1) * cols.sum(1)
    assert torch.equal(box_area, changed.sum(dim=(1, 2)))  # one solid rectangle per image
    half = A.random_erasing(x, 0.5, torch.Generator().manual_seed(1))
    share = (half != 0).flatten(1).any(1).float().mean().item()
    assert 0.35 < share < 0.65


@pytest.mark.parametrize("mixup,cutmix", [(0.8, 0.0), (0.0, 1.0), (0.8, 1.0)])
def test_mix_targets_sum_to_one_and_match_the_pixels(mixup, cutmix):
    x = torch.arange(1, 9).float().view(8, 1, 1, 1).expand(8, 3, 32, 32) / 16  # no pixel shared by two images
    y = torch.arange(8) % 5
    rng = np.random.default_rng(0)
    for _ in range(20):
        mixed, target = A.mix_batch(x, y, 5, rng, mixup, cutmix)
        torch.testing.assert_close(target.sum(1), torch.ones(8))
        lam = target[torch.arange(8), y].clone()
        same = y == y.flip(0)
        lam[same] = 1.0  # an image paired with its own class: all mass on it
        partner = x.flip(0)
        from_self = (mixed == x).flatten(1).float().mean(1)
        from_partner = (mixed == partner).flatten(1).float().mean(1)
        if torch.equal(mixed, x):
            assert torch.equal(target, torch.nn.functional.one_hot(y, 5).float())
            continue
        if ((mixed == x) | (mixed == partner)).all():  # CutMix: λ = share of the image's own pixels
            torch.testing.assert_close(lam[~same], from_self[~same], rtol=0, atol=1e-6)
        else:  # Mixup: the same λ everywhere
            lam0 = target[0, y[0]].item() if y[0] != y[7] else None
            if lam0 is not None:
                torch.testing.assert_close(mixed[0], lam0 * x[0] + (1 - lam0) * partner[0], rtol=0, atol=1e-6)
        assert (from_partner[~same] < 1.0).all()


def test_mix_probability_zero_leaves_one_hot_targets():
    x, y = _images(4), torch.tensor([0, 1, 2, 3])
    mixed, target = A.mix_batch(x, y, 4, np.random.default_rng(0), 0.8, 1.0, prob=0.0)
    assert torch.equal(mixed, x) and torch.equal(target, torch.eye(4))


def test_loader_gives_soft_targets_and_repeats_per_epoch():
    images = (torch.rand(40, 3, 32, 32) * 255).to(torch.uint8)
    labels = torch.arange(40) % 10
    aug = A.Augment(policy="trivialaugment", erasing=0.25, mixup_alpha=0.8, cutmix_alpha=1.0)

    def epoch(e):
        loader = BatchLoader(images, labels, 16, shuffle=True, seed=3, device="cpu", crop_padding=4, hflip=True,
                             augment=aug, num_classes=10)
        loader.set_epoch(e)
        return list(loader)

    first, again, other = epoch(1), epoch(1), epoch(2)
    for (xa, ya), (xb, yb) in zip(first, again):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    assert not torch.equal(first[0][0], other[0][0])
    for _, y in first:
        assert y.shape[1] == 10
        torch.testing.assert_close(y.sum(1), torch.ones(len(y)))


def test_loader_without_num_classes_refuses_mixing():
    images = torch.zeros(4, 3, 8, 8, dtype=torch.uint8)
    with pytest.raises(ValueError, match="num_classes"):
        BatchLoader(images, torch.zeros(4, dtype=torch.long), 2, shuffle=False, seed=0, device="cpu",
                    augment=A.Augment(mixup_alpha=0.8))
