"""Pruning methods: round schedule, RSST strength schedule, Refill selection, RSST penalty and training."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F

import mambaprune
from mambaprune.pruning.plan import apply_plan
from mambaprune.pruning.refill import refill_select
from mambaprune.pruning.rsst import RSSTRegularizer, group_norms
from mambaprune.pruning.schedule import kept_fraction, round_targets, round_width, rsst_lambda, rsst_shrink_factors
from mambaprune.pruning.units import complement, weight_matrices, widths

# ---------------------------------------------------------------- schedules


@pytest.mark.parametrize("n", [1, 2, 3, 4])
@pytest.mark.parametrize("ratio", [0.3, 0.5, 0.9])
def test_kept_fraction_follows_geometric_schedule(n, ratio):
    assert kept_fraction(ratio, 0, n) == 1.0
    for r in range(1, n + 1):
        assert kept_fraction(ratio, r, n) == pytest.approx((1 - ratio) ** (r / n), rel=1e-12)
    assert kept_fraction(ratio, n, n) == 1.0 - ratio  # exactly, no pow round-off
    fr = [kept_fraction(ratio, r, n) for r in range(n + 1)]
    assert all(b < a for a, b in zip(fr, fr[1:]))
    with pytest.raises(ValueError):
        kept_fraction(ratio, n + 1, n)


@pytest.mark.parametrize("n", [1, 2, 3, 4])
def test_round_targets_end_at_rounded_final_width(n):
    base = [384, 768, 100]
    final = round_targets(base, 0.5, n, n, min_keep=8, round_to=8)
    assert final == [round_width(w * 0.5, w, 8, 8) for w in base]
    assert final[:2] == [192, 384] and final[2] in (48, 56)
    widths = [round_targets(base, 0.5, r, n, 8, 8) for r in range(n + 1)]
    assert widths[0] == base
    for a, b in zip(widths, widths[1:]):
        assert all(y <= x for x, y in zip(a, b))
    # rounding applies to the original width × fraction, not compounded over rounds
    r1 = round_targets([64], 0.75, 1, 2, 1, 1)[0]
    assert r1 == 32 and round_targets([64], 0.75, 2, 2, 1, 1) == [16]
    assert round_targets([64], 0.99, 1, 1, min_keep=4, round_to=1) == [4]


def _cut(remove: dict, config: dict) -> dict:
    """The plan (kept units per block) that removes ``remove``'s units: their complement."""
    return {kind: [complement(r, w) for r, w in zip(blocks, widths(config, kind), strict=True)]
            for kind, blocks in remove.items()}


def test_rsst_lambda_documented_values():
    g = 1e-4
    assert f"{rsst_lambda(30 / 160, g, 'poly', 4):.3e}" == "1.236e-07"  # the reference's value
    assert rsst_lambda(1.0, 0.3, "exp", 4) == pytest.approx(0.3, rel=1e-15)
    assert rsst_lambda(0.0, 0.3, "exp", 4) == 0.0
    assert rsst_lambda(0.5, 0.3, "exp", 4) == pytest.approx(0.3 * (math.exp(0.5**4) - 1) / (math.e - 1))
    assert rsst_lambda(0.5, 0.3, "exp", 2) == pytest.approx(0.3 * (math.exp(0.25) - 1) / (math.e - 1))
    assert rsst_lambda(0.25, 0.3, "linear", 4) == pytest.approx(0.075)
    assert rsst_lambda(0.25, 0.3, "constant", 4) == 0.3
    assert rsst_lambda(0.5, 2.0, "poly", 3) == pytest.approx(0.25)
    with pytest.raises(ValueError, match="exp, poly, linear, constant"):
        rsst_lambda(0.5, 0.3, "cosine", 4)


# ---------------------------------------------------------------- refill


def _mlp_model(depth=2, dim=8, hidden=16):
    torch.manual_seed(0)
    return mambaprune.create_model("mamba_tiny", img_size=8, embed_dim=dim, depth=depth, d_state=2,
                                   mlp_widths=[hidden] * depth)


