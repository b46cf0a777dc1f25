"""The training loop: LR schedule, weight-decay groups, learning, hooks, resume, NaN handling."""

from __future__ import annotations

import csv
import math

import pytest
import torch

import mambaprune
from mambaprune import train as train_module
from mambaprune.config import DataCfg, TrainCfg
from mambaprune.data import BatchLoader, load_split, make_loaders, prepare_data
from mambaprune.records import round_floats
from mambaprune.train import TrainingError, build_optimizer, fit, history_csv, lr_at

SEED = 0


@pytest.fixture(autouse=True)
def _quiet_single_thread(monkeypatch):
    """One thread: tiny models run faster and steadier that way on a shared 2-core CI box."""
    monkeypatch.setenv("MAMBAPRUNE_NO_PROGRESS", "1")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    """sklearn digits prepared by the real prepare stage: 16x16 RGB uint8, train/val/test + meta."""
    out = tmp_path_factory.mktemp("digits")
    meta = prepare_data(DataCfg(name="digits", img_size=16, val_fraction=0.1), SEED, out)
    return out, meta


def _model(meta, **kw):
    kw = dict(dict(embed_dim=32, depth=2, d_state=4, patch_size=8), **kw)
    return mambaprune.create_model("mamba_tiny", num_classes=10, img_size=16, norm_mean=meta["mean"],
                                   norm_std=meta["std"], **kw)


def _tiny_setup(digits, n_train=96, batch=32):
    """A 1-block model and 3 steps per epoch: enough to exercise the loop in well under a second."""
    data_dir, meta = digits
    x, y = load_split(data_dir, "train")
    vx, vy = load_split(data_dir, "val")
    train = BatchLoader(x[:n_train], y[:n_train], batch, shuffle=True, seed=SEED, device="cpu", crop_padding=2)
    val = BatchLoader(vx[:64], vy[:64], 64, shuffle=False, seed=SEED, device="cpu")
    cfg = TrainCfg(batch_size=batch, lr=3e-3, warmup_epochs=1, device="cpu")
    return (lambda: _model(meta, embed_dim=16, depth=1)), train, val, cfg


class Interrupt(Exception):
    pass


def _interrupt_at(epoch):
    def callback(history, model):
        if history[-1]["epoch"] == epoch:
            raise Interrupt
    return callback


class Logged(list):
    """An epoch callback keeping a copy of every record it has not seen yet (as tracking.epoch_logger does)."""

    def __call__(self, history, model):
        self.extend(dict(r) for r in history[len(self):])


class EpochCounter:
    """Records which epochs were actually trained (on_epoch_end runs only for trained epochs)."""

    def __init__(self):
        self.epochs = []

    def on_epoch_end(self, epoch, record):
        self.epochs.append(epoch)


class NoisyPenalty:
    """A penalty of random strength: makes the weights depend on the torch RNG, so resume must restore it."""

    def loss_term(self, model, progress):
        return 1e-2 * torch.rand(()) * model.head.weight.square().sum()


# ---------------------------------------------------------------------------------------------- pure parts


def test_lr_warmup_is_linear_and_never_zero():
    lrs = [lr_at(s, 20, 4, 1.0, "cosine", 0.1) for s in range(5)]
    assert lrs == [0.25, 0.5, 0.75, 1.0, 1.0]


@pytest.mark.parametrize("warmup", [0, 3])
def test_lr_cosine_endpoints_and_midpoint(warmup):
    total, base, ratio = warmup + 11, 2.0, 0.1
    lr = [lr_at(s, total, warmup, base, "cosine", ratio) for s in range(total + 2)]
    assert lr[warmup] == base
    assert lr[warmup + 5] == pytest.approx((base + base * ratio) / 2, abs=1e-12)
    assert lr[total - 1] == pytest.approx(base * ratio, abs=1e-12)
    assert lr[total + 1] == pytest.approx(base * ratio, abs=1e-12)  # past the end: stays at the floor
    assert all(a >= b for a, b in zip(lr[warmup:], lr[warmup + 1:]))


