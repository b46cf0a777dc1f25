"""Model registry, reference shapes and parameter counts (the reference design's published numbers)."""

import copy

import pytest
import torch

import mambaprune
from mambaprune.models.mamba import MambaMixer, SelectiveSSM

REFERENCE_COUNTS = {  # (10 classes, 100 classes), image 32, patch 4
    "mamba_tiny": (2_082_154, 2_090_884),
    "mamba_small": (16_488_394, 16_505_764),
    "mamba_base": (64_827_274, 64_861_924),
}


def n_params(m):
    return sum(p.numel() for p in m.parameters())


def test_registry_lists_the_three_sizes():
    assert mambaprune.list_models() == ["mamba_base", "mamba_small", "mamba_tiny"]


@pytest.mark.parametrize("name", sorted(REFERENCE_COUNTS))
def test_reference_parameter_counts(name):
    for classes, expected in zip((10, 100), REFERENCE_COUNTS[name]):
        with torch.device("meta"):  # shapes only: no memory, no init cost
            model = mambaprune.create_model(name, num_classes=classes)
        assert n_params(model) == expected


@pytest.mark.parametrize("name", sorted(REFERENCE_COUNTS))
def test_forward_shape_every_size(name):
    torch.manual_seed(0)
    if name == "mamba_base":  # 65M params: check the shapes on the meta device to keep CI fast
        with torch.device("meta"):
            out = mambaprune.create_model(name)(torch.rand(2, 3, 32, 32))
        assert out.shape == (2, 10)
        return
    model = mambaprune.create_model(name).eval()
    with torch.no_grad():
        out = model(torch.rand(2, 3, 32, 32))
    assert out.shape == (2, 10)
    assert torch.isfinite(out).all()


def test_overrides_and_per_block_widths():
    m = mambaprune.create_model("mamba_tiny", num_classes=7, img_size=16, in_chans=1, patch_size=2,
                                depth=3, ssm_widths=[8, 16, 24], mlp_widths=[4, 8, 12],
                                norm_mean=[0.5], norm_std=[0.25])
    assert m.ssm_widths == [8, 16, 24] and m.mlp_widths == [4, 8, 12]
    assert m.pos_embed.shape == (1, 64, 96)
    assert m(torch.rand(2, 1, 16, 16)).shape == (2, 7)
    rebuilt = mambaprune.VisionMamba(**m.config)
    assert n_params(rebuilt) == n_params(m)


def test_bidirectional_adds_a_second_scan_direction():
    uni = mambaprune.create_model("mamba_tiny")
    bi = mambaprune.create_model("mamba_tiny", bidirectional=True)
    di, n, d_conv = 192, 8, 4
    per_direction = di * d_conv + di + di * (di + 2 * n) + di * n + di  # conv w+b, x_proj, A_log, D
    assert n_params(bi) - n_params(uni) == 12 * per_direction
    x = torch.rand(2, 3, 32, 32)
    assert bi(x).shape == (2, 10)


def test_mixer_is_causal_and_its_second_direction_reads_the_tokens_reversed():
    """One direction is causal: token t's output ignores later tokens. Two directions (Vim): the second scan
    runs on the reversed tokens and its output is flipped back, so swapping the two directions and reversing
    the input reverses the output."""
    torch.manual_seed(0)
    uni = MambaMixer(dim=8, d_inner=12, d_state=4).double()
    bi = MambaMixer(dim=8, d_inner=12, d_state=4, bidirectional=True).double()
    for ssm in [*uni.ssm, *bi.ssm]:
        ssm.scan_impl = "ref"
    x = torch.randn(2, 10, 8, dtype=torch.float64)
    x_last = x.clone()
    x_last[:, -1] += 1.0
    swapped = copy.deepcopy(bi)
    swapped.ssm = torch.nn.ModuleList([swapped.ssm[1], swapped.ssm[0]])
    with torch.no_grad():
        y, y_last = uni(x), uni(x_last)
        torch.testing.assert_close(y_last[:, :-1], y[:, :-1], rtol=0, atol=1e-12)
        assert (y_last[:, -1] - y[:, -1]).abs().max() > 1e-3
        torch.testing.assert_close(swapped(x.flip(1)), bi(x).flip(1), rtol=0, atol=1e-12)