def _craft_refill_model():
    """Tiny noise everywhere; block 0 units 1, 5, 9 and block 1 unit 2 fully large (they survive);
    block 0 unit 12 has one huge entry (one survivor, but the largest L1)."""
    m = _mlp_model()
    with torch.no_grad():
        for blk in m.blocks:
            for p in (blk.mlp.fc1.weight, blk.mlp.fc1.bias, blk.mlp.fc2.weight):
                p.copy_(torch.rand_like(p) * 1e-3 + 1e-4)
        for i, units in ((0, [1, 5, 9]), (1, [2])):
            mlp = m.blocks[i].mlp
            for j in units:
                mlp.fc1.weight[j] = 0.5 + 0.01 * j
                mlp.fc1.bias[j] = 0.5
                mlp.fc2.weight[:, j] = 0.5
        m.blocks[0].mlp.fc1.weight[12, 3] = 20.0
    per_unit = 8 + 1 + 8
    survivors = 4 * per_unit + 1
    return m, survivors / (2 * 16 * per_unit), per_unit


def test_refill_keeps_units_with_most_survivors():
    m, density, per_unit = _craft_refill_model()
    before = {k: v.clone() for k, v in m.state_dict().items()}
    keep, info = refill_select(m, "mlp", density, 0.0, "remain", None, min_keep=1, round_to=1)
    assert keep == [[1, 5, 9], [2]]
    assert [lay["survivors"] for lay in info["layers"]] == [3 * per_unit + 1, per_unit]
    assert info["layers"][0]["n_eq"] == pytest.approx((3 * per_unit + 1) / per_unit)
    assert 1e-3 < info["threshold"] < 0.5
    assert all(torch.equal(before[k], v) for k, v in m.state_dict().items())  # pure
    # magnitude ranks by L1: the one huge entry puts unit 12 first
    keep_mag, _ = refill_select(m, "mlp", density, 0.0, "magnitude", None, 1, 1)
    assert 12 in keep_mag[0] and len(keep_mag[0]) == 3


def test_refill_fillback_extremes_and_targets():
    torch.manual_seed(1)
    m = _mlp_model()
    with torch.no_grad():  # layers of different scale so n_eq differs per layer
        m.blocks[1].mlp.fc1.weight.mul_(3)
    for density in (0.1, 0.37, 0.8):
        keep0, info = refill_select(m, "mlp", density, 0.0, "remain", None, 1, 1)
        for k, lay in zip(keep0, info["layers"]):
            assert len(k) == max(int(lay["n_eq"]), 1)
        total = sum(lay["survivors"] for lay in info["layers"])
        assert total == pytest.approx(density * 2 * 16 * 17, abs=1)
        keep1, _ = refill_select(m, "mlp", density, 1.0, "remain", None, 1, 1)
        assert keep1 == [list(range(16))] * 2
        half, info_h = refill_select(m, "mlp", density, 0.5, "remain", None, 1, 1)
        for k, lay in zip(half, info_h["layers"]):
            assert len(k) == max(int(lay["n_eq"] + (16 - lay["n_eq"]) * 0.5), 1)
        rounded, _ = refill_select(m, "mlp", density, 0.3, "magnitude", None, 8, 8)
        assert all(len(k) in (8, 16) for k in rounded)
    for targets in ([3, 11], [16, 1]):
        for crit in ("remain", "magnitude"):
            keep_t, _ = refill_select(m, "mlp", 0.2, 0.0, crit, targets, 1, 1)
            assert [len(k) for k in keep_t] == targets
            assert all(k == sorted(set(k)) for k in keep_t)


def test_refill_ssm_runs_and_plans_apply():
    torch.manual_seed(0)
    m = mambaprune.create_model("mamba_tiny", img_size=8, embed_dim=8, depth=2, d_state=2, bidirectional=True)
    keep, info = refill_select(m, "ssm", 0.5, 0.0, "remain", [8, 4], 1, 1)
    assert [len(k) for k in keep] == [8, 4]
    pruned = apply_plan(m, {"ssm": keep})
    assert pruned.ssm_widths == [8, 4]
    with pytest.raises(ValueError, match="remain, magnitude"):
        refill_select(m, "ssm", 0.5, 0.0, "l1", None, 1, 1)


# ---------------------------------------------------------------- RSST penalty: exact value, gradient, proximal step