def test_lr_constant_after_warmup():
    assert [lr_at(s, 10, 2, 1.0, "constant", 0.01) for s in range(4)] == [0.5, 1.0, 1.0, 1.0]


def test_weight_decay_groups(digits):
    model = _model(digits[1])
    opt = build_optimizer(model, TrainCfg(weight_decay=0.05), lr=1e-3)
    decay_of = {id(p): g["weight_decay"] for g in opt.param_groups for p in g["params"]}
    names = dict(model.named_parameters())
    assert len(decay_of) == len(names)
    for name, p in names.items():
        excluded = (p.ndim < 2 or name.endswith((".A_log", ".D")) or "norm" in name or name.endswith(".bias")
                    or name == "pos_embed")
        assert decay_of[id(p)] == (0.0 if excluded else 0.05), name
    for name in ("blocks.0.mixer.in_proj.weight", "blocks.0.mlp.fc1.weight", "head.weight",
                 "blocks.0.mixer.ssm.0.x_proj.weight"):
        assert decay_of[id(names[name])] == 0.05
    for name in ("blocks.0.mixer.ssm.0.A_log", "blocks.0.mixer.ssm.0.D", "head.bias", "norm.weight"):
        assert decay_of[id(names[name])] == 0.0
    sgd = build_optimizer(model, TrainCfg(optimizer="sgd", momentum=0.8), lr=0.1)
    assert isinstance(sgd, torch.optim.SGD)
    assert sgd.param_groups[0]["momentum"] == 0.8 and not sgd.param_groups[0]["nesterov"]


def test_zero_epochs_touches_nothing(digits, tmp_path):
    make, train, val, cfg = _tiny_setup(digits)
    ckpt, metrics = tmp_path / "r.pt", tmp_path / "m.csv"
    assert fit(make(), train, val, cfg, 0, resume_path=ckpt, callbacks=[history_csv(metrics)]) == []
    assert not ckpt.exists() and not metrics.exists()


def test_a_loader_without_batches_is_refused_before_training(digits, tmp_path):
    make, _, val, cfg = _tiny_setup(digits)
    ckpt, metrics = tmp_path / "r.pt", tmp_path / "m.csv"
    with pytest.raises(TrainingError, match="yields no batches; lower train.batch_size"):
        fit(make(), [], val, cfg, 1, resume_path=ckpt, callbacks=[history_csv(metrics)])
    assert not ckpt.exists() and not metrics.exists()


# ---------------------------------------------------------------------------------------------- training


def test_learns_digits(digits, tmp_path):
    data_dir, meta = digits
    # patch 8 (4 tokens) keeps it fast; 1-pixel crops still exercise augmentation (0.94-0.95 over seeds 0-2)
    cfg = TrainCfg(batch_size=32, lr=5e-3, warmup_epochs=0.5, crop_padding=1, device="cpu")
    train, val, _, meta = make_loaders(data_dir, cfg, SEED, "cpu", 256)
    torch.manual_seed(SEED)
    logged = Logged()
    history = fit(_model(meta), train, val, cfg, 4, callbacks=[history_csv(tmp_path / "m.csv"), logged])
    assert [r["epoch"] for r in history] == [1, 2, 3, 4] and logged == history
    assert history[-1]["val_acc"] >= 0.85, history  # chance is 0.1
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    rows = list(csv.DictReader(open(tmp_path / "m.csv")))
    assert len(rows) == 4 and float(rows[-1]["val_acc"]) == round_floats(history[-1]["val_acc"])
    assert rows[0]["train_loss"] == f"{history[0]['train_loss']:.6g}"  # 6 significant digits, not 17
    assert set(rows[0]) == {"epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr", "epoch_time_s",
                            "img_per_s"}


