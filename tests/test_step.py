"""The training step: eager vs replayed CUDA graph.

A CPU cannot capture, so the machinery is tested here with a stand-in for ``capture_cuda_graph`` that runs the
warm-up, the restore and then re-runs the step body on the static buffers at each "replay": it checks what the
graph mode adds around the body (LR and progress as device data, static buffers, the undone warm-up, the eager
path for other batch sizes, the fallback after a failed capture). The real capture runs in the CUDA test at the
bottom (skipped without CUDA; run on the GPU machine).
"""

from __future__ import annotations

import pytest
import torch

import mambaprune
from mambaprune.config import TrainCfg
from mambaprune.step import TrainStep, graph_mode_reason
from mambaprune.train import build_optimizer, lr_at


def fake_capture(fn, device, warmup=2, before_capture=None):
    """Like capture_cuda_graph, minus CUDA: warm up, undo, then every replay re-runs ``fn``."""
    for _ in range(warmup):
        fn()
    if before_capture is not None:
        before_capture()
    return fn


class RecordingHook:
    """Uses progress and lr only through torch ops (works with floats and 0-d tensors alike)."""

    graph_safe = True

    def __init__(self):
        self.calls = []

    def loss_term(self, model, progress):
        self.calls.append("loss_term")
        return 1e-3 * torch.as_tensor(progress) * model.head.weight.square().sum()

    def after_backward(self, model, progress):
        self.calls.append("after_backward")
        model.head.bias.grad.add_(torch.as_tensor(progress) * 1e-3)

    @torch.no_grad()
    def after_step(self, model, progress, lr):
        self.calls.append("after_step")
        model.head.weight.mul_(1.0 - torch.as_tensor(lr) * 0.1)


def _model(seed=0):
    torch.manual_seed(seed)
    return mambaprune.create_model("mamba_tiny", num_classes=5, img_size=8, embed_dim=16, depth=1, d_state=2,
                                   patch_size=4, drop_path_rate=0.0)


def _batches(n_full=3, batch=6, partial=4):
    g = torch.Generator().manual_seed(1)
    sizes = [batch] * n_full + [partial]
    return [(torch.rand(b, 3, 8, 8, generator=g), torch.randint(0, 5, (b,), generator=g)) for b in sizes]


def _fp32(v: float) -> float:
    return torch.tensor(v, dtype=torch.float32).item()


def _run(graph: bool, capture=fake_capture, hooks_factory=RecordingHook, soft=False):
    model = _model()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.05, fused=True)  # CPU fused: tensor LR ok
    hook = hooks_factory()
    logs = []
    step = TrainStep(model, model, opt, [hook], torch.device("cpu"), label_smoothing=0.1, grad_clip=0.5,
                     graph=graph, log=logs.append, capture=capture)
    step.prepare_optimizer()
    losses = []
    batches = _batches()
    total = 2 * len(batches)
    for k in range(total):
        x, y = batches[k % len(batches)]
        if soft:
            y = torch.nn.functional.one_hot(y, 5).float() * 0.7 + 0.06
        # fp32-exact values: the graph's LR/progress tensors are fp32, the eager path's Python floats are not
        lr = _fp32(lr_at(k, total, 2, 1e-2, "cosine", 0.01))
        out = step(x, y, lr, _fp32((k + 1) / total))
        losses.append(out.loss.clone())
    return model, torch.stack(losses), step, hook, logs


def test_graph_mode_machinery_matches_eager_exactly():
    """Same losses and weights, step for step, partial batches included (they run eagerly in graph mode)."""
    eager_model, eager_losses, eager_step, _, _ = _run(graph=False)
    graph_model, graph_losses, graph_step, _, logs = _run(graph=True)
    assert eager_step.mode == "eager" and graph_step.mode == "cuda-graph" and logs == []
    torch.testing.assert_close(graph_losses, eager_losses, rtol=0, atol=0)
    for (name, a), b in zip(eager_model.state_dict().items(), graph_model.state_dict().values()):
        torch.testing.assert_close(b, a, rtol=0, atol=0, msg=name)


def test_graph_mode_with_soft_targets_matches_eager():
    _, eager_losses, *_ = _run(graph=False, soft=True)
    _, graph_losses, *_ = _run(graph=True, soft=True)
    torch.testing.assert_close(graph_losses, eager_losses, rtol=0, atol=0)


def test_lr_is_read_from_the_shared_tensor():
    """Every param group's LR is the one device tensor the replays read, refilled each step."""
    _, _, step, _, _ = _run(graph=True)
    lrs = [g["lr"] for g in step.optimizer.param_groups]
    assert all(lr is step._lr for lr in lrs)
    total = 8
    assert step._lr.item() == _fp32(lr_at(total - 1, total, 2, 1e-2, "cosine", 0.01))


def test_hooks_run_in_order_every_step():
    _, _, _, hook, _ = _run(graph=False)
    assert hook.calls == ["loss_term", "after_backward", "after_step"] * 8


def test_failed_capture_falls_back_to_eager_with_one_line():
    def broken(fn, device, warmup=2, before_capture=None):
        fn()  # the warm-up ran and moved the weights...
        raise RuntimeError("operation not permitted when stream is capturing\nmore detail")

    eager_model, eager_losses, *_ = _run(graph=False)
    model, losses, step, _, logs = _run(graph=True, capture=broken)
    assert step.mode == "eager"
    assert logs == ["CUDA graph capture failed (RuntimeError: operation not permitted when stream is capturing); "
                    "training eagerly"]
    torch.testing.assert_close(losses, eager_losses, rtol=0, atol=0)  # ...and was undone


def test_graph_mode_reasons():
    cpu, cuda = torch.device("cpu"), torch.device("cuda", 0)
    safe, unsafe = RecordingHook(), object()
    assert graph_mode_reason("auto", cuda, False, [safe]) is None
    assert graph_mode_reason("on", cuda, False, []) is None
    assert "off" in graph_mode_reason("off", cuda, False, [])
    assert "cpu" in graph_mode_reason("auto", cpu, False, [])
    assert "DDP" in graph_mode_reason("auto", cuda, True, [])
    assert "object" in graph_mode_reason("auto", cuda, False, [unsafe])
    assert "sgd" in graph_mode_reason("auto", cuda, False, [], optimizer="sgd")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (run on the GPU machine)")
def test_cuda_graph_step_matches_eager_on_gpu():
    """The real capture: a few steps (warm-up LR, a partial batch) give eager's losses and weights."""
    device = torch.device("cuda")
    cfg = TrainCfg(lr=1e-3, grad_clip=1.0, device="cuda")

    def run(graph):
        model = _model().to(device)
        opt = build_optimizer(model, cfg, cfg.lr, capturable=graph)
        step = TrainStep(model, model, opt, [RecordingHook()], device, 0.1, 1.0, graph=graph)
        step.prepare_optimizer()
        losses = []
        for k, (x, y) in enumerate(_batches() * 2):
            out = step(x.to(device), y.to(device), lr_at(k, 8, 2, 1e-3, "cosine", 0.01), (k + 1) / 8)
            losses.append(out.loss.clone())
        return model, torch.stack(losses).cpu(), step

    eager, eager_losses, _ = run(False)
    graph, graph_losses, step = run(True)
    assert step.mode == "cuda-graph"
    torch.testing.assert_close(graph_losses, eager_losses, rtol=1e-4, atol=1e-5)
    for a, b in zip(eager.parameters(), graph.parameters()):
        torch.testing.assert_close(b, a, rtol=1e-3, atol=1e-5)