def _hand_group_sq(m, kind, i, c):
    """Squared norm of unit c's group, by hand from the module attributes (A_log and dt_bias left out; x_proj[c, c],
    in both the input column and the Δ row of unit c, once)."""
    blk = m.blocks[i]
    if kind == "mlp":
        return (blk.mlp.fc1.weight[c].pow(2).sum() + blk.mlp.fc1.bias[c] ** 2
                + blk.mlp.fc2.weight[:, c].pow(2).sum())
    mix, w = blk.mixer, blk.mixer.d_inner
    sq = mix.in_proj.weight[c].pow(2).sum() + mix.in_proj.weight[w + c].pow(2).sum()
    sq = sq + mix.out_proj.weight[:, c].pow(2).sum()
    for s in mix.ssm:
        sq = sq + s.conv1d.weight[c].pow(2).sum() + s.conv1d.bias[c] ** 2 + s.D[c] ** 2
        sq = sq + s.x_proj.weight[:, c].pow(2).sum() + s.x_proj.weight[c].pow(2).sum() - s.x_proj.weight[c, c] ** 2
    return sq


def _hand_target_masks(m, remove):
    """{parameter: bool mask} of every entry a target unit owns, by hand from the module attributes."""
    masks = {p: torch.zeros_like(p, dtype=torch.bool) for p in m.parameters()}
    for i, units in enumerate(remove.get("ssm", [])):
        mix, w = m.blocks[i].mixer, m.blocks[i].mixer.d_inner
        for c in units:
            masks[mix.in_proj.weight][[c, w + c]] = True
            masks[mix.out_proj.weight][:, c] = True
            for s in mix.ssm:
                masks[s.conv1d.weight][c] = masks[s.conv1d.bias][c] = masks[s.D][c] = True
                masks[s.x_proj.weight][:, c] = masks[s.x_proj.weight][c] = True
    for i, units in enumerate(remove.get("mlp", [])):
        mlp = m.blocks[i].mlp
        for j in units:
            masks[mlp.fc1.weight][j] = masks[mlp.fc1.bias][j] = masks[mlp.fc2.weight][:, j] = True
    return masks


REMOVE = {"ssm": [[0, 5, 9], [3]], "mlp": [[], [1, 30]]}  # x_proj[5, 9] of block 0 is in two target groups


def _bi_model():
    torch.manual_seed(0)
    return mambaprune.create_model("mamba_tiny", img_size=8, embed_dim=8, depth=2, d_state=2,
                                   bidirectional=True).double()


@pytest.mark.parametrize("penalty", ["group_l2", "group_lasso"])
def test_rsst_regulariser_value_and_gradient(penalty):
    m = _bi_model()
    hook = RSSTRegularizer(m, REMOVE, strength=0.7, schedule="exp", exponent=4, penalty=penalty, update="gradient")
    lam = 0.7 * (math.exp(0.6**4) - 1) / (math.e - 1)
    if penalty == "group_l2":  # λ·||w_T||²: every entry a target owns, once
        expected = lam * sum(p[mask].pow(2).sum() for p, mask in _hand_target_masks(m, REMOVE).items())
    else:
        sqs = [_hand_group_sq(m, k, i, c) for k, blocks in REMOVE.items() for i, b in enumerate(blocks) for c in b]
        expected = lam * sum(sq.sqrt() for sq in sqs)
    got = hook.penalty_term(m, 0.6)
    assert got.dtype == torch.float64
    assert got.item() == pytest.approx(expected.item(), rel=1e-13)
    assert hook.lambda_trace == [pytest.approx(lam, rel=1e-15)]

    got.backward()
    mix = m.blocks[0].mixer
    if penalty == "group_l2":  # d/dw λ||w_T||² = 2λw on every entry of T, x_proj[c, c] and x_proj[5, 9] too
        g = mix.in_proj.weight.grad
        assert torch.allclose(g[5], 2 * lam * mix.in_proj.weight[5].detach())
        assert torch.allclose(g[16 + 9], 2 * lam * mix.in_proj.weight[16 + 9].detach())
        xp = mix.ssm[1].x_proj.weight  # [9, 1]: Δ row of target 9, input column of non-target 1
        for entry in ((9, 1), (9, 9), (5, 9)):
            assert torch.allclose(xp.grad[entry], 2 * lam * xp[entry].detach()), entry
    for s in mix.ssm:
        assert s.A_log.grad is None or not s.A_log.grad.any()
        assert s.D.grad[[0, 5, 9]].ne(0).all() and s.D.grad[[1, 2, 3]].eq(0).all()
    assert not mix.in_proj.weight.grad[[1, 2, 16 + 1]].any()
    assert m.blocks[0].mlp.fc1.weight.grad is None  # block 0 has no MLP targets
    assert m.blocks[1].mlp.fc1.weight.grad[[1, 30]].ne(0).all() and not m.blocks[1].mlp.fc1.weight.grad[0].any()
    assert m.patch_embed.weight.grad is None and m.head.weight.grad is None

    norms = group_norms(m, None, "ssm", REMOVE["ssm"])
    assert torch.allclose(norms[0], torch.stack([_hand_group_sq(m, "ssm", 0, c) for c in (0, 5, 9)]).sqrt())


