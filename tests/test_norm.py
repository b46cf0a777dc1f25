"""The fused residual-add + LayerNorm Triton kernel against the plain ops in float64: both outputs, every gradient."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from triton_interpreter import run_interpreted


def add_norm_ref(resid, branch, weight, bias, eps=1e-5):
    """What the model computes without the kernel: the new residual and LayerNorm of it."""
    new = resid + branch if branch is not None else resid
    return F.layer_norm(new, new.shape[-1:], weight, bias, eps), new


def check_against_ref(fn, shape, resid_dtype, branch_dtype, out_dtype, tol, device="cpu"):
    """Relative L2 errors of ``fn``'s two outputs and four gradients vs float64, with a loss that uses both outputs
    (as in the model: the normed output feeds the branch, the residual feeds the next add). ``branch_dtype=None``:
    no branch. Inputs are scaled/shifted away from zero mean so a wrong mean or variance shows."""
    g = torch.Generator().manual_seed(0)
    r = lambda *s: torch.randn(*s, generator=g, dtype=torch.float64).to(device)  # noqa: E731
    dim = shape[-1]
    resid = (3 * r(*shape) + 1).to(resid_dtype)
    branch = r(*shape).to(branch_dtype) if branch_dtype is not None else None
    weight, bias = (1 + r(dim)).float(), r(dim).float()
    gy, gres = r(*shape), r(*shape)
    leaves = [t.detach().requires_grad_() for t in (resid, branch, weight, bias) if t is not None]
    ins = leaves if branch is not None else [leaves[0], None, *leaves[1:]]
    y, new = fn(*ins, 1e-5, out_dtype)
    outs = (y, new) if branch is not None else (y,)
    grads = torch.autograd.grad(outs, leaves, (gy.to(y.dtype), gres.to(new.dtype))[:len(outs)])
    ref_leaves = [t.detach().double().requires_grad_() for t in leaves]
    ref_ins = ref_leaves if branch is not None else [ref_leaves[0], None, *ref_leaves[1:]]
    y_ref, new_ref = add_norm_ref(*ref_ins)
    grads_ref = torch.autograd.grad((y_ref, new_ref)[:len(outs)], ref_leaves, (gy, gres)[:len(outs)])
    assert y.dtype == out_dtype and y.shape == shape
    assert [gr.dtype for gr in grads] == [t.dtype for t in leaves]
    names = ("dresid", "dbranch", "dweight", "dbias") if branch is not None else ("dresid", "dweight", "dbias")
    errs = {name: ((a.double() - e).norm() / e.norm()).item()
            for name, a, e in zip(("y", "resid_out", *names), (y, new, *grads), (y_ref, new_ref, *grads_ref))}
    if branch is None:
        errs.pop("resid_out")
        assert new is ins[0]  # no add: the residual passes through untouched
    else:
        assert new.dtype == torch.result_type(resid, branch)
    bad = {k: v for k, v in errs.items() if not v <= tol}
    assert not bad, f"relative L2 errors above {tol}: {bad} (all: {errs})"


def test_reference_is_the_models_plain_path():
    """add_norm_ref is what ``mamba.add_layer_norm`` computes when not fused."""
    from mambaprune.models.mamba import add_layer_norm

    torch.manual_seed(0)
    norm = torch.nn.LayerNorm(12)
    torch.nn.init.normal_(norm.weight)
    resid, branch = torch.randn(2, 5, 12), torch.randn(2, 5, 12)
    y, new = add_layer_norm(resid, branch, norm, fused=False)
    y_ref, new_ref = add_norm_ref(resid, branch, norm.weight, norm.bias)
    assert torch.equal(y, y_ref) and torch.equal(new, new_ref)


_SCRIPT = r"""
import json, sys, torch
sys.path.insert(0, {tests_dir!r})
import test_norm as T
from mambaprune.models import norm_triton
from mambaprune.models.norm_triton import add_layer_norm_triton
f32, bf16 = torch.float32, torch.bfloat16
out = {{}}
for name, shape, rd, bd, od, tol in [
    ("fp32", (3, 7, 40), f32, f32, f32, 1e-5),  # 21 rows: a partial row block; 40 is not a power of two
    ("fp32_no_branch", (2, 9, 24), f32, None, f32, 1e-5),
    ("autocast_like", (2, 11, 48), f32, bf16, bf16, 2e-2),  # fp32 stream + bf16 branch → bf16 normed output
    ("bf16_resid", (1, 5, 16), bf16, None, f32, 2e-2),
    ("fp32_programs_walk_blocks", (3, 9, 40), f32, f32, f32, 1e-5),  # 7 row blocks over 3 backward programs
]:
    norm_triton.BWD_PROGRAMS = 3 if name == "fp32_programs_walk_blocks" else 4096
    try:
        T.check_against_ref(add_layer_norm_triton, shape, rd, bd, od, tol)
        out[name] = "ok"
    except AssertionError as e:
        out[name] = str(e)
