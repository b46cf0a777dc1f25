"""Data preparation (digits, CIFAR in torchvision's on-disk format, imagefolder), loading, augmentation, batches."""

from __future__ import annotations

import math
import os
import pickle
import tarfile
import urllib.error
import urllib.request
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision.datasets.cifar
from PIL import Image
from sklearn.datasets import load_digits

from mambaprune.config import DataCfg, TrainCfg
from mambaprune.data import (
    BatchLoader,
    DataError,
    augment_batch,
    check_source,
    load_meta,
    load_split,
    make_loaders,
    prepare_data,
)
from mambaprune.errors import ConfigError


def load_all(out: Path) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    return {s: load_split(out, s) for s in ("train", "val", "test")}


def image_keys(images: torch.Tensor) -> list[bytes]:
    """One hashable key per image, to follow images across splits."""
    return [img.numpy().tobytes() for img in images]


def assert_stats_from_train(meta: dict, train_images: torch.Tensor) -> None:
    x = train_images.double() / 255
    assert meta["mean"] == pytest.approx(x.mean(dim=(0, 2, 3)).tolist(), abs=1e-9)
    assert meta["std"] == pytest.approx(x.std(dim=(0, 2, 3), unbiased=False).tolist(), abs=1e-9)


def assert_no_output(out: Path) -> None:
    """A failed prepare leaves neither outputs nor temp folders behind."""
    assert not out.exists() or not any(out.iterdir())
    assert not [p for p in out.parent.iterdir() if p.name.startswith(f".{out.name}.tmp")]


# ---------------------------------------------------------------------------------------------- digits


@pytest.fixture(scope="module")
def digits_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("digits") / "data"
    prepare_data(DataCfg(), seed=0, out_dir=out)
    return out


def test_digits_shapes_sizes_and_meta(digits_dir):
    splits, meta = load_all(digits_dir), load_meta(digits_dir)
    n_test = math.ceil(0.2 * 1797)  # 360
    n_val = math.ceil(0.1 * (1797 - n_test))  # 144
    assert meta["sizes"] == {"train": 1797 - n_test - n_val, "val": n_val, "test": n_test}
    for name, (x, y) in splits.items():
        assert x.shape == (meta["sizes"][name], 3, 16, 16) and x.dtype == torch.uint8
        assert y.dtype == torch.int64 and y.min() == 0 and y.max() == 9
        assert torch.equal(x[:, 0], x[:, 1]) and torch.equal(x[:, 0], x[:, 2])  # grey replicated to RGB
    assert meta["classes"] == [str(i) for i in range(10)] and meta["num_classes"] == 10
    assert meta["in_chans"] == 3 and meta["img_size"] == 16 and meta["source"] == "sklearn.datasets.load_digits"
    assert_stats_from_train(meta, splits["train"][0])


def test_digits_stratified(digits_dir):
    all_counts = np.bincount(load_digits().target, minlength=10)
    for name, (_, y) in load_all(digits_dir).items():
        share = len(y) / 1797
        counts = np.bincount(y.numpy(), minlength=10)
        assert np.all(np.abs(counts - share * all_counts) <= 1.5), (name, counts)


def test_digits_splits_partition_the_real_images(tmp_path):
    """At native size every image is the real digit scaled to 0..255, and each is in exactly one split."""
    digits = load_digits()
    expected = torch.from_numpy(np.rint(digits.images * 255 / 16).astype(np.uint8))
    prepare_data(DataCfg(img_size=8), seed=0, out_dir=tmp_path / "a")
    splits = load_all(tmp_path / "a")
    got = Counter()
    for x, y in splits.values():
        got.update(zip(image_keys(x[:, 0]), y.tolist()))
    assert got == Counter(zip(image_keys(expected), digits.target.tolist()))
    assert splits["train"][0].max() == 255 and splits["train"][0].min() == 0

    prepare_data(DataCfg(img_size=8), seed=0, out_dir=tmp_path / "b")
    prepare_data(DataCfg(img_size=8), seed=1, out_dir=tmp_path / "c")
    assert torch.equal(load_split(tmp_path / "b", "test")[0], splits["test"][0])
    assert not torch.equal(load_split(tmp_path / "c", "test")[0], splits["test"][0])


# ---------------------------------------------------------------------------------------------- cifar


def _pickle(path: Path, obj) -> None:
    path.write_bytes(pickle.dumps(obj, protocol=2))