def test_rsst_shrink_factors_multiply_to_one_over_strength():
    for n in (1, 7, 84, 264):
        for schedule in ("exp", "poly", "linear", "constant"):
            f = rsst_shrink_factors(n, 1e4, schedule, 4)
            assert len(f) == n and all(0 < x <= 1 for x in f)
            assert math.prod(f) == pytest.approx(1e-4, rel=1e-9)
            assert all(b <= a for a, b in zip(f, f[1:])), "the shrink grows (or stays) over the round"
    f = rsst_shrink_factors(4, 100.0, "linear", 4)  # s = 1/4, 2/4, 3/4, 1: log-shares 1/10, 2/10, 3/10, 4/10
    assert f == [pytest.approx(100.0 ** -(t / 10), rel=1e-12) for t in (1, 2, 3, 4)]
    assert rsst_shrink_factors(5, 1.0, "exp", 4) == [1.0] * 5  # F = 1: no shrink
    with pytest.raises(ValueError, match=">= 1"):
        rsst_shrink_factors(5, 0.5, "exp", 4)


def test_rsst_decoupled_step_is_the_exact_proximal_map():
    """One decoupled step on known weights: every entry of T (each once, also x_proj[c, c] and x_proj[5, 9] of two
    target units) becomes w·f_t with f_t = F^(−s(t/N)/Σ_u s(u/N)), the proximal map of c·||w_T||² with
    1 + 2c = 1/f_t; nothing else moves, bit for bit (A_log, dt_bias, non-target entries), and lr plays no part."""
    m = _bi_model()
    n_steps, t, strength = 10, 7, 1e4
    shape = [(math.exp((u / n_steps) ** 4) - 1) / (math.e - 1) for u in range(1, n_steps + 1)]
    f = strength ** (-shape[t - 1] / sum(shape))
    before = {n: p.detach().clone() for n, p in m.named_parameters()}
    buffers = {n: b.clone() for n, b in m.named_buffers()}
    masks = {n: mask for (n, _), mask in zip(m.named_parameters(), _hand_target_masks(m, REMOVE).values())}
    hook = RSSTRegularizer(m, REMOVE, strength=strength)  # the defaults: decoupled, group_l2, exp, k = 4
    with pytest.raises(RuntimeError, match="on_fit_start"):
        hook.after_step(m, t / n_steps, lr=1e-3)
    hook.on_fit_start(n_steps)
    hook.after_backward(m, t / n_steps)  # the gradient path is off in decoupled mode: no .grad appears
    assert all(p.grad is None for p in m.parameters())
    hook.after_step(m, t / n_steps, lr=123.0)
    c = (1 / f - 1) / 2
    assert len(hook.lambda_trace) == n_steps and hook.lambda_trace[t - 1] == pytest.approx(c, rel=1e-12)
    for n, p in m.named_parameters():
        w0, w1 = before[n], p.detach()
        assert torch.equal(w1[~masks[n]], w0[~masks[n]]), n
        assert torch.allclose(w1[masks[n]], w0[masks[n]] * f, rtol=1e-15, atol=0), n
        # prox optimality: w1 minimises c·||w||² + ½||w − w0||² on T, i.e. 2c·w1 + (w1 − w0) = 0
        assert torch.all((2 * c * w1[masks[n]] + w1[masks[n]] - w0[masks[n]]).abs() <= 1e-14)
    assert sum(int(mask.sum()) for mask in masks.values()) > 0
    assert all(torch.equal(b, buffers[n]) for n, b in m.named_buffers())