def test_features_are_layer_normalised():
    """forward_features ends with the final LayerNorm (weight 1, bias 0 at init): every token's features have
    mean 0 and variance 1."""
    torch.manual_seed(0)
    m = mambaprune.create_model("mamba_tiny", depth=2, embed_dim=32, img_size=8).eval()
    with torch.no_grad():
        f = m.forward_features(torch.rand(2, 3, 8, 8))
    torch.testing.assert_close(f.mean(-1), torch.zeros(2, 4), rtol=0, atol=1e-5)
    torch.testing.assert_close(f.var(-1, unbiased=False), torch.ones(2, 4), rtol=0, atol=1e-3)


def test_input_normalisation_is_applied():
    m = mambaprune.create_model("mamba_tiny", depth=1).eval()
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        a = m(x)
        m.norm_mean.fill_(0.0)
        m.norm_std.fill_(1.0)
        b = m(x)
    assert not torch.allclose(a, b)


def test_other_channel_counts_get_default_stats():
    """in_chans is a documented option: 1-channel (or 4-channel) models build without extra arguments, normalising
    to [-1, 1]; 3 channels keep CIFAR's stats; wrong-length stats say what to pass."""
    gray = mambaprune.create_model("mamba_tiny", depth=1, in_chans=1)
    assert gray(torch.rand(2, 1, 32, 32)).shape == (2, 10)
    assert gray.config["norm_mean"] == [0.5] and gray.config["norm_std"] == [0.5]
    assert mambaprune.create_model("mamba_tiny", depth=1, in_chans=4).config["norm_std"] == [0.5] * 4
    assert mambaprune.create_model("mamba_tiny", depth=1).config["norm_mean"] == pytest.approx([0.4914, 0.4822, 0.4465])
    with pytest.raises(ValueError, match="need 1 entries .* got 3 and 3; pass lists of 1"):
        mambaprune.create_model("mamba_tiny", depth=1, in_chans=1, norm_mean=[0.1] * 3, norm_std=[0.2] * 3)


def test_dt_starts_log_uniform_in_1e3_1e1():
    torch.manual_seed(0)
    ssm = SelectiveSSM(d_inner=4096, d_state=4)
    dt = torch.nn.functional.softplus(ssm.dt_bias)
    assert dt.min() >= 1e-3 * 0.999 and dt.max() <= 1e-1 * 1.001
    # log-uniform: log(dt) mean near the midpoint of [log 1e-3, log 1e-1]
    assert abs(torch.log(dt).mean().item() - (-4.605)) < 0.1
    assert "dt_bias" not in dict(ssm.named_parameters())


def test_weight_decay_exclusions():
    m = mambaprune.create_model("mamba_tiny", depth=1)
    no_wd = m.no_weight_decay()
    assert "blocks.0.mixer.ssm.0.A_log" in no_wd and "blocks.0.mixer.ssm.0.D" in no_wd
    assert "blocks.0.mixer.in_proj.weight" not in no_wd and "blocks.0.mlp.fc1.weight" not in no_wd


def test_unknown_model_name_lists_allowed():
    with pytest.raises(ValueError, match="mamba_small"):
        mambaprune.create_model("mamba_huge")


def test_cached_A_follows_in_place_edits_and_autograd():
    """Eager inference reuses A = -exp(A_log); an in-place edit of A_log (under no_grad, as optimizers and
    load_state_dict do) invalidates it, and with autograd on A is recomputed so A_log gets its gradient."""
    torch.manual_seed(0)
    ssm = SelectiveSSM(d_inner=8, d_state=4).eval()
    ssm.scan_impl = "ref"
    x, z = torch.randn(2, 6, 8), torch.randn(2, 6, 8)
    with torch.no_grad():
        first = ssm(x, z)
        assert ssm.A() is ssm.A()  # cached
        ssm.A_log.mul_(0.5)
        edited = ssm(x, z)
    fresh = SelectiveSSM(d_inner=8, d_state=4).eval()
    fresh.load_state_dict(ssm.state_dict())
    fresh.scan_impl = "ref"
    with torch.no_grad():
        assert torch.equal(edited, fresh(x, z)) and not torch.equal(edited, first)
    ssm(x, z).sum().backward()
    assert ssm.A_log.grad is not None and ssm.A_log.grad.abs().sum() > 0
