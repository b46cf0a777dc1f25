"""State-size and embedding-width pruning: pruned = its definition, exact counts, scores, plans, checkpoints.

State pruning is a masking of the dense model (a state whose B row is zero stays zero, so its C row reads
nothing), checked exactly in float64 for the ref and CPU scans and, under the Triton interpreter, within fp32
rounding. Embed pruning is not (the LayerNorms then normalise over fewer channels): the pruned model is checked
against a smaller model built by hand from the kept channels, and against the dense model with the removed
channels zeroed at their sources and every LayerNorm taken over the kept channels.
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from masking import masked_forward
from test_pruning import images, small_model
from triton_interpreter import run_interpreted

import mambaprune
from mambaprune import (
    VisionMamba,
    count_flops,
    count_params,
    load_checkpoint,
    prune_model,
    save_checkpoint,
    size_report,
)
from mambaprune.counting import flops_breakdown
from mambaprune.pruning import (
    apply_plan,
    compose_plans,
    plan_widths,
    prune_selection,
    score_units,
    slice_state,
    validate_plan,
)


def run(model, x, impl="ref"):
    model.set_scan_impl(impl)
    with torch.no_grad():
        return model.eval()(x)


def with_large_steps(model):
    """``model`` with every Δ bias at 1 (softplus ≈ 1.3): the states then carry much of the SSM's output (with
    the init's dt ≤ 0.1 a state changes the logits by ~1e-5, too little for a test to tell)."""
    with torch.no_grad():
        for blk in model.blocks:
            for s in blk.mixer.ssm:
                s.dt_bias.fill_(1.0)
    return model


def zero_B_rows(model, plan_state):
    """A copy of ``model`` with the B rows of x_proj zeroed, in every direction, for the states each block loses."""
    out = copy.deepcopy(model)
    with torch.no_grad():
        for blk, keep in zip(out.blocks, plan_state):
            if keep is None:
                continue
            for s in blk.mixer.ssm:
                removed = [j for j in range(s.d_state) if j not in keep]
                s.x_proj.weight[[s.d_inner + j for j in removed]] = 0.0
    return out


# ------------------------------------------------------------------------------------------ state pruning


@pytest.mark.parametrize("impl", ["ref", "cpu"])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_state_pruned_equals_dense_with_B_rows_zeroed(impl, bidirectional):
    """Per-block state sizes 1, 3 and 6 of 7 (not powers of two), float64, exact to rounding."""
    dense = with_large_steps(small_model(depth=3, ssm=[12, 8, 10], mlp=[16, 8, 12], d_state=7,
                                         bidirectional=bidirectional))
    plan = {"state": [[4], [0, 2, 5], [0, 1, 2, 3, 5, 6]]}
    pruned = apply_plan(dense, plan)
    assert pruned.d_states == [1, 3, 6] and pruned.config["d_states"] == [1, 3, 6]
    assert pruned.config["d_state"] == 7  # the dense size
    x = images()
    y_pruned, y_zeroed, y_dense = run(pruned, x, impl), run(zero_B_rows(dense, plan["state"]), x, impl), run(dense, x)
    assert (y_pruned - y_zeroed).abs().max().item() <= 1e-12
    assert (y_pruned - y_dense).abs().max().item() > 1e-4  # the removed states mattered, far beyond rounding
    # the masking helper (B outputs zeroed by hooks) is the same reference
    assert (masked_forward(dense, plan, x) - y_pruned).abs().max().item() <= 1e-12


@pytest.mark.parametrize("scope", ["global", "layerwise"])
def test_state_with_ssm_and_mlp_pruning_equals_masking(scope):
    """x_proj's B and C rows follow its Δ rows: cut together with SSM channels, the state cut must find them after
    the kept Δ rows."""
    dense = with_large_steps(small_model(depth=2, ssm=[24, 16], mlp=[32, 20], d_state=6, bidirectional=True))
    pruned, plan = prune_model(dense, 0.5, 0.4, scope=scope, min_keep=1, round_to=1, state_ratio=0.5)
    assert all(p is not None for p in plan.values() if p is not plan["embed"]) and plan["embed"] is None
    assert sum(pruned.d_states) == 6 and pruned.ssm_widths != dense.ssm_widths
    x = images()
    assert (run(pruned, x) - masked_forward(dense, plan, x)).abs().max().item() <= 1e-10