def _fake_capture(fn, device, warmup=2, before_capture=None):
    """capture_cuda_graph minus CUDA (as in test_step.py): warm up, undo, then every replay re-runs ``fn``."""
    for _ in range(warmup):
        fn()
    if before_capture is not None:
        before_capture()
    return fn


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs CUDA (run on the GPU machine)"))])
def test_rsst_decoupled_update_runs_in_a_cuda_graph_as_eagerly(device):
    """The decoupled update is graph_safe: in a replayed graph progress is a 0-d device tensor and f_t is looked up
    on the device; the weights end where eager training leaves them (f_t in fp32 there). On CPU the capture is a
    stand-in that re-runs the step body (as in test_step.py); on CUDA it is the real one."""
    from mambaprune.config import TrainCfg
    from mambaprune.step import TrainStep, graph_mode_reason
    from mambaprune.train import build_optimizer

    device = torch.device(device)
    g = torch.Generator().manual_seed(1)
    batches = [(torch.rand(6, 3, 8, 8, generator=g), torch.randint(0, 5, (6,), generator=g)) for _ in range(3)]
    batches.append((torch.rand(4, 3, 8, 8, generator=g), torch.randint(0, 5, (4,), generator=g)))  # runs eagerly
    total = 2 * len(batches)

    def run(graph):
        torch.manual_seed(0)
        m = mambaprune.create_model("mamba_tiny", num_classes=5, img_size=8, embed_dim=8, depth=2, d_state=2)
        m = m.to(device)
        hook = RSSTRegularizer(m, {"ssm": [[0, 1], [2]], "mlp": [[0, 5], [1]]}, strength=1e4)
        hook.on_fit_start(total)
        if device.type == "cpu":
            opt = torch.optim.AdamW(m.parameters(), lr=1e-2, fused=True)  # CPU fused: a tensor LR is fine
        else:
            opt = build_optimizer(m, TrainCfg(lr=1e-2, device="cuda"), 1e-2, capturable=graph)
        step = TrainStep(m, m, opt, [hook], device, 0.0, 1.0, graph=graph,
                         capture=_fake_capture if device.type == "cpu" else None)
        step.prepare_optimizer()
        for k in range(total):
            x, y = batches[k % len(batches)]
            step(x.to(device), y.to(device), torch.tensor(1e-3).item(), torch.tensor((k + 1) / total).item())
        return m, step, hook

    eager, eager_step, hook = run(False)
    graph, graph_step, _ = run(True)
    assert (eager_step.mode, graph_step.mode) == ("eager", "cuda-graph")
    tol = dict(rtol=1e-6, atol=1e-9) if device.type == "cpu" else dict(rtol=1e-3, atol=1e-5)
    for (name, a), b in zip(eager.state_dict().items(), graph.state_dict().values()):
        torch.testing.assert_close(b, a, **tol, msg=name)
    assert group_norms(graph, None, "mlp", [[0, 5], [1]])[0].max() < 1e-2  # the shrink did happen (F = 1e4)
    cuda = torch.device("cuda", 0)  # graph_mode_reason only compares names: no GPU needed
    assert graph_mode_reason("auto", cuda, False, [hook]) is None
    gradient = RSSTRegularizer(eager, {"mlp": [[0], [0]]}, strength=1.0, update="gradient")
    assert "RSSTRegularizer not marked graph_safe" in graph_mode_reason("auto", cuda, False, [gradient])


def test_rsst_decoupled_needs_group_l2_and_a_shrink_factor():
    m = _mlp_model(depth=1)
    with pytest.raises(ValueError, match="group_lasso works only with update 'gradient'"):
        RSSTRegularizer(m, {"mlp": [[0]]}, 1e4, penalty="group_lasso")
    with pytest.raises(ValueError, match=">= 1"):
        RSSTRegularizer(m, {"mlp": [[0]]}, 0.01)
    with pytest.raises(ValueError, match="decoupled, gradient"):
        RSSTRegularizer(m, {"mlp": [[0]]}, 1.0, update="proximal")
    nothing = RSSTRegularizer(m, {"mlp": [[]]}, 1e4)  # a round that removes no unit: the step changes nothing
    nothing.on_fit_start(3)
    before = {n: p.detach().clone() for n, p in m.named_parameters()}
    nothing.after_step(m, 1.0, lr=1e-3)
    assert all(torch.equal(p, before[n]) for n, p in m.named_parameters())