def write_cifar10(root: Path, per_batch: int = 20, n_test: int = 30) -> tuple[np.ndarray, np.ndarray]:
    """Tiny CIFAR-10 in torchvision's on-disk format; returns (train rows, train labels)."""
    rng = np.random.default_rng(0)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    data = rng.integers(0, 256, (5 * per_batch, 3072), dtype=np.uint8)
    labels = np.arange(5 * per_batch) % 10
    for b in range(5):
        rows = slice(b * per_batch, (b + 1) * per_batch)
        _pickle(folder / f"data_batch_{b + 1}", {"data": data[rows], "labels": labels[rows].tolist()})
    test = rng.integers(0, 50, (n_test, 3072), dtype=np.uint8)  # darker than train: stats must ignore it
    _pickle(folder / "test_batch", {"data": test, "labels": (np.arange(n_test) % 10).tolist()})
    _pickle(folder / "batches.meta", {"label_names": [f"c{i}" for i in range(10)]})
    return data, labels


def write_cifar100(root: Path, n_train: int = 500, n_test: int = 100) -> None:
    rng = np.random.default_rng(1)
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    for name, n in (("train", n_train), ("test", n_test)):
        fine = (np.arange(n) % 100).tolist()
        _pickle(folder / name, {"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8), "fine_labels": fine,
                                "coarse_labels": [f // 5 for f in fine]})
    _pickle(folder / "meta", {"fine_label_names": [f"f{i}" for i in range(100)],
                              "coarse_label_names": [f"k{i}" for i in range(20)]})


@pytest.fixture
def no_md5(monkeypatch):
    """Our files are not the real ones, so only torchvision's md5 check is relaxed; parsing stays real."""
    monkeypatch.setattr(torchvision.datasets.cifar, "check_integrity", lambda fpath, md5=None: os.path.isfile(fpath))


def test_cifar10_real_parse_path_and_splits(tmp_path, no_md5):
    data, labels = write_cifar10(tmp_path / "ds")
    meta = prepare_data(DataCfg(name="cifar10", root=str(tmp_path / "ds"), img_size=32, download=False), seed=0,
                        out_dir=tmp_path / "out")
    assert meta["sizes"] == {"train": 90, "val": 10, "test": 30}
    assert meta["classes"] == [f"c{i}" for i in range(10)] and meta["img_size"] == 32
    splits = load_all(tmp_path / "out")
    for x, y in splits.values():
        assert x.shape[1:] == (3, 32, 32) and x.dtype == torch.uint8 and y.dtype == torch.int64
    source = dict(zip(image_keys(torch.from_numpy(data).reshape(-1, 3, 32, 32)), labels.tolist()))
    train_keys, val_keys = image_keys(splits["train"][0]), image_keys(splits["val"][0])
    assert set(train_keys).isdisjoint(val_keys) and set(train_keys) | set(val_keys) == set(source)
    for keys, (_, y) in ((train_keys, splits["train"]), (val_keys, splits["val"])):
        assert [source[k] for k in keys] == y.tolist()  # labels stayed with their images
    assert np.bincount(splits["val"][1].numpy(), minlength=10).tolist() == [1] * 10  # stratified
    test = pickle.loads((tmp_path / "ds/cifar-10-batches-py/test_batch").read_bytes())
    assert torch.equal(splits["test"][0], torch.from_numpy(test["data"]).reshape(-1, 3, 32, 32))  # untouched
    assert_stats_from_train(meta, splits["train"][0])
    assert meta["mean"][0] > 0.4  # the dark test images did not enter the statistics


def test_cifar10_resizes_and_extracts_a_placed_archive(tmp_path, no_md5):
    root = tmp_path / "ds"
    write_cifar10(root)
    with tarfile.open(root / "cifar-10-python.tar.gz", "w:gz") as tar:
        tar.add(root / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    for f in (root / "cifar-10-batches-py").iterdir():
        f.unlink()
    (root / "cifar-10-batches-py").rmdir()
    meta = prepare_data(DataCfg(name="cifar10", root=str(root), img_size=16, download=False), 0, tmp_path / "out")
    assert (root / "cifar-10-batches-py" / "data_batch_5").is_file()
    x, _ = load_split(tmp_path / "out", "train")
    assert x.shape == (90, 3, 16, 16) and meta["img_size"] == 16


def test_cifar100_fine_labels(tmp_path, no_md5):
    write_cifar100(tmp_path / "ds")
    meta = prepare_data(DataCfg(name="cifar100", root=str(tmp_path / "ds"), img_size=32, val_fraction=0.2,
                                download=False), seed=3, out_dir=tmp_path / "out")
    assert meta["num_classes"] == 100 and meta["classes"][7] == "f7"
    assert meta["sizes"] == {"train": 400, "val": 100, "test": 100}
    splits = load_all(tmp_path / "out")
    assert np.bincount(splits["val"][1].numpy(), minlength=100).tolist() == [1] * 100
    assert splits["train"][1].max() == 99 and splits["test"][1].tolist() == list(range(100))


@pytest.mark.parametrize("name, archive, folder", [("cifar10", "cifar-10-python.tar.gz", "cifar-10-batches-py"),
                                                   ("cifar100", "cifar-100-python.tar.gz", "cifar-100-python")])
def test_cifar_offline_names_the_folder(tmp_path, monkeypatch, name, archive, folder):
    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    root = tmp_path / "ds"
    for download in (False, True):
        with pytest.raises(DataError) as info:
            prepare_data(DataCfg(name=name, root=str(root), download=download), 0, tmp_path / "out")
        msg = str(info.value)
        assert str(root.resolve()) in msg and archive in msg and folder in msg and "data.root" in msg
        assert ("download failed" in msg) == download
    assert_no_output(tmp_path / "out")


def test_check_source_finds_what_prepare_would_read_without_decoding(tmp_path, monkeypatch, no_md5):
    """The pipeline's first stage: a missing source fails there, before DVC deletes prepare's outputs."""
    import mambaprune.data as data_module

    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    monkeypatch.setattr(data_module, "_decode_image", lambda *a: pytest.fail("check_source decoded an image"))
    check_source(DataCfg(name="digits"))
    for download in (False, True):
        with pytest.raises(DataError, match="cifar-10-python.tar.gz"):
            check_source(DataCfg(name="cifar10", root=str(tmp_path / "none"), download=download))
    write_cifar10(tmp_path / "ds")
    check_source(DataCfg(name="cifar10", root=str(tmp_path / "ds"), download=False))
    write_tree(tmp_path / "tree", n_train=2, n_test=1)
    check_source(DataCfg(name="imagefolder", root=str(tmp_path / "tree")))
    _class_mismatch(tmp_path / "tree")
    with pytest.raises(DataError, match=r"differ: only in train \['dog'\]"):
        check_source(DataCfg(name="imagefolder", root=str(tmp_path / "tree")))
    with pytest.raises(DataError, match="does not exist"):
        check_source(DataCfg(name="imagefolder", root=str(tmp_path / "no-tree")))


# ---------------------------------------------------------------------------------------------- imagefolder

CLASSES = ("bird", "cat", "dog")


def color(k: int, i: int) -> tuple[int, int, int]:
    return 40 * k + 20, 10 * i + 5, 200


def write_tree(root: Path, n_train: int = 10, n_test: int = 3) -> None:
    """Solid-colour PNGs and JPEGs of two sizes; the colour encodes (class, index)."""
    for split, n in (("train", n_train), ("test", n_test)):
        for k, name in enumerate(CLASSES):
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(n):
                img = Image.new("RGB", (12, 12) if i % 2 else (20, 16), color(k, i))
                img.save(folder / f"{i}.{'png' if i % 2 else 'jpg'}", quality=95)


def decode_ids(images: torch.Tensor) -> list[tuple[int, int]]:
    """(class, index) of each solid-colour image, checking it stayed solid."""
    ids = []
    for img in images.int():
        assert (img - img[:, :1, :1]).abs().max() <= 3
        r, g, _ = img[:, 0, 0].tolist()
        ids.append((round((r - 20) / 40), round((g - 5) / 10)))
    return ids


def test_imagefolder_png_and_jpeg(tmp_path):
    write_tree(tmp_path / "tree")
    cfg = DataCfg(name="imagefolder", root=str(tmp_path / "tree"), img_size=8, val_fraction=0.2)
    meta = prepare_data(cfg, seed=0, out_dir=tmp_path / "out")
    assert meta["classes"] == list(CLASSES) and meta["num_classes"] == 3 and meta["in_chans"] == 3
    assert meta["sizes"] == {"train": 24, "val": 6, "test": 9}
    splits = load_all(tmp_path / "out")
    ids = {}
    for name, (x, y) in splits.items():
        assert x.shape == (meta["sizes"][name], 3, 8, 8) and x.dtype == torch.uint8 and y.dtype == torch.int64
        ids[name] = decode_ids(x)
        assert [k for k, _ in ids[name]] == y.tolist()  # label = class folder
    assert set(ids["train"]).isdisjoint(ids["val"]) and len(set(ids["train"])) == 24
    assert set(ids["train"]) | set(ids["val"]) == {(k, i) for k in range(3) for i in range(10)}
    assert sorted(ids["test"]) == [(k, i) for k in range(3) for i in range(3)]
    assert np.bincount(splits["val"][1].numpy()).tolist() == [2, 2, 2]
    assert_stats_from_train(meta, splits["train"][0])
    assert meta["mean"][2] == pytest.approx(200 / 255, abs=0.01)


def _remove_test(root):
    for f in (root / "test").rglob("*.*"):
        f.unlink()
    for d in sorted((root / "test").rglob("*"), reverse=True):
        d.rmdir()
    (root / "test").rmdir()


def _flat_train(root):
    for f in (root / "train" / "cat").iterdir():
        f.rename(root / "train" / f"cat_{f.name}")
    for name in CLASSES:
        for f in (root / "train" / name).glob("*"):
            f.rename(root / "train" / f"{name}_{f.name}")
        (root / "train" / name).rmdir()


def _empty_class(root):
    for f in (root / "train" / "cat").iterdir():
        f.unlink()
    (root / "train" / "cat" / "notes.txt").write_text("not an image")


def _garbage_image(root):
    (root / "train" / "dog" / "bad.jpg").write_bytes(b"\xff\xd8 this is not a jpeg")


def _truncated_image(root):
    good = root / "train" / "dog" / "0.jpg"
    Image.effect_noise((64, 64), 50).convert("RGB").save(good, quality=90)
    (root / "train" / "dog" / "bad.jpg").write_bytes(good.read_bytes()[:300])


def _class_mismatch(root):
    for f in (root / "test" / "dog").iterdir():
        f.unlink()
    (root / "test" / "dog").rmdir()


@pytest.mark.parametrize("breaks, expected", [
    (lambda root: None, "tree_missing does not exist"),
    (_remove_test, "test does not exist"),
    (_flat_train, "has no class folders"),
    (_empty_class, "cat in .* hold no images"),
    (_garbage_image, "cannot read image .*bad.jpg"),
    (_truncated_image, "cannot read image .*bad.jpg"),
    (_class_mismatch, r"differ: only in train \['dog'\]"),
], ids=["missing-root", "missing-test", "no-class-folders", "empty-class", "garbage", "truncated", "mismatch"])
def test_imagefolder_errors(tmp_path, breaks, expected):
    root = tmp_path / "tree"
    write_tree(root, n_train=4, n_test=2)
    breaks(root)
    if expected.startswith("tree_missing"):
        root = tmp_path / "tree_missing"
    with pytest.raises(DataError, match=expected) as info:
        prepare_data(DataCfg(name="imagefolder", root=str(root), img_size=8), 0, tmp_path / "out")
    if "class folders" in expected or "does not exist" in expected:
        assert "ImageFolder layout" in str(info.value)
    assert_no_output(tmp_path / "out")


def test_imagefolder_layout_is_checked_before_any_image_is_decoded(tmp_path, monkeypatch):
    """A class mismatch between train/ and test/ needs two directory listings, not 60k JPEG decodes."""
    import mambaprune.data as data_module

    root = tmp_path / "tree"
    write_tree(root, n_train=4, n_test=2)
    _class_mismatch(root)
    decoded = []
    monkeypatch.setattr(data_module, "_decode_image", lambda path, size: decoded.append(path))
    with pytest.raises(DataError, match="differ: only in train"):
        prepare_data(DataCfg(name="imagefolder", root=str(root), img_size=8), 0, tmp_path / "out")
    assert decoded == []


def test_failed_prepare_keeps_previous_outputs(tmp_path):
    root = tmp_path / "tree"
    write_tree(root, n_train=4, n_test=2)
    cfg = DataCfg(name="imagefolder", root=str(root), img_size=8, val_fraction=0.25)
    prepare_data(cfg, 0, tmp_path / "out")
    before = {p.name: p.read_bytes() for p in (tmp_path / "out").iterdir()}
    _garbage_image(root)
    with pytest.raises(DataError):
        prepare_data(cfg, 0, tmp_path / "out")
    assert {p.name: p.read_bytes() for p in (tmp_path / "out").iterdir()} == before
    assert sorted(before) == ["meta.json", "test.pt", "train.pt", "val.pt"]


def test_prepare_killed_while_writing_leaves_no_usable_mix(tmp_path, monkeypatch):
    """meta.json goes first and comes back last: a prepare interrupted between two splits leaves a folder that
    load_meta refuses (rerun prepare), and no temp file."""
    prepare_data(DataCfg(img_size=8), 0, tmp_path / "out")
    save, calls = torch.save, []

    def dies_on_the_third_split(obj, f):  # train, val, then test
        calls.append(1)
        if len(calls) == 3:
            raise OSError("killed")
        save(obj, f)

    monkeypatch.setattr(torch, "save", dies_on_the_third_split)
    with pytest.raises(OSError, match="killed"):
        prepare_data(DataCfg(img_size=8), 1, tmp_path / "out")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["test.pt", "train.pt", "val.pt"]
    with pytest.raises(DataError, match="meta.json not found"):
        load_meta(tmp_path / "out")


# ---------------------------------------------------------------------------------------------- loading


def test_load_errors_name_the_file(tmp_path, digits_dir):
    with pytest.raises(DataError, match=r"train\.pt not found: .*dvc repro prepare"):
        load_split(tmp_path, "train")
    with pytest.raises(DataError, match=r"meta\.json not found: .*dvc repro prepare"):
        load_meta(tmp_path)
    (tmp_path / "val.pt").write_bytes(b"garbage")
    with pytest.raises(DataError, match=r"val\.pt is unreadable or corrupt.*dvc repro prepare"):
        load_split(tmp_path, "val")
    (tmp_path / "meta.json").write_text("{not json")
    with pytest.raises(DataError, match=r"meta\.json is unreadable or corrupt"):
        load_meta(tmp_path)
    torch.save({"images": torch.zeros(2, 3, 4, 4), "labels": torch.zeros(2, dtype=torch.int64)}, tmp_path / "x.pt")
    with pytest.raises(DataError, match="does not hold uint8"):
        load_split(tmp_path, "x")
    x, y = load_split(digits_dir, "val")  # the real files load with weights_only=True
    assert torch.load(digits_dir / "val.pt", weights_only=True)["images"].equal(x)


# ---------------------------------------------------------------------------------------------- augmentation


def _batch(b=64, h=8, w=10) -> torch.Tensor:
    return torch.rand(b, 3, h, w, generator=torch.Generator().manual_seed(0)) + 0.1  # no zeros: padding shows


def test_crop_shifts_content_with_zero_padding():
    x = _batch()
    out = augment_batch(x, crop_padding=2, hflip=False, generator=torch.Generator().manual_seed(0))
    assert out.shape == x.shape and out.dtype == x.dtype
    padded = F.pad(x, (2, 2, 2, 2))
    offsets = []
    for i in range(len(x)):
        hits = [(dy, dx) for dy in range(5) for dx in range(5)
                if torch.equal(out[i], padded[i, :, dy:dy + 8, dx:dx + 10])]
        assert len(hits) == 1
        offsets.append(hits[0])
    assert len(set(offsets)) > 10 and sum(o != (2, 2) for o in offsets) > 40  # really shifted, per image


def test_flip_mirrors_some_images():
    x = _batch()
    out = augment_batch(x, crop_padding=0, hflip=True, generator=torch.Generator().manual_seed(0))
    flipped = [torch.equal(o, xi.flip(-1)) for o, xi in zip(out, x)]
    kept = [torch.equal(o, xi) for o, xi in zip(out, x)]
    assert all(f != k for f, k in zip(flipped, kept))
    assert 16 < sum(flipped) < 48


def test_augmentation_is_seeded():
    x = _batch()

    def run(seed):
        return augment_batch(x, 3, True, torch.Generator().manual_seed(seed))

    assert torch.equal(run(5), run(5))
    assert not torch.equal(run(5), run(6))
    assert torch.equal(augment_batch(x, 0, False, torch.Generator()), x)


# ---------------------------------------------------------------------------------------------- batches


def numbered(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Image i is filled with value i (mod 256) and labelled i, to follow samples through batches."""
    labels = torch.arange(n)
    return (labels % 256).to(torch.uint8)[:, None, None, None].expand(n, 3, 6, 6).contiguous(), labels


def collect(loader, epoch) -> list[tuple[torch.Tensor, torch.Tensor]]:
    loader.set_epoch(epoch)
    return list(loader)


def test_loader_yields_each_sample_once_as_float():
    loader = BatchLoader(*numbered(103), 10, shuffle=True, seed=0, device="cpu")
    batches = collect(loader, 0)
    assert len(loader) == len(batches) == 11 and [len(y) for _, y in batches] == [10] * 10 + [3]
    ys = torch.cat([y for _, y in batches])
    assert sorted(ys.tolist()) == list(range(103)) and ys.tolist() != list(range(103))
    for x, y in batches:
        assert x.dtype == torch.float32 and y.dtype == torch.int64 and x.shape[1:] == (3, 6, 6)
        assert torch.equal(x, (y.float() / 255)[:, None, None, None].expand_as(x))


def test_loader_order_is_a_function_of_seed_and_epoch():
    def make(seed=0):
        return BatchLoader(*numbered(103), 10, shuffle=True, seed=seed, device="cpu", crop_padding=2, hflip=True)

    a, b = make(), make()
    for epoch in range(3):
        run_a = collect(a, epoch)
    resumed = collect(b, 2)  # straight to epoch 2, as after a resume
    assert all(torch.equal(xa, xb) and torch.equal(ya, yb) for (xa, ya), (xb, yb) in zip(run_a, resumed))
    order = [torch.cat([y for _, y in collect(make(), e)]).tolist() for e in (0, 1)]
    assert order[0] != order[1]
    assert torch.cat([y for _, y in collect(make(seed=1), 0)]).tolist() != order[0]
    assert (run_a[0][0] == 0).any()  # augmentation ran: zero padding came in


def test_loader_without_shuffle_and_drop_last():
    plain = collect(BatchLoader(*numbered(25), 10, shuffle=False, seed=0, device="cpu"), 4)
    assert torch.cat([y for _, y in plain]).tolist() == list(range(25))
    dropped = BatchLoader(*numbered(25), 10, shuffle=True, seed=0, device="cpu", drop_last=True)
    assert len(dropped) == 2 and [len(y) for _, y in collect(dropped, 0)] == [10, 10]


@pytest.mark.parametrize("n", [96, 102])
def test_ddp_shards_split_each_global_batch(n):
    world, batch = 4, 8
    ranks = [BatchLoader(*numbered(n), batch, shuffle=True, seed=7, device="cpu", rank=r, world_size=world)
             for r in range(world)]
    single = collect(BatchLoader(*numbered(n), batch, shuffle=True, seed=7, device="cpu"), 3)
    per_rank = [collect(loader, 3) for loader in ranks]
    assert len({len(b) for b in per_rank}) == 1 and len(per_rank[0]) == len(ranks[0]) == math.ceil(n / batch)
    seen = [torch.cat([y for _, y in batches]).tolist() for batches in per_rank]
    assert sum(map(len, seen)) == math.ceil(n / world) * world  # padded to a multiple of world_size
    assert set().union(*seen) == set(range(n))  # covers the epoch
    if n % world == 0:
        assert all(set(seen[i]).isdisjoint(seen[j]) for i in range(world) for j in range(i))
    for step, (_, y) in enumerate(single[:-1]):  # every step, the ranks share out the global batch
        parts = [per_rank[r][step][1] for r in range(world)]
        assert all(len(p) == batch // world for p in parts)
        assert sorted(torch.cat(parts).tolist()) == sorted(y.tolist())
    with pytest.raises(ConfigError, match="train.batch_size .* must be a multiple of the number of training"):
        BatchLoader(*numbered(n), 10, shuffle=True, seed=0, device="cpu", world_size=4)


def test_make_loaders(digits_dir):
    train, val, test, meta = make_loaders(digits_dir, TrainCfg(batch_size=64, crop_padding=2), seed=0, device="cpu",
                                          eval_batch_size=100)
    assert meta["num_classes"] == 10 and len(train) == math.ceil(meta["sizes"]["train"] / 64)
    assert (train.crop_padding, train.hflip, val.crop_padding, val.hflip) == (2, False, 0, False)
    val.set_epoch(1)
    x, y = next(iter(val))
    images, labels = load_split(digits_dir, "val")
    assert torch.equal(y, labels[:100]) and torch.equal(x, images[:100].float() / 255)
    assert len(test) == math.ceil(meta["sizes"]["test"] / 100)
