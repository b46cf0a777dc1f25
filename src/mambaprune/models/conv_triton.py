"""Causal depthwise conv1d + SiLU for CUDA as Triton kernels, forward and backward, in the (b, l, d) layout.

Why: ``nn.Conv1d`` wants (b, d, l), so the model transposed in and out of it, and cuDNN's depthwise kernels
(bf16, k=4) were slow: on one H200 the conv was about a quarter of a compiled mamba_small training step
(``benchmarks/step_profile.py --compile``). Here a program owns a (tokens × channels) tile of one image and
reads the taps as shifted loads of the same rows (hot in L1/L2), so the traffic is one read of x and one write
of the output. The backward is one kernel too: it recomputes the pre-activation at the W output positions a
token feeds (instead of storing it), so dx, dw and dbias come from reads of x and the upstream gradient alone.
dw/dbias are per-tile partial sums that torch adds up after (deterministic, no atomics). Arithmetic is fp32
whatever the input dtype.

Runs on CPU tensors under ``TRITON_INTERPRET=1`` (the tests); ``SelectiveSSM.conv_silu`` in ``mamba.py`` picks it
with the Triton scan and keeps ``nn.Conv1d`` otherwise.

Measured on one H200, 2026-11-29, mamba_small's shape (1024, 64, 384) bf16, with 64×64 tiles: alone, fwd+bwd
0.57-0.78 ms against 0.75-0.98 ms for the eager ``nn.Conv1d`` path (``benchmarks/scan_bench.py --no-cpu --sweep``;
run-to-run spread about 20 %). Inside the compiled training step the gain was larger, because inductor wrapped
cuDNN's conv in transposes and slow reductions: the conv's kernels went from about 32 ms to 9.9 ms per step
(``benchmarks/step_profile.py --compile``), and the step from 8.2k to 11.8k img/s.

Tiles of 32 tokens × 32 channels, 4 warps, are kept: 0.75 ms in a sweep where 64×64 gave 0.69 ms (within the
spread; 16×64 was 0.97), and their backward does not spill under either Triton version
(``benchmarks/kernel_resources.py``: 217 registers under Triton 3.6, 148 under 3.8), where 64×64 spills 2.6 KB
per thread under 3.6 and 3.9 KB under 3.8 (torch 2.14's Triton, not timed on a GPU). Narrower channel tiles also
waste less on pruned widths (88-136 channels).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .scan_triton import _rowmajor, eager_inference  # the same (b, l, k) layout rule as the scan's kernels

__all__ = ["causal_conv1d_silu_triton"]

BLOCK_L, BLOCK_D, WARPS = 32, 32, 4  # tokens × channels per program (why: module docstring)


@triton.jit
def _pre_activation(x_ptr, w_ptr, bias, t, offs_d, md, L, s_xl, W: tl.constexpr):
    """bias + Σ_k w[:, k] · x[t − (W−1) + k] for a (tokens, channels) tile; taps before token 0 read zero."""
    acc = bias[None, :] + tl.zeros((t.shape[0], offs_d.shape[0]), tl.float32)
    for k in tl.static_range(W):
        src = t - (W - 1) + k
        xk = tl.load(x_ptr + src[:, None] * s_xl, mask=((src >= 0) & (src < L))[:, None] & md[None, :], other=0.0)
        wk = tl.load(w_ptr + offs_d * W + k, mask=md, other=0.0).to(tl.float32)
        acc += wk[None, :] * xk.to(tl.float32)
    return acc


@triton.jit
def _conv_fwd_kernel(x_ptr, w_ptr, b_ptr, out_ptr, L, DIM, s_xb, s_xl, s_ob, s_ol,
                     W: tl.constexpr, BL: tl.constexpr, BD: tl.constexpr):
    pid_b = tl.program_id(0).to(tl.int64)
    t = tl.program_id(1) * BL + tl.arange(0, BL)
    offs_d = tl.program_id(2) * BD + tl.arange(0, BD)
    md = offs_d < DIM
    bias = tl.load(b_ptr + offs_d, mask=md, other=0.0).to(tl.float32)
    pre = _pre_activation(x_ptr + pid_b * s_xb + offs_d[None, :], w_ptr, bias, t, offs_d, md, L, s_xl, W)
    out = pre * tl.sigmoid(pre)
    m = (t < L)[:, None] & md[None, :]
    tl.store(out_ptr + pid_b * s_ob + t[:, None] * s_ol + offs_d[None, :], out.to(out_ptr.dtype.element_ty), mask=m)


@triton.jit
def _conv_bwd_kernel(x_ptr, w_ptr, b_ptr, g_ptr, dx_ptr, dw_ptr, db_ptr, L, DIM, n_lblocks,
                     s_xb, s_xl, s_gb, s_gl,
                     W: tl.constexpr, BL: tl.constexpr, BD: tl.constexpr):
    pid_b = tl.program_id(0).to(tl.int64)
    pid_l = tl.program_id(1)
    t = pid_l * BL + tl.arange(0, BL)
    offs_d = tl.program_id(2) * BD + tl.arange(0, BD)
    md = offs_d < DIM
    bias = tl.load(b_ptr + offs_d, mask=md, other=0.0).to(tl.float32)
    x_ptr += pid_b * s_xb + offs_d[None, :]
    g_ptr += pid_b * s_gb + offs_d[None, :]
    part = (pid_b * n_lblocks + pid_l) * DIM + offs_d  # row of the (b · l-blocks, d) partial sums
    dx = tl.zeros((BL, BD), tl.float32)
    # x[t] feeds outputs t + j through tap W-1-j; gp = ∂loss/∂pre at those outputs, recomputed here
    for j in tl.static_range(W):
        p = t + j
        pre = _pre_activation(x_ptr, w_ptr, bias, p, offs_d, md, L, s_xl, W)
        g = tl.load(g_ptr + p[:, None] * s_gl, mask=(p < L)[:, None] & md[None, :], other=0.0).to(tl.float32)
        sig = tl.sigmoid(pre)
        gp = g * sig * (1.0 + pre * (1.0 - sig))
        w_tap = tl.load(w_ptr + offs_d * W + (W - 1 - j), mask=md, other=0.0).to(tl.float32)
        dx += w_tap[None, :] * gp
        if j == 0:  # this tile's own outputs: their share of dbias and of every tap's dw
            tl.store(db_ptr + part, tl.sum(gp, axis=0), mask=md)
            for k in tl.static_range(W):
                src = t - (W - 1) + k
                xk = tl.load(x_ptr + src[:, None] * s_xl, mask=((src >= 0) & (src < L))[:, None] & md[None, :],
                             other=0.0)
                tl.store(dw_ptr + part * W + k, tl.sum(gp * xk.to(tl.float32), axis=0), mask=md)
    m = (t < L)[:, None] & md[None, :]
    tl.store(dx_ptr + pid_b * L * DIM + t[:, None] * DIM + offs_d[None, :], dx.to(dx_ptr.dtype.element_ty), mask=m)


def _grid(x):
    b, l, d = x.shape
    return b, triton.cdiv(l, BLOCK_L), triton.cdiv(d, BLOCK_D)


def _launch_fwd(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    x, weight = _rowmajor(x), weight.contiguous()
    b, l, d = x.shape
    out = torch.empty((b, l, d), device=x.device, dtype=x.dtype)
    _conv_fwd_kernel[_grid(x)](x, weight, bias.contiguous(), out, l, d, x.stride(0), x.stride(1),
                               out.stride(0), out.stride(1), W=weight.shape[1], BL=BLOCK_L, BD=BLOCK_D,
                               num_warps=WARPS)
    return out


@torch.library.custom_op("mambaprune::causal_conv1d_silu_fwd", mutates_args=())
def _fwd_op(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    return _launch_fwd(x, weight, bias)


@_fwd_op.register_fake
def _(x, weight, bias):
    return x.new_empty(x.shape)


@torch.library.custom_op("mambaprune::causal_conv1d_silu_bwd", mutates_args=())
def _bwd_op(gout: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> list[torch.Tensor]:
    x, gout, weight = _rowmajor(x), _rowmajor(gout), weight.contiguous()
    b, l, d = x.shape
    grid = _grid(x)
    dx = torch.empty((b, l, d), device=x.device, dtype=x.dtype)
    dw_part = torch.empty((b * grid[1], d, weight.shape[1]), device=x.device, dtype=torch.float32)
    db_part = torch.empty((b * grid[1], d), device=x.device, dtype=torch.float32)
    _conv_bwd_kernel[grid](x, weight, bias.contiguous(), gout, dx, dw_part, db_part, l, d, grid[1],
                           x.stride(0), x.stride(1), gout.stride(0), gout.stride(1),
                           W=weight.shape[1], BL=BLOCK_L, BD=BLOCK_D, num_warps=WARPS)
    return [dx, dw_part.sum(0).to(weight.dtype), db_part.sum(0).to(bias.dtype)]


@_bwd_op.register_fake
def _(gout, x, weight, bias):
    return [x.new_empty(x.shape), weight.new_empty(weight.shape), bias.new_empty(bias.shape)]


def _setup_context(ctx, inputs, output):
    ctx.save_for_backward(*inputs)


def _backward(ctx, gout):
    x, weight, bias = ctx.saved_tensors
    return tuple(_bwd_op(gout, x, weight, bias))


torch.library.register_autograd("mambaprune::causal_conv1d_silu_fwd", _backward, setup_context=_setup_context)


def causal_conv1d_silu_triton(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """silu(causal depthwise conv of x (b, l, d) with weight (d, W) and bias (d,)) → (b, l, d) in x's dtype;
    the same values as ``nn.Conv1d(d, d, W, groups=d, padding=W-1)`` on (b, d, l), cut to the first l outputs.
    Eager inference launches the kernel directly (no custom-op dispatch: less host work, the same kernel)."""
    if eager_inference(x, weight, bias):
        return _launch_fwd(x, weight, bias)
    return _fwd_op(x, weight, bias)