@pytest.mark.parametrize("schedule", ["exp", "poly", "linear"])
def test_rsst_lambda_trace_every_step(schedule):
    m = _mlp_model(depth=1)
    hook = RSSTRegularizer(m, {"mlp": [[0, 1]]}, strength=2.0, schedule=schedule, exponent=3, update="gradient")
    steps = 37
    for s in range(steps):
        hook.penalty_term(m, (s + 1) / steps)
    assert len(hook.lambda_trace) == steps
    assert all(b > a for a, b in zip(hook.lambda_trace, hook.lambda_trace[1:]))
    assert hook.lambda_trace[-1] == pytest.approx(2.0) and hook.lambda_trace[0] > 0
    record = {}
    hook.on_epoch_end(1, record)
    assert record["rsst_lambda"] == hook.lambda_trace[-1]
    assert record["rsst_target_norm"] > 0 and record["rsst_other_norm"] > 0
    assert [t.tolist() for t in hook.targets["mlp"]] == [[0, 1]]
    with pytest.raises(ValueError, match="exp, poly, linear, constant"):
        RSSTRegularizer(m, {"mlp": [[0]]}, 1.0, schedule="step")


# ---------------------------------------------------------------- RSST in training (sklearn digits)

# Final λ of the exp schedule, for the gradient update. Under AdamW only how much the penalty dominates the data
# gradient matters, and with exp (k=4) it must dominate early enough for D (≈ 1, moving ≈ lr per step) to reach 0
# within the round: measured target/other norm-ratio reduction over this 200-step round at lr 1e-2: g=0.1 → 5x,
# 1 → 38x, 30 → 1.3e4x, 100 → 3e4x.
RSST_STRENGTH = 100.0


def _digits():
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.tensor(d.images, dtype=torch.float32)[:, None] / 16.0
    y = torch.tensor(d.target)
    return x[:1500], y[:1500], x[1500:], y[1500:]


def _accuracy(m, x, y):
    m.eval()
    with torch.no_grad():
        acc = (m(x).argmax(1) == y).float().mean().item()
    m.train()
    return acc


def _train(m, x, y, steps, seed, lr, hook=None):
    """AdamW without weight decay, cosine lr to lr/100 (as the pipeline's rounds), the hook every step."""
    opt = torch.optim.AdamW(m.parameters(), lr=lr, weight_decay=0.0)
    gen = torch.Generator().manual_seed(seed)
    if hook is not None:
        hook.on_fit_start(steps)
    for s in range(steps):
        idx = torch.randint(0, len(x), (64,), generator=gen)
        loss = F.cross_entropy(m(x[idx]), y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        lr_now = lr * (0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * s / steps)))
        for group in opt.param_groups:
            group["lr"] = lr_now
        if hook is not None:
            hook.after_backward(m, (s + 1) / steps)
        opt.step()
        if hook is not None:
            hook.after_step(m, (s + 1) / steps, lr_now)


def _l1_lowest(m, ratio):
    """Per layer, the ``ratio`` share of units with the smallest group L1 (the plain magnitude cut)."""
    params = {n: p.detach() for n, p in m.named_parameters()}
    out = {}
    for kind in ("ssm", "mlp"):
        out[kind] = []
        for i in range(m.config["depth"]):
            l1 = sum(w.abs().sum(1) for w in weight_matrices(params, m.config, kind, i))
            out[kind].append(sorted(l1.argsort()[: int(len(l1) * ratio)].tolist()))
    return out


def _mean_norms(m, remove):
    others = {k: [sorted(set(range(w)) - set(b)) for w, b in zip(m.config[f"{k}_widths"], v)]
              for k, v in remove.items()}
    mean = lambda sel: torch.cat([n for k, v in sel.items() for n in group_norms(m, None, k, v)]).mean().item()  # noqa: E731
    return mean(remove), mean(others)


