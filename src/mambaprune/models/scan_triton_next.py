"""Candidate Triton selective-scan kernels, to be timed side by side with ``scan_triton``'s on a GPU.

Nothing in the model uses this module: ``benchmarks/scan_variants.py`` times each candidate against today's
kernels at mamba_small's shape and checks that their results agree with today's; ``tests/test_scan_next.py``
checks every code path against the float64 reference under the Triton interpreter (and on CUDA when there is one).
A candidate that wins on the GPU replaces the kernel in ``scan_triton.py``; the rest are deleted.

The candidates keep ``scan_triton``'s algorithm (one program walks the tokens of a (batch, channel block) with its
fp32 state tile in registers; checkpoints every CHUNK tokens; the backward recomputes a chunk from its checkpoint
and runs the reverse recurrence) and its checkpoint layout, (b, l/CHUNK, d, n) fp32, so any candidate forward
pairs with any backward. The kernels are latency- and issue-bound, not bandwidth-bound: compiled for sm_90 by
Triton 3.6 with the divisibility a real launch at mamba_small's shape gets, today's forward spends 244 SASS
instructions per token (a 16-element tile per thread: 4 channels × 4 states, 8 shuffles and 5 barriers for
layout conversions), the backward 177 (recompute) + 509 (reverse, 48 shuffles) at 210 registers, which leaves
8 one-warp programs per SM. What the candidates change, and why each should be faster:

- ``_softplus_e``: softplus without the libdevice log (a 25-instruction polynomial with branches) and without a
  second exponential for sigmoid(Δ) in the backward: log1p(e) = 2·atanh(e / (2 + e)) by its odd series.
- ``_fwd_kernel``: a scalar checkpoint base plus an int32 offset tile (no 64-bit pointer tile, as the backward
  already does). ``PAIR=2`` walks two tokens per loop iteration with the next pair's inputs loaded ahead: one
  basic block holds two steps, so the compiler can overlap one token's exponentials with the other's reduction
  and store (the loop-carried dependency is one FMA per state). ``LANE`` (A read as (n, d), DIM not specialised
  on divisibility) makes every access to the state tile contiguous along the channels, and the compiler then
  gives each thread one channel with its 16 states in registers: the sum over states needs no shuffles and the
  per-channel values (Δ, u, z, y) no layout conversions; only B_t and C_t are broadcast through shared memory
  (179 instructions per token, 0 shuffles, 3 barriers).
- ``_bwd_kernel`` ("scratch"): today's backward with the fast softplus, and ΔA_t·h_{t-1} written as
  h_t − Δ_t·u_t·B_t, so h_{t-1}, read back from the scratch, is needed only as the next step's state and its load
  overlaps the whole step instead of stalling it in the middle (recompute 151 instructions per token instead of
  177; reverse 515).
- ``_bwd_reg_kernel`` ("registers"): no global scratch at all. A chunk of 8 tokens is two groups of 4; each
  group's states are recomputed into 4 register tiles (straight-line code, so the compiler can issue all 4
  tokens' loads early and overlap their steps) and walked in reverse. The second group needs the first group's
  last state, so the first group is recomputed twice (12 recompute steps per 8 tokens instead of 8), in exchange
  for the 2 × 2 KB per token and program that went through L2 (3.2 GB per call at mamba_small's shape).
- ``maxnreg`` caps ptxas's registers per thread for more programs per SM (today's backward fits 168 without a
  spill: 12 programs per SM instead of 8).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from . import scan_triton
from .scan_triton import LN2, LOG2E, _channel_params, _common_args, _row_strides, _rowmajor

__all__ = ["FwdConfig", "BwdConfig", "FWD_CANDIDATES", "BWD_CANDIDATES", "selective_scan_next", "launch_fwd",
           "launch_bwd"]

CHUNK = 8  # tokens between checkpoints (scan_triton.CHUNK's value; the registers backward needs a multiple of 4)


@triton.jit
def _softplus_e(x):
    """(softplus(x), e) with e = exp(-|x|): softplus(x) = max(x, 0) + log1p(e), and log1p(e) = 2·atanh(s) with
    s = e / (2 + e) ∈ (0, 1/3], summed to s^13 (truncation below 1.3e-8 relative). One exp2, one division."""
    e = tl.exp2(-tl.abs(x) * LOG2E)
    s = e / (2.0 + e)
    s2 = s * s
    p = 0.15384615384615385 * s2 + 0.18181818181818182  # 2/13, 2/11
    p = p * s2 + 0.2222222222222222  # 2/9
    p = p * s2 + 0.2857142857142857  # 2/7
    p = p * s2 + 0.4  # 2/5
    p = p * s2 + 0.6666666666666666  # 2/3
    p = p * s2 + 2.0
    return tl.maximum(x, 0.0) + s * p, e


@triton.jit
def _sigmoid_from_e(x, e):
    """sigmoid(x) from e = exp(-|x|) (already computed for softplus): 1/(1+e) for x >= 0, e/(1+e) below."""
    return tl.where(x >= 0.0, 1.0, e) / (1.0 + e)


@triton.jit
def _sigmoid(x):
    return 1.0 / (1.0 + tl.exp2(-x * LOG2E))


@triton.jit
def _load_token(u_ptr, dl_ptr, z_ptr, B_ptr, C_ptr, t, s_ul, s_dl, s_zl, s_Bl, s_Cl, md, mn,
                L: tl.constexpr, HAS_Z: tl.constexpr):
    """Raw inputs of token t (zeros past the sequence or before it): u, Δ_raw, z, B, C."""
    ok = (t >= 0) & (t < L)
    u = tl.load(u_ptr + t * s_ul, mask=md & ok, other=0.0)
    x = tl.load(dl_ptr + t * s_dl, mask=md & ok, other=0.0)
    Bv = tl.load(B_ptr + t * s_Bl, mask=mn & ok, other=0.0).to(tl.float32)  # converted before any broadcast
    Cv = tl.load(C_ptr + t * s_Cl, mask=mn & ok, other=0.0).to(tl.float32)
    if HAS_Z:
        z = tl.load(z_ptr + t * s_zl, mask=md & ok, other=0.0)
    else:
        z = u
    return u, x, z, Bv, Cv


@triton.jit
def _fwd_token(h, u_r, x_r, z_r, B_r, C_r, A2, Dv, bias, valid, HAS_Z: tl.constexpr):
    """One step of the recurrence: the new state and the token's (gated) output."""
    u = u_r.to(tl.float32)
    sp, e = _softplus_e(x_r.to(tl.float32) + bias)
    dt = tl.where(valid, sp, 0.0)
    h = tl.exp2(dt[:, None] * A2) * h + (dt * u)[:, None] * B_r.to(tl.float32)[None, :]
    y = tl.sum(h * C_r.to(tl.float32)[None, :], axis=1) + Dv * u
    if HAS_Z:
        zv = z_r.to(tl.float32)
        y = y * zv * _sigmoid(zv)
    return h, y


