"""Structured pruning: pruned = masked, reference counts, selection rules, composition, validation.

Small float64 models with random weights (std 0.3, so no unit is trivially near zero) and the sequential
reference scan make "pruned = masked" an exact check (≤ 1e-10). mamba_small is built once per module,
only where the reference counts need it.
"""

import pytest
import torch
import torch.nn.functional as F
from masking import masked_forward

import mambaprune
from mambaprune import VisionMamba, count_flops, count_params, prune_model
from mambaprune.counting import flops_breakdown, size_report
from mambaprune.pruning import (
    Targets,
    apply_plan,
    compose_plans,
    round_width,
    score,
    score_units,
    select,
    select_units,
)
from mambaprune.pruning.select import floor_warnings

# --------------------------------------------------------------------------------------------- helpers


def small_model(depth=2, dim=16, ssm=None, mlp=None, bidirectional=False, d_state=4, d_conv=3, std=0.3,
                dtype=torch.float64, seed=0, img=8, patch=2):
    torch.manual_seed(seed)
    m = VisionMamba(img_size=img, patch_size=patch, embed_dim=dim, depth=depth, d_state=d_state, d_conv=d_conv,
                    ssm_widths=ssm, mlp_widths=mlp, bidirectional=bidirectional)
    if std:
        with torch.no_grad():
            for p in m.parameters():
                p.normal_(0.0, std)
    m = m.to(dtype).eval()
    m.set_scan_impl("ref")
    return m