def test_global_state_selection_can_differ_per_block_and_layerwise_cannot():
    dense = small_model(depth=2, ssm=[8, 8], mlp=[8, 8], d_state=8)
    with torch.no_grad():  # block 1's B and C rows ×10: it wins the global ranking
        dense.blocks[1].mixer.ssm[0].x_proj.weight[8:] *= 10.0
    _, g = prune_model(dense, state_ratio=0.5, scope="global", min_keep=2, round_to=1)
    _, lw = prune_model(dense, state_ratio=0.5, scope="layerwise", min_keep=2, round_to=1)
    # min_keep: 0 → 2; a block that keeps every unit is None in the plan (the one core's plans, as the rounds' were)
    assert plan_widths(g, dense.config)["state"] == [2, 8] and g["state"][1] is None
    assert [len(k) for k in lw["state"]] == [4, 4]


def test_state_scores_are_the_B_and_C_rows():
    """l1 of state n: mean |w| over its B row and C row of x_proj in every direction (A_log not scored)."""
    m = small_model(depth=1, ssm=[6], mlp=[5], d_state=4, bidirectional=True)
    with torch.no_grad():  # A_log values that would dominate any mean they took part in
        for s in m.blocks[0].mixer.ssm:
            s.A_log.copy_(torch.log(torch.arange(1, 5, dtype=torch.float64)).repeat(6, 1) * 100)
    n, W = 2, 6
    rows = [s.x_proj.weight[[W + n, W + 4 + n]] for s in m.blocks[0].mixer.ssm]
    expected = sum(r.abs().sum() for r in rows) / sum(r.numel() for r in rows)
    assert torch.allclose(score_units(m, "state", "l1")[0][n], expected.detach(), rtol=1e-12)
    l2 = (sum(r.square().sum() for r in rows) / sum(r.numel() for r in rows)).sqrt()
    assert torch.allclose(score_units(m, "state", "l2")[0][n], l2.detach(), rtol=1e-12)


def test_crafted_weak_states_are_the_ones_pruned():
    m = small_model(depth=2, ssm=[8, 8], mlp=[8, 8], d_state=8)
    weak = {0: [1, 6], 1: [0, 3]}
    with torch.no_grad():
        for i, idx in weak.items():
            w = m.blocks[i].mixer.ssm[0].x_proj.weight
            w[[8 + j for j in idx]] *= 0.01
            w[[16 + j for j in idx]] *= 0.01
    for importance in ("l1", "l2"):
        _, plan = prune_model(m, state_ratio=0.25, importance=importance, scope="layerwise", min_keep=1, round_to=1)
        assert plan["state"] == [[j for j in range(8) if j not in idx] for idx in weak.values()]


def test_state_taylor_and_random_scores():
    m = small_model(depth=2, ssm=[8, 8], mlp=[8, 8], d_state=5, dtype=torch.float32, std=0.1)
    g = torch.Generator().manual_seed(3)
    calib = [(torch.rand(4, 3, 8, 8, generator=g), torch.randint(0, 10, (4,), generator=g)) for _ in range(2)]
    t = score_units(m, "state", "taylor", calib=calib)
    assert [s.shape for s in t] == [(5,), (5,)] and all((s > 0).all() for s in t)
    r1, r2 = score_units(m, "state", "random", seed=4), score_units(m, "state", "random", seed=4)
    assert torch.equal(r1[0], r2[0]) and not torch.equal(r1[0], score_units(m, "embed", "random", seed=4)[0][:5])
    # the SSM and MLP streams are the ones they were before the new kinds (seed·2 + kind index)
    ssm = score_units(m, "ssm", "random", seed=4)[0]
    assert torch.equal(ssm, torch.rand(8, generator=torch.Generator().manual_seed(8), dtype=torch.float64))


def test_state_flops_and_params_follow_per_block_sizes():
    dense = small_model(depth=2, ssm=[12, 8], mlp=[16, 8], d_state=7, bidirectional=True)
    pruned = apply_plan(dense, {"state": [[0, 3, 4], None]})
    b0, b1 = flops_breakdown(dense), flops_breakdown(pruned)
    tokens, dirs = 16, 2
    assert b0["scan"] - b1["scan"] == tokens * dirs * 6 * 12 * 4  # block 0 lost 4 states of 7
    assert b0["x_proj"] - b1["x_proj"] == 2 * tokens * dirs * 12 * 2 * 4
    per_state = dirs * (12 + 2 * 12)  # A_log column + B row + C row, both directions
    assert count_params(dense) - count_params(pruned) == 4 * per_state
    assert pruned.d_states == plan_widths({"state": [[0, 3, 4], None]}, dense.config)["state"] == [3, 7]