@triton.jit
def _d_params(D_ptr, bias_ptr, offs_d, md, HAS_BIAS: tl.constexpr, BLOCK: tl.constexpr):
    """D and the Δ bias for a block of channels, in fp32."""
    Dv = tl.load(D_ptr + offs_d, mask=md, other=0.0).to(tl.float32)
    if HAS_BIAS:
        bias = tl.load(bias_ptr + offs_d, mask=md, other=0.0).to(tl.float32)
    else:
        bias = tl.zeros((BLOCK,), tl.float32)
    return Dv, bias


# DIM is not specialised on divisibility: with LANE, nothing then proves 4 channels aligned, so the compiler gives
# each thread one channel (and its N states) instead of 4-wide vectors along d.
@triton.jit(do_not_specialize=["DIM"])
def _fwd_kernel(
    u_ptr, dl_ptr, z_ptr, B_ptr, C_ptr, A_ptr, D_ptr, bias_ptr, out_ptr, ck_ptr,
    DIM, NS,
    s_ub, s_ul, s_db, s_dl, s_zb, s_zl, s_Bb, s_Bl, s_Cb, s_Cl, s_ob, s_ol,
    L: tl.constexpr, K: tl.constexpr, HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr, BLOCK: tl.constexpr,
    N: tl.constexpr, PAIR: tl.constexpr, LANE: tl.constexpr,
):
    """Forward: outputs and checkpoints. ``PAIR``: tokens per loop iteration (1 or 2). ``LANE``: A is given as
    (n, d), for the one-channel-per-thread layout (module docstring); the checkpoints keep the (d, n) layout and
    go through one layout conversion per chunk."""
    pid_b = tl.program_id(0).to(tl.int64)
    offs_d = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    md = offs_d < DIM
    offs_n = tl.arange(0, N)
    mn = offs_n < NS
    m2 = md[:, None] & mn[None, :]
    if LANE:
        a_tile = offs_n[None, :] * DIM + offs_d[:, None]
    else:
        a_tile = offs_d[:, None] * NS + offs_n[None, :]
    A2 = tl.load(A_ptr + a_tile, mask=m2, other=0.0).to(tl.float32) * LOG2E
    Dv, bias = _d_params(D_ptr, bias_ptr, offs_d, md, HAS_BIAS, BLOCK)
    u_ptr += pid_b * s_ub + offs_d
    dl_ptr += pid_b * s_db + offs_d
    z_ptr += pid_b * s_zb + offs_d
    out_ptr += pid_b * s_ob + offs_d
    B_ptr += pid_b * s_Bb + offs_n
    C_ptr += pid_b * s_Cb + offs_n
    n_chunks: tl.constexpr = (L + K - 1) // K
    ck_ptr += pid_b * n_chunks * DIM * NS  # scalar base + int32 tile: no 64-bit pointer tile held in registers
    h = tl.zeros((BLOCK, N), tl.float32)
    u0, x0, z0, B0, C0 = _load_token(u_ptr, dl_ptr, z_ptr, B_ptr, C_ptr, 0, s_ul, s_dl, s_zl, s_Bl, s_Cl, md, mn,
                                     L, HAS_Z)
    if PAIR == 2:
        u1, x1, z1, B1, C1 = _load_token(u_ptr, dl_ptr, z_ptr, B_ptr, C_ptr, 1, s_ul, s_dl, s_zl, s_Bl, s_Cl, md, mn,
                                         L, HAS_Z)
    for c in range(n_chunks):
        tl.store(ck_ptr + c * DIM * NS + offs_d[:, None] * NS + offs_n[None, :], h, mask=m2)
        for i in range(K // PAIR):
            t = c * K + i * PAIR
            ua, xa, za, Ba, Ca = u0, x0, z0, B0, C0
            u0, x0, z0, B0, C0 = _load_token(u_ptr, dl_ptr, z_ptr, B_ptr, C_ptr, t + PAIR, s_ul, s_dl, s_zl, s_Bl,
                                             s_Cl, md, mn, L, HAS_Z)
            if PAIR == 2:
                ub, xb, zb, Bb, Cb = u1, x1, z1, B1, C1
                u1, x1, z1, B1, C1 = _load_token(u_ptr, dl_ptr, z_ptr, B_ptr, C_ptr, t + 3, s_ul, s_dl, s_zl, s_Bl,
                                                 s_Cl, md, mn, L, HAS_Z)
            h, ya = _fwd_token(h, ua, xa, za, Ba, Ca, A2, Dv, bias, t < L, HAS_Z)
            tl.store(out_ptr + t * s_ol, ya.to(out_ptr.dtype.element_ty), mask=md & (t < L))
            if PAIR == 2:
                h, yb = _fwd_token(h, ub, xb, zb, Bb, Cb, A2, Dv, bias, t + 1 < L, HAS_Z)
                tl.store(out_ptr + (t + 1) * s_ol, yb.to(out_ptr.dtype.element_ty), mask=md & (t + 1 < L))


@triton.jit
def _recompute_token(h, u_r, x_r, B_r, A2, bias, valid):
    """The forward step without the output: h_t from h_{t-1}."""
    sp, e = _softplus_e(x_r.to(tl.float32) + bias)
    dt = tl.where(valid, sp, 0.0)
    return tl.exp2(dt[:, None] * A2) * h + (dt * u_r.to(tl.float32))[:, None] * B_r.to(tl.float32)[None, :]


@triton.jit
def _reverse_token(h, carry, dA_acc, dD_acc, dbias_acc, u_r, x_r, z_r, B_r, C_r, g_r, A2, Dv, bias, valid,
                   du_ptr, ddl_ptr, dz_ptr, dB_ptr, dC_ptr, md, mn, HAS_Z: tl.constexpr):
    """One reverse-time step at token t given h = h_t and carry = ΔA_{t+1}·dh_{t+1}. The pointers point at token
    t's rows. ΔA_t·h_{t-1} is written h_t − Δ_t·u_t·B_t, so h_{t-1} is not needed here (only as the next h).
    Returns the new carry and the three accumulators."""
    u, Bv, Cv, g = u_r.to(tl.float32), B_r.to(tl.float32), C_r.to(tl.float32), g_r.to(tl.float32)
    x = x_r.to(tl.float32) + bias
    sp, e = _softplus_e(x)
    dt = tl.where(valid, sp, 0.0)
    if HAS_Z:
        zv = z_r.to(tl.float32)
        sz = _sigmoid(zv)
        y = tl.sum(h * Cv[None, :], axis=1) + Dv * u
        dz = g * y * sz * (1.0 + zv * (1.0 - sz))
        tl.store(dz_ptr, dz.to(dz_ptr.dtype.element_ty), mask=md & valid)
        gy = g * zv * sz
    else:
        gy = g
    dh = carry + gy[:, None] * Cv[None, :]
    tl.store(dC_ptr, tl.sum(gy[:, None] * h, axis=0), mask=mn & valid)
    dA_t = tl.exp2(dt[:, None] * A2)
    dtu = dt * u
    gdA = dh * (h - dtu[:, None] * Bv[None, :])  # dh · ΔA_t · h_{t-1}
    dA_acc += gdA * dt[:, None]
    dBu = tl.sum(dh * Bv[None, :], axis=1)
    ddt = tl.sum(gdA * A2, axis=1) * LN2 + dBu * u
    tl.store(dB_ptr, tl.sum(dh * dtu[:, None], axis=0), mask=mn & valid)
    tl.store(du_ptr, (dBu * dt + gy * Dv).to(du_ptr.dtype.element_ty), mask=md & valid)
    ddelta = tl.where(valid, ddt * _sigmoid_from_e(x, e), 0.0)
    tl.store(ddl_ptr, ddelta.to(ddl_ptr.dtype.element_ty), mask=md & valid)
    return dA_t * dh, dA_acc, dD_acc + gy * u, dbias_acc + ddelta


@triton.jit
def _bwd_kernel(
    u_ptr, dl_ptr, z_ptr, B_ptr, C_ptr, A_ptr, D_ptr, bias_ptr, g_ptr, ck_ptr, sc_ptr,
    du_ptr, ddl_ptr, dz_ptr, dB_ptr, dC_ptr, dA_ptr, dD_ptr, dbias_ptr,
    batch, DIM, NS, n_dblocks,
    s_ub, s_ul, s_db, s_dl, s_zb, s_zl, s_Bb, s_Bl, s_Cb, s_Cl, s_gb, s_gl,
    L: tl.constexpr, K: tl.constexpr, HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr, BLOCK: tl.constexpr,
    N: tl.constexpr,
):
    """scan_triton's backward with ``_reverse_token`` (fast softplus, sigmoid(Δ) from the same exponential, and
    h_{t-1} read from the scratch at the top of a step but used only as the next step's state)."""
    pid_b = tl.program_id(0).to(tl.int64)
    pid_d = tl.program_id(1)
    offs_d = pid_d * BLOCK + tl.arange(0, BLOCK)
    md = offs_d < DIM
    offs_n = tl.arange(0, N)
    mn = offs_n < NS
    m2 = md[:, None] & mn[None, :]
    A2, Dv, bias = _channel_params(A_ptr, D_ptr, bias_ptr, offs_d, md, offs_n, m2, NS, HAS_BIAS, BLOCK)
    u_ptr += pid_b * s_ub + offs_d
    dl_ptr += pid_b * s_db + offs_d
    z_ptr += pid_b * s_zb + offs_d
    g_ptr += pid_b * s_gb + offs_d
    row = pid_b * L * DIM + offs_d
    B_ptr += pid_b * s_Bb + offs_n
    C_ptr += pid_b * s_Cb + offs_n
    part_bn = (pid_d * batch + pid_b) * L * NS + offs_n
    n_chunks: tl.constexpr = (L + K - 1) // K
    ck_ptr += pid_b * n_chunks * DIM * NS
    ck_tile = offs_d[:, None] * NS + offs_n[None, :]
    tile = tl.arange(0, BLOCK)[:, None] * N + offs_n[None, :]
    sc_ptr += (pid_b * n_dblocks + pid_d) * (K + 1) * BLOCK * N

    carry = tl.zeros((BLOCK, N), tl.float32)
    dA_acc = tl.zeros((BLOCK, N), tl.float32)
    dD_acc = tl.zeros((BLOCK,), tl.float32)
    dbias_acc = tl.zeros((BLOCK,), tl.float32)
    for cc in range(n_chunks):
        c = n_chunks - 1 - cc
        t0 = c * K
        h = tl.load(ck_ptr + c * DIM * NS + ck_tile, mask=m2, other=0.0)
        tl.store(sc_ptr + tile, h)
        u_n, x_n, z_n, B_n, C_n = _load_token(u_ptr, dl_ptr, z_ptr, B_ptr, C_ptr, t0, s_ul, s_dl, s_zl, s_Bl, s_Cl,
                                              md, mn, L, False)
        for k in range(K):
            t = t0 + k
            u_r, x_r, B_r = u_n, x_n, B_n
            u_n, x_n, z_n, B_n, C_n = _load_token(u_ptr, dl_ptr, z_ptr, B_ptr, C_ptr, t + 1, s_ul, s_dl, s_zl, s_Bl,
                                                  s_Cl, md, mn, L, False)
            h = _recompute_token(h, u_r, x_r, B_r, A2, bias, t < L)
            tl.store(sc_ptr + (k + 1) * BLOCK * N + tile, h)
        tl.debug_barrier()
        t = t0 + K - 1
        u_n, x_n, z_n, B_n, C_n = _load_token(u_ptr, dl_ptr, z_ptr, B_ptr, C_ptr, t, s_ul, s_dl, s_zl, s_Bl, s_Cl,
                                              md, mn, L, HAS_Z)
        g_n = tl.load(g_ptr + t * s_gl, mask=md & (t < L), other=0.0)
        for kk in range(K):
            k = K - 1 - kk
            t = t0 + k
            u_r, x_r, z_r, B_r, C_r, g_r = u_n, x_n, z_n, B_n, C_n, g_n
            h_prev = tl.load(sc_ptr + k * BLOCK * N + tile)
            # token t-1's inputs, one step ahead (at k = 0 that is the previous chunk's last token: harmless)
            u_n, x_n, z_n, B_n, C_n = _load_token(u_ptr, dl_ptr, z_ptr, B_ptr, C_ptr, t - 1, s_ul, s_dl, s_zl, s_Bl,
                                                  s_Cl, md, mn, L, HAS_Z)
            g_n = tl.load(g_ptr + (t - 1) * s_gl, mask=md & (t >= 1) & (t - 1 < L), other=0.0)
            carry, dA_acc, dD_acc, dbias_acc = _reverse_token(
                h, carry, dA_acc, dD_acc, dbias_acc, u_r, x_r, z_r, B_r, C_r, g_r, A2, Dv, bias, t < L,
                du_ptr + row + t * DIM, ddl_ptr + row + t * DIM, dz_ptr + row + t * DIM,
                dB_ptr + part_bn + t * NS, dC_ptr + part_bn + t * NS, md, mn, HAS_Z)
            h = h_prev
        tl.debug_barrier()  # the next chunk overwrites the scratch
    tl.store(dA_ptr + pid_b * DIM * NS + offs_d[:, None] * NS + offs_n[None, :], dA_acc, mask=m2)
    tl.store(dD_ptr + pid_b * DIM + offs_d, dD_acc, mask=md)
    tl.store(dbias_ptr + pid_b * DIM + offs_d, dbias_acc, mask=md)


@triton.jit
def _reverse_at(t, h, carry, dA_acc, dD_acc, dbias_acc, u_ptr, dl_ptr, z_ptr, B_ptr, C_ptr, g_ptr,
                s_ul, s_dl, s_zl, s_Bl, s_Cl, s_gl, A2, Dv, bias, row, part_bn, DIM, NS,
                du_ptr, ddl_ptr, dz_ptr, dB_ptr, dC_ptr, md, mn, L: tl.constexpr, HAS_Z: tl.constexpr):
    """``_reverse_token`` at token t, loading its inputs itself (straight-line code: the compiler hoists them)."""
    u_r, x_r, z_r, B_r, C_r = _load_token(u_ptr, dl_ptr, z_ptr, B_ptr, C_ptr, t, s_ul, s_dl, s_zl, s_Bl, s_Cl,
                                          md, mn, L, HAS_Z)
    g_r = tl.load(g_ptr + t * s_gl, mask=md & (t < L), other=0.0)
    return _reverse_token(h, carry, dA_acc, dD_acc, dbias_acc, u_r, x_r, z_r, B_r, C_r, g_r, A2, Dv, bias, t < L,
                          du_ptr + row + t * DIM, ddl_ptr + row + t * DIM, dz_ptr + row + t * DIM,
                          dB_ptr + part_bn + t * NS, dC_ptr + part_bn + t * NS, md, mn, HAS_Z)


@triton.jit
def _recompute_at(t, h, u_ptr, dl_ptr, B_ptr, s_ul, s_dl, s_Bl, A2, bias, md, mn, L: tl.constexpr):
    ok = t < L
    u_r = tl.load(u_ptr + t * s_ul, mask=md & ok, other=0.0)
    x_r = tl.load(dl_ptr + t * s_dl, mask=md & ok, other=0.0)
    B_r = tl.load(B_ptr + t * s_Bl, mask=mn & ok, other=0.0)
    return _recompute_token(h, u_r, x_r, B_r, A2, bias, ok)


@triton.jit
def _bwd_reg_kernel(
    u_ptr, dl_ptr, z_ptr, B_ptr, C_ptr, A_ptr, D_ptr, bias_ptr, g_ptr, ck_ptr, sc_ptr,
    du_ptr, ddl_ptr, dz_ptr, dB_ptr, dC_ptr, dA_ptr, dD_ptr, dbias_ptr,
    batch, DIM, NS, n_dblocks,
    s_ub, s_ul, s_db, s_dl, s_zb, s_zl, s_Bb, s_Bl, s_Cb, s_Cl, s_gb, s_gl,
    L: tl.constexpr, K: tl.constexpr, HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr, BLOCK: tl.constexpr,
    N: tl.constexpr,
):
    """The backward without a scratch: each group of 4 tokens of a chunk (the last group first) is recomputed
    from the chunk's checkpoint into 4 register tiles and walked in reverse. K must be a multiple of 4; a chunk
    of 8 costs 12 recompute steps instead of 8. ``sc_ptr`` is unused (same signature as ``_bwd_kernel``)."""
    pid_b = tl.program_id(0).to(tl.int64)
    pid_d = tl.program_id(1)
    offs_d = pid_d * BLOCK + tl.arange(0, BLOCK)
    md = offs_d < DIM
    offs_n = tl.arange(0, N)
    mn = offs_n < NS
    m2 = md[:, None] & mn[None, :]
    A2, Dv, bias = _channel_params(A_ptr, D_ptr, bias_ptr, offs_d, md, offs_n, m2, NS, HAS_BIAS, BLOCK)
    u_ptr += pid_b * s_ub + offs_d
    dl_ptr += pid_b * s_db + offs_d
    z_ptr += pid_b * s_zb + offs_d
    g_ptr += pid_b * s_gb + offs_d
    row = pid_b * L * DIM + offs_d
    B_ptr += pid_b * s_Bb + offs_n
    C_ptr += pid_b * s_Cb + offs_n
    part_bn = (pid_d * batch + pid_b) * L * NS + offs_n
    n_chunks: tl.constexpr = (L + K - 1) // K
    ck_ptr += pid_b * n_chunks * DIM * NS
    ck_tile = offs_d[:, None] * NS + offs_n[None, :]
    carry = tl.zeros((BLOCK, N), tl.float32)
    dA_acc = tl.zeros((BLOCK, N), tl.float32)
    dD_acc = tl.zeros((BLOCK,), tl.float32)
    dbias_acc = tl.zeros((BLOCK,), tl.float32)
    for cc in range(n_chunks):
        c = n_chunks - 1 - cc
        for jj in range(K // 4):  # groups of 4 tokens, the last first
            j = K // 4 - 1 - jj
            t0 = c * K + 4 * j
            h0 = tl.load(ck_ptr + c * DIM * NS + ck_tile, mask=m2, other=0.0)
            # from the checkpoint to the group's first token. The bound is written out instead of using j: Triton
            # 3.6's interpreter makes every assigned value a tensor, and a tensor loop bound fails under NumPy 2.4
            for i in range(4 * (K // 4 - 1 - jj)):
                h0 = _recompute_at(c * K + i, h0, u_ptr, dl_ptr, B_ptr, s_ul, s_dl, s_Bl, A2, bias, md, mn, L)
            h1 = _recompute_at(t0, h0, u_ptr, dl_ptr, B_ptr, s_ul, s_dl, s_Bl, A2, bias, md, mn, L)
            h2 = _recompute_at(t0 + 1, h1, u_ptr, dl_ptr, B_ptr, s_ul, s_dl, s_Bl, A2, bias, md, mn, L)
            h3 = _recompute_at(t0 + 2, h2, u_ptr, dl_ptr, B_ptr, s_ul, s_dl, s_Bl, A2, bias, md, mn, L)
            h4 = _recompute_at(t0 + 3, h3, u_ptr, dl_ptr, B_ptr, s_ul, s_dl, s_Bl, A2, bias, md, mn, L)
            carry, dA_acc, dD_acc, dbias_acc = _reverse_at(
                t0 + 3, h4, carry, dA_acc, dD_acc, dbias_acc, u_ptr, dl_ptr, z_ptr, B_ptr, C_ptr, g_ptr,
                s_ul, s_dl, s_zl, s_Bl, s_Cl, s_gl, A2, Dv, bias, row, part_bn, DIM, NS,
                du_ptr, ddl_ptr, dz_ptr, dB_ptr, dC_ptr, md, mn, L, HAS_Z)
            carry, dA_acc, dD_acc, dbias_acc = _reverse_at(
                t0 + 2, h3, carry, dA_acc, dD_acc, dbias_acc, u_ptr, dl_ptr, z_ptr, B_ptr, C_ptr, g_ptr,
                s_ul, s_dl, s_zl, s_Bl, s_Cl, s_gl, A2, Dv, bias, row, part_bn, DIM, NS,
                du_ptr, ddl_ptr, dz_ptr, dB_ptr, dC_ptr, md, mn, L, HAS_Z)
            carry, dA_acc, dD_acc, dbias_acc = _reverse_at(
                t0 + 1, h2, carry, dA_acc, dD_acc, dbias_acc, u_ptr, dl_ptr, z_ptr, B_ptr, C_ptr, g_ptr,
                s_ul, s_dl, s_zl, s_Bl, s_Cl, s_gl, A2, Dv, bias, row, part_bn, DIM, NS,
                du_ptr, ddl_ptr, dz_ptr, dB_ptr, dC_ptr, md, mn, L, HAS_Z)
            carry, dA_acc, dD_acc, dbias_acc = _reverse_at(
                t0, h1, carry, dA_acc, dD_acc, dbias_acc, u_ptr, dl_ptr, z_ptr, B_ptr, C_ptr, g_ptr,
                s_ul, s_dl, s_zl, s_Bl, s_Cl, s_gl, A2, Dv, bias, row, part_bn, DIM, NS,
                du_ptr, ddl_ptr, dz_ptr, dB_ptr, dC_ptr, md, mn, L, HAS_Z)
    tl.store(dA_ptr + pid_b * DIM * NS + offs_d[:, None] * NS + offs_n[None, :], dA_acc, mask=m2)
    tl.store(dD_ptr + pid_b * DIM + offs_d, dD_acc, mask=md)
    tl.store(dbias_ptr + pid_b * DIM + offs_d, dbias_acc, mask=md)


@dataclass(frozen=True)
class FwdConfig:
    """A forward candidate: channels per program, warps, tokens per loop iteration (``pair``: 2), the
    lane-per-channel layout, and a register cap for ptxas (``maxnreg``; None: its own choice)."""
    block: int = 32
    warps: int = 1
    pair: bool = True
    lane: bool = False
    maxnreg: int | None = None


@dataclass(frozen=True)
class BwdConfig:
    """A backward candidate: ``kernel`` "scratch" (``_bwd_kernel``), "registers" (``_bwd_reg_kernel``) or "today"
    (``scan_triton._scan_bwd_kernel``, e.g. with another register cap)."""
    kernel: str = "scratch"
    block: int = 32
    warps: int = 1
    maxnreg: int | None = None


# What the benchmark times (each against scan_triton's kernels) and tests/test_scan_next.py checks (each against
# float64). Registers per thread, spills and SASS instructions per token step, compiled for sm_90 by Triton 3.6
# at mamba_small's shape (``benchmarks/kernel_resources.py --candidates``): today's forward 96 regs, 244 per
# token; backward 210 regs (ncu on the H200: 212, 8 one-warp programs per SM), 177 + 509 per token.
FWD_CANDIDATES = {
    "pair": FwdConfig(),  # 123 regs; 440 per 2 tokens
    "lane": FwdConfig(pair=False, lane=True),  # 120 regs; 179, no shuffles
    "lane_r96": FwdConfig(pair=False, lane=True, maxnreg=96),  # 96 regs (today's occupancy), no spill; 194
    "lane_pair": FwdConfig(lane=True),  # 126 regs; 382 per 2 tokens
    "lane_pair_b64w2": FwdConfig(block=64, warps=2, lane=True),  # 122 regs; 381 per 2 tokens
    "lane_b128w4": FwdConfig(block=128, warps=4, pair=False, lane=True),  # 96 regs; 194
}
BWD_CANDIDATES = {
    "today_r168": BwdConfig("today", maxnreg=168),  # today's kernel capped at 168 regs: no spill, 12 warps per SM
    "today_r128": BwdConfig("today", maxnreg=128),  # 200 B spilled per thread, 16 warps per SM
    "scratch": BwdConfig(),  # 229 regs; 151 + 515
    "scratch_r168": BwdConfig(maxnreg=168),  # 48 B spilled; 151 + 531
    "registers": BwdConfig("registers"),  # 240 regs, no spill; 2429 per group of 4 tokens + 131 per skipped token
    "registers_r200": BwdConfig("registers", maxnreg=200),  # no spill, 10 warps per SM; 2530
    "registers_w2": BwdConfig("registers", warps=2),  # 222 regs, 8 states per thread; 2293
}


def _launch_options(cfg) -> dict:
    return {"num_warps": cfg.warps, **({"maxnreg": cfg.maxnreg} if cfg.maxnreg else {})}


def launch_fwd(u, delta, A, B, C, D, z, delta_bias, cfg: FwdConfig | None):
    """(output, checkpoints every CHUNK tokens) as ``scan_triton._launch_fwd``; ``cfg=None``: that kernel itself
    (its checkpoints have the same layout where l >= CHUNK)."""
    if cfg is None:
        return scan_triton._launch_fwd(u, delta, A, B, C, D, z, delta_bias)
    args = list(_common_args(u, delta, A, B, C, D, z, delta_bias))
    u, delta, zz, B, C, A = args[:6]
    b, l, d = u.shape
    n = A.shape[1]
    if cfg.lane:
        args[5] = A.t().contiguous()  # (n, d): see _fwd_kernel's LANE
    out = torch.empty((b, l, d), device=u.device, dtype=u.dtype)
    ck = torch.empty((b, triton.cdiv(l, CHUNK), d, n), device=u.device, dtype=torch.float32)
    _fwd_kernel[(b, triton.cdiv(d, cfg.block))](
        *args, out, ck, d, n, *_row_strides(u, delta, zz, B, C, out),
        L=l, K=CHUNK, HAS_Z=z is not None, HAS_BIAS=delta_bias is not None, BLOCK=cfg.block,
        N=triton.next_power_of_2(n), PAIR=2 if cfg.pair else 1, LANE=cfg.lane, **_launch_options(cfg),
    )
    return out, ck


def launch_bwd(gout, u, delta, A, B, C, D, z, delta_bias, ck, cfg: BwdConfig):
    """Gradients of every input as ``scan_triton._launch_bwd``, but None for an absent z / delta_bias."""
    args = _common_args(u, delta, A, B, C, D, z, delta_bias)
    u, delta, zz, B, C, A = args[:6]
    gout = _rowmajor(gout)
    b, l, d = u.shape
    n = A.shape[1]
    N = triton.next_power_of_2(n)
    nblk = triton.cdiv(d, cfg.block)
    dev, f32 = u.device, torch.float32
    du = torch.empty((b, l, d), device=dev, dtype=u.dtype)
    ddelta = torch.empty((b, l, d), device=dev, dtype=delta.dtype)
    dz = torch.empty((b, l, d), device=dev, dtype=z.dtype) if z is not None else u.new_empty(0)
    dB_part = torch.empty((nblk, b, l, n), device=dev, dtype=f32)
    dC_part = torch.empty((nblk, b, l, n), device=dev, dtype=f32)
    dA_part = torch.empty((b, d, n), device=dev, dtype=f32)
    dD_part = torch.empty((b, d), device=dev, dtype=f32)
    dbias_part = torch.empty((b, d), device=dev, dtype=f32)
    grads = (du, ddelta, dz if z is not None else du, dB_part, dC_part, dA_part, dD_part, dbias_part)
    if cfg.kernel == "registers":
        kernel, scratch = _bwd_reg_kernel, dD_part  # never read
    elif cfg.kernel in ("scratch", "today"):
        kernel = _bwd_kernel if cfg.kernel == "scratch" else scan_triton._scan_bwd_kernel
        scratch = torch.empty(b * nblk * (CHUNK + 1) * cfg.block * N, device=dev, dtype=f32)
    else:
        raise ValueError(f"backward kernel must be 'scratch', 'registers' or 'today', got {cfg.kernel!r}")
    kernel[(b, nblk)](
        *args, gout, ck, scratch, *grads, b, d, n, nblk, *_row_strides(u, delta, zz, B, C, gout),
        L=l, HAS_Z=z is not None, HAS_BIAS=delta_bias is not None, BLOCK=cfg.block, K=CHUNK, N=N,
        **_launch_options(cfg),
    )
    dbias = dbias_part.sum(0).to(delta_bias.dtype) if delta_bias is not None else None
    return (du, ddelta, dA_part.sum(0).to(A.dtype), dB_part.sum(0).to(B.dtype), dC_part.sum(0).to(C.dtype),
            dD_part.sum(0).to(D.dtype), dz if z is not None else None, dbias)


class _ScanNext(torch.autograd.Function):
    @staticmethod
    def forward(ctx, u, delta, A, B, C, D, z, delta_bias, fwd_cfg, bwd_cfg):
        out, ck = launch_fwd(u, delta, A, B, C, D, z, delta_bias, fwd_cfg)
        ctx.save_for_backward(u, delta, A, B, C, D, z, delta_bias, ck)
        ctx.bwd_cfg = bwd_cfg
        return out

    @staticmethod
    def backward(ctx, gout):
        return (*launch_bwd(gout, *ctx.saved_tensors, ctx.bwd_cfg), None, None)


def selective_scan_next(u, delta, A, B, C, D, z=None, delta_bias=None, fwd_cfg: FwdConfig | None = FwdConfig(),
                        bwd_cfg: BwdConfig = BwdConfig()):
    """The selective scan with candidate kernels (``fwd_cfg=None``: today's forward); arguments and result as
    ``scan.selective_scan_ref``."""
    return _ScanNext.apply(u, delta, A, B, C, D, z, delta_bias, fwd_cfg, bwd_cfg)
