"""Residual add + LayerNorm in one Triton kernel (forward and backward), for eager runs on CUDA.

Why: each pre-norm block adds a branch output to the residual stream and normalises the sum, twice per block.
Run eagerly under bf16 autocast, that is three memory-bound kernels per norm (the add with its bf16 → fp32
promotion, the fp32 LayerNorm, the cast of its output to bf16 for the next linear) and as many again in the
backward: LayerNorm and the adds/casts were about half of an eager mamba_small forward on one H200
(``benchmarks/step_profile.py --forward-only``: 5.7 ms LayerNorm + about 9 ms adds/casts of 30 ms). Here a program
owns a block of rows: it reads the residual (fp32) and the branch (bf16) once, writes the new residual and the
normalised output directly in the dtype the next matmul wants, and the backward reads the output gradient, the
residual gradient and the saved residual once to produce both input gradients. The weight and bias gradients are
per-program partial sums that torch adds up after (deterministic, no atomics). Arithmetic is fp32.

Measured on one H200 (torch 2.11, Triton 3.6), 2026-11-29, at mamba_small's (1024, 64, 192), fp32 stream + bf16
branch: forward 41 µs (ncu; 3.1 TB/s) against 183 µs for the plain add + LayerNorm + cast, backward 88 µs
(``benchmarks/scan_bench.py --no-cpu`` times fwd+bwd of both). The eager dense forward went from 30.0 to 18.1 ms of
kernels (``benchmarks/step_profile.py --forward-only``); in the eager training step the fused kernels take 1.8 ms
forward + 5.4 ms backward, and the step went from 8.4k to 10.8k img/s at batch 1024
(``benchmarks/train_throughput.py``). Where the step waits on the host instead (batch 512 on that machine, about 100
ms of host time per step), the Triton launches cost more host time than the ATen ops they replace: 4.6k vs 5.0k
img/s (``benchmarks/train_throughput.py --norms --batch 512``). The backward first gave every block of rows its own
program and partial row: 16,384 programs at 330 µs per call; programs that walk several row blocks
(``BWD_PROGRAMS``) fixed that.

Under ``torch.compile`` the model uses the plain ops instead (``mamba.add_layer_norm``): inductor fuses them itself.
Runs on CPU tensors under ``TRITON_INTERPRET=1`` (the tests).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .scan_triton import eager_inference

__all__ = ["add_layer_norm_triton"]

BLOCK_M, WARPS = 4, 4  # rows per block and warps per program (the feature dim is one power-of-two block)
BWD_PROGRAMS = 4096  # the backward's grid: each program walks an equal share of the row blocks


@triton.jit
def _add_norm_fwd_kernel(r_ptr, x_ptr, w_ptr, b_ptr, rout_ptr, y_ptr, mean_ptr, rstd_ptr, M, DIM, eps,
                         HAS_BRANCH: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr):
    rows = tl.program_id(0) * BM + tl.arange(0, BM)
    cols = tl.arange(0, BN)
    mc = cols < DIM
    m = (rows < M)[:, None] & mc[None, :]
    offs = rows[:, None].to(tl.int64) * DIM + cols[None, :]
    r = tl.load(r_ptr + offs, mask=m, other=0.0).to(tl.float32)
    if HAS_BRANCH:
        r += tl.load(x_ptr + offs, mask=m, other=0.0).to(tl.float32)
        tl.store(rout_ptr + offs, r.to(rout_ptr.dtype.element_ty), mask=m)
    mean = tl.sum(r, axis=1) / DIM
    rc = tl.where(m, r - mean[:, None], 0.0)
    rstd = 1.0 / tl.sqrt(tl.sum(rc * rc, axis=1) / DIM + eps)
    w = tl.load(w_ptr + cols, mask=mc, other=0.0).to(tl.float32)
    b = tl.load(b_ptr + cols, mask=mc, other=0.0).to(tl.float32)
    y = rc * rstd[:, None] * w[None, :] + b[None, :]
    tl.store(y_ptr + offs, y.to(y_ptr.dtype.element_ty), mask=m)
    tl.store(mean_ptr + rows, mean, mask=rows < M)
    tl.store(rstd_ptr + rows, rstd, mask=rows < M)


@triton.jit
def _add_norm_bwd_kernel(r_ptr, w_ptr, mean_ptr, rstd_ptr, dy_ptr, drout_ptr, dr_ptr, dx_ptr, dw_ptr, db_ptr,
                         M, DIM, PER_PROGRAM: tl.constexpr, HAS_DROUT: tl.constexpr, HAS_DX: tl.constexpr,
                         BM: tl.constexpr, BN: tl.constexpr):
    """A program walks ``PER_PROGRAM`` consecutive row blocks and accumulates its dweight/dbias share
    in registers, so the partial sums are (programs, DIM) rather than (row blocks, DIM). The count is a constexpr:
    Triton 3.6's interpreter cannot use a runtime integer argument as a loop bound under NumPy >= 2.4 (its
    ``__index__`` calls ``int()`` on a 1-element array: "only 0-dimensional arrays can be converted to Python
    scalars"); one compiled variant per count (4 at mamba_small's 65,536 rows)."""
    pid = tl.program_id(0)
    cols = tl.arange(0, BN)
    mc = cols < DIM
    w = tl.load(w_ptr + cols, mask=mc, other=0.0).to(tl.float32)
    dw_acc = tl.zeros((BM, BN), tl.float32)
    db_acc = tl.zeros((BM, BN), tl.float32)
    for i in range(PER_PROGRAM):
        rows = (pid * PER_PROGRAM + i) * BM + tl.arange(0, BM)
        mr = rows < M
        m = mr[:, None] & mc[None, :]
        offs = rows[:, None].to(tl.int64) * DIM + cols[None, :]
        r = tl.load(r_ptr + offs, mask=m, other=0.0).to(tl.float32)
        mean = tl.load(mean_ptr + rows, mask=mr, other=0.0)
        rstd = tl.load(rstd_ptr + rows, mask=mr, other=0.0)
        dy = tl.load(dy_ptr + offs, mask=m, other=0.0).to(tl.float32)
        xhat = tl.where(m, (r - mean[:, None]) * rstd[:, None], 0.0)
        wdy = dy * w[None, :]
        c1 = tl.sum(xhat * wdy, axis=1) / DIM
        c2 = tl.sum(wdy, axis=1) / DIM
        dr = (wdy - (xhat * c1[:, None] + c2[:, None])) * rstd[:, None]
        if HAS_DROUT:  # the gradient that reached the residual stream from later blocks passes through the add
            dr += tl.load(drout_ptr + offs, mask=m, other=0.0).to(tl.float32)
        tl.store(dr_ptr + offs, dr.to(dr_ptr.dtype.element_ty), mask=m)
        if HAS_DX:  # the branch's gradient is the same sum, in the branch's dtype
            tl.store(dx_ptr + offs, dr.to(dx_ptr.dtype.element_ty), mask=m)
        dw_acc += dy * xhat
        db_acc += dy
    tl.store(dw_ptr + pid * DIM + cols, tl.sum(dw_acc, axis=0), mask=mc)
    tl.store(db_ptr + pid * DIM + cols, tl.sum(db_acc, axis=0), mask=mc)