def test_triton_interpreter_runs_any_state_size():
    """Under TRITON_INTERPRET=1: a model with per-block state sizes 1, 3 and 5 (and an embedding of 11 channels)
    gives the reference scan's outputs and gradients through the Triton scan, conv and norm kernels, and the
    state-pruned model equals the dense one with the removed B rows zeroed."""
    pytest.importorskip("triton")
    results = run_interpreted(_TRITON_SCRIPT)
    assert all(v == "ok" for v in results.values()), results


_TRITON_SCRIPT = r"""
import json, sys, torch
sys.path.insert(0, {tests_dir!r})
import test_kinds as T
from test_pruning import small_model, images
from mambaprune.pruning import apply_plan
out = {{}}
dense = T.with_large_steps(small_model(depth=3, dim=16, ssm=[12, 8, 10], mlp=[16, 8, 12], d_state=7,
                                       dtype=torch.float32))
state = [[4], [0, 2, 5], [0, 1, 3, 4, 6]]
pruned = apply_plan(dense, {{"state": state, "embed": [0, 1, 3, 4, 6, 7, 8, 10, 11, 13, 15]}})
x = images(dtype=torch.float32)
for name, model in [("state_embed", pruned), ("state_only", apply_plan(dense, {{"state": state}}))]:
    ys, grads = {{}}, {{}}
    for impl in ("ref", "triton"):
        model.set_scan_impl(impl)
        model.zero_grad()
        y = model.train()(x)
        y.square().sum().backward()
        ys[impl], grads[impl] = y.detach(), {{n: p.grad.clone() for n, p in model.named_parameters()}}
    rel = lambda a, b: ((a - b).norm() / b.norm()).item()
    errs = {{"y": rel(ys["triton"], ys["ref"])}} | {{n: rel(grads["triton"][n], g) for n, g in grads["ref"].items()
                                                 if g.norm() > 0}}
    bad = {{k: e for k, e in errs.items() if not e <= 1e-4}}
    out[name] = "ok" if not bad else f"triton vs ref: {{bad}}"
zeroed = T.zero_B_rows(dense, state)
y_zeroed, y_pruned = T.run(zeroed, x, "triton"), T.run(apply_plan(dense, {{"state": state}}), x, "triton")
y_dense = T.run(dense, x, "triton")
gap = (y_pruned - y_zeroed).abs().max().item()
out["state_masking"] = "ok" if gap <= 1e-5 < (y_pruned - y_dense).abs().max().item() else f"gap {{gap}}"
print("RESULT" + json.dumps(out))
"""


# ------------------------------------------------------------------------------------------ embed pruning


def slice_by_hand(dense: VisionMamba, keep: list[int]) -> VisionMamba:
    """The definition of an embed-pruned model, written out tensor by tensor: a VisionMamba of width len(keep)
    whose every residual-stream tensor holds the kept channels (independent of units.py)."""
    k = torch.tensor(keep)
    sd = {n: t.clone() for n, t in dense.state_dict().items()}
    sd["patch_embed.weight"], sd["patch_embed.bias"] = sd["patch_embed.weight"][k], sd["patch_embed.bias"][k]
    sd["pos_embed"] = sd["pos_embed"][:, :, k]
    for i in range(dense.config["depth"]):
        p = f"blocks.{i}."
        for norm in ("norm1", "norm2"):
            sd[p + norm + ".weight"], sd[p + norm + ".bias"] = sd[p + norm + ".weight"][k], sd[p + norm + ".bias"][k]
        sd[p + "mixer.in_proj.weight"] = sd[p + "mixer.in_proj.weight"][:, k]
        sd[p + "mixer.out_proj.weight"] = sd[p + "mixer.out_proj.weight"][k]
        sd[p + "mlp.fc1.weight"] = sd[p + "mlp.fc1.weight"][:, k]
        sd[p + "mlp.fc2.weight"], sd[p + "mlp.fc2.bias"] = sd[p + "mlp.fc2.weight"][k], sd[p + "mlp.fc2.bias"][k]
    sd["norm.weight"], sd["norm.bias"] = sd["norm.weight"][k], sd["norm.bias"][k]
    sd["head.weight"] = sd["head.weight"][:, k]
    small = VisionMamba(**{**dense.config, "embed_dim": len(keep)}).to(torch.float64)
    small.load_state_dict(sd)
    return small.eval()