def test_hooks_see_increasing_progress_and_edit_gradients(digits, tmp_path):
    make, train, val, cfg = _tiny_setup(digits)

    class Recorder:
        def __init__(self):
            self.loss_p, self.backward_p, self.step_p = [], [], []

        def loss_term(self, model, progress):
            self.loss_p.append(progress)
            return None

        def after_backward(self, model, progress):
            self.backward_p.append(progress)
            assert model.head.weight.grad is not None

        def after_step(self, model, progress, lr):
            self.step_p.append((progress, lr))

        def on_epoch_end(self, epoch, record):
            record["hook_metric"] = 10 * epoch

    rec = Recorder()
    history = fit(make(), train, val, cfg, 2, hooks=[rec], callbacks=[history_csv(tmp_path / "m.csv")])
    total = 2 * len(train)
    assert rec.loss_p == rec.backward_p == [(s + 1) / total for s in range(total)]
    warmup = round(cfg.warmup_epochs * len(train))
    assert rec.step_p == [((s + 1) / total, lr_at(s, total, warmup, cfg.lr, cfg.schedule, cfg.min_lr_ratio))
                          for s in range(total)]
    assert rec.loss_p[-1] == 1.0
    assert [r["hook_metric"] for r in history] == [10, 20]
    assert "hook_metric" in next(csv.DictReader(open(tmp_path / "m.csv")))

    class ZeroGrads:  # runs between backward and step: with plain SGD nothing may move
        def after_backward(self, model, progress):
            for p in model.parameters():
                p.grad.zero_()

    model = make()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    fit(model, train, val, TrainCfg(optimizer="sgd", weight_decay=0.0, device="cpu"), 1, hooks=[ZeroGrads()])
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_grad_clip_bounds_the_gradient_norm(digits):
    """The data gradient is clipped to norm train.grad_clip before after_backward sees it (here every step's raw
    norm is far above 1e-3, so every clipped norm is 1e-3)."""
    make, train, val, cfg = _tiny_setup(digits)
    norms = []

    class GradNorm:
        def after_backward(self, model, progress):
            norms.append(torch.stack([p.grad.norm() for p in model.parameters()]).norm().item())

    fit(make(), train, val, TrainCfg(lr=cfg.lr, grad_clip=1e-3, device="cpu"), 1, hooks=[GradNorm()])
    assert norms == pytest.approx([1e-3] * len(train), rel=1e-3)


# ---------------------------------------------------------------------------------------------- resume


def test_resume_is_bit_identical_to_an_uninterrupted_run(digits, tmp_path):
    make, train, val, cfg = _tiny_setup(digits)
    torch.manual_seed(SEED)
    full = make()
    fit(full, train, val, cfg, 3, hooks=[NoisyPenalty()], resume_path=tmp_path / "full.pt", resume_key="k")

    ckpt, metrics = tmp_path / "cut.pt", tmp_path / "m.csv"
    torch.manual_seed(SEED)
    with pytest.raises(Interrupt):  # dies in epoch 3, after epoch 2 was committed
        fit(make(), train, val, cfg, 3, hooks=[NoisyPenalty()], resume_path=ckpt, resume_key="k",
            callbacks=[history_csv(metrics), _interrupt_at(3)])
    assert torch.load(ckpt, weights_only=True)["epoch"] == 2
    metrics.unlink()  # DVC deletes a stage's outputs before rerunning it

    torch.manual_seed(12345)  # different init and RNG: everything must come from the checkpoint
    resumed, counter, logged = make(), EpochCounter(), Logged()
    history = fit(resumed, train, val, cfg, 3, hooks=[NoisyPenalty(), counter], resume_path=ckpt,
                  resume_key="k", callbacks=[history_csv(metrics), logged])
    assert counter.epochs == [3]  # epochs 1-2 were not retrained
    assert [r["epoch"] for r in history] == [1, 2, 3] and [r["epoch"] for r in logged] == [1, 2, 3]
    assert [r["epoch"] for r in csv.DictReader(open(metrics))] == ["1", "2", "3"]
    full_sd, resumed_sd = full.state_dict(), resumed.state_dict()
    assert all(torch.equal(full_sd[k], resumed_sd[k]) for k in full_sd)
    assert torch.load(ckpt, weights_only=True)["epoch"] == 3

    # a finished run resumes to its final weights without training
    again, counter = make(), EpochCounter()
    assert len(fit(again, train, val, cfg, 3, hooks=[counter], resume_path=ckpt, resume_key="k")) == 3
    assert counter.epochs == [] and all(torch.equal(full_sd[k], v) for k, v in again.state_dict().items())


