"""Property test: any small model, ratio, scope, criterion, min_keep and round_to gives a valid pruned model
that computes exactly what the dense model computes with the removed units zeroed (float64): SSM channels, MLP
neurons and SSM states (embed pruning is no masking: tests/test_kinds.py checks it against its definition)."""

import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from masking import masked_forward

from mambaprune import VisionMamba
from mambaprune.config import PruneCfg
from mambaprune.pruning import SCOPES, TARGETS, prune_model, score_units


@st.composite
def cases(draw):
    depth = draw(st.integers(1, 3))
    widths = st.lists(st.integers(1, 20), min_size=depth, max_size=depth)
    return dict(
        depth=depth, ssm=draw(widths), mlp=draw(widths), bidirectional=draw(st.booleans()),
        d_state=draw(st.integers(1, 3)), d_conv=draw(st.integers(2, 4)), target=draw(st.sampled_from(TARGETS)),
        ratio=draw(st.floats(0.0, 0.99)), mlp_ratio=draw(st.floats(0.0, 0.99)),
        state_ratio=draw(st.sampled_from((0.0, 0.5, 0.9))),
        scope=draw(st.sampled_from(SCOPES)), importance=draw(st.sampled_from(("l1", "l2", "taylor", "random"))),
        min_keep=draw(st.integers(1, 10)), round_to=draw(st.integers(1, 8)), seed=draw(st.integers(0, 1000)),
    )


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(c=cases())
def test_any_pruning_is_valid_and_equals_masking(c):
    torch.manual_seed(c["seed"])
    dense = VisionMamba(img_size=8, patch_size=4, embed_dim=8, depth=c["depth"], d_state=c["d_state"],
                        d_conv=c["d_conv"], ssm_widths=c["ssm"], mlp_widths=c["mlp"],
                        bidirectional=c["bidirectional"])
    with torch.no_grad():
        for p in dense.parameters():
            p.normal_(0.0, 0.3)
    dense = dense.double().eval()
    dense.set_scan_impl("ref")
    x = torch.rand(2, 3, 8, 8, dtype=torch.float64)
    calib = [(x, torch.tensor([1, 7]))]
    prune = PruneCfg(target=c["target"], ratio=c["ratio"], mlp_ratio=c["mlp_ratio"])  # as the pipeline maps them
    ratios = {kind: prune.final_ratio(kind) for kind in ("ssm", "mlp")}
    kw = dict(scope=c["scope"], importance=c["importance"], min_keep=c["min_keep"], round_to=c["round_to"],
              calib=calib, seed=c["seed"])
    ratios["state"] = c["state_ratio"]
    pruned, plan = prune_model(dense, ratios["ssm"], ratios["mlp"], state_ratio=ratios["state"], **kw)

    for kind, key in (("ssm", "ssm_widths"), ("mlp", "mlp_widths"), ("state", "d_states")):
        before, after = dense.config[key], pruned.config[key]
        if ratios[kind] == 0.0:
            assert plan[kind] is None and after == before
            continue
        scores = score_units(dense, kind, c["importance"], calib=calib, seed=c["seed"])
        for w, n, keep, s in zip(before, after, plan[kind], scores):
            keep = list(range(w)) if keep is None else keep  # None: the block keeps every unit
            floor = min(-(-c["min_keep"] // c["round_to"]) * c["round_to"], w)  # min_keep rounded up, capped
            assert min(c["min_keep"], w) <= floor <= n <= w and len(keep) == n
            assert n % c["round_to"] == 0 or n == w
            assert keep == sorted(set(keep)) and 0 <= keep[0] and keep[-1] < w
            removed = [j for j in range(w) if j not in keep]
            assert not removed or s[keep].min() >= s[removed].max()  # the best units of the layer stay

    pruned.set_scan_impl("ref")
    with torch.no_grad():
        y = pruned(x)
    assert y.shape == (2, 10) and torch.isfinite(y).all()
    assert (y - masked_forward(dense, plan, x)).abs().max().item() <= 1e-10