class KeptLayerNorm(nn.Module):
    """LayerNorm whose mean and variance run over the kept channels only; zero on the removed ones."""

    def __init__(self, norm: nn.LayerNorm, keep: list[int]):
        super().__init__()
        self.norm, self.keep = norm, torch.tensor(keep)

    def forward(self, x):
        out = torch.zeros_like(x)
        w, b = self.norm.weight[self.keep], self.norm.bias[self.keep]
        out[..., self.keep] = F.layer_norm(x[..., self.keep], (len(self.keep),), w, b, self.norm.eps)
        return out


def dense_over_kept_channels(dense: VisionMamba, keep: list[int]) -> VisionMamba:
    """The dense model with the removed channels zeroed where they enter the residual stream (patch embedding,
    positions, out_proj and fc2 outputs) and every LayerNorm over the kept channels: the residual stream's removed
    channels stay zero, and what reads the stream sees only the kept ones."""
    m = copy.deepcopy(dense)
    removed = torch.tensor([c for c in range(dense.config["embed_dim"]) if c not in keep])
    with torch.no_grad():
        m.patch_embed.weight[removed] = 0.0
        m.patch_embed.bias[removed] = 0.0
        m.pos_embed[..., removed] = 0.0
        for blk in m.blocks:
            blk.mixer.out_proj.weight[removed] = 0.0
            blk.mlp.fc2.weight[removed] = 0.0
            blk.mlp.fc2.bias[removed] = 0.0
            blk.norm1, blk.norm2 = KeptLayerNorm(blk.norm1, keep), KeptLayerNorm(blk.norm2, keep)
    m.norm = KeptLayerNorm(m.norm, keep)
    return m