def test_resume_with_another_key_is_ignored(digits, tmp_path, capsys):
    make, train, val, cfg = _tiny_setup(digits)
    ckpt = tmp_path / "r.pt"
    fit(make(), train, val, cfg, 1, resume_path=ckpt, resume_key="old-params")
    counter = EpochCounter()
    fit(make(), train, val, cfg, 1, hooks=[counter], resume_path=ckpt, resume_key="new-params")
    assert counter.epochs == [1]
    assert "ignoring resume checkpoint" in capsys.readouterr().out
    assert torch.load(ckpt, weights_only=True)["key"] == "new-params"


def test_corrupt_resume_file_is_ignored_with_a_note(digits, tmp_path, capsys):
    make, train, val, cfg = _tiny_setup(digits)
    ckpt = tmp_path / "r.pt"
    ckpt.write_bytes(b"PK\x03\x04 half-written checkpoint")
    counter = EpochCounter()
    fit(make(), train, val, cfg, 1, hooks=[counter], resume_path=ckpt, resume_key="k")
    assert counter.epochs == [1]
    assert "unreadable resume checkpoint" in capsys.readouterr().out
    assert torch.load(ckpt, weights_only=True)["epoch"] == 1


# ---------------------------------------------------------------------------------------------- failures


@pytest.mark.parametrize("check_every", [1, 4])  # 4: the deferred check used on CUDA must still name step 3
def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(digits, tmp_path, monkeypatch, check_every):
    monkeypatch.setattr(train_module, "CPU_CHECK_EVERY", check_every)
    make, train, val, cfg = _tiny_setup(digits)
    ckpt = tmp_path / "r.pt"
    total = 2 * len(train)
    saved = {}

    class NanAtEpoch2Step3:
        def loss_term(self, model, progress):
            if round(progress * total) == len(train) + 3:
                saved["bytes"] = ckpt.read_bytes()  # the checkpoint of epoch 1, as it is now
                return torch.tensor(math.nan)
            return None

    with pytest.raises(TrainingError) as err:
        fit(make(), train, val, cfg, 2, hooks=[NanAtEpoch2Step3()], resume_path=ckpt, resume_key="k")
    msg = str(err.value)
    assert "non-finite loss (nan) at epoch 2, step 3/" in msg
    assert "train.lr" in msg and "train.grad_clip" in msg and "data" in msg
    assert ckpt.read_bytes() == saved["bytes"]
    assert torch.load(ckpt, weights_only=True)["epoch"] == 1


@pytest.mark.parametrize("grad_clip, what", [(1.0, "non-finite gradient norm"), (0.0, "non-finite weights")])
def test_non_finite_gradients_stop_before_saving(digits, tmp_path, grad_clip, what):
    make, train, val, cfg = _tiny_setup(digits)
    cfg = TrainCfg(lr=cfg.lr, grad_clip=grad_clip, device="cpu")

    class InfGradAtLastStep:  # the last step: no later loss can catch it, only the checks of step/epoch end
        def loss_term(self, model, progress):  # value 0, gradient 0 * inf = NaN
            return torch.sqrt(model.head.weight.sum() * 0.0) if progress == 1.0 else None

    with pytest.raises(TrainingError, match=what):
        fit(make(), train, val, cfg, 1, hooks=[InfGradAtLastStep()], resume_path=tmp_path / "r.pt")
    assert not (tmp_path / "r.pt").exists()