def _rows(t: torch.Tensor) -> torch.Tensor:
    """(…, dim) → contiguous (rows, dim): the kernels index rows × dim densely."""
    return t.reshape(-1, t.shape[-1]).contiguous()


def _launch_fwd(resid, branch, weight, bias, eps, out_dtype):
    """(normed rows, new residual rows, mean, rstd) from one launch of the forward kernel."""
    dim = resid.shape[-1]
    r = _rows(resid)
    x = _rows(branch) if branch is not None else r
    rout = torch.empty_like(r, dtype=torch.result_type(resid, branch)) if branch is not None else r
    y = torch.empty_like(r, dtype=out_dtype)
    mean = torch.empty(r.shape[0], device=r.device, dtype=torch.float32)
    rstd = torch.empty_like(mean)
    _add_norm_fwd_kernel[(triton.cdiv(r.shape[0], BLOCK_M),)](
        r, x, weight, bias, rout, y, mean, rstd, r.shape[0], dim, eps,
        HAS_BRANCH=branch is not None, BM=BLOCK_M, BN=triton.next_power_of_2(dim), num_warps=WARPS)
    return y, rout, mean, rstd


class _AddLayerNorm(torch.autograd.Function):
    @staticmethod
    def forward(ctx, resid, branch, weight, bias, eps, out_dtype):
        shape = resid.shape
        y, rout, mean, rstd = _launch_fwd(resid, branch, weight, bias, eps, out_dtype)
        ctx.save_for_backward(rout, weight, mean, rstd)
        ctx.shape, ctx.has_branch = shape, branch is not None
        ctx.dtypes = (resid.dtype, branch.dtype if branch is not None else None, bias.dtype)
        ctx.set_materialize_grads(False)
        if branch is None:
            return y.view(shape)
        return y.view(shape), rout.view(shape)

    @staticmethod
    def backward(ctx, dy, drout=None):
        rout, weight, mean, rstd = ctx.saved_tensors
        M, dim = rout.shape
        resid_dtype, branch_dtype, bias_dtype = ctx.dtypes
        if dy is None:  # only the residual output was used: the norm passes nothing back
            dy = torch.zeros_like(rout)
        dy = _rows(dy)
        drout = _rows(drout) if drout is not None else None
        dr = torch.empty_like(rout, dtype=resid_dtype)
        needs_dx = ctx.has_branch and branch_dtype != resid_dtype
        dx = torch.empty_like(rout, dtype=branch_dtype) if needs_dx else dr
        blocks = triton.cdiv(M, BLOCK_M)
        per_program = max(1, triton.cdiv(blocks, BWD_PROGRAMS))
        grid = triton.cdiv(blocks, per_program)
        dw_part = torch.empty((grid, dim), device=rout.device, dtype=torch.float32)
        db_part = torch.empty_like(dw_part)
        _add_norm_bwd_kernel[(grid,)](
            rout, weight, mean, rstd, dy, drout if drout is not None else dy, dr, dx, dw_part, db_part, M, dim,
            PER_PROGRAM=per_program, HAS_DROUT=drout is not None, HAS_DX=needs_dx, BM=BLOCK_M,
            BN=triton.next_power_of_2(dim), num_warps=WARPS)
        dweight, dbias = dw_part.sum(0).to(weight.dtype), db_part.sum(0).to(bias_dtype)
        dbranch = dx.view(ctx.shape) if ctx.has_branch else None
        return dr.view(ctx.shape), dbranch, dweight, dbias, None, None


def add_layer_norm_triton(resid: torch.Tensor, branch: torch.Tensor | None, weight: torch.Tensor,
                          bias: torch.Tensor, eps: float, out_dtype: torch.dtype):
    """LayerNorm(resid + branch) in ``out_dtype`` and the new residual ``resid + branch`` (in their promoted dtype),
    as ``(normed, new_resid)``; with ``branch=None``, LayerNorm(resid) and ``resid`` itself. Eager inference
    launches the kernel directly (no autograd.Function: less host work, the same kernel)."""
    if eager_inference(resid, branch, weight, bias):
        y, rout, _, _ = _launch_fwd(resid, branch, weight, bias, eps, out_dtype)
        return y.view(resid.shape), (rout.view(resid.shape) if branch is not None else resid)
    if branch is None:
        return _AddLayerNorm.apply(resid, None, weight, bias, eps, out_dtype), resid
    return _AddLayerNorm.apply(resid, branch, weight, bias, eps, out_dtype)
