"""The fused Triton causal conv1d + SiLU against nn.Conv1d in float64: output and every gradient."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from triton_interpreter import run_interpreted


def conv_silu_ref(x, weight, bias):
    """What the model computed before the fused kernel: nn.Conv1d on (b, d, l), first l outputs, SiLU."""
    l, (d, w) = x.shape[1], weight.shape
    y = F.conv1d(x.transpose(1, 2), weight[:, None, :], bias, padding=w - 1, groups=d)
    return F.silu(y[..., :l].transpose(1, 2))


def check_against_ref(fn, b, l, d, w, dtype, tol, device="cpu"):
    """Relative L2 errors of ``fn``'s output and gradients vs the float64 reference; x is a strided view (the
    x half of in_proj's output, as in the model); weight/bias stay fp32 as model parameters do under autocast."""
    g = torch.Generator().manual_seed(0)
    r = lambda *s: torch.randn(*s, generator=g, dtype=torch.float64).to(device)  # noqa: E731
    x = r(b, l, 2 * d)[..., :d].to(dtype)
    weight, bias, gout = r(d, w).float(), r(d).float(), r(b, l, d)
    leaves = [t.detach().requires_grad_() for t in (x, weight, bias)]
    y = fn(*leaves)
    grads = torch.autograd.grad(y, leaves, gout.to(dtype))
    ref_leaves = [t.detach().double().requires_grad_() for t in (x, weight, bias)]
    y_ref = conv_silu_ref(*ref_leaves)
    grads_ref = torch.autograd.grad(y_ref, ref_leaves, gout)
    assert y.dtype == dtype and [gr.dtype for gr in grads] == [dtype, torch.float32, torch.float32]
    errs = {name: ((a.double() - e).norm() / e.norm()).item()
            for name, a, e in zip(("y", "dx", "dw", "dbias"), (y, *grads), (y_ref, *grads_ref))}
    bad = {k: v for k, v in errs.items() if not v <= tol}
    assert not bad, f"relative L2 errors above {tol}: {bad} (all: {errs})"


def test_reference_matches_the_model_conv():
    """conv_silu_ref is what SelectiveSSM's nn.Conv1d path computes."""
    from mambaprune.models.mamba import SelectiveSSM

    torch.manual_seed(0)
    ssm = SelectiveSSM(d_inner=12, d_state=4)
    x = torch.randn(2, 9, 12)
    torch.testing.assert_close(ssm.conv_silu(x), conv_silu_ref(x, ssm.conv1d.weight.squeeze(1), ssm.conv1d.bias))


_SCRIPT = r"""
import json, sys, torch
sys.path.insert(0, {tests_dir!r})
import test_conv as T
from mambaprune.models import conv_triton
from mambaprune.models.mamba import SelectiveSSM
out = {{}}
for name, (b, l, d, w), dtype, tol in [
    ("fp32_partial_tiles", (2, 65, 70, 4), torch.float32, 1e-5),  # l, d not multiples of the tile
    ("fp32_two_taps", (1, 9, 10, 2), torch.float32, 1e-5),
    ("fp32_short", (2, 3, 8, 4), torch.float32, 1e-5),  # fewer tokens than taps
    ("bf16", (2, 21, 40, 4), torch.bfloat16, 2e-2),
]:
    try:
        T.check_against_ref(conv_triton.causal_conv1d_silu_triton, b, l, d, w, dtype, tol)
        out[name] = "ok"
    except AssertionError as e:
        out[name] = str(e)
try:
    args = [torch.randn(2, 9, 8), torch.randn(8, 4), torch.randn(8)]
    torch.library.opcheck(conv_triton._fwd_op, [a.requires_grad_() for a in args])
    out["opcheck"] = "ok"
except Exception as e:
    out["opcheck"] = repr(e)[:2000]
# the model picks the kernel with scan_impl="triton" and gives the nn.Conv1d path's values
torch.manual_seed(0)
ssm = SelectiveSSM(d_inner=24, d_state=4)
x = torch.randn(2, 10, 24)
ref = ssm.conv_silu(x)
ssm.scan_impl = "triton"
fused = ssm.conv_silu(x)
out["model_dispatch"] = "ok" if torch.allclose(fused, ref, atol=1e-5) and not torch.equal(fused, ref) else "differs"
print("RESULT" + json.dumps(out))
"""


def test_triton_interpreter_matches_reference():
    """Under TRITON_INTERPRET=1 on CPU, in a subprocess (the variable must be set before triton is imported)."""
    pytest.importorskip("triton")
    results = run_interpreted(_SCRIPT)
    assert all(v == "ok" for v in results.values()), results


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.bfloat16, 2e-2)])
def test_triton_cuda_matches_reference(dtype, tol):
    from mambaprune.models.conv_triton import causal_conv1d_silu_triton

    check_against_ref(causal_conv1d_silu_triton, 4, 65, 200, 4, dtype, tol, device="cuda")