norm_triton.BWD_PROGRAMS = 4096
# the model picks the kernel with the Triton scan and keeps the plain path's values
from mambaprune import create_model
torch.manual_seed(0)
model = create_model("mamba_tiny", embed_dim=40, depth=2, img_size=8)
for p in model.parameters():
    p.data.normal_(0, 0.3)
x = torch.rand(2, 3, 8, 8)
ref = model(x)
ref.square().sum().backward()
ref_grads = [p.grad.clone() for p in model.parameters()]
model.zero_grad()
model.set_scan_impl("triton")
from unittest import mock
with mock.patch.object(norm_triton._AddLayerNorm, "apply", wraps=norm_triton._AddLayerNorm.apply) as spy:
    y = model(x)
y.square().sum().backward()
grads_ok = all(torch.allclose(p.grad, g, rtol=1e-4, atol=1e-6) for p, g in zip(model.parameters(), ref_grads))
ok = spy.call_count == 5 and torch.allclose(y, ref, atol=1e-5) and grads_ok
out["model_dispatch"] = "ok" if ok else f"calls {{spy.call_count}}, diff {{(y - ref).abs().max().item()}}, {{grads_ok}}"
print("RESULT" + json.dumps(out))
"""


def test_triton_interpreter_matches_reference():
    """Under TRITON_INTERPRET=1 on CPU, in a subprocess (the variable must be set before triton is imported);
    the model check counts 5 fused calls for 2 blocks (2 per block + the final norm)."""
    pytest.importorskip("triton")
    results = run_interpreted(_SCRIPT)
    assert all(v == "ok" for v in results.values()), results


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("rd,bd,od,tol", [(torch.float32, torch.float32, torch.float32, 1e-5),
                                          (torch.float32, torch.bfloat16, torch.bfloat16, 2e-2)])
def test_triton_cuda_matches_reference(rd, bd, od, tol):
    from mambaprune.models.norm_triton import add_layer_norm_triton

    check_against_ref(add_layer_norm_triton, (8, 65, 192), rd, bd, od, tol, device="cuda")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_model_under_autocast_matches_plain_path():
    """A bf16-autocast forward/backward with the fused norms agrees with the plain ops (compile's path)."""
    from mambaprune import create_model

    torch.manual_seed(0)
    model = create_model("mamba_tiny").cuda()
    x = torch.rand(16, 3, 32, 32, device="cuda")
    results = {}
    for fused in (True, False):
        with torch.autocast("cuda", torch.bfloat16), mock_fused(fused):
            y = model(x).float()
        y.square().mean().backward()
        results[fused] = (y.detach(), [p.grad.clone() for p in model.parameters()])
        model.zero_grad()
    (y1, g1), (y0, g0) = results[True], results[False]
    assert (y1 - y0).norm() / y0.norm() < 2e-2
    for a, b in zip(g1, g0):
        assert (a - b).norm() <= 5e-2 * b.norm() + 1e-6


def mock_fused(fused: bool):
    """Force the plain path (fused=False) by making ``add_layer_norm`` believe it is being compiled."""
    from unittest import mock

    return mock.patch("torch.compiler.is_compiling", return_value=not fused)