@pytest.fixture
def one_thread():
    """This model is tiny: one intra-op thread is ~2x faster than several (less sync overhead)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def test_rsst_gradient_update_shrinks_targets_only_at_a_large_lr(one_thread):
    xtr, ytr, xva, yva = _digits()
    torch.manual_seed(0)
    base = mambaprune.create_model("mamba_tiny", img_size=8, patch_size=4, in_chans=1, embed_dim=32, depth=2,
                                   d_state=4, norm_mean=(0.3,), norm_std=(0.4,))
    _train(base, xtr, ytr, steps=100, seed=1, lr=3e-3)
    ratio, steps = 0.75, 200
    remove = _l1_lowest(base, ratio)
    target0, other0 = _mean_norms(base, remove)

    rsst, plain = copy.deepcopy(base), copy.deepcopy(base)
    hook = RSSTRegularizer(rsst, remove, strength=RSST_STRENGTH, schedule="exp", exponent=4, penalty="group_l2",
                           update="gradient")
    _train(rsst, xtr, ytr, steps, seed=2, lr=1e-2, hook=hook)
    _train(plain, xtr, ytr, steps, seed=2, lr=1e-2)
    assert len(hook.lambda_trace) == steps and hook.lambda_trace[-1] == pytest.approx(RSST_STRENGTH)

    target1, other1 = _mean_norms(rsst, remove)
    _, other_plain = _mean_norms(plain, remove)
    reduction = (target0 / other0) / (target1 / other1)
    print(f"RSST target/other norm ratio: {target0 / other0:.3g} -> {target1 / other1:.3g} ({reduction:.3g}x); "
          f"non-target mean norm {other1:.4f} (plain training {other_plain:.4f})")
    assert reduction >= 100, f"target/other norm ratio fell only {reduction:.1f}x"
    assert other1 == pytest.approx(other_plain, rel=0.2), "non-target groups were shrunk by the penalty"

    acc_rsst = _accuracy(rsst, xva, yva)
    acc_rsst_cut = _accuracy(apply_plan(rsst, _cut(remove, rsst.config)), xva, yva)
    acc_plain = _accuracy(plain, xva, yva)
    acc_plain_cut = _accuracy(apply_plan(plain, _cut(_l1_lowest(plain, ratio), plain.config)), xva, yva)
    print(f"val acc: RSST {acc_rsst:.4f} -> cut {acc_rsst_cut:.4f}; "
          f"plain {acc_plain:.4f} -> l1 cut {acc_plain_cut:.4f}")
    drop_rsst, drop_plain = acc_rsst - acc_rsst_cut, acc_plain - acc_plain_cut
    assert acc_rsst > 0.85
    assert abs(drop_rsst) <= 0.01 and drop_plain > drop_rsst + 0.03


def test_rsst_decoupled_shrinks_targets_where_adamw_gradient_cannot(one_thread):
    """At a small lr (1e-3, 200 steps) Adam's normalised steps cap how far a weight moves, so the gradient
    update barely shrinks the targets even with λ = 100; the decoupled update (F = 1000: the penalty alone
    shrinks the targets 1000-fold) does, leaves the other groups as plain training leaves them, and makes the cut
    harmless."""
    xtr, ytr, xva, yva = _digits()
    torch.manual_seed(0)
    base = mambaprune.create_model("mamba_tiny", img_size=8, patch_size=4, in_chans=1, embed_dim=32, depth=2,
                                   d_state=4, norm_mean=(0.3,), norm_std=(0.4,))
    _train(base, xtr, ytr, steps=100, seed=1, lr=3e-3)
    remove = _l1_lowest(base, 0.75)
    target0, other0 = _mean_norms(base, remove)
    reduction, others, cut_drop = {}, {}, {}
    for update, strength in (("gradient", 100.0), ("decoupled", 1000.0), ("plain", None)):
        m = copy.deepcopy(base)
        hook = None if strength is None else RSSTRegularizer(m, remove, strength=strength, update=update)
        _train(m, xtr, ytr, 200, seed=2, lr=1e-3, hook=hook)
        target1, others[update] = _mean_norms(m, remove)
        reduction[update] = (target0 / other0) / (target1 / others[update])
        if hook is not None:
            cut_drop[update] = _accuracy(m, xva, yva) - _accuracy(apply_plan(m, _cut(remove, m.config)), xva, yva)
    print(f"target/other norm-ratio reduction {reduction}; other norms {others}; cut drop {cut_drop}")
    assert reduction["gradient"] < 10 and reduction["decoupled"] >= 100
    assert others["decoupled"] == pytest.approx(others["plain"], rel=0.2)
    assert abs(cut_drop["decoupled"]) <= 0.01