def params_formula(cfg) -> int:
    """Closed form of a VisionMamba's parameters from its config (per-block widths and state sizes)."""
    E, p, dirs, k = cfg["embed_dim"], cfg["patch_size"], 2 if cfg["bidirectional"] else 1, cfg["d_conv"]
    tokens = (cfg["img_size"] // p) ** 2
    total = cfg["in_chans"] * p * p * E + E + tokens * E + 2 * E + E * cfg["num_classes"] + cfg["num_classes"]
    for di, h, n in zip(cfg["ssm_widths"], cfg["mlp_widths"], cfg["d_states"]):
        per_dir = di * k + di + di * (di + 2 * n) + di * n + di  # conv w+b, x_proj, A_log, D
        total += 4 * E + E * 2 * di + dirs * per_dir + di * E + E * h + h + h * E + E
    return total


def flops_formula(cfg) -> int:
    E, p, dirs, k = cfg["embed_dim"], cfg["patch_size"], 2 if cfg["bidirectional"] else 1, cfg["d_conv"]
    T = (cfg["img_size"] // p) ** 2
    total = 2 * T * cfg["in_chans"] * p * p * E + 2 * E * cfg["num_classes"]
    for di, h, n in zip(cfg["ssm_widths"], cfg["mlp_widths"], cfg["d_states"]):
        total += 2 * T * E * 2 * di + 2 * T * dirs * di * (di + 2 * n) + 2 * T * dirs * k * di
        total += T * dirs * (6 * di * n + 3 * di) + 2 * T * di * E + 2 * T * E * h + 2 * T * h * E
    return total


@pytest.mark.parametrize("bidirectional", [False, True])
def test_embed_pruned_equals_its_definition(bidirectional):
    dense = small_model(depth=2, ssm=[12, 8], mlp=[16, 8], d_state=3, bidirectional=bidirectional)
    keep = [0, 1, 3, 4, 6, 7, 8, 10, 11, 13, 15]  # 11 of 16, not a power of two
    pruned = apply_plan(dense, {"embed": keep})
    by_hand = slice_by_hand(dense, keep)
    assert pruned.config == by_hand.config and pruned.config["embed_dim"] == 11
    assert all(torch.equal(a, b) for a, b in zip(pruned.state_dict().values(), by_hand.state_dict().values()))
    x = images()
    y = run(pruned, x)
    assert torch.equal(y, run(by_hand, x))
    assert (y - run(dense_over_kept_channels(dense, keep), x)).abs().max().item() <= 1e-12
    assert (y - run(dense, x)).abs().max().item() > 1e-3
    assert count_params(pruned) == params_formula(pruned.config) < count_params(dense)
    assert count_flops(pruned) == flops_formula(pruned.config) and count_flops(dense) == flops_formula(dense.config)


def test_every_kind_together_counts_exactly():
    dense = small_model(depth=3, ssm=[24, 16, 8], mlp=[32, 20, 12], d_state=6, bidirectional=True)
    kwargs = dict(ssm_ratio=0.5, mlp_ratio=0.5, min_keep=2, round_to=2, state_ratio=0.5, embed_ratio=0.25)
    pruned, plan = prune_model(dense, **kwargs)
    selection = prune_selection(dense, **kwargs)  # the same core, without the cut
    assert selection.plan == plan and selection.info["embed"]["kept"] == 12 and selection.warnings == []
    assert pruned.config["embed_dim"] == len(plan["embed"]) == 12
    # 6 states per block, half of them removed: 3 rounded to round_to 2 is 4 (as main's prune_model gave)
    assert plan_widths(plan, dense.config)["state"] == pruned.d_states == [4, 4, 4]
    assert count_params(pruned) == params_formula(pruned.config)
    assert count_flops(pruned) == flops_formula(pruned.config)
    report = size_report(pruned, dense)
    assert report["param_reduction"] == 1 - params_formula(pruned.config) / params_formula(dense.config)
    assert report["flop_reduction"] == 1 - flops_formula(pruned.config) / flops_formula(dense.config)
    x = images()
    assert torch.equal(run(pruned, x), run(apply_plan(dense, plan), x))


def test_embed_scores_every_member_entry():
    m = small_model(depth=2, ssm=[6, 4], mlp=[5, 3], d_state=2)
    sd, c = dict(m.named_parameters()), 5
    parts = [sd["patch_embed.weight"][c], sd["patch_embed.bias"][c], sd["pos_embed"][0, :, c],
             sd["norm.weight"][c], sd["norm.bias"][c], sd["head.weight"][:, c]]
    for i in range(2):
        p = f"blocks.{i}."
        parts += [sd[p + "norm1.weight"][c], sd[p + "norm1.bias"][c], sd[p + "norm2.weight"][c],
                  sd[p + "norm2.bias"][c], sd[p + "mixer.in_proj.weight"][:, c], sd[p + "mixer.out_proj.weight"][c],
                  sd[p + "mlp.fc1.weight"][:, c], sd[p + "mlp.fc2.weight"][c], sd[p + "mlp.fc2.bias"][c]]
    entries = sum(t.numel() for t in parts)
    assert entries == 3 * 4 + 1 + 16 + 2 + 10 + (3 * 6 + 2 * 5 + 5) + (3 * 4 + 2 * 3 + 5)
    expected = sum(t.abs().sum() for t in parts) / entries
    scores = score_units(m, "embed", "l1")
    assert len(scores) == 1 and scores[0].shape == (16,)
    assert torch.allclose(scores[0][c], expected.detach(), rtol=1e-12)


def test_crafted_weak_embed_channels_are_the_ones_pruned():
    m = small_model(depth=2, ssm=[8, 8], mlp=[8, 8])
    weak = [2, 9, 14]
    with torch.no_grad():
        for name, p in m.named_parameters():
            for member in mambaprune.pruning.units.members_of(m.config, "embed"):
                if member.name == name:
                    idx = [slice(None)] * p.ndim
                    idx[member.dim] = weak
                    p[tuple(idx)] *= 0.01
    _, plan = prune_model(m, embed_ratio=3 / 16, min_keep=1, round_to=1)
    assert plan["embed"] == [c for c in range(16) if c not in weak]
    assert plan["ssm"] is plan["mlp"] is plan["state"] is None


# ------------------------------------------------------------------------------ plans, rewinding, checkpoints


def test_plans_with_every_kind_compose_save_load_and_rewind(tmp_path):
    init = small_model(depth=2, ssm=[24, 16], mlp=[32, 20], d_state=6, bidirectional=True, seed=1)
    trained = small_model(depth=2, ssm=[24, 16], mlp=[32, 20], d_state=6, bidirectional=True, seed=2)
    m1, p1 = prune_model(trained, 0.25, 0.25, min_keep=1, round_to=1, state_ratio=0.34, embed_ratio=0.25)
    m2, p2 = prune_model(m1, 0.5, 0.5, min_keep=1, round_to=1, base_widths=trained.config, state_ratio=0.5,
                         embed_ratio=0.5)
    assert m2.config["embed_dim"] == 8 and len(p2["embed"]) == 8 and sum(m2.d_states) < sum(m1.d_states) < 12
    total = compose_plans(p1, p2)
    direct = apply_plan(trained, total)
    assert direct.config == m2.config
    assert all(torch.equal(a, b) for a, b in zip(direct.state_dict().values(), m2.state_dict().values()))
    # rewinding: the composed plan slices the initial weights into the pruned shapes
    state, config = slice_state(init.state_dict(), init.config, total)
    assert config == m2.config
    rewound = copy.deepcopy(m2)
    rewound.load_state_dict(state)
    x = images()
    assert torch.equal(run(rewound, x), run(apply_plan(init, total), x))
    assert torch.equal(state["pos_embed"], init.pos_embed[..., total["embed"]])
    # checkpoints carry the plans and rebuild the per-block state sizes and the embedding width
    path = save_checkpoint(m2, tmp_path / "m.pt", plans=[p1, p2])
    loaded, extra = load_checkpoint(path, return_extra=True)
    assert loaded.config == m2.config and extra["plans"] == [p1, p2]
    assert compose_plans(*extra["plans"]) == total
    assert torch.equal(run(loaded, x), run(m2, x))


def test_old_config_without_state_sizes_still_loads(tmp_path):
    m = small_model(depth=2, ssm=[8, 8], mlp=[8, 8], d_state=5)
    path = save_checkpoint(m, tmp_path / "old.pt", plans=[{"ssm": None, "mlp": [[0, 1], None]}])
    payload = torch.load(path, weights_only=True)
    del payload["config"]["d_states"]  # as written before state pruning existed
    torch.save(payload, path)
    loaded, extra = load_checkpoint(path, return_extra=True)
    assert loaded.d_states == [5, 5] and loaded.config["d_states"] == [5, 5]
    validate_plan(extra["plans"][0], loaded.config)
    pruned, plan = prune_model(loaded, state_ratio=0.4, min_keep=1, round_to=1)
    assert pruned.d_states == [3, 3] or sum(pruned.d_states) == 6


def test_bad_plans_name_the_kind():
    m = small_model(depth=2, ssm=[8, 8], mlp=[8, 8], d_state=4)
    with pytest.raises(ValueError, match=r"plan\['embed'\] must be one list"):
        validate_plan({"embed": [[0, 1]]}, m.config)
    with pytest.raises(ValueError, match=r"plan\['embed'\] would empty the embedding"):
        validate_plan({"embed": []}, m.config)
    with pytest.raises(ValueError, match=r"plan\['state'\]\[1\] must be sorted unique indices in \[0, 4\)"):
        validate_plan({"state": [None, [0, 4]]}, m.config)
    with pytest.raises(ValueError, match=r"plan\['state'\] has 1 blocks"):
        validate_plan({"state": [[0]]}, m.config)
    for kwargs, name in [({"state_ratio": 1.0}, "state_ratio"), ({"embed_ratio": -0.5}, "embed_ratio")]:
        with pytest.raises(ValueError, match=name):
            prune_model(m, **kwargs)
    with pytest.raises(ValueError, match="d_states needs 2 entries"):
        VisionMamba(img_size=8, patch_size=4, depth=2, d_states=[4])


def test_accuracy_cost_measures_both_models_on_the_same_batches():
    from mambaprune.pruning import accuracy_cost

    m = small_model(depth=2, ssm=[8, 8], mlp=[8, 8], dtype=torch.float32)
    g = torch.Generator().manual_seed(0)
    batches = [(torch.rand(5, 3, 8, 8, generator=g), torch.randint(0, 10, (5,), generator=g)) for _ in range(3)]
    before = {k: v.clone() for k, v in m.state_dict().items()}
    r = accuracy_cost(m, batches, embed_ratio=0.5, min_keep=1, round_to=1)
    pruned = apply_plan(m, r["plan"])

    def acc(model):
        with torch.no_grad():
            return sum(int((model(x).argmax(1) == y).sum()) for x, y in batches) / 15

    assert r["dense_acc"] == acc(m) and r["pruned_acc"] == acc(pruned)
    assert r["acc_drop"] == r["dense_acc"] - r["pruned_acc"] and r["embed_dim"] == 8
    assert r["params"] == count_params(pruned) < r["dense_params"] and r["flops"] < r["dense_flops"]
    assert all(torch.equal(before[k], v) for k, v in m.state_dict().items())