def images(n=3, img=8, seed=1, dtype=torch.float64):
    return torch.rand(n, 3, img, img, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def run(model, x):
    model.set_scan_impl("ref")
    with torch.no_grad():
        return model.eval()(x)


def block_params(dim, d_inner, d_state, d_conv, hidden, directions=1):
    """Closed form of one block's parameters."""
    norms = 2 * (2 * dim)
    in_proj = dim * 2 * d_inner
    per_dir = (d_inner * d_conv + d_inner) + d_inner * (d_inner + 2 * d_state) + d_inner * d_state + d_inner
    out_proj = d_inner * dim
    mlp = dim * hidden + hidden + hidden * dim + dim
    return norms + in_proj + directions * per_dir + out_proj + mlp


def model_params(cfg):
    """Closed form of a VisionMamba's parameters from its config (widths per block)."""
    dim, p = cfg["embed_dim"], cfg["patch_size"]
    tokens = (cfg["img_size"] // p) ** 2
    dirs = 2 if cfg["bidirectional"] else 1
    outside = cfg["in_chans"] * p * p * dim + dim + tokens * dim + 2 * dim + dim * cfg["num_classes"] + \
        cfg["num_classes"]
    return outside + sum(block_params(dim, di, cfg["d_state"], cfg["d_conv"], h, dirs)
                         for di, h in zip(cfg["ssm_widths"], cfg["mlp_widths"]))


@pytest.fixture(scope="module")
def mamba_small():
    torch.manual_seed(0)
    m = mambaprune.create_model("mamba_small").eval()
    m.set_scan_impl("ref")
    return m


# --------------------------------------------------------------------------------------- pruned = masked


@pytest.mark.parametrize("ssm_ratio,mlp_ratio,bidirectional,scope", [
    (0.5, 0.0, False, "global"),
    (0.0, 0.6, False, "layerwise"),
    (0.4, 0.5, False, "global"),
    (0.5, 0.3, True, "layerwise"),
    (0.7, 0.7, True, "global"),
])
def test_pruned_equals_masked(ssm_ratio, mlp_ratio, bidirectional, scope):
    dense = small_model(depth=2, ssm=[24, 16], mlp=[32, 20], bidirectional=bidirectional)
    x = images()
    pruned, plan = prune_model(dense, ssm_ratio, mlp_ratio, scope=scope, min_keep=1, round_to=1)
    assert (plan["ssm"] is None) == (ssm_ratio == 0) and (plan["mlp"] is None) == (mlp_ratio == 0)
    y_pruned, y_masked, y_dense = run(pruned, x), masked_forward(dense, plan, x), run(dense, x)
    assert (y_pruned - y_masked).abs().max().item() <= 1e-10
    assert (y_pruned - y_dense).abs().max().item() > 1e-3  # the masking really changed the output
    assert count_params(pruned) < count_params(dense)


def test_keeping_every_unit_is_the_identity():
    dense = small_model(ssm=[24, 16], mlp=[32, 20], bidirectional=True, dtype=torch.float32)
    x = images(dtype=torch.float32)
    full = {"ssm": [list(range(w)) for w in dense.ssm_widths], "mlp": [list(range(w)) for w in dense.mlp_widths],
            "state": [list(range(n)) for n in dense.d_states], "embed": list(range(dense.config["embed_dim"]))}
    assert torch.equal(run(apply_plan(dense, full), x), run(dense, x))
    same, plan = prune_model(dense, 0.0, 0.0)
    assert plan == {"ssm": None, "mlp": None, "state": None, "embed": None}
    assert torch.equal(run(same, x), run(dense, x))


# ------------------------------------------------------------------------------------ reference figures


def test_reference_forward_shape_and_identification(mamba_small):
    assert isinstance(mamba_small, VisionMamba)
    assert mamba_small.ssm_widths == [384] * 24 and mamba_small.mlp_widths == [768] * 24
    assert mamba_small.config["embed_dim"] == 192 and mamba_small.config["d_state"] == 16
    assert count_params(mamba_small) == 16_488_394 == model_params(mamba_small.config)
    with torch.no_grad():
        out = mamba_small(torch.rand(2, 3, 32, 32))
    assert out.shape == (2, 10) and torch.isfinite(out).all()


def test_reference_mlp_pruning_count(mamba_small):
    pruned, plan = prune_model(mamba_small, mlp_ratio=0.5, scope="global", importance="l1", min_keep=1, round_to=1)
    assert count_params(pruned) == 12_940_234
    assert plan["ssm"] is None and sum(pruned.mlp_widths) == 24 * 384
    assert count_params(pruned) == model_params(pruned.config)


def test_reference_ssm_pruning_count(mamba_small):
    pruned, plan = prune_model(mamba_small, ssm_ratio=0.5, scope="layerwise", min_keep=8, round_to=8)
    assert pruned.ssm_widths == [192] * 24 and pruned.mlp_widths == [768] * 24 and plan["mlp"] is None
    assert count_params(pruned) == model_params(pruned.config)
    dense_block = block_params(192, 384, 16, 4, 768)
    assert count_params(mamba_small) - count_params(pruned) == 24 * (dense_block - block_params(192, 192, 16, 4, 768))


def test_reference_hybrid_pruning_count(mamba_small):
    targets = Targets({"ssm": 0.3, "mlp": 0.5}, {"ssm": mamba_small.ssm_widths, "mlp": mamba_small.mlp_widths},
                      scope="global", min_keep=8, round_to=8)
    selection = select(mamba_small, score(mamba_small, targets.ratios, "l1"), targets)
    pruned, plan, info = apply_plan(mamba_small, selection.plan), selection.plan, selection.info
    assert prune_model(mamba_small, 0.3, 0.5, scope="global")[1] == plan  # the API is the core with defaults
    assert plan["ssm"] is not None and plan["mlp"] is not None
    assert all(w % 8 == 0 for w in pruned.ssm_widths + pruned.mlp_widths)
    assert count_params(pruned) == model_params(pruned.config)
    assert abs(info["mlp"]["effective_ratio"] - 0.5) < 0.05 and abs(info["ssm"]["effective_ratio"] - 0.3) < 0.05
    assert count_flops(pruned) < count_flops(mamba_small)
    report = size_report(pruned, mamba_small)  # the one vocabulary: fractions removed, 0..1
    p0, p1, f0, f1 = count_params(mamba_small), count_params(pruned), count_flops(mamba_small), count_flops(pruned)
    assert (report["params"], report["dense_params"], report["flops"], report["dense_flops"]) == (p1, p0, f1, f0)
    assert report["param_reduction"] == 1 - p1 / p0 and report["flop_reduction"] == 1 - f1 / f0
    assert 0.4 < report["param_reduction"] < 0.45 and 0.4 < report["flop_reduction"] < 0.45
    assert report["ssm_widths"] == pruned.ssm_widths and report["mlp_widths"] == pruned.mlp_widths
    assert set(size_report(pruned)) == {"params", "flops", "ssm_widths", "mlp_widths"}


def test_flops_reference_figure(mamba_small):
    b = flops_breakdown(mamba_small)
    linear = sum(b[k] for k in ("in_proj", "x_proj", "out_proj", "fc1", "fc2", "head"))
    per_token_macs = 192 * 768 + 384 * (384 + 32) + 384 * 192 + 2 * 192 * 768
    assert linear == 2 * 64 * 24 * per_token_macs + 2 * 192 * 10 == 2_076_184_320  # ≈ 2.08 GFLOP
    assert b["scan"] == 64 * 24 * (6 * 384 * 16 + 3 * 384)
    assert count_flops(mamba_small) == sum(b.values())
    assert 2.08e9 < count_flops(mamba_small) < 2.2e9


def test_flops_follow_widths():
    dense = small_model(ssm=[24, 16], mlp=[32, 20], bidirectional=True)
    pruned, plan = prune_model(dense, 0.5, 0.5, scope="layerwise", min_keep=1, round_to=1)
    b0, b1 = flops_breakdown(dense), flops_breakdown(pruned)
    assert b1["patch_embed"] == b0["patch_embed"] and b1["head"] == b0["head"]
    assert b1["fc1"] * 2 == b0["fc1"] and b1["out_proj"] * 2 == b0["out_proj"]
    assert b0["x_proj"] == 2 * 16 * 2 * (24 * 32 + 16 * 24)  # 16 tokens, 2 directions, d_state 4
    assert (pruned.ssm_widths, pruned.mlp_widths) == ([12, 8], [16, 10])


# ------------------------------------------------------------------------------------ selection rules


def test_lowest_scores_are_removed():
    scores = [torch.tensor([5.0, 1.0, 3.0, 0.5, 4.0]), torch.tensor([0.1, 9.0, 2.0])]
    keep, info = select_units(scores, 0.5, "global", min_keep=1, round_to=1)
    assert keep == [[0, 2, 4], [1]] and info["threshold"] == 3.0 and info["kept"] == 4
    keep, info = select_units(scores, 0.5, "layerwise", min_keep=1, round_to=1)
    assert keep == [[0, 2, 4], [1, 2]] and info["threshold"] is None  # round(2.5) = 3, round(1.5) = 2
    assert info["layers"][1] == {"kept": 2, "total": 3, "base": 3, "target": 2}


def test_l1_scores_average_every_member_of_the_unit():
    m = small_model(depth=1, ssm=[6], mlp=[5], bidirectional=True)
    c, W, sd = 4, 6, dict(m.named_parameters())
    # x_proj[c, c] sits in both column c (input) and row c (Δ output) of unit c: it counts once
    expected = sd["blocks.0.mixer.in_proj.weight"][[c, W + c]].abs().sum() + \
        sd["blocks.0.mixer.out_proj.weight"][:, c].abs().sum()
    for s in range(2):
        p = f"blocks.0.mixer.ssm.{s}."
        expected = expected + sd[p + "conv1d.weight"][c].abs().sum() + sd[p + "conv1d.bias"][c].abs() + \
            sd[p + "x_proj.weight"][:, c].abs().sum() + sd[p + "x_proj.weight"][c].abs().sum() - \
            sd[p + "x_proj.weight"][c, c].abs() + sd[p + "A_log"][c].abs().sum() + sd[p + "D"][c].abs()
    dim, n, k = m.config["embed_dim"], m.config["d_state"], m.config["d_conv"]
    # in_proj x/z rows, out_proj column; per direction conv, x_proj column + row less their shared entry, A_log, D
    entries = 2 * dim + dim + 2 * (k + 1 + (W + 2 * n) + W - 1 + n + 1)
    assert torch.allclose(score_units(m, "ssm", "l1")[0][c], expected.detach() / entries, rtol=1e-12)
    j = 3
    fc1_w, fc1_b, fc2_w = sd["blocks.0.mlp.fc1.weight"], sd["blocks.0.mlp.fc1.bias"], sd["blocks.0.mlp.fc2.weight"]
    entries = fc1_w.shape[1] + 1 + fc2_w.shape[0]
    l2 = ((fc1_w[j].square().sum() + fc1_b[j].square() + fc2_w[:, j].square().sum()) / entries).sqrt()
    assert torch.allclose(score_units(m, "mlp", "l2")[0][j], l2.detach(), rtol=1e-12)


def test_crafted_weak_units_are_the_ones_pruned():
    m = small_model(depth=2, ssm=[16, 16], mlp=[16, 16])
    weak = {0: [1, 5, 6, 11], 1: [0, 2, 3, 15]}
    with torch.no_grad():
        for i, idx in weak.items():
            m.blocks[i].mlp.fc1.weight[idx] *= 0.01
            m.blocks[i].mlp.fc1.bias[idx] *= 0.01
            m.blocks[i].mlp.fc2.weight[:, idx] *= 0.01
    for scope in ("global", "layerwise"):
        _, plan = prune_model(m, mlp_ratio=0.25, scope=scope, min_keep=1, round_to=1)
        for i, idx in weak.items():
            assert plan["mlp"][i] == [j for j in range(16) if j not in idx]


def test_kept_units_are_the_top_scores_of_each_layer():
    m = small_model(depth=3, ssm=[24, 16, 8], mlp=[32, 20, 12])
    scores = score_units(m, "ssm", "l2")
    keep, _ = select_units(scores, 0.6, "global", min_keep=4, round_to=4)
    for s, k in zip(scores, keep):
        removed = [j for j in range(len(s)) if j not in k]
        assert not removed or s[k].min() >= s[removed].max()


def test_global_and_layerwise_differ_on_scaled_block():
    m = small_model(depth=2, mlp=[32, 32])
    with torch.no_grad():
        for p in m.blocks[1].mlp.parameters():
            p.mul_(10.0)
    targets = Targets({"mlp": 0.5}, {"mlp": [32, 32]}, scope="global", min_keep=1, round_to=1)
    selection = select(m, score(m, ["mlp"], "l1"), targets)
    g = selection.plan
    _, lw = prune_model(m, mlp_ratio=0.5, scope="layerwise", min_keep=1, round_to=1)
    assert g["mlp"][1] is None and len(g["mlp"][0]) == 1  # the ×10 block keeps every unit; min_keep saves block 0
    assert len(selection.warnings) == 1 and selection.warnings[0].startswith("mlp: min_keep=1")
    assert "effective ratio" in selection.warnings[0] and selection.info["mlp"]["warnings"]
    assert len(lw["mlp"][0]) == len(lw["mlp"][1]) == 16


@pytest.mark.parametrize("scope", ["global", "layerwise"])
def test_min_keep_and_round_to_hold_under_099(scope):
    scores = [torch.rand(w, generator=torch.Generator().manual_seed(w)) for w in (24, 40, 17, 5, 64)]
    keep, info = select_units(scores, 0.99, scope, min_keep=5, round_to=4)
    widths = [len(k) for k in keep]
    assert widths == [8, 8, 8, 5, 8]  # min_keep 5 → 8 (multiple of 4); the width-5 layer keeps all 5
    for k, s in zip(keep, scores):
        assert k == sorted(set(k)) and len(k) >= min(5, len(s)) and (len(k) % 4 == 0 or len(k) == len(s))
    eff = 1 - 37 / 150
    assert info["effective_ratio"] == pytest.approx(eff)
    assert len(info["warnings"]) == 1 and f"{eff:.4f}" in info["warnings"][0] and "0.9900" in info["warnings"][0]


def test_round_width_rules():
    assert round_width(13, 64, 8, 8) == 16  # nearest multiple
    assert round_width(11, 64, 8, 8) == 8
    assert round_width(0, 64, 1, 8) == 8  # never 0
    assert round_width(3, 64, 20, 8) == 24  # min_keep rounded up to a multiple
    assert round_width(3, 20, 30, 8) == 20  # ... but never above width
    assert round_width(19, 20, 1, 8) == 16  # nearest (24) too big → largest multiple that fits
    assert round_width(4, 6, 1, 8) == 6  # no multiple fits → the full width
    assert round_width(20, 20, 1, 8) == 20 and round_width(25, 20, 1, 8) == 20
    assert round_width(7, 30, 1, 1) == 7


def test_ratio_refers_to_base_widths():
    keep, info = select_units([torch.rand(20), torch.rand(10)], 0.5, "layerwise", 1, 1, base_widths=[40, 10])
    assert [len(k) for k in keep] == [20, 5]  # 0.5 of 40 = 20 = current width: nothing more to remove
    keep, info = select_units([torch.rand(20), torch.rand(10)], 0.5, "global", 1, 1, base_widths=[40, 10])
    assert info["kept"] == 25 and info["effective_ratio"] == 0.5


# --------------------------------------------------------------------------- composition, gradients, io


def test_pruning_twice_composes():
    m0 = small_model(depth=2, ssm=[24, 16], mlp=[32, 20], bidirectional=True)
    x = images()
    m1, p1 = prune_model(m0, 0.25, 0.3, scope="layerwise", min_keep=2, round_to=2)
    assert m1.ssm_widths == [18, 12] and m1.mlp_widths == [22, 14]
    m2, p2 = prune_model(m1, 0.5, 0.6, scope="global", min_keep=2, round_to=2, base_widths=m0.config)
    # cumulative targets of the base widths: keep 0.5·40 = 20 channels, 0.4·52 ≈ 21 neurons (± rounding)
    assert 18 <= sum(m2.ssm_widths) <= 22 and 19 <= sum(m2.mlp_widths) <= 23
    direct = apply_plan(m0, compose_plans(p1, p2))
    assert direct.config == m2.config
    assert all(torch.equal(a, b) for a, b in zip(direct.state_dict().values(), m2.state_dict().values()))
    assert torch.equal(run(direct, x), run(m2, x))
    # a kind untouched in one round composes with the other round's plan
    a, pa = prune_model(m0, mlp_ratio=0.5, min_keep=1, round_to=1)
    b, pb = prune_model(a, ssm_ratio=0.5, min_keep=1, round_to=1)
    assert torch.equal(run(apply_plan(m0, compose_plans(pa, pb)), x), run(b, x))


def test_floor_warnings_name_the_raised_layers_and_the_effective_ratio():
    """Refill reports only its kept widths: a layer asked for 6.4 units that kept the floor of 8 was raised."""
    warnings = floor_warnings(0.9, [64, 256], [8, 32], min_keep=8, round_to=8)
    assert warnings == ["min_keep=8 (round_to=8) raised 1 layer(s) above their target (layer 0: 6.4->8); effective "
                        "ratio 0.8750 instead of the asked 0.9000"]
    assert floor_warnings(0.5, [64, 256], [32, 128], min_keep=8, round_to=8) == []
    assert floor_warnings(0.9, [64, 256], [16, 24], min_keep=8, round_to=8) == []  # above the floor: not raised


def test_gradients_reach_every_remaining_parameter():
    torch.manual_seed(0)
    m = mambaprune.create_model("mamba_tiny", depth=2, embed_dim=32, img_size=16, bidirectional=True)
    pruned, _ = prune_model(m, 0.5, 0.5, min_keep=8, round_to=8)
    pruned.train().set_scan_impl("ref")
    x, y = torch.rand(4, 3, 16, 16), torch.tensor([0, 3, 5, 9])
    F.cross_entropy(pruned(x), y).backward()
    for name, p in pruned.named_parameters():
        assert p.grad is not None, name
        assert p.grad.abs().sum() > 0, name


def test_unknown_values_are_rejected_with_the_allowed_ones():
    m = small_model(depth=1, ssm=[8], mlp=[8])
    with pytest.raises(ValueError, match=r"scope='layer-wise'.*'global', 'layerwise'"):
        prune_model(m, 0.5, scope="layer-wise")
    with pytest.raises(ValueError, match=r"importance='l3'.*'l1', 'l2', 'taylor', 'random'"):
        prune_model(m, 0.5, importance="l3")
    with pytest.raises(ValueError, match=r"'ssm', 'mlp'"):
        score_units(m, "attn", "l1")
    with pytest.raises(ValueError, match=r"'global', 'layerwise'"):
        select_units([torch.rand(4)], 0.5, "layer-wise", 1, 1)
    for kwargs, name in [({"ssm_ratio": 1.0}, "ssm_ratio"), ({"mlp_ratio": -0.1}, "mlp_ratio"),
                         ({"min_keep": 0}, "min_keep"), ({"round_to": 2.5}, "round_to")]:
        with pytest.raises(ValueError, match=name):
            prune_model(m, **kwargs)
    with pytest.raises(ValueError, match="calib"):
        prune_model(m, 0.5, importance="taylor")


def test_taylor_differs_from_l1_and_leaves_the_model_unchanged():
    m = small_model(depth=2, ssm=[16, 16], mlp=[16, 16], dtype=torch.float32, std=0.1)
    g = torch.Generator().manual_seed(3)
    calib = [(torch.rand(4, 3, 8, 8, generator=g), torch.randint(0, 10, (4,), generator=g)) for _ in range(3)]
    before = {k: v.clone() for k, v in m.state_dict().items()}
    m.train()
    t = score_units(m, "mlp", "taylor", calib=calib, calib_batches=2)
    assert m.training and all(p.grad is None for p in m.parameters())
    assert all(torch.equal(before[k], v) for k, v in m.state_dict().items())
    l1 = score_units(m, "mlp", "l1")
    assert all(torch.isfinite(s).all() and (s >= 0).all() and s.shape == (16,) for s in t)
    assert any(not torch.equal(a.argsort(), b.argsort()) for a, b in zip(t, l1))
    assert not torch.equal(t[0], score_units(m, "mlp", "taylor", calib=calib, calib_batches=3)[0])
    _, plan = prune_model(m, 0.5, 0.5, importance="taylor", calib=calib, min_keep=1, round_to=1)
    assert plan["ssm"] is not None


def test_random_importance_is_seeded():
    m = small_model(depth=2, ssm=[16, 16], mlp=[16, 16])
    a = score_units(m, "ssm", "random", seed=7)
    b = score_units(m, "ssm", "random", seed=7)
    c = score_units(m, "ssm", "random", seed=8)
    assert all(torch.equal(x, y) for x, y in zip(a, b)) and not torch.equal(a[0], c[0])
    assert prune_model(m, 0.5, importance="random", seed=7)[1] == prune_model(m, 0.5, importance="random", seed=7)[1]


def test_save_load_round_trip_of_a_pruned_model(tmp_path):
    dense = small_model(ssm=[24, 16], mlp=[32, 20], bidirectional=True)
    pruned, plan = prune_model(dense, 0.5, 0.5, min_keep=1, round_to=1)
    path = mambaprune.save_checkpoint(pruned, tmp_path / "sub" / "p.pt", plans=[plan], epoch=3)
    loaded, extra = mambaprune.load_checkpoint(path, return_extra=True)
    assert loaded.config == pruned.config and extra["plans"] == [plan] and extra["epoch"] == 3
    assert next(loaded.parameters()).dtype == torch.float64
    x = images()
    assert torch.equal(run(loaded, x), run(pruned, x))
